//! A real cluster of processes on loopback: a scheduler and three `regiondb node`s. A table is
//! written through the nodes' PostgreSQL ports while the node holding the region's leader is
//! killed with SIGKILL; writes go on under a new leader; the node restarts and catches up;
//! every node then returns every acknowledged row.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scheduler::{ClusterApi, SchedulerClient};
use support::WireClient;

const DEADLINE: Duration = Duration::from_secs(60);

struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `regiondb ARGS --data-dir DIR` and waits until it is ready; returns the ready line.
fn spawn(args: &[&str], data_dir: &Path) -> (Process, String) {
    let (child, line) = support::spawn_regiondb(args, data_dir, "ready");
    (Process { child }, line)
}

struct Node {
    process: Option<Process>,
    store_id: u64,
    grpc: String,
    pg_port: u16,
}

/// Starts a node; `ports` = (gRPC address, PostgreSQL port) to reuse after a restart.
fn start_node(scheduler: &str, data_dir: &Path, ports: Option<(&str, u16)>) -> Node {
    let (listen, pg) = match ports {
        Some((grpc, pg)) => (grpc.to_string(), format!("127.0.0.1:{pg}")),
        None => ("127.0.0.1:0".to_string(), "127.0.0.1:0".to_string()),
    };
    let args = [
        "node",
        "--scheduler",
        scheduler,
        "--listen",
        &listen,
        "--pg-listen",
        &pg,
    ];
    let (process, line) = spawn(&args, data_dir);
    // "RegionDB node N is ready (gRPC on ADDR). Connect with: psql -h IP -p PORT -U postgres"
    let word_after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
            .trim_end_matches(&[')', '.'][..])
            .to_string()
    };
    Node {
        process: Some(process),
        store_id: word_after("node ").parse().expect("store id"),
        grpc: word_after("gRPC on "),
        pg_port: word_after(" -p ").parse().expect("port"),
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Ids of the rows of `t`, through `port`.
fn ids(port: u16) -> Vec<u64> {
    let mut client = WireClient::connect(port);
    client
        .rows("SELECT id FROM t ORDER BY id")
        .iter()
        .map(|r| r.parse().expect("id"))
        .collect()
}

/// A scheduler and three nodes whose first region has three voters.
struct Cluster {
    _scheduler: Process,
    scheduler: String,
    nodes: Vec<Node>,
    client: SchedulerClient,
    _runtime: tokio::runtime::Runtime,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let (scheduler_process, line) = spawn(
            &["scheduler", "--listen", "127.0.0.1:0"],
            &dir.join("scheduler"),
        );
        let scheduler = line
            .rsplit(' ')
            .next()
            .expect("scheduler address")
            .to_string();
        let nodes: Vec<Node> = (0..3)
            .map(|i| start_node(&scheduler, &dir.join(format!("node{i}")), None))
            .collect();
        // The scheduler's replica checker brings the region to three voters.
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client =
            SchedulerClient::connect_lazy(&format!("http://{scheduler}"), runtime.handle().clone())
                .unwrap();
        let cluster = Cluster {
            _scheduler: scheduler_process,
            scheduler,
            nodes,
            client,
            _runtime: runtime,
        };
        wait_for("three voters", || cluster.voters().filter(|(v, _)| *v == 3));
        cluster
    }

    /// The first region's voters, and the store of its leader.
    fn voters(&self) -> Option<(usize, u64)> {
        let (region, leader) = self.client.get_region(b"").ok()??;
        let voters = region.peers.iter().filter(|p| !p.learner).count();
        Some((voters, leader?.store_id))
    }
}

#[test]
fn a_three_node_cluster_survives_a_sigkilled_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let scheduler = cluster.scheduler.clone();
    let mut nodes = std::mem::take(&mut cluster.nodes);

    WireClient::connect(nodes[0].pg_port).ok("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");

    // Writers on the two nodes that do not hold the leader, which is then killed.
    let (_, leader_store) = cluster.voters().expect("a leader");
    let victim = nodes
        .iter()
        .position(|n| n.store_id == leader_store)
        .expect("the leader's node");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let acked_after_kill = Arc::new(Mutex::new(0usize));
    let killed = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .enumerate()
        .map(|(w, (_, node))| {
            let port = node.pg_port;
            let (acked, acked_after_kill) = (Arc::clone(&acked), Arc::clone(&acked_after_kill));
            let (killed, stop) = (Arc::clone(&killed), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut client = WireClient::connect(port);
                let mut id = w as u64 * 1_000_000;
                while !stop.load(Ordering::Acquire) {
                    id += 1;
                    let reply = client.query(&format!("INSERT INTO t VALUES ({id}, 'w{w}')"));
                    if reply.error.is_none() {
                        acked.lock().unwrap().insert(id);
                        if killed.load(Ordering::Acquire) {
                            *acked_after_kill.lock().unwrap() += 1;
                        }
                    }
                }
            })
        })
        .collect();
    wait_for("some writes", || {
        (acked.lock().unwrap().len() >= 20).then_some(())
    });

    let (grpc, pg_port) = (nodes[victim].grpc.clone(), nodes[victim].pg_port);
    let mut process = nodes[victim].process.take().expect("running");
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("wait");
    killed.store(true, Ordering::Release);

    // Writes go on under a new leader.
    wait_for("writes after the kill", || {
        (*acked_after_kill.lock().unwrap() >= 20).then_some(())
    });
    let new_leader = wait_for("a new leader", || {
        cluster
            .voters()
            .map(|(_, leader)| leader)
            .filter(|&l| l != leader_store)
    });
    assert_ne!(new_leader, leader_store);

    // The killed node restarts on its addresses and catches up.
    let data_dir = dir.path().join(format!("node{victim}"));
    nodes[victim] = start_node(&scheduler, &data_dir, Some((&grpc, pg_port)));
    assert_eq!(
        nodes[victim].store_id, leader_store,
        "same store after restart"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Release);
    for writer in writers {
        writer.join().expect("writer");
    }

    // Every node returns every acknowledged row (rows whose answer was lost may be there too),
    // each once.
    let acked = acked.lock().unwrap().clone();
    for node in &nodes {
        let found = wait_for("every acknowledged row", || {
            let found = ids(node.pg_port);
            let set: BTreeSet<u64> = found.iter().copied().collect();
            acked.is_subset(&set).then_some(found)
        });
        let unique: BTreeSet<u64> = found.iter().copied().collect();
        assert_eq!(
            unique.len(),
            found.len(),
            "duplicate rows on node {}",
            node.store_id
        );
    }
}

