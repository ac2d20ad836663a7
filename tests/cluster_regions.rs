//! Regions in a real cluster of processes: a scheduler and three `regiondb node`s with small
//! regions. 100,000 rows loaded through SQL split into many regions; the scheduler spreads
//! their leaders; a fourth node joins and receives replicas until the stores hold about the
//! same amount of data; a node is killed with SIGKILL and its replicas are rebuilt on the
//! others. Throughout, a bank workload moves money between rows in different regions, and at
//! the end the total is unchanged and every row is there.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use scheduler::{ClusterApi, SchedulerClient};
use support::WireClient;

const DEADLINE: Duration = Duration::from_secs(120);
const ROWS: u64 = 100_000;
const BALANCE: u64 = 100;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Node {
    process: Process,
    store_id: u64,
    pg_port: u16,
}

fn start_node(scheduler: &str, data_dir: &Path) -> Node {
    let args = [
        "node",
        "--scheduler",
        scheduler,
        "--listen",
        "127.0.0.1:0",
        "--pg-listen",
        "127.0.0.1:0",
        "--region-split-size",
        "192KiB",
        "--region-max-size",
        "288KiB",
    ];
    let (child, line) = support::spawn_regiondb(&args, data_dir, "ready");
    let word_after = |marker: &str| {
        line.split(marker)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {marker:?} in {line:?}"))
            .to_string()
    };
    Node {
        process: Process(child),
        store_id: word_after("node ").parse().expect("store id"),
        pg_port: word_after(" -p ").parse().expect("port"),
    }
}

fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Per store: (bytes of the regions with a replica there, regions led there).
type StoreLoads = BTreeMap<u64, (u64, u64)>;

/// The stores' loads and the largest region's size, as the scheduler knows them.
fn loads(cluster: &SchedulerClient) -> Option<(StoreLoads, u64)> {
    let mut loads = StoreLoads::new();
    let mut largest = 1;
    for info in cluster.scan_regions(b"", b"", 0).ok()? {
        let region = info.region?;
        largest = largest.max(info.approximate_size);
        for peer in &region.peers {
            loads.entry(peer.store_id).or_default().0 += info.approximate_size.max(1);
        }
        loads.entry(info.leader?.store_id).or_default().1 += 1;
    }
    Some((loads, largest))
}

