//! Script-driven Raft scenarios: every `scripts/*.test` file is a list of steps against a
//! simulated cluster, with expectations. A new case is a text file.
//!
//! One step per line; `#` comments; `-> …` after a step is what it must show.
//!
//! ```text
//! cluster 1 2 3 [prevote=off] [checkquorum=off] [leaseread=on] [seed=N]   new cluster
//! add-node N                  a new, empty node outside the configuration
//! campaign N                  N starts an election now
//! tick N [T]                  tick node N T times (default 1), no delivery
//! tick-all T                  T rounds of: tick every running node, stabilize
//! stabilize                   process readies and deliver until quiet
//! deliver                     process readies, then deliver the messages in flight once
//! propose N DATA [-> dropped] N proposes DATA (or must refuse)
//! conf N add-voter|add-learner|remove X [-> ok|dropped|pending]
//! transfer N TARGET           leadership transfer request stepped on N
//! read N CONTEXT              ReadIndex request on N
//! forget-lease N              N forgets its quorum's recent answers (woken from hibernation)
//! reads N -> INDEX:CONTEXT …  read states N received so far (none: `-`)
//! status N -> key=value …     compares only the keys given: role term leader vote commit
//!                             applied last voters learners
//! progress N M -> …           leader N's view of M: state match next inflight paused
//! applied N -> D1 D2 …        data N applied, in order (none: `-`)
//! network -> KIND FROM>TO …   process readies, then list the messages in flight (none: `-`)
//! leaders -> N                how many running nodes consider themselves leader
//! isolate N | cut A B | cut-oneway FROM TO | partition 1 2 / 3 | drop KIND | heal
//! stop N | start N | restart N | compact N
//! ```
//!
//! After every step the cluster's safety invariants are checked (at most one leader per
//! term, log matching, no two nodes applying different entries at one index).

mod support;

use std::fs;
use std::path::Path;

use raft::{ConfChange, NodeId, RaftError, Role};
use support::Cluster;

fn id(word: Option<&&str>) -> Result<NodeId, String> {
    word.ok_or("missing node id")?
        .parse()
        .map_err(|_| format!("bad node id {word:?}"))
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Follower => "follower",
        Role::PreCandidate => "precandidate",
        Role::Candidate => "candidate",
        Role::Leader => "leader",
    }
}

fn ids(set: &std::collections::BTreeSet<NodeId>) -> String {
    if set.is_empty() {
        return "-".into();
    }
    set.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn outcome(result: Result<(), RaftError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(RaftError::ProposalDropped) => "dropped".into(),
        Err(RaftError::ConfChangePending) => "pending".into(),
        Err(RaftError::RemoveLeader) => "remove-leader".into(),
        Err(e) => format!("error {e}"),
    }
}

fn list(items: Vec<String>) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items.join(" ")
    }
}

struct Runner {
    cluster: Option<Cluster>,
}

impl Runner {
    fn cluster(&mut self) -> Result<&mut Cluster, String> {
        self.cluster
            .as_mut()
            .ok_or_else(|| "no cluster yet".to_string())
    }

