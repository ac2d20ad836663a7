//! Seeded randomized simulation of Raft clusters.
//!
//! Each run builds a cluster of 3–5 nodes (pre-vote and check-quorum usually on, sometimes
//! off) with the harness in `support`, then takes a few thousand random steps: ticks, delivery
//! rounds over a network that drops, duplicates, reorders and delays messages at changing
//! rates, proposals of unique values on random nodes, read-index requests, leader transfers,
//! forced elections, log compactions (so followers catch up by snapshot), partitions (an
//! isolated node, a split into two groups, a cut link), dropped message kinds, and node
//! crashes (stop, later start; or an immediate restart), mostly keeping a majority up but
//! sometimes only a minority.
//!
//! After every step it checks:
//! - Election Safety: at most one leader per term (asserted in `Cluster::process_ready`, and
//!   on the nodes' roles by [`support::CommitHistory`]);
//! - Log Matching and state machine safety on the current logs (`Cluster::check_invariants`);
//! - that a committed entry never changes, and Leader Completeness: every leader holds every
//!   entry committed by its term ([`support::CommitHistory`]);
//! - each node's state machine, modelled here: entries are applied in index order without gaps,
//!   a snapshot restores exactly the state its compacting node had at that index, and a
//!   node's state is always the committed entries up to its applied index;
//! - reads: a read-index answer is at least the highest index known committed when the read
//!   was requested.
//!
//! Every 1000 steps, and at the end of a run, the network is healed and every node started, and
//! liveness is checked: a leader emerges, every node applies the same sequence of entries,
//! nothing seen committed was lost, and a new write commits on every node.
//!
//! Every random choice comes from the seed (the harness `Rng` for the network and the steps,
//! `Config::seed` for election timeouts), so a seed replays exactly. Replay one seed, showing
//! every step, with:
//!
//! ```text
//! RAFT_SEED=7 RAFT_TRACE=1 cargo test -p raft --test simulation -- --nocapture
//! ```
//!
//! `RAFT_STEPS=n` changes the number of steps per run; `RAFT_SEEDS=n` runs seeds `0..n`
//! instead of the default set (for longer soak runs).
//!
//! The membership variant (`membership_simulation`) also proposes random membership changes
//! on the leader: add a learner, add a voter, remove a member (for the leader itself: transfer
//! the leadership away first, as a leader does not remove itself), over ids 1..=7, creating
//! empty nodes for new ids (they join by snapshot). Its liveness checks cover the members of
//! the settled leader's configuration; removed nodes may stay behind.

mod support;

use std::collections::{BTreeMap, VecDeque};
use std::panic::{self, AssertUnwindSafe};

use raft::{EntryKind, Index, NodeId, Role, Storage, Term};
use support::{Cluster, CommitHistory, Rng};

/// Seeds run by default, and steps per run.
const SEEDS: u64 = 20;
const STEPS: usize = 3000;
/// Steps between liveness checkpoints (a run also ends with one).
const CHECKPOINT: usize = 1000;
/// Ticks allowed after healing for the cluster to elect a leader and catch every node up.
const SETTLE_TICKS: usize = 500;
/// More messages than this in flight at once means the nodes are flooding each other.
const MAX_IN_FLIGHT: usize = 10_000;
/// Operations kept for the failure report.
const RECENT: usize = 40;

/// Message kinds the network may drop for a while.
const KINDS: [&str; 10] = [
    "PreVote",
    "PreVoteResponse",
    "Vote",
    "VoteResponse",
    "Append",
    "AppendResponse",
    "Heartbeat",
    "HeartbeatResponse",
    "Snapshot",
    "TimeoutNow",
];

/// The modelled state machine of one node: the values it applied, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Machine {
    /// The last index applied (by entry or snapshot).
    applied: Index,
    values: Vec<String>,
    /// How many of the harness's `Node::applied` entries were folded in.
    seen: usize,
    /// The harness's `Node::restored_from` when last looked at.
    restored_from: Index,
    /// How many of the node's read states were checked.
    reads_seen: usize,
}

#[derive(Debug, Default)]
struct Stats {
    proposals: usize,
    snapshots_restored: usize,
    reads_answered: usize,
    crashes: usize,
    partitions: usize,
    max_in_flight: usize,
}

