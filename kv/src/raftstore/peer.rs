//! [`Peer`]: one replica of a region — a Raft node over [`PeerStorage`], whose log entries are
//! write batches that every replica applies to its engine.
//!
//! The leader computes the effect of a command (e.g. a Percolator prewrite) against its own
//! data and proposes the resulting [`WriteBatch`]; once the entry commits, every replica
//! applies exactly that batch, in log order, together with its new applied index. The
//! proposer's callback completes after its own apply, with the result or a region error
//! ([`KvError::NotLeader`], [`KvError::StaleCommand`]).
//!
//! A `Peer` is driven like a `RawNode`: `tick`, `step`, the proposal methods, then
//! [`Peer::handle_ready`], which persists (entries, hard state, snapshot) *before* returning
//! the messages to send, then applies committed entries. Threads, timers and the network are
//! the caller's.
//!
//! Membership changes ([`ChangePeer`]) carry the peer's store in the entry, so every replica
//! updates its copy of the region (peers, `conf_ver`) in the same batch as the applied index.
//! A replica that applies its own removal reports [`Peer::is_removed`]; its driver then
//! destroys it. A leader never removes itself: asked to, it transfers the leadership to
//! another voter and answers NotLeader, and the new leader can then remove it.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use proto::metapb::{Peer as PeerMeta, Region};
use proto::scheduler::RegionHeartbeatRequest;
use raft::{Config, EntryKind, Message, RaftError, RawNode, Role};

mod merge;

use super::PeerStorage;
use super::apply::{self, Applied, ApplyPool, ApplyTask, Proposal, WriteEntry};
use super::command::{CommitMergeRequest, PrepareMergeRequest, RaftCommand, SplitRequest};
use super::region::{self, ChangePeer};
use super::transport::RaftEnvelope;
use super::write_batcher::{DirectWriter, RaftWriter};
use crate::error::{KvError, KvResult};
use crate::storage::{Engine, WriteBatch};
use crate::txn::ReadFence;

/// Entries a leader transfer's target may lag behind (see [`Peer::transfer_leader`]).
pub const MAX_TRANSFER_LAG: u64 = 64;

/// Called once with the outcome of a proposal.
pub type Callback = Box<dyn FnOnce(KvResult<()>) + Send>;

/// Called once when a linearizable read may proceed on this replica's engine (with the
/// applied index it may read at), or with why it cannot.
pub type ReadCallback = Box<dyn FnOnce(KvResult<ReadFence>) + Send>;

pub struct Peer<E: Engine> {
    region_id: u64,
    /// This replica: its peer id (the Raft node id) and store.
    meta: PeerMeta,
    /// Set once this replica applied its own removal.
    removed: bool,
    /// Set once its data and raft state are deleted (a tombstone written).
    destroyed: bool,
    /// Set just before its data is deleted, for readers on other threads: a read that passed
    /// its barrier but took its engine snapshot after the deletion must fail.
    destroying: Arc<std::sync::atomic::AtomicBool>,
    /// Peers whose removal this replica applied, to be told they are out.
    removed_peers: Vec<PeerMeta>,
    node: RawNode<PeerStorage<E>>,
    /// Persists this peer's batches (the store's group-commit writer, or the engine).
    writer: Arc<dyn RaftWriter>,
    proposals: VecDeque<Proposal>,
    /// Read requests by context, waiting for their read index.
    reads: Vec<(Vec<u8>, u64, ReadCallback)>,
    /// Read indexes granted, waiting for the apply index to reach them.
    ready_reads: Vec<(u64, u64, ReadCallback)>,
    next_read_id: u64,
    /// Where peers not (yet) in this replica's region live, learned from their messages: a
    /// replica created for a leader's first message answers it before it knows the region.
    peer_cache: std::collections::BTreeMap<u64, PeerMeta>,
    /// The region as applied, for other threads: updated in the same step as an applied
    /// change, before any callback of that Ready runs, so that a reader woken by a read index
    /// past a split sees the split.
    published: Arc<RwLock<Region>>,
    /// Regions this replica's applied splits created, for the store to start their peers.
    splits: Vec<Region>,
    /// Bytes of data applied since the last split check (a leader asks for one past a
    /// threshold).
    written_since_check: u64,
    /// The region's size and key count as last measured by a split check (`None`: not
    /// measured since this replica started or the region last split).
    approximate: Option<RegionSize>,
    /// A Ready whose persistence is under way ([`Peer::prepare_ready`]).
    pending_ready: Option<raft::Ready>,
    /// A CommitMerge this (target) replica stopped applying at: the source replica on this
    /// store has not ended yet (see `merge`).
    merge_wait: Option<CommitMergeRequest>,
    /// This (source) replica ended as merged into its target.
    merged: bool,
    /// Where big runs of committed writes are applied (see `apply`); None: everything is
    /// applied here, in `finish_ready`.
    apply_pool: Option<ApplyRoute>,
    /// The last entry of the task in the apply pool, while one is in flight.
    applying: Option<u64>,
}