/// A gateway holding row locks dies (SIGKILL) in the middle of its transaction: a session on
/// another node that waits for one of those rows gets it once the dead transaction's locks
/// expire (their TTL, no longer extended by the dead gateway's heartbeats), and nothing of
/// the dead transaction is applied.
#[test]
fn a_killed_gateways_locks_expire_and_the_waiters_proceed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(dir.path());
    let (_, leader_store) = cluster.voters().expect("a leader");
    // The gateway that dies does not lead the region: the wait is about the locks only.
    let victim = cluster
        .nodes
        .iter()
        .position(|n| n.store_id != leader_store)
        .expect("a follower's node");
    let waiter_port = cluster.nodes[(victim + 1) % 3].pg_port;
    let mut setup = WireClient::connect(waiter_port);
    setup.ok("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    setup.ok("INSERT INTO t VALUES (1, 'before'), (2, 'before')");

    let mut doomed = WireClient::connect(cluster.nodes[victim].pg_port);
    doomed.ok("BEGIN");
    doomed.ok("UPDATE t SET v = 'doomed' WHERE id = 1");
    doomed.ok("UPDATE t SET v = 'doomed' WHERE id = 2");
    // Long enough for heartbeats to have extended the locks' TTL.
    std::thread::sleep(Duration::from_secs(2));

    let finished = Arc::new(AtomicBool::new(false));
    let waiter = {
        let finished = Arc::clone(&finished);
        std::thread::spawn(move || {
            let reply =
                WireClient::connect(waiter_port).query("UPDATE t SET v = 'after' WHERE id = 1");
            finished.store(true, Ordering::Release);
            reply
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !finished.load(Ordering::Acquire),
        "the update did not wait for the live transaction's lock"
    );
    let killed_at = Instant::now();
    let mut process = cluster.nodes[victim].process.take().expect("running");
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("wait");
    drop(doomed);

    let reply = waiter.join().expect("waiter");
    eprintln!(
        "the waiter proceeded {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(reply.error.is_none(), "{:?}", reply.error);
    assert_eq!(reply.tags, ["UPDATE 1"]);
    assert_eq!(
        WireClient::connect(waiter_port).rows("SELECT id, v FROM t ORDER BY id"),
        ["1,after", "2,before"]
    );
}

#[test]
fn the_scheduler_keeps_the_cluster_across_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sched_dir = dir.path().join("scheduler");
    let (scheduler_process, line) = spawn(&["scheduler", "--listen", "127.0.0.1:0"], &sched_dir);
    let scheduler = line
        .rsplit(' ')
        .next()
        .expect("scheduler address")
        .to_string();
    let first = start_node(&scheduler, &dir.path().join("node0"), None);
    let mut client = WireClient::connect(first.pg_port);
    client.ok("CREATE TABLE t (id INT PRIMARY KEY)");
    client.ok("INSERT INTO t VALUES (1), (2)");

    // Restart the scheduler on the same address: it remembers the cluster it had.
    let mut process = scheduler_process;
    let status = Command::new("kill")
        .args(["-TERM", &process.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(process.child.wait().unwrap().success());
    let (_scheduler_again, _) = spawn(&["scheduler", "--listen", &scheduler], &sched_dir);

    // The node goes on (timestamps keep increasing), and a new node joins the existing
    // region instead of bootstrapping a second cluster.
    wait_for("a write after the scheduler restart", || {
        let reply = WireClient::connect(first.pg_port).query("INSERT INTO t VALUES (3)");
        reply.error.is_none().then_some(())
    });
    let second = start_node(&scheduler, &dir.path().join("node1"), None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster =
        SchedulerClient::connect_lazy(&format!("http://{scheduler}"), runtime.handle().clone())
            .unwrap();
    wait_for("the new node to hold a replica", || {
        let (region, _) = cluster.get_region(b"").ok()??;
        region
            .peers
            .iter()
            .any(|p| p.store_id == second.store_id && !p.learner)
            .then_some(())
    });
    let rows = wait_for("every row through the new node", || {
        let rows = ids(second.pg_port);
        (rows == [1, 2, 3]).then_some(rows)
    });
    assert_eq!(rows, [1, 2, 3]);
    drop(runtime);
}