struct Sim {
    seed: u64,
    /// Whether random membership changes are proposed.
    membership: bool,
    cluster: Cluster,
    history: CommitHistory,
    machines: BTreeMap<NodeId, Machine>,
    /// The state each snapshot was taken with, by (index, term).
    snapshots: BTreeMap<(Index, Term), Vec<String>>,
    /// Per read context: the highest index known committed when the read was requested.
    reads: BTreeMap<Vec<u8>, Index>,
    next_value: u64,
    /// The step at which the current partition / dropped kind heals, and stopped nodes start.
    partition_until: Option<usize>,
    drop_kind_until: Option<usize>,
    down_until: BTreeMap<NodeId, usize>,
    step: usize,
    /// Liveness checkpoints passed.
    checkpoints: usize,
    recent: VecDeque<String>,
    trace: bool,
    /// A hash of everything that happened, to check that a replay is identical.
    fingerprint: u64,
    stats: Stats,
}

impl Sim {
    fn new(seed: u64, membership: bool) -> Sim {
        // Cluster shape from the seed alone (the harness Rng lives inside the cluster).
        let mut setup = Rng::new(seed ^ 0x5EED);
        let size = 3 + seed % 3;
        let (pre_vote, check_quorum) = if setup.chance(60) {
            (true, true)
        } else {
            (setup.chance(50), setup.chance(50))
        };
        let ids: Vec<NodeId> = (1..=size).collect();
        let cluster = Cluster::new(&ids, pre_vote, check_quorum, seed);
        Sim {
            seed,
            membership,
            cluster,
            history: CommitHistory::default(),
            machines: ids.iter().map(|&id| (id, Machine::default())).collect(),
            snapshots: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_value: 0,
            partition_until: None,
            drop_kind_until: None,
            down_until: BTreeMap::new(),
            step: 0,
            checkpoints: 0,
            recent: VecDeque::new(),
            trace: std::env::var_os("RAFT_TRACE").is_some(),
            fingerprint: 0xcbf2_9ce4_8422_2325,
            stats: Stats::default(),
        }
    }

    fn describe(&self) -> String {
        let config = &self.cluster.nodes.values().next().expect("a node").config;
        format!(
            "{} nodes, pre_vote={}, check_quorum={}, membership changes={}",
            self.cluster.nodes.len(),
            config.pre_vote,
            config.check_quorum,
            self.membership
        )
    }

    // ------------------------------------------------------------ randomness and logging

    fn below(&mut self, n: u64) -> u64 {
        self.cluster.rng.below(n)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.cluster.rng.chance(percent)
    }

    fn pick(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        if ids.is_empty() {
            return None;
        }
        let i = self.below(ids.len() as u64) as usize;
        Some(ids[i])
    }

    fn all_ids(&self) -> Vec<NodeId> {
        self.cluster.nodes.keys().copied().collect()
    }

    fn quorum(&self) -> usize {
        self.cluster.nodes.len() / 2 + 1
    }

