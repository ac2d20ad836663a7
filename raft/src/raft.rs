//! The Raft state machine: roles, elections, replication, membership, leadership transfer and
//! read index. Driven by [`Raft::tick`], [`Raft::step`] and the request methods; its outputs
//! are queued messages, read states and the log's unstable/committed entries, which
//! [`crate::RawNode`] packages into a `Ready`.

use crate::config::Config;
use crate::log::RaftLog;
use crate::message::{Message, MessageBody};
use crate::progress::{ProgressState, Tracker, VoteResult};
use crate::read_only::{ReadOnly, ReadState};
use crate::rng::Rng;
use crate::storage::{Storage, StorageError};
use crate::types::{ConfChange, ConfState, Entry, EntryKind, HardState, Index, NodeId, Term};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Why a request was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftError {
    /// Not the leader (and no leader known to forward to), or a leader transfer is in progress.
    ProposalDropped,
    /// A membership change is already pending.
    ConfChangePending,
    /// The leader was asked to remove itself: transfer the leadership first, then let the new
    /// leader remove this node.
    RemoveLeader,
    Storage(StorageError),
}

impl std::fmt::Display for RaftError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftError::ProposalDropped => {
                f.write_str("proposal dropped: not the leader, or a leader transfer is in progress")
            }
            RaftError::ConfChangePending => f.write_str("a membership change is already pending"),
            RaftError::RemoveLeader => {
                f.write_str("the leader cannot remove itself: transfer the leadership first")
            }
            RaftError::Storage(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RaftError {}

pub struct Raft<S: Storage> {
    pub id: NodeId,
    pub term: Term,
    pub vote: Option<NodeId>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub log: RaftLog<S>,
    pub tracker: Tracker,
    pub msgs: Vec<Message>,
    pub read_states: Vec<ReadState>,
    config: Config,
    rng: Rng,
    election_elapsed: usize,
    heartbeat_elapsed: usize,
    randomized_election_timeout: usize,
    /// Index of the latest membership change in the log; a new one waits until it is applied.
    pending_conf_index: Index,
    /// The node leadership is being transferred to.
    pub lead_transferee: Option<NodeId>,
    /// Leader ticks since the current transfer started; it is abandoned after an election
    /// timeout. Separate from `election_elapsed`, which is the check-quorum window and must
    /// not be stretched by a transfer request.
    transfer_elapsed: usize,
    /// Whether this leader sent `TimeoutNow` in its term. The target may campaign at any time
    /// after that (even if the transfer is cancelled or abandoned meanwhile), ignoring the
    /// voters' lease, so the leader's read lease no longer holds for the rest of the term.
    timeout_now_sent: bool,
    /// A `TimeoutNow` of this term arrived while a committed membership change was still
    /// unapplied: campaign once the application has applied it.
    campaign_after_apply: Option<Term>,
    read_only: ReadOnly,
    /// Read requests that arrived before this leader committed an entry of its term.
    pending_reads: Vec<(Vec<u8>, Option<NodeId>)>,
}

impl<S: Storage> Raft<S> {
    pub fn new(config: Config, storage: S) -> Result<Raft<S>, RaftError> {
        config
            .validate()
            .map_err(|e| RaftError::Storage(StorageError::Other(e)))?;
        let (hard_state, conf) = storage.initial_state().map_err(RaftError::Storage)?;
        let log =
            RaftLog::new(storage, hard_state.commit, config.applied).map_err(RaftError::Storage)?;
        let mut raft = Raft {
            id: config.id,
            term: hard_state.term,
            vote: hard_state.vote,
            role: Role::Follower,
            leader: None,
            log,
            tracker: Tracker::new(conf, config.max_inflight),
            msgs: Vec::new(),
            read_states: Vec::new(),
            rng: Rng::new(config.seed),
            config,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            pending_conf_index: 0,
            lead_transferee: None,
            transfer_elapsed: 0,
            timeout_now_sent: false,
            campaign_after_apply: None,
            read_only: ReadOnly::default(),
            pending_reads: Vec::new(),
        };
        raft.reset_timeouts();
        Ok(raft)
    }

    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.tracker.conf
    }

    /// Whether this node may become leader: only voters campaign.
    pub fn promotable(&self) -> bool {
        self.tracker.conf.voters.contains(&self.id)
    }

    fn send(&mut self, to: NodeId, body: MessageBody) {
        let term = if body.is_local_request() {
            0
        } else {
            self.term
        };
        self.msgs.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    fn reset_timeouts(&mut self) {
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        let base = self.config.election_tick as u64;
        self.randomized_election_timeout = self.rng.range(base, 2 * base) as usize;
    }

    fn reset(&mut self, term: Term) {
        if self.term != term {
            self.term = term;
            self.vote = None;
        }
        self.leader = None;
        self.reset_timeouts();
        self.tracker.votes.clear();
        self.tracker.reset_all(self.log.last_index() + 1);
        self.lead_transferee = None;
        self.transfer_elapsed = 0;
        self.timeout_now_sent = false;
        self.read_only.clear();
        self.pending_reads.clear();
    }

    // ---------------------------------------------------------------- roles

    pub fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        self.reset(term);
        self.role = Role::Follower;
        self.leader = leader;
    }

    fn become_pre_candidate(&mut self) {
        // No term bump and no vote: a pre-vote changes nothing if it fails (thesis §9.6).
        self.role = Role::PreCandidate;
        self.leader = None;
        self.tracker.votes.clear();
        self.reset_timeouts();
    }

    fn become_candidate(&mut self) {
        let term = self.term + 1;
        self.reset(term);
        self.role = Role::Candidate;
        self.vote = Some(self.id);
    }

    fn become_leader(&mut self) {
        let term = self.term;
        self.reset(term);
        self.role = Role::Leader;
        self.leader = Some(self.id);
        let last = self.log.last_index();
        if let Some(own) = self.tracker.progress.get_mut(&self.id) {
            own.matched = last;
            own.next = last + 1;
            own.become_replicate();
        }
        // Any membership change still in the uncommitted log counts as pending.
        self.pending_conf_index = last;
        // An empty entry of the new term, so that earlier entries can commit (§5.4.2, §8).
        self.append_entries(vec![Entry::normal(self.term, 0, Vec::new())]);
        self.broadcast_append();
    }

    // ---------------------------------------------------------------- time

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.tick_election();
        }
    }

    fn tick_election(&mut self) {
        self.election_elapsed += 1;
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.hup(false);
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.config.election_tick {
            self.election_elapsed = 0;
            if self.config.check_quorum {
                let quorum_active = self.tracker.quorum_active(self.id);
                for (id, progress) in self.tracker.progress.iter_mut() {
                    if *id != self.id {
                        progress.recent_active = false;
                    }
                }
                if !quorum_active {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed += 1;
            if self.transfer_elapsed >= self.config.election_tick {
                // A transfer that did not finish within an election timeout is abandoned; a
                // leader that is no longer a voter tries again, possibly with another target.
                self.lead_transferee = None;
                self.transfer_elapsed = 0;
                if !self.promotable() {
                    self.hand_off_leadership();
                }
            }
        }
        if self.heartbeat_elapsed >= self.config.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat(self.read_only.last_context());
        }
    }

    /// Forgets which voters answered in the current check-quorum window and restarts the
    /// window: a leader that stopped ticking for a while (a hibernating region) cannot tell
    /// how long ago those answers came, so its read lease holds again only once a majority
    /// answered after this call. The next quorum check is a whole window away, so the leader
    /// has that long to hear from them before it steps down.
    pub fn forget_quorum_activity(&mut self) {
        for (id, progress) in self.tracker.progress.iter_mut() {
            if *id != self.id {
                progress.recent_active = false;
            }
        }
        self.election_elapsed = 0;
    }

    /// Whether a membership change is in the log but not yet applied.
    pub fn has_pending_conf(&self) -> bool {
        self.pending_conf_index > self.log.applied
    }

    // ---------------------------------------------------------------- elections

    /// Starts an election (with a pre-vote first if configured, unless `transfer`).
    pub fn hup(&mut self, transfer: bool) {
        if self.role == Role::Leader || !self.promotable() {
            return;
        }
        // A committed membership change not applied yet may remove this node or change the
        // quorum: campaign only under the configuration the log has decided.
        if self.has_unapplied_conf_change() {
            return;
        }
        if self.config.pre_vote && !transfer {
            self.campaign_pre_vote();
        } else {
            self.campaign(transfer);
        }
    }

    fn has_unapplied_conf_change(&self) -> bool {
        self.log.applied < self.log.committed
            && self
                .log
                .slice(self.log.applied + 1, self.log.committed + 1, u64::MAX)
                .map_or(true, |entries| {
                    entries.iter().any(|e| e.kind == EntryKind::ConfChange)
                })
    }

    /// The leader asks this node to campaign now (a transfer). If a committed membership
    /// change is still unapplied, the campaign waits for it (see [`Raft::on_applied`]).
    fn handle_timeout_now(&mut self) {
        if self.has_unapplied_conf_change() {
            self.campaign_after_apply = Some(self.term);
        } else {
            self.hup(true);
        }
    }

    /// Called after the application applied committed entries: runs a transfer campaign that
    /// was waiting for a membership change to be applied.
    pub fn on_applied(&mut self) {
        if self.campaign_after_apply.is_some()
            && !self.has_unapplied_conf_change()
            && self.campaign_after_apply.take() == Some(self.term)
        {
            self.hup(true);
        }
    }

    fn voters_except_self(&self) -> Vec<NodeId> {
        self.tracker
            .conf
            .voters
            .iter()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    fn campaign_pre_vote(&mut self) {
        self.become_pre_candidate();
        self.tracker.record_vote(self.id, true);
        if self.tracker.vote_result() == VoteResult::Won {
            self.campaign(false);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.voters_except_self() {
            self.msgs.push(Message {
                from: self.id,
                to,
                term: self.term + 1,
                body: MessageBody::PreVote {
                    last_index,
                    last_term,
                },
            });
        }
    }

    fn campaign(&mut self, transfer: bool) {
        self.become_candidate();
        self.tracker.record_vote(self.id, true);
        if self.tracker.vote_result() == VoteResult::Won {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.voters_except_self() {
            self.send(
                to,
                MessageBody::Vote {
                    last_index,
                    last_term,
                    leader_transfer: transfer,
                },
            );
        }
    }

    fn poll(&mut self, from: NodeId, granted: bool) {
        self.tracker.record_vote(from, granted);
        match self.tracker.vote_result() {
            // Removed while campaigning: a non-voter must not lead.
            VoteResult::Won if !self.promotable() => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Won if self.role == Role::PreCandidate => self.campaign(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    /// Whether this node heard from a live leader within the election timeout (its "lease"):
    /// then it ignores vote requests, so a partitioned node cannot depose a healthy leader.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && self.leader.is_some()
            && self.election_elapsed < self.config.election_tick
    }

    fn handle_vote_request(
        &mut self,
        m: &Message,
        pre_vote: bool,
        last_index: Index,
        last_term: Term,
    ) {
        let can_vote = self.vote == Some(m.from)
            || (self.vote.is_none() && self.leader.is_none())
            || (pre_vote && m.term > self.term);
        let grant = can_vote && self.log.is_up_to_date(last_index, last_term);
        if pre_vote {
            // Answer in the candidate's future term when granting, so it counts the vote.
            let term = if grant { m.term } else { self.term };
            self.msgs.push(Message {
                from: self.id,
                to: m.from,
                term,
                body: MessageBody::PreVoteResponse { reject: !grant },
            });
        } else {
            if grant {
                self.vote = Some(m.from);
                self.election_elapsed = 0;
            }
            self.send(m.from, MessageBody::VoteResponse { reject: !grant });
        }
    }

    // ---------------------------------------------------------------- messages

    /// Processes a message from another node (or a forwarded request).
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if m.body.is_local_request() {
            return self.step_local_request(m);
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::Vote {
                    leader_transfer, ..
                } if self.in_lease() && !leader_transfer => {
                    return Ok(()); // Disruptive server (thesis §4.2.3): ignore.
                }
                MessageBody::PreVote { .. } if self.in_lease() => return Ok(()),
                MessageBody::PreVote { .. } => {}
                MessageBody::PreVoteResponse { reject: false } => {}
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::Snapshot { .. } => {
                    self.become_follower(m.term, Some(m.from));
                }
                _ => self.become_follower(m.term, None),
            }
        } else if m.term < self.term {
            match &m.body {
                // A stale leader learns of the new term and steps down (also needed for
                // check-quorum and pre-vote, where higher terms can otherwise be ignored).
                MessageBody::Append { .. } | MessageBody::Heartbeat { .. } => {
                    self.send(
                        m.from,
                        MessageBody::AppendResponse {
                            reject: false,
                            index: 0,
                            hint_index: 0,
                            hint_term: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { reject: true });
                }
                _ => {}
            }
            return Ok(());
        }

        match m.body.clone() {
            MessageBody::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote_request(&m, false, last_index, last_term),
            MessageBody::PreVote {
                last_index,
                last_term,
            } => self.handle_vote_request(&m, true, last_index, last_term),
            MessageBody::VoteResponse { reject } if self.role == Role::Candidate => {
                self.poll(m.from, !reject)
            }
            MessageBody::PreVoteResponse { reject } if self.role == Role::PreCandidate => {
                self.poll(m.from, !reject)
            }
            MessageBody::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => {
                self.become_follower_of(m.term, m.from);
                self.handle_append(m.from, prev_index, prev_term, commit, &entries);
            }
            MessageBody::Heartbeat { commit, context } => {
                self.become_follower_of(m.term, m.from);
                self.log.commit_to(commit.min(self.log.last_index()));
                self.send(m.from, MessageBody::HeartbeatResponse { context });
            }
            MessageBody::Snapshot { snapshot } => {
                self.become_follower_of(m.term, m.from);
                self.handle_snapshot(m.from, snapshot);
            }
            // Leader transfer: campaign at once, skipping pre-vote and the lease.
            MessageBody::TimeoutNow => self.handle_timeout_now(),
            MessageBody::AppendResponse {
                reject,
                index,
                hint_index,
                hint_term,
            } if self.role == Role::Leader => {
                self.handle_append_response(m.from, reject, index, hint_index, hint_term);
            }
            MessageBody::HeartbeatResponse { context } if self.role == Role::Leader => {
                self.handle_heartbeat_response(m.from, context);
            }
            _ => {} // Responses for a role we no longer have.
        }
        Ok(())
    }

    /// A message from the current term's leader: follow it, and reset the election timer.
    fn become_follower_of(&mut self, term: Term, leader: NodeId) {
        if self.role != Role::Follower || self.leader != Some(leader) {
            self.become_follower(term, Some(leader));
        }
        self.election_elapsed = 0;
    }

    fn step_local_request(&mut self, m: Message) -> Result<(), RaftError> {
        match m.body {
            MessageBody::Propose { data } => self.propose(data),
            MessageBody::TransferLeader { target } => {
                self.transfer_leader(target);
                Ok(())
            }
            MessageBody::ReadIndex { context } => {
                self.read_index_from(context, Some(m.from));
                Ok(())
            }
            MessageBody::ReadIndexResponse { index, context } => {
                self.read_states.push(ReadState { index, context });
                Ok(())
            }
            _ => Ok(()),
        }
    }

    // ---------------------------------------------------------------- replication (leader)

    fn append_entries(&mut self, mut entries: Vec<Entry>) {
        let mut index = self.log.last_index();
        for entry in &mut entries {
            index += 1;
            entry.term = self.term;
            entry.index = index;
        }
        let last = self.log.append(&entries);
        if let Some(own) = self.tracker.progress.get_mut(&self.id) {
            own.maybe_update(last);
        }
        self.maybe_commit();
    }

    fn maybe_commit(&mut self) -> bool {
        let index = self.tracker.committed_index();
        let committed = self.log.maybe_commit(index, self.term);
        if committed {
            self.on_first_commit_of_term();
        }
        committed
    }

    /// Sends what `to` needs next, if it is not paused. Returns whether anything was sent.
    fn send_append(&mut self, to: NodeId) -> bool {
        let Some(progress) = self.tracker.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let prev_index = progress.next - 1;
        let prev_term = self.log.term(prev_index);
        let entries = self
            .log
            .entries(progress.next, self.config.max_size_per_msg);
        match (prev_term, entries) {
            (Ok(prev_term), Ok(entries)) => {
                let last = prev_index + entries.len() as Index;
                let count = entries.len();
                let commit = self.log.committed;
                self.send(
                    to,
                    MessageBody::Append {
                        prev_index,
                        prev_term,
                        entries,
                        commit,
                    },
                );
                if let Some(progress) = self.tracker.progress.get_mut(&to) {
                    progress.sent(last, count);
                }
                true
            }
            _ => self.send_snapshot(to),
        }
    }

    /// The follower needs compacted entries: send the latest snapshot.
    fn send_snapshot(&mut self, to: NodeId) -> bool {
        let Ok(snapshot) = self.log.snapshot() else {
            return false;
        };
        // The bootstrap snapshot (index 0) is worth sending for its membership alone.
        if snapshot.is_empty() && snapshot.meta.conf_state.members().next().is_none() {
            return false;
        }
        let index = snapshot.meta.index;
        self.send(to, MessageBody::Snapshot { snapshot });
        if let Some(progress) = self.tracker.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        true
    }

    fn others(&self) -> Vec<NodeId> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    fn broadcast_append(&mut self) {
        for to in self.others() {
            self.send_append(to);
        }
    }

    fn broadcast_heartbeat(&mut self, context: Option<Vec<u8>>) {
        for to in self.others() {
            // Never tell a follower to commit past what it is known to have.
            let matched = self.tracker.progress.get(&to).map_or(0, |p| p.matched);
            let commit = matched.min(self.log.committed);
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    context: context.clone(),
                },
            );
        }
    }

    fn handle_append_response(
        &mut self,
        from: NodeId,
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    ) {
        let Some(progress) = self.tracker.progress.get_mut(&from) else {
            return;
        };
        progress.recent_active = true;
        if reject && index == 0 {
            // Index 0 always matches: the follower is uninitialized (it knows no membership)
            // and must start from a snapshot, which carries the membership.
            self.send_snapshot(from);
            return;
        }
        if reject {
            let hint = if hint_term > 0 {
                self.log.find_conflict_by_term(hint_index, hint_term).0
            } else {
                hint_index
            };
            let progress = self.tracker.progress.get_mut(&from).expect("checked above");
            if progress.maybe_decrease_to(index, hint) {
                if progress.state == ProgressState::Replicate {
                    progress.become_probe();
                }
                self.send_append(from);
            }
            return;
        }
        let updated = progress.maybe_update(index);
        if progress.state == ProgressState::Snapshot
            && progress.matched >= progress.pending_snapshot
        {
            // The snapshot is in (possibly the bootstrap snapshot at index 0, which moves no
            // match index): resume with appends.
            progress.become_probe();
            if !updated {
                self.send_append(from);
                return;
            }
        } else if !updated {
            return; // Old news (a duplicate or reordered acknowledgement).
        }
        let progress = self.tracker.progress.get_mut(&from).expect("checked above");
        match progress.state {
            ProgressState::Probe => progress.become_replicate(),
            ProgressState::Snapshot => {}
            ProgressState::Replicate => progress.free_to(index),
        }
        let matched = progress.matched;
        if self.maybe_commit() {
            self.broadcast_append();
        } else {
            // Keep the follower's pipeline full.
            while self
                .tracker
                .progress
                .get(&from)
                .is_some_and(|p| p.next <= self.log.last_index())
                && self.send_append(from)
            {}
        }
        if self.lead_transferee == Some(from) && matched == self.log.last_index() {
            self.send_timeout_now(from);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, context: Option<Vec<u8>>) {
        let last_index = self.log.last_index();
        if let Some(progress) = self.tracker.progress.get_mut(&from) {
            progress.recent_active = true;
            progress.probe_sent = false;
            // Appends to this follower may have been lost: let one more through, so a full
            // window cannot stall it forever (a reply to it repairs the window).
            if progress.state == ProgressState::Replicate && progress.is_paused() {
                progress.free_first();
            }
            // A follower alive for a whole election timeout without acknowledging its
            // snapshot lost it (or its answer): probe again, which re-sends it if needed.
            if progress.state == ProgressState::Snapshot {
                progress.snapshot_wait += 1;
                if progress.snapshot_wait >= self.config.election_tick {
                    progress.pending_snapshot = 0;
                    progress.become_probe();
                }
            }
            if progress.matched < last_index {
                self.send_append(from);
            }
        }
        let Some(context) = context else { return };
        // Only voters confirm leadership.
        if !self.tracker.conf.voters.contains(&from)
            || self.read_only.ack(&context, from) < self.tracker.quorum()
        {
            return;
        }
        for request in self.read_only.release_to(&context) {
            self.answer_read(request.context, request.index, request.from);
        }
    }

    // ---------------------------------------------------------------- replication (follower)

    /// Whether this node knows no membership at all: a node created empty to join a group.
    /// It must be initialized by a snapshot; accepting entries from index 1 would rebuild a
    /// membership that lacks the group's initial members.
    fn uninitialized(&self) -> bool {
        self.tracker.conf.members().next().is_none()
    }

    fn handle_append(
        &mut self,
        leader: NodeId,
        prev_index: Index,
        prev_term: Term,
        commit: Index,
        entries: &[Entry],
    ) {
        if self.uninitialized() {
            let response = MessageBody::AppendResponse {
                reject: true,
                index: 0,
                hint_index: 0,
                hint_term: 0,
            };
            self.send(leader, response);
            return;
        }
        if prev_index < self.log.committed {
            let index = self.log.committed;
            self.send(
                leader,
                MessageBody::AppendResponse {
                    reject: false,
                    index,
                    hint_index: 0,
                    hint_term: 0,
                },
            );
            return;
        }
        match self
            .log
            .maybe_append(prev_index, prev_term, commit, entries)
        {
            Some(last) => {
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        reject: false,
                        index: last,
                        hint_index: 0,
                        hint_term: 0,
                    },
                );
            }
            None => {
                let (hint_index, hint_term) = self
                    .log
                    .find_conflict_by_term(prev_index.min(self.log.last_index()), prev_term);
                self.send(
                    leader,
                    MessageBody::AppendResponse {
                        reject: true,
                        index: prev_index,
                        hint_index,
                        hint_term,
                    },
                );
            }
        }
    }

    fn handle_snapshot(&mut self, leader: NodeId, snapshot: crate::types::Snapshot) {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        if self.uninitialized() || (index > self.log.committed && !self.log.match_term(index, term))
        {
            self.tracker
                .set_conf(snapshot.meta.conf_state.clone(), index + 1);
            self.log.restore(snapshot);
        } else if index > self.log.committed {
            // We have the entries already: just commit up to the snapshot.
            self.log.commit_to(index);
        }
        // Otherwise the snapshot is older than what we have committed: ignore it (§7).
        let committed = self.log.committed;
        self.send(
            leader,
            MessageBody::AppendResponse {
                reject: false,
                index: committed,
                hint_index: 0,
                hint_term: 0,
            },
        );
    }

    // ---------------------------------------------------------------- requests

    /// Appends client data to the log (leader), or forwards it to the leader (follower).
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(), RaftError> {
        match self.role {
            // A transfer (or a removed leader's hand-off) is under way, or this leader's log
            // holds its own removal, which it will hand off on applying (see
            // `hand_off_leadership`): its log must not grow past what the others can get.
            Role::Leader
                if self.lead_transferee.is_some()
                    || !self.promotable()
                    || self.own_removal_pending() =>
            {
                Err(RaftError::ProposalDropped)
            }
            Role::Leader => {
                self.append_entries(vec![Entry::normal(self.term, 0, data)]);
                self.broadcast_append();
                Ok(())
            }
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::Propose { data });
                    Ok(())
                }
                None => Err(RaftError::ProposalDropped),
            },
        }
    }

    /// Proposes a membership change (leader only; one at a time).
    pub fn propose_conf_change(&mut self, change: ConfChange) -> Result<(), RaftError> {
        self.propose_conf_change_with_context(change, Vec::new())
    }

    /// Proposes a membership change carrying application context (appended to the entry's
    /// data; see [`ConfChange::decode_with_context`]).
    pub fn propose_conf_change_with_context(
        &mut self,
        change: ConfChange,
        context: Vec<u8>,
    ) -> Result<(), RaftError> {
        if self.role != Role::Leader || self.lead_transferee.is_some() || !self.promotable() {
            return Err(RaftError::ProposalDropped);
        }
        if change == ConfChange::Remove(self.id) {
            return Err(RaftError::RemoveLeader);
        }
        if self.pending_conf_index > self.log.applied {
            return Err(RaftError::ConfChangePending);
        }
        // A group without voters can never elect a leader again.
        if change.apply_to(&self.tracker.conf).voters.is_empty() {
            return Err(RaftError::ProposalDropped);
        }
        let entry = Entry {
            term: self.term,
            index: 0,
            kind: EntryKind::ConfChange,
            data: [change.encode(), context].concat(),
        };
        self.append_entries(vec![entry]);
        self.pending_conf_index = self.log.last_index();
        self.broadcast_append();
        Ok(())
    }

    /// Whether the unapplied part of this leader's log removes this node (a change proposed
    /// by an earlier leader).
    fn own_removal_pending(&self) -> bool {
        self.pending_conf_index > self.log.applied
            && self
                .log
                .slice(self.log.applied + 1, self.log.last_index() + 1, u64::MAX)
                .map_or(true, |entries| {
                    entries.iter().any(|e| {
                        e.kind == EntryKind::ConfChange
                            && ConfChange::decode(&e.data) == Some(ConfChange::Remove(self.id))
                    })
                })
    }

    /// Applies a committed membership change (called by the application when it applies the
    /// entry). Returns the new membership.
    pub fn apply_conf_change(&mut self, change: ConfChange) -> ConfState {
        let conf = change.apply_to(&self.tracker.conf);
        let next = self.log.last_index() + 1;
        self.tracker.set_conf(conf.clone(), next);
        if self
            .lead_transferee
            .is_some_and(|t| !conf.voters.contains(&t))
        {
            self.lead_transferee = None;
        }
        if self.role == Role::Leader {
            // The smaller quorum may already cover pending entries; new members start
            // probing right away.
            self.maybe_commit();
            self.broadcast_append();
            if !self.promotable() {
                self.hand_off_leadership();
            }
        }
        conf
    }

    /// The application could not deliver a message to `id` (transport failure): stop
    /// streaming to it and probe again, since appends in flight may be lost.
    pub fn report_unreachable(&mut self, id: NodeId) {
        if let Some(progress) = self.tracker.progress.get_mut(&id)
            && progress.state == ProgressState::Replicate
        {
            progress.become_probe();
        }
    }

    /// The application finished (or failed) sending the snapshot to `id`. On failure the
    /// leader probes again, and sends a new snapshot if still needed; on success it waits for
    /// the follower's acknowledgement as usual.
    pub fn report_snapshot(&mut self, id: NodeId, success: bool) {
        if let Some(progress) = self.tracker.progress.get_mut(&id)
            && progress.state == ProgressState::Snapshot
            && !success
        {
            // The follower did not get it: probe from what it is known to have.
            progress.pending_snapshot = 0;
            progress.become_probe();
        }
    }

    /// Starts transferring leadership to `target` (thesis §3.10). On a follower the request is
    /// forwarded to the leader.
    pub fn transfer_leader(&mut self, target: NodeId) {
        if self.role != Role::Leader {
            if let Some(leader) = self.leader {
                self.send(leader, MessageBody::TransferLeader { target });
            }
            return;
        }
        if target == self.id {
            // Transferring to self cancels a transfer, unless this leader was removed and
            // is handing off: it cannot keep the leadership.
            if self.promotable() {
                self.lead_transferee = None;
                self.transfer_elapsed = 0;
            }
            return;
        }
        if !self.tracker.conf.voters.contains(&target) || self.lead_transferee == Some(target) {
            return;
        }
        self.start_transfer(target);
    }

    /// A leader that applied its own removal keeps leading the new configuration (without
    /// counting itself) and hands the leadership to the most up-to-date remaining voter.
    ///
    /// A leader never proposes its own removal ([`RaftError::RemoveLeader`]): it gets here only
    /// when it was elected with an earlier leader's removal of it in its log, and then it took
    /// no proposals, so its log ends with committed entries. Stepping down at once is not safe
    /// for liveness: a remaining voter that has not learned that the removal committed still
    /// campaigns under the old configuration, where it may need the removed node's vote, which
    /// that node refuses if its log is longer (thesis §4.2.2 has the leader step down only once
    /// the new configuration can elect without it). With a log of committed entries only, the
    /// removed node's vote goes to any voter that can safely lead.
    /// The hand-off is an ordinary transfer: proposals stop, the target is caught up, and its
    /// `TimeoutNow` campaign is at least as up to date as this node, so it gets the vote. The
    /// removed leader steps down as soon as `TimeoutNow` is sent.
    fn hand_off_leadership(&mut self) {
        let target = self
            .tracker
            .conf
            .voters
            .iter()
            .filter_map(|id| self.tracker.progress.get(id).map(|p| (*id, p)))
            .max_by_key(|(id, p)| (p.recent_active, p.matched, std::cmp::Reverse(*id)))
            .map(|(id, _)| id);
        if let Some(target) = target {
            self.start_transfer(target);
        }
    }

    fn start_transfer(&mut self, target: NodeId) {
        self.lead_transferee = Some(target);
        self.transfer_elapsed = 0; // The transfer must finish within an election timeout.
        let up_to_date = self
            .tracker
            .progress
            .get(&target)
            .is_some_and(|p| p.matched == self.log.last_index());
        if up_to_date {
            self.send_timeout_now(target);
        } else {
            self.send_append(target);
        }
    }

    fn send_timeout_now(&mut self, to: NodeId) {
        self.timeout_now_sent = true;
        self.send(to, MessageBody::TimeoutNow);
        if !self.promotable() {
            // A removed leader's hand-off is done: the target has every entry this node has
            // and this node appends no more, so even if `TimeoutNow` is lost the target wins an
            // ordinary election, with this node's vote if the old configuration needs it.
            let term = self.term;
            self.become_follower(term, None);
        }
    }

    /// Requests a linearizable read; the answer comes back as a [`ReadState`].
    pub fn read_index(&mut self, context: Vec<u8>) {
        self.read_index_from(context, None);
    }

    fn read_index_from(&mut self, context: Vec<u8>, from: Option<NodeId>) {
        if self.role != Role::Leader {
            if let Some(leader) = self.leader {
                self.send(leader, MessageBody::ReadIndex { context });
            }
            return;
        }
        if !self.committed_in_term() {
            self.pending_reads.push((context, from));
            return;
        }
        let index = self.log.committed;
        if self.tracker.conf.voters.len() == 1 && self.promotable() || self.in_read_lease() {
            self.answer_read(context, index, from);
            return;
        }
        let leader_ack = self.promotable().then_some(self.id);
        self.read_only.add(context.clone(), index, from, leader_ack);
        self.broadcast_heartbeat(Some(context));
    }

    fn answer_read(&mut self, context: Vec<u8>, index: Index, from: Option<NodeId>) {
        match from {
            None | Some(0) => self.read_states.push(ReadState { index, context }),
            Some(id) if id == self.id => self.read_states.push(ReadState { index, context }),
            Some(id) => self.send(id, MessageBody::ReadIndexResponse { index, context }),
        }
    }

    /// Whether a lease read is safe now: lease reads are on, a majority has answered within
    /// the current check-quorum window (so no other leader can have been elected yet: those
    /// voters are still within their election timeout), and no leadership transfer — which
    /// overrides the voters' lease — is under way. Otherwise reads take a heartbeat round.
    /// Like every lease, this assumes message delays well below the election timeout and
    /// clocks that tick at similar rates; a restarted follower also forgets its lease.
    fn in_read_lease(&self) -> bool {
        self.config.lease_read
            && self.config.check_quorum
            && self.lead_transferee.is_none()
            && !self.timeout_now_sent
            && self.tracker.quorum_active(self.id)
    }

    fn committed_in_term(&self) -> bool {
        self.log
            .term(self.log.committed)
            .is_ok_and(|t| t == self.term)
    }

    fn on_first_commit_of_term(&mut self) {
        if self.pending_reads.is_empty() || !self.committed_in_term() {
            return;
        }
        for (context, from) in std::mem::take(&mut self.pending_reads) {
            self.read_index_from(context, from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;
    use crate::types::{Snapshot, SnapshotMeta};

    fn node(id: NodeId, seed: u64) -> Raft<MemStorage> {
        let mut config = Config::new(id);
        config.seed = seed;
        Raft::new(
            config,
            MemStorage::new_with_conf(ConfState::with_voters(1..=5)),
        )
        .unwrap()
    }

    #[test]
    fn election_timeouts_are_redrawn_in_range_and_spread_out() {
        let mut raft = node(1, 7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            raft.reset_timeouts();
            let t = raft.randomized_election_timeout;
            assert!((10..20).contains(&t), "{t}");
            seen.insert(t);
        }
        assert_eq!(seen.len(), 10, "every value in [10, 20) is drawn");
        // Five nodes seeded differently rarely time out on the same tick.
        let mut collisions = 0;
        for round in 0..200u64 {
            let timeouts: Vec<usize> = (1..=5)
                .map(|id| node(id, round * 31 + id).randomized_election_timeout)
                .collect();
            let min = *timeouts.iter().min().unwrap();
            if timeouts.iter().filter(|&&t| t == min).count() > 1 {
                collisions += 1;
            }
        }
        assert!(
            collisions < 100,
            "{collisions} of 200 rounds had a tie for the first timeout"
        );
    }

    #[test]
    fn a_snapshot_older_than_the_commit_index_is_ignored() {
        let mut raft = node(2, 1);
        let entries: Vec<Entry> = (1..=5)
            .map(|i| Entry::normal(1, i, vec![i as u8]))
            .collect();
        let append = MessageBody::Append {
            prev_index: 0,
            prev_term: 0,
            entries,
            commit: 5,
        };
        raft.step(Message {
            from: 1,
            to: 2,
            term: 1,
            body: append,
        })
        .unwrap();
        assert_eq!(raft.log.committed, 5);
        let old = Snapshot {
            meta: SnapshotMeta {
                index: 3,
                term: 1,
                conf_state: ConfState::with_voters([1, 2]),
            },
            data: vec![],
        };
        raft.step(Message {
            from: 1,
            to: 2,
            term: 1,
            body: MessageBody::Snapshot { snapshot: old },
        })
        .unwrap();
        assert!(raft.log.pending_snapshot().is_none());
        assert_eq!(raft.log.last_index(), 5);
        assert_eq!(
            raft.tracker.conf,
            ConfState::with_voters(1..=5),
            "membership unchanged"
        );
    }
}