/// Every (id, balance) row, read through the node at `port`.
fn balances(port: u16) -> Option<BTreeMap<u64, u64>> {
    let reply = WireClient::connect(port).query("SELECT id, balance FROM accounts");
    if reply.error.is_some() {
        return None;
    }
    reply
        .rows
        .iter()
        .map(|row| {
            Some((
                row[0].as_ref()?.parse().ok()?,
                row[1].as_ref()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn regions_split_spread_and_are_rebuilt_in_a_cluster_of_processes() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (scheduler_child, line) = support::spawn_regiondb(
        &[
            "scheduler",
            "--listen",
            "127.0.0.1:0",
            "--max-store-down-time",
            "5s",
        ],
        &dir.path().join("scheduler"),
        "ready",
    );
    let _scheduler = Process(scheduler_child);
    let scheduler = line.rsplit(' ').next().expect("address").to_string();
    let mut nodes: Vec<Node> = (0..3)
        .map(|i| start_node(&scheduler, &dir.path().join(format!("node{i}"))))
        .collect();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let cluster =
        SchedulerClient::connect_lazy(&format!("http://{scheduler}"), runtime.handle().clone())
            .unwrap();
    wait_for("three voters", || {
        let (region, _) = cluster.get_region(b"").ok()??;
        (region.peers.iter().filter(|p| !p.learner).count() == 3).then_some(())
    });

    // Load: 100,000 rows in statements of 1,000, through the three gateways at once.
    WireClient::connect(nodes[0].pg_port)
        .ok("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT)");
    let loaders: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let port = node.pg_port;
            std::thread::spawn(move || {
                let mut client = WireClient::connect(port);
                let mut first = i as u64 * 1000;
                while first < ROWS {
                    let values: Vec<String> = (first..(first + 1000).min(ROWS))
                        .map(|id| format!("({id}, {BALANCE})"))
                        .collect();
                    client.ok(&format!("INSERT INTO accounts VALUES {}", values.join(",")));
                    first += 3000;
                }
            })
        })
        .collect();
    for loader in loaders {
        loader.join().expect("loader");
    }
    eprintln!("loaded {ROWS} rows after {:?}", started.elapsed());
    wait_for("at least 16 regions", || {
        (cluster.scan_regions(b"", b"", 0).ok()?.len() >= 16).then_some(())
    });

    // The bank: transfers between random rows (so, mostly in different regions), through
    // whichever gateway answers.
    let ports: Arc<std::sync::Mutex<Vec<u16>>> = Arc::new(std::sync::Mutex::new(
        nodes.iter().map(|n| n.pg_port).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let bank = {
        let (ports, stop, committed) = (
            Arc::clone(&ports),
            Arc::clone(&stop),
            Arc::clone(&committed),
        );
        std::thread::spawn(move || {
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut next = |n: u64| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state % n
            };
            let mut turn = 0;
            while !stop.load(Ordering::Acquire) {
                let port = {
                    let ports = ports.lock().unwrap();
                    turn += 1;
                    ports[turn % ports.len()]
                };
                // The test client panics when its connection breaks (the node was killed):
                // start over on another gateway.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let mut client = WireClient::connect(port);
                    for _ in 0..20 {
                        let (from, to) = (next(ROWS), next(ROWS));
                        let reply = client.query(&format!(
                            "BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = {from}; \
                             UPDATE accounts SET balance = balance + 1 WHERE id = {to}; COMMIT"
                        ));
                        if reply.error.is_none() {
                            committed.fetch_add(1, Ordering::Relaxed);
                        } else if reply.status != b'I' {
                            break;
                        }
                    }
                }));
            }
        })
    };

    // Splits happen on the leader's store; the scheduler spreads the leaders.
    wait_for("leaders within a factor of 2", || {
        let (loads, _) = loads(&cluster)?;
        let leaders: Vec<u64> = nodes
            .iter()
            .map(|n| loads.get(&n.store_id).map_or(0, |l| l.1))
            .collect();
        let (min, max) = (*leaders.iter().min()?, *leaders.iter().max()?);
        (min > 0 && max <= 2 * min).then_some(())
    });

    eprintln!("leaders spread after {:?}", started.elapsed());
    // A fourth node joins and gets replicas until the stores hold about the same.
    let newcomer = start_node(&scheduler, &dir.path().join("node3"));
    ports.lock().unwrap().push(newcomer.pg_port);
    let newcomer_id = newcomer.store_id;
    nodes.push(newcomer);
    wait_for("the new node to get its share", || {
        let (loads, largest) = loads(&cluster)?;
        let sizes: Vec<u64> = nodes
            .iter()
            .map(|n| loads.get(&n.store_id).map_or(0, |l| l.0))
            .collect();
        let (min, max) = (*sizes.iter().min()?, *sizes.iter().max()?);
        (loads.get(&newcomer_id)?.0 > 0 && max - min <= 2 * largest).then_some(())
    });

    eprintln!("the new node got its share after {:?}", started.elapsed());
    // SIGKILL a node: after the scheduler's down time, its replicas are rebuilt elsewhere.
    let victim = nodes.remove(1);
    let victim_id = victim.store_id;
    let victim_port = victim.pg_port;
    ports.lock().unwrap().retain(|&p| p != victim_port);
    drop(victim.process);
    wait_for("every region rebuilt on three live stores", || {
        let regions = cluster.scan_regions(b"", b"", 0).ok()?;
        let unfinished: Vec<String> = regions
            .iter()
            .filter_map(|info| info.region.as_ref())
            .filter(|r| {
                r.peers.len() != 3 || r.peers.iter().any(|p| p.learner || p.store_id == victim_id)
            })
            .map(|r| {
                format!(
                    "{}:{:?}",
                    r.id,
                    r.peers
                        .iter()
                        .map(|p| (p.store_id, p.learner))
                        .collect::<Vec<_>>()
                )
            })
            .collect();
        if !unfinished.is_empty() && started.elapsed().as_secs().is_multiple_of(10) {
            eprintln!("not yet rebuilt: {unfinished:?}");
        }
        regions
            .iter()
            .all(|info| {
                info.region.as_ref().is_some_and(|r| {
                    r.peers.len() == 3
                        && r.peers
                            .iter()
                            .all(|p| !p.learner && p.store_id != victim_id)
                })
            })
            .then_some(())
    });

    eprintln!("replicas rebuilt after {:?}", started.elapsed());
    stop.store(true, Ordering::Release);
    bank.join().expect("bank");
    assert!(
        committed.load(Ordering::Relaxed) > 0,
        "no transfer committed"
    );
    for node in &nodes {
        let rows = wait_for("every row", || balances(node.pg_port));
        assert_eq!(
            rows.len() as u64,
            ROWS,
            "rows through node {}",
            node.store_id
        );
        assert_eq!(
            rows.values().sum::<u64>(),
            ROWS * BALANCE,
            "the bank's total through node {}",
            node.store_id
        );
    }
    drop(runtime);
}