    fn hash(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.fingerprint = (self.fingerprint ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn log(&mut self, op: String) {
        self.hash(op.as_bytes());
        if self.trace {
            println!("step {}: {op}", self.step);
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("{}: {op}", self.step));
    }

    /// One line per node: role, term, leader, commit, applied, first and last index.
    fn status(&self) -> String {
        let mut lines = Vec::new();
        for (&id, node) in &self.cluster.nodes {
            let line = match node.raw.as_ref() {
                None => format!("  {id}: stopped"),
                Some(raw) => {
                    let s = raw.status();
                    let mut line = format!(
                        "  {id}: {:?} term={} leader={:?} commit={} applied={} first={} last={} \
                         last_term={} vote={:?} voters={:?} learners={:?}",
                        s.role,
                        s.term,
                        s.leader,
                        s.commit,
                        s.applied,
                        raw.raft.log.first_index(),
                        s.last_index,
                        raw.raft.log.last_term(),
                        s.vote,
                        s.conf.voters,
                        s.conf.learners
                    );
                    if s.role == Role::Leader {
                        line += &format!(" transferee={:?} progress:", raw.raft.lead_transferee);
                        for (to, p) in &raw.raft.tracker.progress {
                            line += &format!(
                                " {to}={:?}(match={} next={} pending_snapshot={} probe_sent={})",
                                p.state, p.matched, p.next, p.pending_snapshot, p.probe_sent
                            );
                        }
                    }
                    line
                }
            };
            lines.push(line);
        }
        lines.join("\n")
    }

    // ------------------------------------------------------------ driving the nodes

    /// Handles node `id`'s Ready, if it has one, and folds what it applied into the model.
    fn process(&mut self, id: NodeId) {
        if self.cluster.process_ready(id) {
            self.observe_applied(id);
            self.history.observe(&self.cluster, id);
        }
    }

    fn process_all(&mut self) {
        for id in self.cluster.running() {
            self.process(id);
        }
    }

    fn tick_all(&mut self) {
        for id in self.cluster.running() {
            self.cluster.node(id).tick();
        }
    }

    fn deliver(&mut self) {
        let in_flight = self.cluster.network.len() + self.cluster.delayed.len();
        self.stats.max_in_flight = self.stats.max_in_flight.max(in_flight);
        assert!(
            in_flight <= MAX_IN_FLIGHT,
            "message storm: {in_flight} messages in flight"
        );
        self.cluster.deliver_with_delays();
    }

    // ------------------------------------------------------------ the model

    /// Folds the snapshot node `id` restored and the entries it applied since last time into
    /// its modelled state machine, checking their order and the reads it was answered.
    fn observe_applied(&mut self, id: NodeId) {
        let node = &self.cluster.nodes[&id];
        let Some(raw) = node.raw.as_ref() else { return };
        let term = raw.raft.term;
        let machine = self.machines.get_mut(&id).expect("machine");
        if node.restored_from != machine.restored_from {
            let index = node.restored_from;
            assert!(
                index > machine.applied,
                "node {id} restored a snapshot at {index}, not after its applied index {}",
                machine.applied
            );
            let snapshot_term = self.cluster.storage(id).term(index).expect("snapshot term");
            let state = self
                .snapshots
                .get(&(index, snapshot_term))
                .unwrap_or_else(|| {
                    panic!(
                        "node {id} restored a snapshot at ({index}, {snapshot_term}) no node took"
                    )
                });
            let committed = committed_values(&self.history, index);
            assert!(
                *state == committed,
                "node {id} restored a snapshot at {index} whose state is not the committed \
                 entries up to there:\n  snapshot:  {state:?}\n  committed: {committed:?}"
            );
            machine.values = state.clone();
            machine.applied = index;
            machine.restored_from = index;
            self.stats.snapshots_restored += 1;
        }
        assert!(
            node.applied.len() >= machine.seen,
            "node {id} forgot entries it applied"
        );
        for entry in &node.applied[machine.seen..] {
            assert_eq!(
                entry.index,
                machine.applied + 1,
                "node {id} applied entry {} right after {}",
                entry.index,
                machine.applied
            );
            machine.applied = entry.index;
            if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                machine
                    .values
                    .push(String::from_utf8_lossy(&entry.data).into_owned());
            }
            self.history.record(entry, id, term);
        }
        machine.seen = node.applied.len();
        assert_eq!(
            raw.raft.log.applied, machine.applied,
            "node {id}: Raft's applied index and the state machine's disagree"
        );
        for read in &node.read_states[machine.reads_seen..] {
            let required = self.reads.get(&read.context).copied().unwrap_or_else(|| {
                panic!("node {id} got a read state for a context never requested: {read:?}")
            });
            assert!(
                read.index >= required,
                "stale read on node {id}: read index {} for {:?}, but {required} was committed \
                 before the read was requested",
                read.index,
                String::from_utf8_lossy(&read.context)
            );
            self.stats.reads_answered += 1;
        }
        machine.reads_seen = node.read_states.len();
    }

    /// Every check, on the state after a step.
    fn check(&mut self) {
        self.cluster.check_invariants();
        self.history.check(&self.cluster);
        // A cheap summary of every node, so that replays can be compared.
        let summary: Vec<u8> = self
            .cluster
            .nodes
            .values()
            .flat_map(|n| match n.raw.as_ref() {
                None => vec![0],
                Some(r) => [
                    r.raft.term,
                    r.raft.log.committed,
                    r.raft.log.last_index(),
                    r.raft.role as u64,
                ]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            })
            .collect();
        self.hash(&summary);
    }

    // ------------------------------------------------------------ random steps

    fn run(&mut self, steps: usize) -> u64 {
        self.log(format!("seed {}: {}", self.seed, self.describe()));
        for step in 0..steps {
            self.step = step;
            self.random_step();
            self.process_all();
            self.check();
            if (step + 1) % CHECKPOINT == 0 && step + 1 < steps {
                self.settle();
            }
        }
        self.step = steps;
        self.settle();
        self.fingerprint
    }

    fn random_step(&mut self) {
        self.scheduled_recoveries();
        let choices = if self.membership { 216 } else { 206 };
        match self.below(choices) {
            200..206 => {
                // An application that steps and ticks in one go before handling its Ready.
                self.log("deliver then tick (no Ready in between)".into());
                self.deliver();
                self.tick_all();
            }
            206..216 => self.conf_change(),
            0..50 => {
                self.log("tick".into());
                self.tick_all();
            }
            50..124 => {
                self.log("deliver".into());
                self.deliver();
            }
            124..154 => self.propose(),
            154..158 => self.read(),
            158..162 => self.transfer(),
            162..168 => self.compact(),
            168..170 => {
                if let Some(id) = self.pick(&self.cluster.running()) {
                    self.log(format!("campaign {id}"));
                    self.cluster.node(id).campaign();
                }
            }
            170..172 => self.partition(),
            172..174 => self.crash(),
            174..175 => {
                if let Some(id) = self.pick(&self.cluster.running()) {
                    self.log(format!("restart {id}"));
                    self.stats.crashes += 1;
                    self.cluster.restart(id);
                }
            }
            175..179 => self.network_faults(),
            179..180 => self.drop_kind(),
            _ => {
                self.log("deliver".into());
                self.deliver();
            }
        }
    }

    /// Proposes a random membership change on the current leader, creating an empty node
    /// for an id the cluster has not seen yet.
    fn conf_change(&mut self) {
        let Some(leader) = self.cluster.leader() else {
            return;
        };
        if self.cluster.role(leader).is_none() {
            return;
        }
        let conf = self.cluster.node(leader).raft.conf_state().clone();
        let id = 1 + self.below(7);
        let change = match self.below(3) {
            0 => raft::ConfChange::AddLearner(id),
            1 => raft::ConfChange::AddVoter(id),
            _ => raft::ConfChange::Remove(id),
        };
        if !self.cluster.nodes.contains_key(&id) {
            let config = &self.cluster.nodes.values().next().expect("a node").config;
            let (pre_vote, check_quorum) = (config.pre_vote, config.check_quorum);
            self.cluster.add_empty_node(id, pre_vote, check_quorum);
            self.machines.insert(id, Machine::default());
        }
        if change == raft::ConfChange::Remove(leader) {
            // A leader does not remove itself: like an operator, move the leadership first
            // (a later step may then remove the old leader).
            let target = conf.voters.iter().copied().find(|&v| v != leader);
            if let Some(target) = target {
                self.log(format!("transfer {leader} -> {target} to remove {leader}"));
                self.cluster.node(leader).transfer_leader(target);
            }
            return;
        }
        let result = self.cluster.node(leader).propose_conf_change(change);
        self.log(format!(
            "conf change {change:?} on {leader}: {result:?} (voters {:?}, learners {:?})",
            conf.voters, conf.learners
        ));
    }

    /// Heals partitions and starts stopped nodes whose time has come.
    fn scheduled_recoveries(&mut self) {
        if self.partition_until.is_some_and(|s| s <= self.step) {
            self.partition_until = None;
            self.cluster.cut.clear();
            self.log("heal partition".into());
        }
        if self.drop_kind_until.is_some_and(|s| s <= self.step) {
            self.drop_kind_until = None;
            self.cluster.drop_kinds.clear();
            self.log("stop dropping message kinds".into());
        }
        let due: Vec<NodeId> = self
            .down_until
            .iter()
            .filter(|&(_, &s)| s <= self.step)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            self.down_until.remove(&id);
            self.log(format!("start {id}"));
            self.cluster.start(id);
        }
    }

