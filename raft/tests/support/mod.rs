//! A deterministic in-process cluster for Raft tests: nodes with in-memory storage, a network
//! that holds messages until delivered, and filters (cut links, isolated nodes, dropped
//! message kinds, random drops/duplicates/reordering from a seeded generator), plus node
//! restart and log compaction. Invariants every test can check live here too.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use raft::{
    ConfChange, ConfState, Config, Entry, EntryKind, Index, MemStorage, Message, NodeId, RawNode,
    ReadState, Role, Storage, Term,
};

/// The seeded generator for the network's random faults and simulated steps.
pub use raft::rng::Rng;

pub struct Node {
    pub raw: Option<RawNode<MemStorage>>,
    /// The persisted state of a stopped node (a running node's is in `raw`).
    pub storage: MemStorage,
    /// Every entry this node applied, in order (index, term, data).
    pub applied: Vec<Entry>,
    /// The snapshot index this node's state machine was last restored from.
    pub restored_from: Index,
    pub read_states: Vec<ReadState>,
    pub config: Config,
}

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, Node>,
    pub network: Vec<Message>,
    /// Links that drop messages (both directions).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Links that drop messages in one direction only (from, to).
    pub cut_oneway: BTreeSet<(NodeId, NodeId)>,
    /// Message kinds (by name) the network drops.
    pub drop_kinds: BTreeSet<String>,
    pub rng: Rng,
    /// Percent chances of random network faults (0 = reliable).
    pub drop_percent: u64,
    pub duplicate_percent: u64,
    pub reorder: bool,
    /// (term, leader) pairs ever observed, to check election safety.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Network delays, used only by [`Cluster::deliver_with_delays`]: a message put on the
    /// wire is held back with this percent chance, for 1..=`max_delay` delivery rounds.
    pub delay_percent: u64,
    pub max_delay: u64,
    /// Messages held back, with the delivery rounds they still wait.
    pub delayed: Vec<(u64, Message)>,
}

impl Node {
    /// A running node with fresh state over `storage`.
    fn start_new(config: Config, storage: MemStorage) -> Node {
        let raw = RawNode::new(config.clone(), storage.clone()).expect("node");
        Node {
            raw: Some(raw),
            storage,
            applied: Vec::new(),
            restored_from: 0,
            read_states: Vec::new(),
            config,
        }
    }
}

pub fn config(id: NodeId, pre_vote: bool, check_quorum: bool) -> Config {
    let mut config = Config::new(id);
    config.election_tick = 10;
    config.heartbeat_tick = 1;
    config.pre_vote = pre_vote;
    config.check_quorum = check_quorum;
    config.max_inflight = 16;
    config.max_size_per_msg = 1 << 16;
    config
}

impl Cluster {
    pub fn new(voters: &[NodeId], pre_vote: bool, check_quorum: bool, seed: u64) -> Cluster {
        Cluster::with_config(voters, seed, |c| {
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
        })
    }

    /// A cluster whose node configurations `adjust` may change (after the defaults).
    pub fn with_config(voters: &[NodeId], seed: u64, adjust: impl Fn(&mut Config)) -> Cluster {
        let conf = ConfState::with_voters(voters.iter().copied());
        let mut nodes = BTreeMap::new();
        for &id in voters {
            let storage = MemStorage::new_with_conf(conf.clone());
            let mut cfg = config(id, true, true);
            adjust(&mut cfg);
            cfg.seed = seed.wrapping_add(id);
            nodes.insert(id, Node::start_new(cfg, storage));
        }
        Cluster {
            nodes,
            network: Vec::new(),
            cut: BTreeSet::new(),
            cut_oneway: BTreeSet::new(),
            drop_kinds: BTreeSet::new(),
            rng: Rng::new(seed),
            drop_percent: 0,
            duplicate_percent: 0,
            reorder: false,
            leaders: BTreeMap::new(),
            delay_percent: 0,
            max_delay: 0,
            delayed: Vec::new(),
        }
    }

    /// Adds a node that is not (yet) a member: it starts empty and learns everything from the
    /// leader.
    pub fn add_empty_node(&mut self, id: NodeId, pre_vote: bool, check_quorum: bool) {
        let storage = MemStorage::new_with_conf(ConfState::default());
        let cfg = config(id, pre_vote, check_quorum);
        self.nodes.insert(id, Node::start_new(cfg, storage));
    }