/// A committed entry that changes the region, which a peer applies itself (see
/// `Peer::finish_ready`).
enum Admin {
    Split(SplitRequest),
    PrepareMerge(PrepareMergeRequest),
    CommitMerge(CommitMergeRequest),
    /// A membership change (its entry holds it).
    ConfChange,
}

/// Hands an apply task's result back to its peer.
pub type ApplyReply = Arc<dyn Fn(Applied) + Send + Sync>;

/// A peer's way to its store's apply pool.
pub struct ApplyRoute {
    pub pool: Arc<ApplyPool>,
    /// Brings each task's result to [`Peer::on_applied`].
    pub reply: ApplyReply,
    /// Runs of committed writes of at most this many bytes are applied by the peer itself.
    pub inline_max_bytes: u64,
}

/// A region's measured data: bytes over the data column families, and user keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionSize {
    pub bytes: u64,
    pub keys: u64,
}

impl<E: Engine> Peer<E> {
    /// Opens (or creates) replica `meta` of `region`. A replica of a new region starts with
    /// the region's peers as its membership; one joining an existing region is given the
    /// region without peers and is initialised by the leader's snapshot.
    pub fn open(
        engine: Arc<E>,
        region: &Region,
        meta: PeerMeta,
        mut config: Config,
    ) -> KvResult<Peer<E>> {
        let region_id = region.id;
        let peer_id = meta.id;
        let storage = PeerStorage::open(Arc::clone(&engine), region)?;
        config.id = peer_id;
        // Replicas must not share election timeouts: seed each by its own id.
        config.seed = config.seed.wrapping_add(peer_id);
        config.applied = storage.applied();
        let published = Arc::new(RwLock::new(storage.region().clone()));
        let node = RawNode::new(config, storage).map_err(|e| KvError::Corrupt(e.to_string()))?;
        Ok(Peer {
            region_id,
            meta,
            removed: false,
            destroyed: false,
            destroying: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            removed_peers: Vec::new(),
            node,
            writer: Arc::new(DirectWriter(engine)),
            proposals: VecDeque::new(),
            reads: Vec::new(),
            ready_reads: Vec::new(),
            next_read_id: 0,
            peer_cache: Default::default(),
            published,
            splits: Vec::new(),
            written_since_check: 0,
            approximate: None,
            pending_ready: None,
            merge_wait: None,
            merged: false,
            apply_pool: None,
            applying: None,
        })
    }

    /// Persists through `writer` (a store's group-commit writer) instead of the engine.
    pub fn with_writer(mut self, writer: Arc<dyn RaftWriter>) -> Self {
        self.writer = writer;
        self
    }

    /// Applies big runs of committed writes on an apply pool (see `apply`).
    pub fn with_apply_pool(mut self, route: ApplyRoute) -> Self {
        self.apply_pool = Some(route);
        self
    }

    /// Whether a task of this peer is in the apply pool: until its result comes back, the
    /// peer must not compact its log, apply a snapshot or destroy its data.
    pub fn is_applying(&self) -> bool {
        self.applying.is_some()
    }

    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    pub fn meta(&self) -> &PeerMeta {
        &self.meta
    }

    /// The region as of the applied index.
    pub fn region(&self) -> &Region {
        self.node.storage().region()
    }

    /// The region as applied, shared with other threads (see `published`).
    pub fn published_region(&self) -> Arc<RwLock<Region>> {
        Arc::clone(&self.published)
    }

    fn publish_region(&self) {
        let mut published = self.published.write().unwrap_or_else(|e| e.into_inner());
        if *published != *self.region() {
            *published = self.region().clone();
        }
    }

    /// The regions created by splits applied since the last call (their peers on this store
    /// are to be started).
    pub fn take_splits(&mut self) -> Vec<Region> {
        std::mem::take(&mut self.splits)
    }

    /// Bytes of data applied since the last split check.
    pub fn written_since_check(&self) -> u64 {
        self.written_since_check
    }

    /// A split check was asked for: count the written bytes afresh.
    pub fn split_check_asked(&mut self) {
        self.written_since_check = 0;
    }

    /// Records a split check's measurement of the region.
    pub fn set_approximate_size(&mut self, size: RegionSize) {
        self.approximate = Some(size);
    }

    /// The last measurement, if the region was measured since it last changed its range.
    pub fn approximate_size(&self) -> Option<RegionSize> {
        self.approximate
    }