    /// Runs one step; returns what it shows (compared with the expectation, if any).
    fn step(&mut self, words: &[&str], expected: Option<&str>) -> Result<Option<String>, String> {
        let arg = |i: usize| words.get(i);
        Ok(match words[0] {
            "cluster" => {
                let mut voters = Vec::new();
                let (mut pre_vote, mut check_quorum, mut lease_read, mut seed) =
                    (true, true, false, 0u64);
                for w in &words[1..] {
                    match w.split_once('=') {
                        Some(("prevote", v)) => pre_vote = v != "off",
                        Some(("checkquorum", v)) => check_quorum = v != "off",
                        Some(("leaseread", v)) => lease_read = v == "on",
                        Some(("seed", v)) => seed = v.parse().map_err(|_| "bad seed")?,
                        _ => voters.push(w.parse().map_err(|_| format!("bad node {w}"))?),
                    }
                }
                self.cluster = Some(Cluster::with_config(&voters, seed, |c| {
                    c.pre_vote = pre_vote;
                    c.check_quorum = check_quorum;
                    c.lease_read = lease_read;
                }));
                None
            }
            "add-node" => {
                let n = id(arg(1))?;
                let c = self.cluster()?;
                let (pv, cq) = {
                    let any = c.nodes.values().next().ok_or("empty cluster")?;
                    (any.config.pre_vote, any.config.check_quorum)
                };
                c.add_empty_node(n, pv, cq);
                None
            }
            "campaign" => {
                let n = id(arg(1))?;
                self.cluster()?.node(n).campaign();
                None
            }
            "tick" => {
                let n = id(arg(1))?;
                let times = arg(2).map_or(Ok(1), |t| t.parse().map_err(|_| "bad count"))?;
                self.cluster()?.tick(n, times);
                None
            }
            "tick-all" => {
                let times = arg(1)
                    .ok_or("missing count")?
                    .parse()
                    .map_err(|_| "bad count")?;
                self.cluster()?.tick_all(times);
                None
            }
            "stabilize" => {
                self.cluster()?.stabilize();
                None
            }
            "deliver" => {
                let c = self.cluster()?;
                for n in c.running() {
                    c.process_ready(n);
                }
                c.deliver();
                for n in c.running() {
                    c.process_ready(n);
                }
                None
            }
            "propose" => {
                let n = id(arg(1))?;
                let data = arg(2).ok_or("missing data")?;
                let result = self.cluster()?.propose(n, data);
                let shown = outcome(result);
                if expected.is_none() && shown != "ok" {
                    return Err(format!("propose failed: {shown}"));
                }
                Some(shown)
            }
            "conf" => {
                let n = id(arg(1))?;
                let target = id(arg(3))?;
                let change = match arg(2).copied() {
                    Some("add-voter") => ConfChange::AddVoter(target),
                    Some("add-learner") => ConfChange::AddLearner(target),
                    Some("remove") => ConfChange::Remove(target),
                    other => return Err(format!("bad conf change {other:?}")),
                };
                let shown = outcome(self.cluster()?.node(n).propose_conf_change(change));
                if expected.is_none() && shown != "ok" {
                    return Err(format!("conf change failed: {shown}"));
                }
                Some(shown)
            }
            "transfer" => {
                let (n, target) = (id(arg(1))?, id(arg(2))?);
                self.cluster()?.node(n).transfer_leader(target);
                None
            }
            "forget-lease" => {
                let n = id(arg(1))?;
                self.cluster()?.node(n).forget_quorum_activity();
                None
            }
            "read" => {
                let n = id(arg(1))?;
                let context = arg(2).ok_or("missing context")?.as_bytes().to_vec();
                self.cluster()?.node(n).read_index(context);
                None
            }
            "reads" => {
                let n = id(arg(1))?;
                let c = self.cluster()?;
                let reads = c.nodes[&n]
                    .read_states
                    .iter()
                    .map(|r| format!("{}:{}", r.index, String::from_utf8_lossy(&r.context)))
                    .collect();
                Some(list(reads))
            }
            "status" => {
                let n = id(arg(1))?;
                let c = self.cluster()?;
                let Some(raw) = c.nodes.get(&n).and_then(|node| node.raw.as_ref()) else {
                    return Ok(Some("stopped".into()));
                };
                let s = raw.status();
                let fields = [
                    ("role", role_name(s.role).to_string()),
                    ("term", s.term.to_string()),
                    ("leader", s.leader.map_or("-".into(), |l| l.to_string())),
                    ("vote", s.vote.map_or("-".into(), |v| v.to_string())),
                    ("commit", s.commit.to_string()),
                    ("applied", s.applied.to_string()),
                    ("last", s.last_index.to_string()),
                    ("voters", ids(&s.conf.voters)),
                    ("learners", ids(&s.conf.learners)),
                ];
                // Show the keys the expectation names, in its order (all keys without one).
                let wanted: Vec<&str> = expected
                    .unwrap_or("")
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k))
                    .collect();
                let shown: Vec<String> = if wanted.is_empty() {
                    fields.iter().map(|(k, v)| format!("{k}={v}")).collect()
                } else {
                    wanted
                        .iter()
                        .map(|w| match fields.iter().find(|(k, _)| k == w) {
                            Some((k, v)) => format!("{k}={v}"),
                            None => format!("{w}=?"),
                        })
                        .collect()
                };
                Some(shown.join(" "))
            }
            "progress" => {
                let (n, m) = (id(arg(1))?, id(arg(2))?);
                let c = self.cluster()?;
                let p = c
                    .node(n)
                    .raft
                    .tracker
                    .progress
                    .get(&m)
                    .cloned()
                    .ok_or("no progress for that node")?;
                let state = match p.state {
                    raft::progress::ProgressState::Probe => "probe",
                    raft::progress::ProgressState::Replicate => "replicate",
                    raft::progress::ProgressState::Snapshot => "snapshot",
                };
                Some(format!(
                    "state={state} match={} next={} inflight={} paused={}",
                    p.matched,
                    p.next,
                    p.inflight(),
                    p.is_paused()
                ))
            }
            "applied" => {
                let n = id(arg(1))?;
                Some(list(self.cluster()?.applied(n)))
            }
            "network" => {
                let c = self.cluster()?;
                // Readies first: that is where outgoing messages enter the network.
                for n in c.running() {
                    c.process_ready(n);
                }
                let messages = c
                    .network
                    .iter()
                    .map(|m| format!("{} {}>{}", m.body.name(), m.from, m.to))
                    .collect();
                Some(list(messages))
            }
            "isolate" => {
                let n = id(arg(1))?;
                self.cluster()?.isolate(n);
                None
            }
            "cut" => {
                let (a, b) = (id(arg(1))?, id(arg(2))?);
                self.cluster()?.cut.insert((a, b));
                None
            }
            "cut-oneway" => {
                let (a, b) = (id(arg(1))?, id(arg(2))?);
                self.cluster()?.cut_oneway.insert((a, b));
                None
            }
            "leaders" => {
                let c = self.cluster()?;
                let count = c
                    .running()
                    .into_iter()
                    .filter(|&n| c.role(n) == Some(Role::Leader))
                    .count();
                Some(count.to_string())
            }
            "partition" => {
                let mut groups = vec![Vec::new()];
                for w in &words[1..] {
                    if *w == "/" {
                        groups.push(Vec::new());
                    } else {
                        groups
                            .last_mut()
                            .expect("a group")
                            .push(w.parse().map_err(|_| format!("bad node {w}"))?);
                    }
                }
                self.cluster()?.partition(&groups);
                None
            }
            "drop" => {
                let kind = arg(1).ok_or("missing kind")?.to_string();
                self.cluster()?.drop_kinds.insert(kind);
                None
            }
            "heal" => {
                self.cluster()?.heal();
                None
            }
            "stop" => {
                let n = id(arg(1))?;
                self.cluster()?.stop(n);
                None
            }
            "start" => {
                let n = id(arg(1))?;
                self.cluster()?.start(n);
                None
            }
            "restart" => {
                let n = id(arg(1))?;
                self.cluster()?.restart(n);
                None
            }
            "compact" => {
                let n = id(arg(1))?;
                self.cluster()?.compact(n);
                None
            }
            other => return Err(format!("unknown step {other:?}")),
        })
    }
}

