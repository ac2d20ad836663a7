//! [`RawNode`]: how an application drives Raft, and [`Ready`]: the batch of work Raft hands
//! back.
//!
//! # Driving loop
//!
//! ```text
//! loop {
//!     on a timer:            node.tick()
//!     on a network message:  node.step(message)
//!     on a client request:   node.propose(data) / propose_conf_change / read_index / transfer_leader
//!     if node.has_ready() {
//!         let ready = node.ready();
//!         1. persist ready.snapshot (if any), ready.entries and ready.hard_state, durably;
//!         2. send ready.messages (report_unreachable / report_snapshot when a send fails);
//!         3. apply ready.snapshot, then ready.committed_entries in order (calling
//!            node.apply_conf_change for membership entries); serve ready.read_states
//!            once their index is applied;
//!         node.advance(ready);
//!     }
//!     (or: hand ready.committed_entries to another thread, call
//!      node.advance_applying_elsewhere(ready), and node.applied_to(index) once applied)
//! }
//! ```
//!
//! Persisting before sending is what makes a vote or an acknowledgement a promise that
//! survives a crash (§5.1).

use crate::config::Config;
use crate::message::Message;
use crate::raft::{Raft, RaftError, Role};
use crate::read_only::ReadState;
use crate::storage::Storage;
use crate::types::{ConfChange, ConfState, Entry, HardState, Index, NodeId, Snapshot, Term};

/// State that is not persisted: who leads, and this node's role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoftState {
    pub leader: Option<NodeId>,
    pub role: Role,
}

/// Work for the application. See the module documentation for the order.
#[derive(Clone, Debug, Default)]
pub struct Ready {
    pub soft_state: Option<SoftState>,
    pub hard_state: Option<HardState>,
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Entry>,
    pub messages: Vec<Message>,
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
}

/// A summary of a node's state, for tests and monitoring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub conf: ConfState,
}

pub struct RawNode<S: Storage> {
    pub raft: Raft<S>,
    prev_soft: SoftState,
    prev_hard: HardState,
}

impl<S: Storage> RawNode<S> {
    pub fn new(config: Config, storage: S) -> Result<RawNode<S>, RaftError> {
        let raft = Raft::new(config, storage)?;
        let prev_hard = raft.hard_state();
        let prev_soft = SoftState {
            leader: raft.leader,
            role: raft.role,
        };
        Ok(RawNode {
            raft,
            prev_soft,
            prev_hard,
        })
    }

    pub fn tick(&mut self) {
        self.raft.tick();
    }

    pub fn step(&mut self, message: Message) -> Result<(), RaftError> {
        self.raft.step(message)
    }

