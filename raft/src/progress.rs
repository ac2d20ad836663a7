//! The leader's view of each follower: how much of the log it has (match), what to send next
//! (next), and how to send it.
//!
//! - **Probe**: the follower's position is unknown; send one append at a time and wait for
//!   the answer (or a heartbeat response) before sending the next.
//! - **Replicate**: the follower is in sync; stream appends optimistically (`next` moves ahead
//!   of `match`), at most `max_inflight` unacknowledged messages at a time, so a slow follower
//!   cannot make the leader buffer without limit.
//! - **Snapshot**: a snapshot is on its way; send nothing else until it is acknowledged.

use std::collections::{BTreeMap, VecDeque};

use crate::types::{ConfState, Index, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    Probe,
    Replicate,
    Snapshot,
}

#[derive(Clone, Debug)]
pub struct Progress {
    pub matched: Index,
    pub next: Index,
    pub state: ProgressState,
    /// Probe: an append is outstanding.
    pub probe_sent: bool,
    /// Snapshot: the index of the snapshot being sent.
    pub pending_snapshot: Index,
    /// Snapshot: heartbeat responses received while waiting for the snapshot's answer.
    pub snapshot_wait: usize,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// Last indexes of unacknowledged appends (Replicate).
    inflights: VecDeque<Index>,
    max_inflight: usize,
}

impl Progress {
    pub fn new(next: Index, max_inflight: usize) -> Progress {
        Progress {
            matched: 0,
            next,
            state: ProgressState::Probe,
            probe_sent: false,
            pending_snapshot: 0,
            snapshot_wait: 0,
            recent_active: false,
            inflights: VecDeque::new(),
            max_inflight: max_inflight.max(1),
        }
    }

    fn reset(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.snapshot_wait = 0;
        self.inflights.clear();
        self.state = state;
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise right after what matches.
        let next = if self.state == ProgressState::Snapshot {
            self.matched.max(self.pending_snapshot) + 1
        } else {
            self.matched + 1
        };
        self.reset(ProgressState::Probe);
        self.next = next;
    }

    pub fn become_replicate(&mut self) {
        self.reset(ProgressState::Replicate);
        self.next = self.matched + 1;
    }

    pub fn become_snapshot(&mut self, snapshot_index: Index) {
        self.reset(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
    }

    /// Whether the leader must hold back appends to this follower.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.len() >= self.max_inflight,
            ProgressState::Snapshot => true,
        }
    }

    /// The follower acknowledged entries up to `index`; false if that is old news.
    pub fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.matched;
        if updated {
            self.matched = index;
            self.probe_sent = false;
        }
        self.next = self.next.max(index + 1);
        updated
    }

    /// An append whose last entry is `last` was sent (Replicate).
    pub fn sent(&mut self, last: Index, entries: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entries > 0 {
                    self.next = last + 1;
                    self.inflights.push_back(last);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot => {}
        }
    }

    /// Unacknowledged appends in flight (Replicate).
    pub fn inflight(&self) -> usize {
        self.inflights.len()
    }

    /// Frees the oldest in-flight slot (its append may have been lost).
    pub fn free_first(&mut self) {
        self.inflights.pop_front();
    }

    /// Frees the in-flight slots of appends acknowledged up to `index`.
    pub fn free_to(&mut self, index: Index) {
        while self.inflights.front().is_some_and(|&last| last <= index) {
            self.inflights.pop_front();
        }
    }

    /// The follower rejected an append at `rejected`; `hint` is where it suggests probing.
    /// Returns false for a stale rejection.
    pub fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.matched {
                return false;
            }
            self.next = self.matched + 1;
            return true;
        }
        if self.next.checked_sub(1) != Some(rejected) {
            return false;
        }
        self.next = (rejected.min(hint + 1)).max(self.matched + 1).max(1);
        self.probe_sent = false;
        true
    }
}

/// Progress of every member, and quorum arithmetic over the voters.
#[derive(Clone, Debug, Default)]
pub struct Tracker {
    pub conf: ConfState,
    pub progress: BTreeMap<NodeId, Progress>,
    pub votes: BTreeMap<NodeId, bool>,
    max_inflight: usize,
}

/// Outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

impl Tracker {
    pub fn new(conf: ConfState, max_inflight: usize) -> Tracker {
        let mut tracker = Tracker {
            conf: ConfState::default(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        };
        tracker.set_conf(conf, 1);
        tracker
    }

    /// Adopts a new membership; new members start probing at `next`.
    pub fn set_conf(&mut self, conf: ConfState, next: Index) {
        self.progress.retain(|id, _| conf.contains(*id));
        for id in conf.members() {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next, self.max_inflight));
        }
        self.conf = conf;
    }

    /// Resets every follower's progress (a new leader: all probe from `next`).
    pub fn reset_all(&mut self, next: Index) {
        for progress in self.progress.values_mut() {
            *progress = Progress::new(next, self.max_inflight);
        }
    }

    pub fn quorum(&self) -> usize {
        self.conf.voters.len() / 2 + 1
    }

    /// The largest index replicated on a majority of voters.
    pub fn committed_index(&self) -> Index {
        let mut matched: Vec<Index> = self
            .conf
            .voters
            .iter()
            .map(|id| self.progress.get(id).map_or(0, |p| p.matched))
            .collect();
        if matched.is_empty() {
            return 0;
        }
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    pub fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub fn vote_result(&self) -> VoteResult {
        let granted = self
            .conf
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&true))
            .count();
        let rejected = self
            .conf
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        if granted >= self.quorum() {
            VoteResult::Won
        } else if rejected > self.conf.voters.len() - self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }

    /// Whether a majority of voters (counting `leader`) was heard from recently.
    pub fn quorum_active(&self, leader: NodeId) -> bool {
        let active = self
            .conf
            .voters
            .iter()
            .filter(|id| **id == leader || self.progress.get(id).is_some_and(|p| p.recent_active))
            .count();
        active >= self.quorum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_index_is_the_majority_match() {
        let mut t = Tracker::new(ConfState::with_voters([1, 2, 3, 4, 5]), 8);
        for (id, m) in [(1, 9), (2, 7), (3, 5), (4, 3), (5, 1)] {
            t.progress.get_mut(&id).unwrap().matched = m;
        }
        assert_eq!(t.committed_index(), 5);
        // Learners do not count.
        let mut conf = t.conf.clone();
        conf.learners.insert(6);
        t.set_conf(conf, 10);
        t.progress.get_mut(&6).unwrap().matched = 100;
        assert_eq!(t.committed_index(), 5);
    }

    #[test]
    fn inflights_bound_replication() {
        let mut p = Progress::new(1, 2);
        p.become_replicate();
        p.sent(1, 1);
        p.sent(2, 1);
        assert!(p.is_paused());
        p.maybe_update(1);
        p.free_to(1);
        assert!(!p.is_paused());
    }

    #[test]
    fn votes_need_a_majority_of_voters() {
        let mut t = Tracker::new(ConfState::with_voters([1, 2, 3]), 8);
        t.record_vote(1, true);
        assert_eq!(t.vote_result(), VoteResult::Pending);
        t.record_vote(2, false);
        assert_eq!(t.vote_result(), VoteResult::Pending);
        t.record_vote(3, true);
        assert_eq!(t.vote_result(), VoteResult::Won);
        let mut lost = Tracker::new(ConfState::with_voters([1, 2, 3]), 8);
        lost.record_vote(2, false);
        lost.record_vote(3, false);
        assert_eq!(lost.vote_result(), VoteResult::Lost);
    }
}