    /// Set when this replica's data is about to be deleted (see `destroying`).
    pub fn destroy_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.destroying)
    }

    /// Whether this replica applied its own removal (its driver destroys it).
    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Whether this replica has been initialised (knows its membership; a replica created for
    /// a leader's first message has not until the snapshot arrives).
    pub fn is_initialized(&self) -> bool {
        self.node.raft.conf_state().members().next().is_some()
    }

    pub fn is_leader(&self) -> bool {
        self.node.raft.role == Role::Leader
    }

    /// Whether a read may be served from this replica's engine without confirming the
    /// leadership: it leads a region whose only voter it is (no other leader can be elected
    /// without its vote) and it has applied an entry of its own term (so every entry of
    /// earlier terms is applied). Every write acknowledged before is then in the engine, since
    /// writes are acknowledged after they apply.
    pub fn serves_local_reads(&self) -> bool {
        let raft = &self.node.raft;
        raft.role == Role::Leader
            && raft.tracker.conf.voters.len() == 1
            && raft.tracker.conf.voters.contains(&raft.id)
            && raft
                .log
                .term(raft.log.applied)
                .is_ok_and(|term| term == raft.term)
            && self.merging().is_none()
            && !self.destroying.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether nothing is under way on this replica: no Ready, proposal or read waiting, every
    /// committed entry applied, and nothing left of a split or a removal to hand over.
    fn is_quiet(&self) -> bool {
        let log = &self.node.raft.log;
        self.pending_ready.is_none()
            && self.applying.is_none()
            && !self.node.has_ready()
            && self.proposals.is_empty()
            && self.reads.is_empty()
            && self.ready_reads.is_empty()
            && self.splits.is_empty()
            && self.removed_peers.is_empty()
            && !self.removed
            && self.merging().is_none()
            && self.merge_wait.is_none()
            && log.applied == log.committed
            && log.committed == log.last_index()
    }

    /// Whether this leader's region may hibernate (stop ticking): quiet, measured by a split
    /// check, no membership change or transfer under way, and every peer holds every entry
    /// (so the followers, told to hibernate too, miss nothing).
    pub fn can_hibernate_as_leader(&self) -> bool {
        let raft = &self.node.raft;
        let last = raft.log.last_index();
        self.is_leader()
            && self.is_quiet()
            && self.approximate.is_some()
            && raft.lead_transferee.is_none()
            && !raft.has_pending_conf()
            && raft
                .tracker
                .progress
                .iter()
                .all(|(_, progress)| progress.matched == last)
    }

    /// Whether this follower may hibernate on its leader's word: it follows `leader` in
    /// `term`, is quiet, and holds the leader's whole log (`leader_last`).
    pub fn can_hibernate_as_follower(&self, leader: u64, term: u64, leader_last: u64) -> bool {
        let raft = &self.node.raft;
        !self.is_leader()
            && raft.leader == Some(leader)
            && raft.term == term
            && raft.log.last_index() == leader_last
            && self.is_quiet()
    }

    /// A leader woken from hibernation: its read lease holds again only once a majority
    /// answered since (see [`raft::Raft::forget_quorum_activity`]).
    pub fn forget_quorum_activity(&mut self) {
        self.node.forget_quorum_activity();
    }

    /// The region's last log index on this replica.
    pub fn last_index(&self) -> u64 {
        self.node.raft.log.last_index()
    }

    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    pub fn leader(&self) -> Option<u64> {
        self.node.raft.leader
    }

    /// The last log index removed by compaction, and its term.
    pub fn truncated(&self) -> (u64, u64) {
        self.node.storage().truncated()
    }

    pub fn status(&self) -> raft::Status {
        self.node.status()
    }

    /// The leader's report for the scheduler's region heartbeat (None on a follower).
    pub fn heartbeat_report(&self) -> Option<RegionHeartbeatRequest> {
        if !self.is_leader() {
            return None;
        }
        let region = self.region().clone();
        let raft = &self.node.raft;
        let (truncated, _) = self.truncated();
        // Far behind: needs entries the leader compacted (a snapshot), or never answered.
        let pending_peers = raft
            .tracker
            .progress
            .iter()
            .filter(|(id, p)| {
                **id != self.meta.id
                    && (p.state == raft::progress::ProgressState::Snapshot
                        || p.matched < truncated
                        || p.matched == 0)
            })
            .filter_map(|(id, _)| region::find_peer(&region, *id).cloned())
            .collect();
        Some(RegionHeartbeatRequest {
            region: Some(region),
            leader: Some(self.meta),
            pending_peers,
            approximate_size: self.approximate.unwrap_or_default().bytes,
            approximate_keys: self.approximate.unwrap_or_default().keys,
            size_measured: self.approximate.is_some(),
            merging_into: self.merging().map_or(0, |m| m.target.id),
            term: raft.term,
        })
    }

    /// Steps a message from another peer, remembering where that peer lives.
    pub fn step_from(&mut self, from: PeerMeta, message: Message) {
        if region::find_peer(self.region(), from.id).is_none() {
            self.peer_cache.insert(from.id, from);
        }
        self.step(message);
    }

    pub fn pending_proposals(&self) -> usize {
        self.proposals.len()
    }

    /// Wraps raft messages for the transport (messages to peers this replica cannot locate
    /// are dropped: they can only be stale).
    pub fn envelopes(&self, messages: Vec<Message>) -> Vec<RaftEnvelope> {
        let region = self.region();
        messages
            .into_iter()
            .filter_map(|message| {
                let to_peer = *region::find_peer(region, message.to)
                    .or_else(|| self.peer_cache.get(&message.to))?;
                Some(RaftEnvelope {
                    region_id: self.region_id,
                    from_peer: self.meta,
                    to_peer,
                    epoch: region::epoch(region),
                    start_key: region.start_key.clone(),
                    end_key: region.end_key.clone(),
                    message,
                    is_tombstone: false,
                    hibernate: false,
                })
            })
            .collect()
    }

    /// Tombstone notices for the peers whose removal this replica applied: the group no
    /// longer sends them anything, and a removed learner never campaigns, so without a notice
    /// a replica that missed its removal would stay forever. Best effort (a lost notice leaves
    /// the peer until it speaks up and is answered with one).
    pub fn take_removal_notices(&mut self) -> Vec<RaftEnvelope> {
        let region = self.region().clone();
        std::mem::take(&mut self.removed_peers)
            .into_iter()
            .map(|to_peer| RaftEnvelope {
                region_id: self.region_id,
                from_peer: self.meta,
                to_peer,
                epoch: region::epoch(&region),
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                // Not stepped: a tombstone notice is handled by the receiving store.
                message: Message {
                    from: self.meta.id,
                    to: to_peer.id,
                    term: 0,
                    body: raft::MessageBody::TimeoutNow,
                },
                is_tombstone: true,
                hibernate: false,
            })
            .collect()
    }

    /// Hands the leadership to `peer_id` (the scheduler's balancing, an operator's move) if
    /// that peer is in touch: it answered within the current check-quorum window and lags at
    /// most [`MAX_TRANSFER_LAG`] entries. While a transfer is under way the leader takes no
    /// proposals, so a transfer to a peer that cannot take over soon (partitioned, or never
    /// heard from) would stall the region's writes until it is abandoned, and again at every
    /// repeated request.
    pub fn transfer_leader(&mut self, peer_id: u64) {
        let raft = &self.node.raft;
        let last = raft.log.last_index();
        let in_touch = raft.tracker.progress.get(&peer_id).is_some_and(|p| {
            p.recent_active && p.matched > 0 && last.saturating_sub(p.matched) <= MAX_TRANSFER_LAG
        });
        if in_touch {
            self.node.transfer_leader(peer_id);
        } else {
            tracing::debug!(
                region_id = self.region_id,
                to = peer_id,
                "leader transfer refused: the target is not in touch"
            );
        }
    }

    pub fn report_unreachable(&mut self, peer_id: u64) {
        self.node.report_unreachable(peer_id);
    }

    pub fn report_snapshot(&mut self, peer_id: u64, success: bool) {
        self.node.report_snapshot(peer_id, success);
    }

    /// The region of a snapshot waiting to be applied, if its range reaches beyond this
    /// replica's region: it took over other regions' ranges (merges this store's replicas
    /// of them may not have finished), whose replicas here must end before it applies.
    pub fn widening_snapshot(&self) -> Option<Region> {
        let snapshot = self.node.raft.log.pending_snapshot()?;
        let theirs = super::peer_storage::snapshot_region(&snapshot.data).ok()?;
        let mine = self.region();
        let starts_before = theirs.start_key < mine.start_key;
        let ends_after = !mine.end_key.is_empty()
            && (theirs.end_key.is_empty() || theirs.end_key > mine.end_key);
        (starts_before || ends_after).then_some(theirs)
    }

    /// Ends this replica, keeping its data, because a region with a newer epoch took over
    /// its range ([`Peer::widening_snapshot`] on this store): a merge source whose merge this
    /// replica never finished.
    pub fn end_overtaken(&mut self) -> KvResult<()> {
        self.write_end(|storage, batch| storage.destroy_keeping_data(batch))
    }

    /// Deletes this (removed) replica's data and Raft state, leaving a tombstone.
    pub fn destroy(&mut self) -> KvResult<()> {
        self.write_end(|storage, batch| storage.destroy(batch))
    }

    /// Ends this replica: `end` adds what its storage deletes and leaves to a batch, written
    /// durably (once; readers on other threads are told first); everything waiting fails.
    fn write_end(
        &mut self,
        end: impl FnOnce(&mut PeerStorage<E>, &mut WriteBatch) -> KvResult<()>,
    ) -> KvResult<()> {
        if !self.destroyed {
            let mut batch = WriteBatch::new();
            end(self.node.storage_mut(), &mut batch)?;
            self.destroying
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.writer.write(batch)?;
            self.destroyed = true;
        }
        self.fail_everything_waiting();
        Ok(())
    }

    /// Fails every waiting proposal and read: this replica is gone.
    fn fail_everything_waiting(&mut self) {
        for proposal in self.proposals.drain(..) {
            (proposal.callback)(Err(KvError::RegionNotFound {
                region_id: self.region_id,
            }));
        }
        self.fail_pending_reads();
        for (_, _, callback) in self.ready_reads.drain(..) {
            callback(Err(KvError::RegionNotFound {
                region_id: self.region_id,
            }));
        }
    }

    pub fn tick(&mut self) {
        self.node.tick();
    }

    pub fn campaign(&mut self) {
        self.node.campaign();
    }

    pub fn step(&mut self, message: Message) {
        // Messages for other regions or malformed ones are the router's concern; Raft itself
        // ignores what it cannot use.
        let _ = self.node.step(message);
    }

    fn not_leader(&self) -> KvError {
        KvError::NotLeader {
            region_id: self.region_id,
            leader: self.leader(),
        }
    }

    fn propose_entry(
        &mut self,
        propose: impl FnOnce(&mut RawNode<PeerStorage<E>>) -> Result<(), RaftError>,
        callback: Callback,
    ) {
        if !self.is_leader() {
            callback(Err(self.not_leader()));
            return;
        }
        let before = self.node.raft.log.last_index();
        match propose(&mut self.node) {
            Ok(()) if self.node.raft.log.last_index() > before => {
                let (index, term) = (self.node.raft.log.last_index(), self.node.raft.term);
                self.proposals.push_back(Proposal {
                    index,
                    term,
                    callback,
                });
            }
            Ok(()) | Err(RaftError::ProposalDropped) => callback(Err(self.not_leader())),
            Err(e) => callback(Err(KvError::Server(e.to_string()))),
        }
    }

    /// Proposes a write batch (leader only); `callback` completes after it is applied here.
    ///
    /// `fence` is where the batch's inputs were read ([`Peer::read_index`]): if this replica's
    /// term moved since, it may have missed another leader's writes, and the batch is refused
    /// with StaleCommand (the command is computed again).
    pub fn propose_write(&mut self, batch: WriteBatch, fence: ReadFence, callback: Callback) {
        if self.merging().is_some() {
            callback(Err(self.merging_error()));
            return;
        }
        if fence.term != 0 && fence.term != self.node.raft.term {
            callback(Err(KvError::StaleCommand {
                region_id: self.region_id,
            }));
            return;
        }
        let data = RaftCommand::Write(batch).encode();
        self.propose_entry(|node| node.propose(data), callback);
    }

    /// Proposes a split (leader only); `callback` completes once it is applied here (with
    /// EpochNotMatch if the region changed since the split was planned).
    pub fn propose_split(&mut self, request: SplitRequest, callback: Callback) {
        if self.merging().is_some() {
            callback(Err(self.merging_error()));
            return;
        }
        if let Err(why) = region::split(self.region(), &request) {
            callback(Err(KvError::EpochNotMatch {
                region_id: self.region_id,
                current: Some(Box::new(self.region().clone())),
            }));
            tracing::debug!(region_id = self.region_id, why, "split refused");
            return;
        }
        let data = RaftCommand::Split(request).encode();
        self.propose_entry(|node| node.propose(data), callback);
    }

    /// Proposes a membership change (leader only, one at a time). Asked to remove itself, the
    /// leader hands its leadership to the most up-to-date other voter instead and answers
    /// NotLeader: the caller retries the removal on the new leader.
    pub fn propose_change_peer(&mut self, change: ChangePeer, callback: Callback) {
        if !self.is_leader() {
            callback(Err(self.not_leader()));
            return;
        }
        // A frozen source keeps its membership until the merge is done (its target's replicas
        // are on the same stores).
        if self.merging().is_some() || self.prepare_merge_pending() {
            callback(Err(self.merging_error()));
            return;
        }
        if let ChangePeer::AddLearner(peer) | ChangePeer::AddVoter(peer) = &change
            && let Some(existing) = region::peer_on_store(self.region(), peer.store_id)
            && existing.id != peer.id
        {
            callback(Err(KvError::Server(format!(
                "region {}: store {} already holds peer {}",
                self.region_id, peer.store_id, existing.id
            ))));
            return;
        }
        if matches!(&change, ChangePeer::Remove(p) if p.id == self.meta.id) {
            let raft = &self.node.raft;
            let target = raft
                .conf_state()
                .voters
                .iter()
                .filter(|&&id| id != self.meta.id)
                .max_by_key(|&&id| raft.tracker.progress.get(&id).map_or(0, |p| p.matched))
                .copied();
            match target {
                Some(target) => {
                    self.node.transfer_leader(target);
                    callback(Err(KvError::NotLeader {
                        region_id: self.region_id,
                        leader: Some(target),
                    }));
                }
                None => callback(Err(KvError::Server(format!(
                    "region {}: cannot remove its only voter",
                    self.region_id
                )))),
            }
            return;
        }
        let (raft_change, context) = (change.raft_change(), change.context());
        self.propose_entry(
            |node| node.propose_conf_change_with_context(raft_change, context),
            callback,
        );
    }

    /// Requests a linearizable read (ReadIndex, forwarded to the leader from a follower): the
    /// callback runs once this replica has applied everything committed when the read was
    /// confirmed, so that reading its engine then sees every write acknowledged before. The
    /// fence it gets is the term the read was confirmed in; a term change before the replica
    /// caught up fails the read with StaleCommand.
    pub fn read_index(&mut self, callback: ReadCallback) {
        if self.leader().is_none() {
            callback(Err(self.not_leader()));
            return;
        }
        if self.merging().is_some() {
            callback(Err(self.merging_error()));
            return;
        }
        self.next_read_id += 1;
        let context = self.next_read_id.to_be_bytes().to_vec();
        self.node.read_index(context.clone());
        self.reads.push((context, self.node.raft.term, callback));
    }

    /// Fails every waiting read (after a leader change its confirmation may never come).
    pub fn fail_pending_reads(&mut self) {
        for (_, _, callback) in self.reads.drain(..) {
            callback(Err(KvError::StaleCommand {
                region_id: self.region_id,
            }));
        }
    }

    /// Raft log GC: compacts the log up to the applied index once more than `max_entries`
    /// applied entries are kept, so `applied - truncated` stays within `max_entries`.
    /// Not while a task is in the apply pool (which owns the apply state meanwhile).
    pub fn maybe_compact_log(&mut self, max_entries: u64, max_bytes: u64) -> KvResult<()> {
        if self.applying.is_some() {
            return Ok(());
        }
        let (truncated, _) = self.node.storage().truncated();
        let applied = self.node.raft.log.applied;
        let too_long = applied.saturating_sub(truncated) > max_entries;
        let too_big = applied > truncated && self.node.storage().log_bytes() > max_bytes;
        if too_long || too_big {
            self.compact_log()?;
        }
        Ok(())
    }

    /// Compacts the log up to the applied index (raft log GC).
    pub fn compact_log(&mut self) -> KvResult<()> {
        let applied = self.node.raft.log.applied;
        let (mut batch, mut deletes) = (WriteBatch::new(), WriteBatch::new());
        self.node
            .storage_mut()
            .compact(&mut batch, &mut deletes, applied)?;
        self.writer.write(batch)?;
        if !deletes.is_empty() {
            self.writer.write_in_background(deletes);
        }
        Ok(())
    }

    /// Persists, then returns the messages to send, then applies; see the module docs.
    pub fn handle_ready(&mut self) -> KvResult<Vec<Message>> {
        let mut out = Vec::new();
        self.handle_ready_sending(&mut |_, messages| out.extend(messages))?;
        Ok(out)
    }

    /// Like [`Peer::handle_ready`], handing the messages to `send` as early as is safe: a
    /// follower's (votes, acknowledgements) once the Ready is persisted, before applying; a
    /// leader's before it persists its own entries, so that its disk write overlaps the
    /// followers' (Raft thesis §10.2.1). That is safe because an entry commits only with
    /// another voter's acknowledgement, which this peer processes only after this Ready's
    /// write completed; a single-voter leader (whose own copy is a quorum) sends after. `send`
    /// gets the peer too (to address the messages).
    pub fn handle_ready_sending(
        &mut self,
        send: &mut dyn FnMut(&Self, Vec<Message>),
    ) -> KvResult<()> {
        let mut batch = WriteBatch::new();
        if !self.prepare_ready(&mut batch, send)? {
            return Ok(());
        }
        if !batch.is_empty() {
            self.writer.write(batch)?;
        }
        self.finish_ready(send)
    }

    /// The first half of handling a Ready, for a driver that persists the Readies of many
    /// peers in one write: adds what this Ready persists (snapshot with its data, entries,
    /// hard state) to `batch` and, on a leader with other voters, sends its messages at once.
    /// Returns false if there was no Ready. The caller must write `batch` durably and then
    /// call [`Peer::finish_ready`] before anything else touches this peer.
    pub fn prepare_ready(
        &mut self,
        batch: &mut WriteBatch,
        send: &mut dyn FnMut(&Self, Vec<Message>),
    ) -> KvResult<bool> {
        if self.pending_ready.is_some() || !self.node.has_ready() {
            return Ok(false);
        }
        if self.applying.is_some() && self.node.raft.log.pending_snapshot().is_some() {
            // A snapshot replaces the data a task in the apply pool is writing: wait for it.
            return Ok(false);
        }
        let mut ready = self.node.ready();
        // Only while committing needs another voter's acknowledgement: a single voter's own
        // copy is a quorum, so its messages may already carry a commit index covering
        // entries it has not written (to learners, say).
        let needs_ack = self.node.raft.conf_state().voters.len() > 1;
        if self.is_leader() && needs_ack && ready.snapshot.is_none() {
            let messages = std::mem::take(&mut ready.messages);
            send(self, messages);
        }
        if let Some(snapshot) = &ready.snapshot {
            self.node.storage_mut().apply_snapshot(batch, snapshot)?;
        }
        self.node.storage_mut().append(batch, &ready.entries);
        if let Some(hard_state) = &ready.hard_state {
            self.node
                .storage_mut()
                .set_hard_state(batch, hard_state.clone());
        }
        self.pending_ready = Some(ready);
        Ok(true)
    }

    /// The second half (see [`Peer::prepare_ready`]), once the batch is durable: sends the
    /// remaining messages, applies the committed entries, completes proposals and reads.
    pub fn finish_ready(&mut self, send: &mut dyn FnMut(&Self, Vec<Message>)) -> KvResult<()> {
        let Some(mut ready) = self.pending_ready.take() else {
            return Ok(());
        };
        let messages = std::mem::take(&mut ready.messages);
        if !messages.is_empty() {
            send(self, messages);
        }
        // 2. Apply committed entries: each entry's data and the applied index together. A
        //    CommitMerge whose source has not ended on this store stops the applying there:
        //    the entries from it on are handed out again by a later Ready. With an apply
        //    pool, runs of writes go to the pool instead (see `apply`): nothing while a task
        //    is in flight, and an admin entry only once no task is.
        //    Runs of writes go to the apply pool when they are bigger than the pool's
        //    `inline_max_bytes` (see `apply`): smaller ones cost less applied here than
        //    handed over. Nothing is applied while a task is in flight, and an admin entry
        //    only once none is.
        let inline_max_bytes = match &self.apply_pool {
            Some(pool) if self.merging().is_none() => pool.inline_max_bytes,
            _ => u64::MAX,
        };
        let mut applied_to = Vec::new();
        let mut run: Vec<WriteEntry> = Vec::new();
        let mut run_bytes = 0;
        let mut taken = 0;
        for entry in &ready.committed_entries {
            if self.applying.is_some() || self.removed {
                break;
            }
            let command = match entry.kind {
                EntryKind::Normal if !entry.data.is_empty() => {
                    Some(RaftCommand::decode(&entry.data)?)
                }
                _ => None,
            };
            let write = match (&entry.kind, command) {
                (EntryKind::ConfChange, _) => Err(Admin::ConfChange),
                (_, None) => Ok(None),
                (_, Some(RaftCommand::Write(batch))) => Ok(Some(batch)),
                (_, Some(RaftCommand::Split(request))) => Err(Admin::Split(request)),
                (_, Some(RaftCommand::PrepareMerge(request))) => Err(Admin::PrepareMerge(request)),
                (_, Some(RaftCommand::CommitMerge(request))) => Err(Admin::CommitMerge(request)),
            };
            match write {
                Ok(batch) => {
                    run_bytes += batch.as_ref().map_or(0, apply::written_bytes);
                    run.push(WriteEntry {
                        index: entry.index,
                        term: entry.term,
                        batch,
                    });
                }
                Err(admin) => {
                    if run_bytes > inline_max_bytes {
                        // The admin entry waits for the run before it to apply.
                        break;
                    }
                    self.apply_run_here(std::mem::take(&mut run), &mut applied_to)?;
                    run_bytes = 0;
                    if !self.apply_entry(entry, admin, &mut applied_to)? {
                        break;
                    }
                }
            }
            taken += 1;
        }
        let mut handed_out = Vec::new();
        if run_bytes > inline_max_bytes {
            handed_out = run;
        } else {
            self.apply_run_here(run, &mut applied_to)?;
        }
        ready.committed_entries.truncate(taken);
        self.publish_region();
        for read in &ready.read_states {
            if let Some(position) = self.reads.iter().position(|(c, _, _)| *c == read.context) {
                let (_, term, callback) = self.reads.swap_remove(position);
                self.ready_reads.push((read.index, term, callback));
            }
        }
        self.node.advance_applying_elsewhere(ready);
        if let Some(&(index, _, _)) = applied_to.last() {
            self.node.applied_to(index);
        }
        for (index, term, outcome) in applied_to {
            apply::complete_proposals(&mut self.proposals, self.region_id, index, term, outcome);
        }
        if !handed_out.is_empty() {
            self.hand_out(handed_out);
        }
        self.serve_ready_reads();
        Ok(())
    }

    /// Applies a run of committed writes here, with the applied index, in one batch;
    /// `applied_to` gets their outcomes.
    fn apply_run_here(
        &mut self,
        run: Vec<WriteEntry>,
        applied_to: &mut Vec<(u64, u64, KvResult<()>)>,
    ) -> KvResult<()> {
        let Some(last) = run.last().map(|e| e.index) else {
            return Ok(());
        };
        let mut apply = WriteBatch::new();
        let frozen = self.merging().is_some();
        let (outcomes, written) = apply::stage_writes(self.region(), frozen, run, &mut apply);
        applied_to.extend(outcomes);
        self.written_since_check = self.written_since_check.saturating_add(written);
        self.node.storage_mut().set_applied(&mut apply, last);
        self.writer.write_unsynced(apply)
    }

    /// Applies one committed admin entry (split, merge, membership change) here
    /// with its applied index; `applied_to` gets its outcome. False: applying stops before
    /// it (a CommitMerge waiting for its source; the entry comes again in a later Ready).
    fn apply_entry(
        &mut self,
        entry: &raft::Entry,
        admin: Admin,
        applied_to: &mut Vec<(u64, u64, KvResult<()>)>,
    ) -> KvResult<bool> {
        let mut apply = WriteBatch::new();
        let mut outcome = Ok(());
        match admin {
            Admin::Split(request) => outcome = self.apply_split(&mut apply, &request)?,
            Admin::PrepareMerge(request) => {
                outcome = self.apply_prepare_merge(&mut apply, &request, entry.index, entry.term)
            }
            Admin::CommitMerge(request) => match self.apply_commit_merge(&mut apply, &request)? {
                merge::CommitApply::Done(done) => outcome = done,
                merge::CommitApply::Wait => return Ok(false),
            },
            Admin::ConfChange => {
                let change = ChangePeer::from_entry(&entry.data)?;
                let conf = self.node.apply_conf_change(change.raft_change());
                let region = change.apply_to(self.region());
                let storage = self.node.storage_mut();
                storage.set_conf_state(&mut apply, conf);
                storage.set_region(&mut apply, region);
                match &change {
                    ChangePeer::Remove(p) if p.id == self.meta.id => self.removed = true,
                    ChangePeer::Remove(p) => self.removed_peers.push(*p),
                    _ => {}
                }
            }
        }
        self.node.storage_mut().set_applied(&mut apply, entry.index);
        if self.removed {
            // This replica's end: its data, raft state and tombstone go in the same batch as
            // the removal itself, so a crash cannot leave a replica that is neither running
            // nor destroyed. Later entries are no longer this replica's business.
            self.node.storage_mut().destroy(&mut apply)?;
            self.destroying
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.destroyed = true;
            self.writer.write(apply)?;
        } else {
            self.writer.write_unsynced(apply)?;
        }
        applied_to.push((entry.index, entry.term, outcome));
        Ok(true)
    }

    /// Hands a run of committed writes to the apply pool, with their proposals.
    fn hand_out(&mut self, entries: Vec<WriteEntry>) {
        let (Some(ApplyRoute { pool, reply, .. }), Some(last)) =
            (&self.apply_pool, entries.last().map(|e| e.index))
        else {
            return;
        };
        let mut proposals = VecDeque::new();
        while self.proposals.front().is_some_and(|p| p.index <= last) {
            proposals.extend(self.proposals.pop_front());
        }
        let reply = Arc::clone(reply);
        pool.submit(ApplyTask {
            region: self.region().clone(),
            state: self.node.storage().apply_state(),
            entries,
            proposals,
            done: Box::new(move |applied| reply(applied)),
        });
        self.applying = Some(last);
    }

    /// The apply pool wrote this peer's task (see `apply`): the applied index moves, and
    /// the reads waiting for it proceed. An error is a storage failure (stop the peer).
    pub fn on_applied(&mut self, applied: Applied) -> KvResult<()> {
        if self.applying != Some(applied.index) {
            return Err(KvError::Server(format!(
                "region {}: apply result for index {} unexpected (in flight: {:?})",
                self.region_id, applied.index, self.applying
            )));
        }
        self.applying = None;
        applied.result?;
        self.node.storage_mut().applied_elsewhere(applied.index);
        self.node.applied_to(applied.index);
        self.written_since_check = self.written_since_check.saturating_add(applied.written);
        self.serve_ready_reads();
        Ok(())
    }

    /// Answers the reads whose read index is applied (see [`Peer::read_index`]).
    fn serve_ready_reads(&mut self) {
        let applied = self.node.raft.log.applied;
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.ready_reads)
            .into_iter()
            .partition(|(index, _, _)| *index <= applied);
        self.ready_reads = later;
        if self.removed {
            // Its data is gone: waiting reads fail when the replica is destroyed.
            self.ready_reads.extend(now);
            return;
        }
        let current_term = self.node.raft.term;
        for (_, term, callback) in now {
            if self.merging().is_some() {
                // Frozen for a merge since the read was granted: the range may soon be
                // another region's.
                callback(Err(self.merging_error()));
            } else if term == current_term {
                callback(Ok(ReadFence { term }));
            } else {
                callback(Err(KvError::StaleCommand {
                    region_id: self.region_id,
                }));
            }
        }
    }

    /// Applies a split (see [`region::split`]): this region keeps the left part; the new
    /// region's state (region, apply state, hard state, membership) is written in the same
    /// batch, at the initial log position every replica of it starts from, and its peer is
    /// started by the store afterwards (`take_splits`). A split planned against another
    /// version, or with a key outside the range, applies nothing and answers EpochNotMatch.
    fn apply_split(
        &mut self,
        apply: &mut WriteBatch,
        request: &SplitRequest,
    ) -> KvResult<KvResult<()>> {
        let split = match self.merging() {
            Some(_) => Err("the region is frozen for a merge".to_string()),
            None => region::split(self.region(), request),
        };
        let (left, right) = match split {
            Ok(halves) => halves,
            Err(why) => {
                tracing::info!(region_id = self.region_id, why, "split skipped");
                return Ok(Err(KvError::EpochNotMatch {
                    region_id: self.region_id,
                    current: Some(Box::new(self.region().clone())),
                }));
            }
        };
        tracing::info!(
            store_id = self.meta.store_id,
            region_id = self.region_id,
            new_region_id = right.id,
            split_key = ?crate::raftstore::keys::printable(&request.split_key),
            "region split"
        );
        self.node.storage_mut().set_region(apply, left);
        PeerStorage::<E>::write_split_region(self.node.storage().engine(), apply, &right)?;
        if region::peer_on_store(&right, self.meta.store_id).is_some() {
            self.splits.push(right);
        }
        // The halves are measured again by the next split check.
        self.approximate = None;
        self.written_since_check = u64::MAX / 2;
        Ok(Ok(()))
    }
}