    fn propose(&mut self) {
        let Some(id) = self.pick(&self.cluster.running()) else {
            return;
        };
        self.next_value += 1;
        let value = format!("v{}", self.next_value);
        let result = self.cluster.propose(id, &value);
        self.stats.proposals += 1;
        self.log(format!("propose {value} on {id}: {result:?}"));
    }

    fn read(&mut self) {
        let Some(id) = self.pick(&self.cluster.running()) else {
            return;
        };
        let context = format!("r{}", self.reads.len() + 1).into_bytes();
        let committed = self.history.committed.keys().last().copied().unwrap_or(0);
        self.reads.insert(context.clone(), committed);
        self.log(format!(
            "read {} on {id} (committed: {committed})",
            String::from_utf8_lossy(&context)
        ));
        self.cluster.node(id).read_index(context);
    }

    fn transfer(&mut self) {
        let Some(id) = self.pick(&self.cluster.running()) else {
            return;
        };
        let Some(target) = self.pick(&self.all_ids()) else {
            return;
        };
        self.log(format!("transfer leadership to {target} (asked on {id})"));
        self.cluster.node(id).transfer_leader(target);
    }

    /// Compacts a node's log up to its applied index, and remembers the state the snapshot
    /// stands for.
    fn compact(&mut self) {
        let Some(id) = self.pick(&self.cluster.running()) else {
            return;
        };
        let before = self.cluster.storage(id).first_index().expect("first index");
        self.cluster.compact(id);
        let storage = self.cluster.storage(id);
        let after = storage.first_index().expect("first index");
        let index = after - 1;
        let term = storage.term(index).expect("snapshot term");
        self.log(format!("compact {id}: first index {before} -> {after}"));
        if after == before {
            return;
        }
        let machine = &self.machines[&id];
        assert_eq!(
            index, machine.applied,
            "node {id} compacted past what it applied"
        );
        let state = machine.values.clone();
        let previous = self.snapshots.entry((index, term)).or_insert(state.clone());
        assert_eq!(
            *previous, state,
            "two snapshots at index {index}, term {term} with different states"
        );
    }