    pub fn node(&mut self, id: NodeId) -> &mut RawNode<MemStorage> {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raw.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn running(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raw.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn role(&self, id: NodeId) -> Option<Role> {
        self.nodes.get(&id)?.raw.as_ref().map(|r| r.raft.role)
    }

    pub fn leader(&self) -> Option<NodeId> {
        // The leader of the highest term among running nodes that think they lead.
        self.nodes
            .iter()
            .filter_map(|(id, n)| {
                n.raw
                    .as_ref()
                    .filter(|r| r.raft.role == Role::Leader)
                    .map(|r| (r.raft.term, *id))
            })
            .max()
            .map(|(_, id)| id)
    }

    /// Handles every pending Ready of node `id`: persist, send, apply, advance.
    pub fn process_ready(&mut self, id: NodeId) -> bool {
        let Some(node) = self.nodes.get_mut(&id) else {
            return false;
        };
        let Some(raw) = node.raw.as_mut() else {
            return false;
        };
        if !raw.has_ready() {
            return false;
        }
        let ready = raw.ready();
        // 1. Persist.
        if let Some(snapshot) = &ready.snapshot {
            raw.storage_mut().apply_snapshot(snapshot.clone());
        }
        raw.storage_mut().append(&ready.entries).expect("append");
        if let Some(hard) = &ready.hard_state {
            raw.storage_mut().set_hard_state(hard.clone());
        }
        // 2. Send.
        self.network.extend(ready.messages.iter().cloned());
        // 3. Apply.
        if let Some(snapshot) = &ready.snapshot {
            node.restored_from = snapshot.meta.index;
            node.applied.retain(|e| e.index <= snapshot.meta.index);
        }
        for entry in &ready.committed_entries {
            if entry.kind == EntryKind::ConfChange
                && let Some(change) = ConfChange::decode(&entry.data)
            {
                let conf = raw.apply_conf_change(change);
                raw.storage_mut().set_conf_state(conf);
            }
            node.applied.push(entry.clone());
        }
        node.read_states.extend(ready.read_states.iter().cloned());
        if ready
            .soft_state
            .as_ref()
            .is_some_and(|s| s.role == Role::Leader)
            && let Some(raw) = node.raw.as_ref()
        {
            let term = raw.raft.term;
            if let Some(previous) = self.leaders.insert(term, id) {
                assert_eq!(
                    previous, id,
                    "two leaders in term {term}: {previous} and {id}"
                );
            }
        }
        if let Some(raw) = node.raw.as_mut() {
            raw.advance(ready);
        }
        true
    }

    fn link_up(&self, from: NodeId, to: NodeId) -> bool {
        !self.cut.contains(&(from, to))
            && !self.cut.contains(&(to, from))
            && !self.cut_oneway.contains(&(from, to))
    }

    /// Delivers the messages in flight once (those the delivery produces wait for the next
    /// round). Returns how many were delivered.
    pub fn deliver(&mut self) -> usize {
        let mut messages = std::mem::take(&mut self.network);
        if self.reorder && messages.len() > 1 {
            for i in (1..messages.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                messages.swap(i, j);
            }
        }
        let mut delivered = 0;
        for message in messages {
            if !self.link_up(message.from, message.to)
                || self.drop_kinds.contains(message.body.name())
            {
                continue;
            }
            if self.drop_percent > 0 && self.rng.chance(self.drop_percent) {
                continue;
            }
            let copies = if self.duplicate_percent > 0 && self.rng.chance(self.duplicate_percent) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                if let Some(raw) = self.nodes.get_mut(&message.to).and_then(|n| n.raw.as_mut()) {
                    let _ = raw.step(message.clone());
                    delivered += 1;
                }
            }
        }
        delivered
    }

    /// One delivery round with network delays: held-back messages whose delay is over rejoin
    /// the wire (behind the ones sent since), a random share of the newly sent ones is held
    /// back (`delay_percent`, for 1..=`max_delay` rounds), then [`Cluster::deliver`] delivers
    /// what is on the wire, with its drops, duplicates and reordering. A held-back message
    /// survives partitions healing and its destination restarting, like a slow packet.
    pub fn deliver_with_delays(&mut self) -> usize {
        let mut released = Vec::new();
        for (rounds, message) in std::mem::take(&mut self.delayed) {
            if rounds <= 1 {
                released.push(message);
            } else {
                self.delayed.push((rounds - 1, message));
            }
        }
        if self.delay_percent > 0 {
            for message in std::mem::take(&mut self.network) {
                if self.rng.chance(self.delay_percent) {
                    let rounds = 1 + self.rng.below(self.max_delay.max(1));
                    self.delayed.push((rounds, message));
                } else {
                    self.network.push(message);
                }
            }
        }
        self.network.extend(released);
        self.deliver()
    }

    /// Whether any message is on the wire or held back.
    pub fn in_flight(&self) -> bool {
        !self.network.is_empty() || !self.delayed.is_empty()
    }

    /// Processes readies and delivers messages until nothing moves.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for id in self.running() {
                moved |= self.process_ready(id);
            }
            moved |= self.deliver() > 0;
            if !moved && self.network.is_empty() {
                return;
            }
        }
        panic!("cluster did not stabilize");
    }

    pub fn tick(&mut self, id: NodeId, times: usize) {
        for _ in 0..times {
            self.node(id).tick();
        }
    }

    pub fn tick_all(&mut self, times: usize) {
        for _ in 0..times {
            for id in self.running() {
                self.node(id).tick();
            }
            self.stabilize();
        }
    }

    pub fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys().copied().collect::<Vec<_>>() {
            if other != id {
                self.cut.insert((id, other));
            }
        }
    }

    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (i, a) in groups.iter().enumerate() {
            for b in groups.iter().skip(i + 1) {
                for &x in a {
                    for &y in b {
                        self.cut.insert((x, y));
                    }
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.cut_oneway.clear();
        self.drop_kinds.clear();
    }

    /// Stops a node: its volatile state is lost, its storage is kept.
    pub fn stop(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id)
            && let Some(raw) = node.raw.take()
        {
            node.storage = raw.storage().clone();
        }
        self.network.retain(|m| m.to != id);
    }

    /// Starts a stopped node from its persisted state; it re-applies nothing it applied.
    pub fn start(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        let mut cfg = node.config.clone();
        cfg.applied = node
            .applied
            .last()
            .map_or(node.restored_from, |e| e.index)
            .max(node.restored_from);
        node.raw = Some(RawNode::new(cfg, node.storage.clone()).expect("restart"));
    }

    pub fn restart(&mut self, id: NodeId) {
        self.stop(id);
        self.start(id);
    }

    /// Compacts node `id`'s log up to its applied index.
    pub fn compact(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        let Some(raw) = node.raw.as_mut() else { return };
        let applied = raw.raft.log.applied;
        let conf = raw.raft.conf_state().clone();
        let data = applied_data(&node.applied).join(",").into_bytes();
        let _ = raw.storage_mut().compact(applied, conf, data);
    }

    pub fn propose(&mut self, id: NodeId, data: &str) -> Result<(), raft::RaftError> {
        self.node(id).propose(data.as_bytes().to_vec())
    }

    /// Data of the non-empty normal entries node `id` applied, in order.
    pub fn applied(&self, id: NodeId) -> Vec<String> {
        applied_data(&self.nodes[&id].applied)
    }

    /// The persisted state of a node, running or not.
    pub fn storage(&self, id: NodeId) -> &MemStorage {
        let node = &self.nodes[&id];
        node.raw.as_ref().map_or(&node.storage, |raw| raw.storage())
    }

    /// Checks the safety properties on the current state of every node:
    /// log matching (same index and term → same entries up to there), state machine safety (no
    /// two nodes applied different entries at an index), committed entries present on a
    /// majority.
    pub fn check_invariants(&self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for (i, &a) in ids.iter().enumerate() {
            for &b in &ids[i + 1..] {
                let (na, nb) = (&self.nodes[&a], &self.nodes[&b]);
                // State machine safety.
                // Applied entries are in index order: binary search instead of a scan.
                for ea in &na.applied {
                    if let Ok(found) = nb.applied.binary_search_by_key(&ea.index, |e| e.index) {
                        let eb = &nb.applied[found];
                        assert_eq!(
                            (ea.term, &ea.data),
                            (eb.term, &eb.data),
                            "nodes {a} and {b} applied different entries at index {}",
                            ea.index
                        );
                    }
                }
                // Log matching on persisted logs.
                let (sa, sb) = (self.storage(a), self.storage(b));
                let last = sa
                    .last_index()
                    .unwrap_or(0)
                    .min(sb.last_index().unwrap_or(0));
                let first = sa
                    .first_index()
                    .unwrap_or(1)
                    .max(sb.first_index().unwrap_or(1));
                let mut matched_at = None;
                for index in (first..=last).rev() {
                    if sa.term(index).ok() == sb.term(index).ok() && sa.term(index).is_ok() {
                        matched_at = Some(index);
                        break;
                    }
                }
                if let Some(m) = matched_at {
                    for index in first..=m {
                        assert_eq!(
                            sa.entries(index, index + 1, u64::MAX).ok(),
                            sb.entries(index, index + 1, u64::MAX).ok(),
                            "log matching violated between {a} and {b} at {index} (match at {m})"
                        );
                    }
                }
            }
        }
    }
}