    pub fn campaign(&mut self) {
        self.raft.hup(false);
    }

    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        self.raft.propose(data)
    }

    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<(), RaftError> {
        self.raft.propose_conf_change(change)
    }

    /// See [`Raft::propose_conf_change_with_context`].
    pub fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: Vec<u8>,
    ) -> Result<(), RaftError> {
        self.raft.propose_conf_change_with_context(change, context)
    }

    pub fn apply_conf_change(&mut self, change: ConfChange) -> ConfState {
        self.raft.apply_conf_change(change)
    }

    pub fn transfer_leader(&mut self, target: NodeId) {
        self.raft.transfer_leader(target);
    }

    /// See [`Raft::report_unreachable`].
    pub fn report_unreachable(&mut self, id: NodeId) {
        self.raft.report_unreachable(id);
    }

    /// See [`Raft::report_snapshot`].
    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        self.raft.report_snapshot(id, success);
    }

    /// See [`Raft::forget_quorum_activity`].
    pub fn forget_quorum_activity(&mut self) {
        self.raft.forget_quorum_activity();
    }

    pub fn read_index(&mut self, context: Vec<u8>) {
        self.raft.read_index(context);
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            leader: self.raft.leader,
            role: self.raft.role,
        }
    }

    pub fn has_ready(&self) -> bool {
        let log = &self.raft.log;
        self.soft_state() != self.prev_soft
            || self.raft.hard_state() != self.prev_hard
            || !log.unstable_entries().is_empty()
            || log.pending_snapshot().is_some()
            || log.committed > log.applying.max(log.first_index() - 1)
            || !self.raft.msgs.is_empty()
            || !self.raft.read_states.is_empty()
    }

    pub fn ready(&mut self) -> Ready {
        let soft = self.soft_state();
        let hard = self.raft.hard_state();
        let log = &self.raft.log;
        Ready {
            soft_state: (soft != self.prev_soft).then_some(soft),
            hard_state: (hard != self.prev_hard).then_some(hard),
            snapshot: log.pending_snapshot().cloned(),
            entries: log.unstable_entries().to_vec(),
            committed_entries: log.next_committed_entries(u64::MAX),
            messages: std::mem::take(&mut self.raft.msgs),
            read_states: std::mem::take(&mut self.raft.read_states),
        }
    }

    /// The application has done everything `ready` asked (persisted, sent, applied).
    pub fn advance(&mut self, ready: Ready) {
        if let Some(soft) = ready.soft_state {
            self.prev_soft = soft;
        }
        if let Some(hard) = ready.hard_state {
            self.prev_hard = hard;
        }
        if let Some(snapshot) = &ready.snapshot {
            self.raft.log.stable_snapshot(snapshot.meta.index);
            self.raft.log.applied_to(snapshot.meta.index);
        }
        if let Some(last) = ready.entries.last() {
            self.raft.log.stable_to(last.index, last.term);
        }
        if let Some(last) = ready.committed_entries.last() {
            self.raft.log.applied_to(last.index);
            self.raft.on_applied();
        }
    }

    /// Like [`RawNode::advance`], except that the committed entries of `ready` were only
    /// handed out to be applied elsewhere (an apply pool): the next Ready starts after them,
    /// and the application reports their applying with [`RawNode::applied_to`] later. Entries
    /// it dropped from `ready.committed_entries` (a suffix) are handed out again.
    pub fn advance_applying_elsewhere(&mut self, mut ready: Ready) {
        let committed = std::mem::take(&mut ready.committed_entries);
        self.advance(ready);
        if let Some(last) = committed.last() {
            self.raft.log.applying_to(last.index);
        }
    }

    /// The application applied every committed entry up to `index`.
    pub fn applied_to(&mut self, index: Index) {
        if index > self.raft.log.applied {
            self.raft.log.applied_to(index);
            self.raft.on_applied();
        }
    }

    pub fn status(&self) -> Status {
        Status {
            id: self.raft.id,
            term: self.raft.term,
            vote: self.raft.vote,
            role: self.raft.role,
            leader: self.raft.leader,
            commit: self.raft.log.committed,
            applied: self.raft.log.applied,
            last_index: self.raft.log.last_index(),
            conf: self.raft.conf_state().clone(),
        }
    }

    pub fn storage(&self) -> &S {
        &self.raft.log.storage
    }

    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.raft.log.storage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    /// Persists a Ready into `node`'s storage; returns its committed entries' indexes.
    fn persist(node: &mut RawNode<MemStorage>, ready: &Ready) -> Vec<Index> {
        let storage = node.storage_mut();
        if let Some(hard) = &ready.hard_state {
            storage.set_hard_state(hard.clone());
        }
        storage.append(&ready.entries).unwrap();
        ready.committed_entries.iter().map(|e| e.index).collect()
    }

    #[test]
    fn entries_applied_elsewhere_are_handed_out_once_and_count_as_applied_when_reported() {
        let storage = MemStorage::new_with_conf(ConfState::with_voters([1]));
        let mut node = RawNode::new(Config::new(1), storage).unwrap();
        node.campaign();
        let mut handed_out = Vec::new();
        for value in [b"a".to_vec(), b"b".to_vec()] {
            while node.has_ready() {
                let ready = node.ready();
                handed_out.extend(persist(&mut node, &ready));
                node.advance_applying_elsewhere(ready);
            }
            node.propose(value).unwrap();
        }
        while node.has_ready() {
            let ready = node.ready();
            handed_out.extend(persist(&mut node, &ready));
            node.advance_applying_elsewhere(ready);
        }
        // The leader's empty entry and both proposals, each handed out exactly once.
        assert_eq!(handed_out, vec![1, 2, 3]);
        assert_eq!(node.status().commit, 3);
        assert_eq!(node.status().applied, 0, "nothing reported applied yet");
        assert!(
            !node.has_ready(),
            "handed-out entries are not handed out again"
        );
        node.applied_to(2);
        assert_eq!(node.status().applied, 2);
        node.applied_to(3);
        assert_eq!(node.status().applied, 3);
        assert!(!node.has_ready());
    }

    #[test]
    fn entries_dropped_from_a_ready_are_handed_out_again() {
        let storage = MemStorage::new_with_conf(ConfState::with_voters([1]));
        let mut node = RawNode::new(Config::new(1), storage).unwrap();
        node.campaign();
        node.propose(b"a".to_vec()).unwrap();
        node.propose(b"b".to_vec()).unwrap();
        let mut first = Vec::new();
        while node.has_ready() {
            let mut ready = node.ready();
            persist(&mut node, &ready);
            if first.is_empty() && !ready.committed_entries.is_empty() {
                // The application takes only the first committed entry this time.
                ready.committed_entries.truncate(1);
                first.push(ready.committed_entries[0].index);
                node.advance_applying_elsewhere(ready);
                break;
            }
            node.advance_applying_elsewhere(ready);
        }
        assert!(node.has_ready(), "the rest is still to hand out");
        let again: Vec<Index> = node
            .ready()
            .committed_entries
            .iter()
            .map(|e| e.index)
            .collect();
        assert_eq!(first.len(), 1);
        assert_eq!(again.first(), Some(&(first[0] + 1)));
    }
}