    fn partition(&mut self) {
        if self.partition_until.is_some() {
            return;
        }
        let ids = self.all_ids();
        self.cluster.cut.clear();
        let description = match self.below(10) {
            0..4 => {
                let id = self.pick(&ids).expect("a node");
                self.cluster.isolate(id);
                format!("isolate {id}")
            }
            4..8 => {
                let mut groups = vec![Vec::new(), Vec::new()];
                for &id in &ids {
                    groups[self.below(2) as usize].push(id);
                }
                if groups[0].is_empty() || groups[1].is_empty() {
                    let moved = groups[0].pop().or_else(|| groups[1].pop());
                    let empty = if groups[0].is_empty() { 0 } else { 1 };
                    groups[empty].extend(moved);
                }
                self.cluster.partition(&groups);
                format!("partition {:?} / {:?}", groups[0], groups[1])
            }
            _ => {
                let a = self.pick(&ids).expect("a node");
                let others: Vec<NodeId> = ids.iter().copied().filter(|&i| i != a).collect();
                let b = self.pick(&others).expect("another node");
                self.cluster.cut.insert((a, b));
                format!("cut link {a}-{b}")
            }
        };
        let duration = 10 + self.below(190) as usize;
        self.partition_until = Some(self.step + duration);
        self.stats.partitions += 1;
        self.log(format!("{description} for {duration} steps"));
    }

    /// Stops a running node for a while. Usually only while a majority stays up; sometimes
    /// (or when the cluster is already down to a minority) regardless.
    fn crash(&mut self) {
        let running = self.cluster.running();
        if running.len() <= 1 {
            return;
        }
        if running.len() <= self.quorum() && !self.chance(20) {
            return;
        }
        let id = self.pick(&running).expect("a running node");
        let duration = 5 + self.below(195) as usize;
        self.down_until.insert(id, self.step + duration);
        self.stats.crashes += 1;
        self.log(format!("stop {id} for {duration} steps"));
        self.cluster.stop(id);
    }