pub fn applied_data(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect()
}

/// An entry seen committed, and a bound on when it was committed.
#[derive(Clone, Debug)]
pub struct Committed {
    pub entry: Entry,
    /// The term of the node that first saw it committed (it applied the entry, or its commit
    /// index covered it). A node only learns of commits made by leaders of its term or earlier,
    /// so the entry was committed in this term or before: every leader of a later term must
    /// hold it (Leader Completeness), and so must a leader of this term.
    pub by_term: Term,
}

/// Everything ever seen committed on any node, to check across time what
/// [`Cluster::check_invariants`] checks on a snapshot of the nodes: a committed entry never
/// changes (state machine safety, even for nodes restored from snapshots since), every leader
/// holds every entry committed up to its term (Leader Completeness), and at most one node
/// leads a term (Election Safety, observed on the nodes' roles directly).
#[derive(Debug, Default)]
pub struct CommitHistory {
    pub committed: BTreeMap<Index, Committed>,
    /// The leader of every term a node was seen leading.
    pub leaders: BTreeMap<Term, NodeId>,
    /// Per node: the commit index up to which its log was recorded.
    recorded: BTreeMap<NodeId, Index>,
    /// Per node: the term it was last seen leading and the committed index up to which its
    /// log was checked (a leader's log only grows, so the check is incremental).
    leader_checked: BTreeMap<NodeId, (Term, Index)>,
}