fn run_script(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).expect("readable script");
    let mut runner = Runner { cluster: None };
    let mut failures = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{}:{}", path.display(), number + 1);
        let (command, expected) = match line.split_once("->") {
            Some((c, e)) => (c.trim(), Some(e.trim())),
            None => (line, None),
        };
        let words: Vec<&str> = command.split_whitespace().collect();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let shown = runner.step(&words, expected)?;
            if let Some(c) = runner.cluster.as_ref() {
                c.check_invariants();
            }
            Ok::<_, String>(shown)
        }));
        match result {
            Ok(Ok(shown)) => {
                if let (Some(expected), Some(shown)) = (expected, shown.as_deref())
                    && expected != shown
                {
                    failures.push(format!(
                        "{place}: {command}\n  expected: {expected}\n  actual:   {shown}"
                    ));
                }
            }
            Ok(Err(problem)) => failures.push(format!("{place}: {command}: {problem}")),
            Err(_) => {
                failures.push(format!("{place}: {command}: panicked (see above)"));
                break;
            }
        }
    }
    failures
}

#[test]
fn raft_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .expect("scripts directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        // RAFT_SCRIPT=name runs only the scripts whose file name contains `name`.
        .filter(|p| {
            std::env::var("RAFT_SCRIPT").map_or(true, |only| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&only))
            })
        })
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    let failures: Vec<String> = paths.iter().flat_map(|p| run_script(p)).collect();
    assert!(
        failures.is_empty(),
        "{} failing steps:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