    fn network_faults(&mut self) {
        let c = &mut self.cluster;
        if c.rng.chance(30) {
            c.drop_percent = 0;
            c.duplicate_percent = 0;
            c.reorder = false;
            c.delay_percent = 0;
        } else {
            c.drop_percent = [0, 1, 5, 10, 20, 40][c.rng.below(6) as usize];
            c.duplicate_percent = [0, 5, 10, 30][c.rng.below(4) as usize];
            c.reorder = c.rng.chance(50);
            c.delay_percent = [0, 5, 10, 30][c.rng.below(4) as usize];
            c.max_delay = 1 + c.rng.below(8);
        }
        let op = format!(
            "network: drop {}% duplicate {}% reorder {} delay {}% up to {} rounds",
            c.drop_percent, c.duplicate_percent, c.reorder, c.delay_percent, c.max_delay
        );
        self.log(op);
    }

    fn drop_kind(&mut self) {
        let kind = KINDS[self.below(KINDS.len() as u64) as usize];
        let duration = 10 + self.below(100) as usize;
        self.cluster.drop_kinds.insert(kind.to_string());
        self.drop_kind_until = Some(self.step + duration);
        self.log(format!("drop {kind} messages for {duration} steps"));
    }

    // ------------------------------------------------------------ the end: liveness

    /// The leader every running node follows, if the cluster is quiet and caught up: all nodes
    /// in one term under one leader, everything committed and applied, nothing in flight.
    fn settled_leader(&self) -> Option<NodeId> {
        if self.cluster.in_flight() {
            return None;
        }
        let leader = self.cluster.leader()?;
        let lead = self.cluster.nodes[&leader].raw.as_ref()?;
        let conf = lead.raft.conf_state().clone();
        if !conf.voters.contains(&leader) {
            return None; // A removed leader still handing off.
        }
        let (term, last) = (lead.raft.term, lead.raft.log.last_index());
        self.cluster
            .nodes
            .iter()
            .filter(|(id, _)| conf.contains(**id))
            .map(|(_, n)| n)
            .all(|n| {
                n.raw.as_ref().is_some_and(|r| {
                    r.raft.term == term
                        && r.raft.leader == Some(leader)
                        && r.raft.log.committed == last
                        && r.raft.log.applied == last
                        && !r.has_ready()
                        && r.raft.lead_transferee.is_none()
                })
            })
            .then_some(leader)
    }

    /// One tick, then delivery rounds until the network is quiet (or 10 rounds).
    fn reliable_round(&mut self) {
        self.tick_all();
        self.process_all();
        for _ in 0..10 {
            if !self.cluster.in_flight() {
                break;
            }
            self.deliver();
            self.process_all();
        }
        self.check();
    }

    fn settle_or_fail(&mut self, what: &str) -> NodeId {
        for _ in 0..SETTLE_TICKS {
            if let Some(leader) = self.settled_leader() {
                return leader;
            }
            self.reliable_round();
        }
        panic!(
            "liveness: {what}: no settled leader after {SETTLE_TICKS} ticks on a healed \
             network\n{}",
            self.status()
        );
    }

    /// A liveness checkpoint: heals everything, starts every node, and checks that the cluster
    /// recovers: one leader, every node with the same state, nothing committed lost, and a
    /// new write commits everywhere. The random steps may continue afterwards.
    fn settle(&mut self) {
        self.log("heal everything and start every node".into());
        self.cluster.heal();
        let c = &mut self.cluster;
        (
            c.drop_percent,
            c.duplicate_percent,
            c.reorder,
            c.delay_percent,
        ) = (0, 0, false, 0);
        self.partition_until = None;
        self.drop_kind_until = None;
        for id in std::mem::take(&mut self.down_until).into_keys() {
            self.cluster.start(id);
        }
        self.process_all();
        self.check();
        self.settle_or_fail("after healing");

        // A write after the heal commits everywhere.
        let leader = self.settled_leader().expect("settled");
        self.checkpoints += 1;
        let value = format!("checkpoint {}", self.checkpoints);
        self.log(format!("propose {value} on leader {leader}"));
        self.cluster
            .propose(leader, &value)
            .unwrap_or_else(|e| panic!("liveness: the settled leader {leader} refused: {e}"));
        self.process_all();
        let leader = self.settle_or_fail("after a write on the healed cluster");
        let conf = self.cluster.node(leader).raft.conf_state().clone();

        // Every node applied the same entries: exactly the values seen committed, in order.
        let last = self.history.committed.keys().last().copied().unwrap_or(0);
        let expected = committed_values(&self.history, last);
        assert_eq!(
            self.history.committed.len() as Index,
            last,
            "committed entries were seen with gaps"
        );
        assert_eq!(
            expected.last().map(String::as_str),
            Some(value.as_str()),
            "the write after healing did not commit last"
        );
        for (id, machine) in &self.machines {
            if !conf.contains(*id) {
                continue; // Removed (or never added): it may have stopped where it left.
            }
            assert_eq!(
                machine.applied, last,
                "node {id} applied up to {}, the cluster committed up to {last}",
                machine.applied
            );
            assert!(
                machine.values == expected,
                "node {id}'s state differs from the committed entries:\n  node:      {:?}\n  \
                 committed: {expected:?}",
                machine.values
            );
        }
    }
}