impl CommitHistory {
    /// Records `entry` as committed, seen by `node` in `term`; panics if a different entry was
    /// committed at its index before.
    pub fn record(&mut self, entry: &Entry, node: NodeId, term: Term) {
        match self.committed.get(&entry.index) {
            Some(before) => assert!(
                before.entry == *entry,
                "committed entry changed at index {}: was {:?}, node {node} (term {term}) has \
                 {:?}",
                entry.index,
                before.entry,
                entry
            ),
            None => {
                self.committed.insert(
                    entry.index,
                    Committed {
                        entry: entry.clone(),
                        by_term: term,
                    },
                );
            }
        }
    }

    /// Records the entries under node `id`'s commit index that were not recorded yet (if it is
    /// running).
    pub fn observe(&mut self, cluster: &Cluster, id: NodeId) {
        let Some(raw) = cluster.nodes.get(&id).and_then(|n| n.raw.as_ref()) else {
            return;
        };
        let log = &raw.raft.log;
        // After a restart the commit index can be lower than before: record from there again.
        let recorded = self.recorded.entry(id).or_default();
        *recorded = (*recorded).min(log.committed);
        let from = (*recorded + 1).max(log.first_index());
        if from <= log.committed {
            let entries = log
                .slice(from, log.committed + 1, u64::MAX)
                .unwrap_or_else(|e| panic!("node {id} cannot read its committed entries: {e}"));
            assert_eq!(
                entries.len() as Index,
                log.committed + 1 - from,
                "node {id}: committed entries {from}..={} are not all in its log",
                log.committed
            );
            *recorded = log.committed;
            let term = raw.raft.term;
            for entry in &entries {
                self.record(entry, id, term);
            }
        } else {
            *recorded = log.committed;
        }
    }

    /// Records every running node's committed entries, then checks Election Safety and Leader
    /// Completeness on every running node that considers itself leader.
    pub fn check(&mut self, cluster: &Cluster) {
        for &id in cluster.nodes.keys() {
            self.observe(cluster, id);
        }
        for (&id, node) in &cluster.nodes {
            let Some(raw) = node.raw.as_ref().filter(|r| r.raft.role == Role::Leader) else {
                continue;
            };
            let term = raw.raft.term;
            let leader = *self.leaders.entry(term).or_insert(id);
            assert_eq!(leader, id, "two leaders in term {term}: {leader} and {id}");
            let checked = self.leader_checked.entry(id).or_insert((term, 0));
            if checked.0 != term {
                *checked = (term, 0);
            }
            let log = &raw.raft.log;
            for (&index, committed) in self.committed.range(checked.1 + 1..) {
                checked.1 = index;
                if committed.by_term > term || index < log.first_index() {
                    // Committed maybe after this (stale) leader's term; or compacted here,
                    // which means applied here, and applied entries are checked on their own.
                    continue;
                }
                let held = log.term(index).ok();
                assert!(
                    held == Some(committed.entry.term),
                    "leader completeness: leader {id} of term {term} lacks entry {index} (term {}) \
                     committed by term {}: it has {}",
                    committed.entry.term,
                    committed.by_term,
                    held.map_or("nothing there".into(), |t| format!("an entry of term {t}"))
                );
            }
        }
    }
}