/// The values of the normal entries committed up to `index`, in order.
fn committed_values(history: &CommitHistory, index: Index) -> Vec<String> {
    history
        .committed
        .range(..=index)
        .map(|(_, c)| &c.entry)
        .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect()
}

/// Runs one seed; on failure returns a report with the seed and the last steps.
fn run_seed(seed: u64, steps: usize, membership: bool) -> Result<(u64, String), String> {
    let mut sim = Sim::new(seed, membership);
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| sim.run(steps)));
    match outcome {
        Ok(fingerprint) => {
            let s = &sim.stats;
            let summary = format!(
                "seed {seed} ({}): {} entries committed ({} membership changes, final voters \
                 {:?}), {} terms with a leader, {} proposals, {} reads answered, {} snapshots \
                 restored, {} crashes, {} partitions, at most {} messages in flight",
                sim.describe(),
                sim.history.committed.len(),
                sim.history
                    .committed
                    .values()
                    .filter(|c| c.entry.kind == EntryKind::ConfChange)
                    .count(),
                sim.cluster
                    .leader()
                    .and_then(|l| sim.cluster.nodes[&l].raw.as_ref())
                    .map(|r| r.raft.conf_state().voters.clone()),
                sim.history.leaders.len(),
                s.proposals,
                s.reads_answered,
                s.snapshots_restored,
                s.crashes,
                s.partitions,
                s.max_in_flight
            );
            Ok((fingerprint, summary))
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into());
            let recent: Vec<&str> = sim.recent.iter().map(String::as_str).collect();
            Err(format!(
                "seed {seed} failed at step {} of {steps} ({}): {message}\nnodes:\n{}\nlast \
                 steps:\n  {}\nreplay: RAFT_SEED={seed} RAFT_STEPS={steps} RAFT_TRACE=1 cargo \
                 test -p raft --test simulation {} -- --nocapture",
                sim.step,
                sim.describe(),
                sim.status(),
                recent.join("\n  "),
                if membership {
                    "membership_simulation"
                } else {
                    "randomized_simulation"
                }
            ))
        }
    }
}

fn env(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
    )
}

#[test]
fn randomized_simulation() {
    simulate(false);
}

/// The same, with random membership changes.
#[test]
fn membership_simulation() {
    simulate(true);
}

fn simulate(membership: bool) {
    let steps = env("RAFT_STEPS").map_or(STEPS, |s| s as usize);
    let seeds: Vec<u64> = match (env("RAFT_SEED"), env("RAFT_SEEDS")) {
        (Some(seed), _) => vec![seed],
        (None, Some(count)) => (0..count).collect(),
        (None, None) => (0..SEEDS).collect(),
    };
    let mut failures = Vec::new();
    for seed in seeds {
        match run_seed(seed, steps, membership) {
            Ok((_, summary)) => println!("{summary}"),
            Err(report) => {
                eprintln!("{report}");
                failures.push(report);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} seed(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The same seed gives the same run, step for step.
#[test]
fn a_seed_replays_exactly() {
    let first = run_seed(3, 800, true).expect("seed 3");
    let second = run_seed(3, 800, true).expect("seed 3");
    assert_eq!(first, second);
}
