//! Driving peers: what a peer's input is ([`PeerMsg`]), how the rest of the store talks to a
//! running peer ([`PeerHandle`], also the region replica's [`Replication`]), what a peer tells
//! its store ([`StoreEvents`]), and how it runs ([`DriverConfig`]).
//!
//! A peer runs as a state machine (`peer_fsm`) on its store's pool of pollers
//! (`batch_system`): callers queue messages in its mailbox and block on their callback's
//! answer with a timeout, so a region that cannot reach a quorum fails requests with an error
//! instead of hanging them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use proto::metapb::{Peer as PeerMeta, Region};
use proto::scheduler::RegionHeartbeatRequest;
use raft::Message;
use std::sync::RwLock;

use super::apply::Applied;
use super::batch_system::Mailbox;
use super::command::{CommitMergeRequest, SplitRequest};
use super::peer::RegionSize;
use super::region::ChangePeer;
use super::{Callback, Peer, ReadCallback};
use crate::error::{KvError, KvResult};
use crate::storage::{Engine, WriteBatch};
use crate::txn::{ReadFence, Replication};

/// Applied entries a peer keeps in its log before compacting (raft log GC).
pub const RAFT_LOG_GC_LIMIT: u64 = 1000;

/// Bytes of log a peer keeps before compacting, whatever the entry count (large writes).
pub const RAFT_LOG_GC_SIZE_LIMIT: u64 = 64 << 20;

/// Proposals waiting to apply beyond which a peer answers ServerIsBusy.
pub const MAX_PENDING_PROPOSALS: usize = 4096;

/// A peer's input.
pub enum PeerMsg {
    /// A raft message from the peer `from`.
    Raft(PeerMeta, Message),
    /// The region's leader `from` hibernates in `term` with `last_index` as its last log
    /// index (or, hibernating, says it is still there).
    LeaderHibernates {
        from: PeerMeta,
        term: u64,
        last_index: u64,
    },
    Write(WriteBatch, ReadFence, Callback),
    ReadIndex(ReadCallback),
    ChangePeer(ChangePeer, Callback),
    /// Propose this split (it applies only if the region is still at its version).
    ProposeSplit(SplitRequest, Callback),
    /// A split check measured the region at this epoch version.
    SplitChecked(u64, RegionSize),
    /// Propose to freeze this (source) region for a merge into this target (`peer::merge`).
    PrepareMerge(Region, Callback),
    /// Propose to take over a frozen source region (to the target's replica).
    CommitMerge(CommitMergeRequest, Callback),
    /// The target's replica on this store reached this CommitMerge: finish (to the source's
    /// replica).
    FinishMerge(CommitMergeRequest),
    /// Start an election now (a region just split off a leader's region; a sole voter).
    Campaign,
    TransferLeader(u64),
    Unreachable(u64),
    SnapshotStatus(u64, bool),
    /// The peer was removed from its region (a newer membership says so): destroy its data
    /// and end.
    Destroy,
    /// A region with a newer epoch took over this replica's range (see
    /// [`Peer::widening_snapshot`]): end, keeping the data (the snapshot replaces it).
    Overtaken,
    /// The apply pool wrote the peer's committed writes up to here (see `apply`).
    Applied(Applied),
    /// Asks for the peer's state (tests, operators).
    Status(Box<dyn FnOnce(PeerStatus) + Send>),
    Stop,
}

impl PeerMsg {
    /// Answers the caller of a message the peer will never handle (it ended).
    pub fn fail(self, region_id: u64) {
        let stopped = || KvError::Unavailable(format!("region {region_id} replica stopped"));
        match self {
            PeerMsg::Write(_, _, callback)
            | PeerMsg::ChangePeer(_, callback)
            | PeerMsg::ProposeSplit(_, callback)
            | PeerMsg::PrepareMerge(_, callback)
            | PeerMsg::CommitMerge(_, callback) => callback(Err(stopped())),
            PeerMsg::ReadIndex(callback) => callback(Err(stopped())),
            _ => {}
        }
    }
}

/// A snapshot of a peer's state.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub raft: raft::Status,
    pub peer_id: u64,
    /// The last log index removed by log GC.
    pub truncated: u64,
    pub region: Region,
    pub hibernating: bool,
}

/// What a peer tells its store.
pub trait StoreEvents: Send + Sync + 'static {
    /// The leader's region report, for the scheduler.
    fn region_heartbeat(&self, report: RegionHeartbeatRequest);
    /// The peer applied its own removal and destroyed its data; it has ended.
    fn peer_destroyed(&self, region_id: u64, peer_id: u64);
    /// The leader asks for its region to be measured (and split if it is too big).
    fn split_check(&self, region: Region);
    /// The peer applied a split that created `region` (with a replica on this store);
    /// `campaign`: the splitting replica leads, so the new one should start an election.
    fn region_split(&self, region: Region, campaign: bool);
    /// A frozen source's leader: the target should propose this CommitMerge.
    fn commit_merge(&self, request: CommitMergeRequest);
    /// A target's replica waits for the source's replica on this store to finish the merge.
    fn finish_merge(&self, request: CommitMergeRequest);
    /// A replica's snapshot of `region` reaches beyond its current range: whether no other
    /// replica on this store overlaps it any more. Those of older epochs are asked to end
    /// (merge sources overtaken by it); the snapshot waits until they have.
    fn clear_range_for_snapshot(&self, region: &Region) -> bool;
}

/// How peers run.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub tick: Duration,
    /// Poller threads of a store's pool (more than cores: a poller waits for its batch's
    /// synced write).
    pub pollers: usize,
    /// Apply workers of a store (see `apply`).
    pub appliers: usize,
    /// A peer applies runs of committed writes of at most this many bytes itself, and hands
    /// bigger ones to the apply workers (a hand-over costs more than a small apply).
    pub apply_inline_max_bytes: u64,
    /// Whether quiet regions hibernate (see `peer_fsm`).
    pub hibernate: bool,
    /// A leader quiet for this many ticks hibernates.
    pub hibernate_after_ticks: u64,
    /// A hibernating peer gets one (slow) tick every this many ticks.
    pub slow_tick_every: u64,
    /// A hibernating leader tells its followers it is still there, and reports its region,
    /// every this many slow ticks.
    pub keepalive_slow_ticks: u64,
    /// A hibernating follower that heard nothing of its leader for this many slow ticks
    /// wakes up (and may elect another leader).
    pub leader_missing_slow_ticks: u64,
    /// How long a caller waits for a read to be confirmed or a membership change to apply.
    pub timeout: Duration,
    /// How long a caller waits for a write to apply (holding its latches): longer than any
    /// client's request timeout (see `PeerHandle`'s `Replication::write`).
    pub write_timeout: Duration,
    pub log_gc_limit: u64,
    /// Bytes of log a peer keeps before compacting (raft log GC by size).
    pub log_gc_size_limit: u64,
    /// A leader reports its region every this many ticks.
    pub heartbeat_ticks: u64,
    /// A leader whose region changed asks for a check at least every this many ticks.
    pub split_check_ticks: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(100),
            pollers: 8,
            appliers: 2,
            apply_inline_max_bytes: 64 << 10,
            hibernate: true,
            hibernate_after_ticks: 30,
            slow_tick_every: 10,
            keepalive_slow_ticks: 3,
            leader_missing_slow_ticks: 10,
            timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            log_gc_limit: RAFT_LOG_GC_LIMIT,
            log_gc_size_limit: RAFT_LOG_GC_SIZE_LIMIT,
            heartbeat_ticks: 10,
            split_check_ticks: 100,
        }
    }
}

/// What a peer publishes for other threads, after each poll.
pub(super) struct SharedState {
    /// The region as the peer last applied it (updated by the peer itself as it applies).
    region: Arc<RwLock<Region>>,
    /// Whether the peer is initialised (has its region's data and membership).
    initialized: AtomicBool,
    /// Whether the peer leads its region.
    leader: AtomicBool,
    /// Whether reads need no confirmation by the peer ([`Peer::serves_local_reads`]), and
    /// the term they are served in (the fence of writes computed from them).
    local_reads: AtomicBool,
    term: std::sync::atomic::AtomicU64,
    /// The target of the merge this region is frozen for (0: none).
    merge_target: std::sync::atomic::AtomicU64,
}

impl SharedState {
    pub(super) fn new<E: Engine>(peer: &Peer<E>) -> SharedState {
        SharedState {
            region: peer.published_region(),
            initialized: AtomicBool::new(peer.is_initialized()),
            leader: AtomicBool::new(false),
            local_reads: AtomicBool::new(false),
            term: std::sync::atomic::AtomicU64::new(0),
            merge_target: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// No longer serves local reads (the peer ended).
    pub(super) fn retire(&self) {
        self.local_reads.store(false, Ordering::Release);
        self.leader.store(false, Ordering::Release);
    }

    pub(super) fn publish<E: Engine>(&self, peer: &Peer<E>) {
        self.initialized
            .store(peer.is_initialized(), Ordering::Release);
        self.leader.store(peer.is_leader(), Ordering::Release);
        self.term.store(peer.term(), Ordering::Release);
        self.local_reads
            .store(peer.serves_local_reads(), Ordering::Release);
        self.merge_target
            .store(peer.merging().map_or(0, |m| m.target.id), Ordering::Release);
    }
}

/// A handle to a running peer; also the region replica's [`Replication`] for a `TxnStore`.
#[derive(Clone)]
pub struct PeerHandle {
    region_id: u64,
    peer_id: u64,
    /// What the peer publishes about itself.
    state: Arc<SharedState>,
    /// Set just before the replica's data is deleted (shared with the peer itself).
    destroying: Arc<AtomicBool>,
    mailbox: Arc<Mailbox>,
    /// How long a caller waits for a read to be confirmed, or a membership change to apply.
    timeout: Duration,
    /// How long a caller waits for a write to apply.
    write_timeout: Duration,
}

impl PeerHandle {
    pub(super) fn new(
        peer_id: u64,
        state: Arc<SharedState>,
        destroying: Arc<AtomicBool>,
        mailbox: Arc<Mailbox>,
        config: &DriverConfig,
    ) -> PeerHandle {
        PeerHandle {
            region_id: mailbox.region_id(),
            peer_id,
            state,
            destroying,
            mailbox,
            timeout: config.timeout,
            write_timeout: config.write_timeout,
        }
    }

    /// Queues `message` for the peer; false if it has ended.
    pub fn send(&self, message: PeerMsg) -> bool {
        self.mailbox.send(message)
    }

    /// Whether the region is hibernating on this store (its peer ticks slowly).
    pub fn is_hibernating(&self) -> bool {
        self.mailbox.is_hibernating()
    }

    /// Asks the peer to end, destroying its data first if `destroy`, and waits until it
    /// has (briefly, and not at all from the store's own pollers: see
    /// [`Mailbox::wait_closed`]).
    pub(super) fn end(&self, destroy: bool) {
        self.send(if destroy {
            PeerMsg::Destroy
        } else {
            PeerMsg::Stop
        });
        self.mailbox.wait_closed(self.timeout);
    }

    fn wait<T: Send + 'static>(
        &self,
        request: impl FnOnce(Box<dyn FnOnce(KvResult<T>) + Send>) -> PeerMsg,
    ) -> KvResult<T> {
        self.wait_for(self.timeout, request)
    }

    fn wait_for<T: Send + 'static>(
        &self,
        timeout: Duration,
        request: impl FnOnce(Box<dyn FnOnce(KvResult<T>) + Send>) -> PeerMsg,
    ) -> KvResult<T> {
        let (answer, result) = mpsc::channel();
        let callback = Box::new(move |r| {
            let _ = answer.send(r);
        });
        if !self.send(request(callback)) {
            return Err(KvError::Unavailable(format!(
                "region {} replica stopped",
                self.region_id
            )));
        }
        result.recv_timeout(timeout).unwrap_or_else(|_| {
            Err(KvError::Unavailable(format!(
                "region {}: no answer from its replica within {timeout:?} (is a majority of \
                 the region's replicas up?); a write may or may not have been applied",
                self.region_id
            )))
        })
    }
}

impl PeerHandle {
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    /// Looks at the region as last applied without copying it.
    pub fn with_region<T>(&self, f: impl FnOnce(&Region) -> T) -> T {
        f(&self.state.region.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn region(&self) -> Region {
        self.state
            .region
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_initialized(&self) -> bool {
        self.state.initialized.load(Ordering::Acquire)
    }

    pub fn is_leader(&self) -> bool {
        self.state.leader.load(Ordering::Acquire)
    }

    pub fn is_alive(&self) -> bool {
        !self.mailbox.is_closed()
    }

    /// The region this one is frozen to merge into, if any.
    pub fn merge_target(&self) -> Option<u64> {
        Some(self.state.merge_target.load(Ordering::Acquire)).filter(|&id| id != 0)
    }

    /// Proposes to merge this region into `target` and waits until the proposal applied here
    /// (the region is then frozen; the target completes the merge).
    pub fn prepare_merge(&self, target: Region) -> KvResult<()> {
        self.wait(|callback| PeerMsg::PrepareMerge(target, callback))
    }

    /// The peer's state (None if it has ended or does not answer in time).
    pub fn status(&self) -> Option<PeerStatus> {
        let (answer, result) = mpsc::channel();
        let callback = Box::new(move |status| {
            let _ = answer.send(status);
        });
        if !self.send(PeerMsg::Status(callback)) {
            return None;
        }
        result.recv_timeout(self.timeout).ok()
    }

    pub fn transfer_leader(&self, peer_id: u64) -> bool {
        self.send(PeerMsg::TransferLeader(peer_id))
    }

    /// Proposes a membership change and waits until it applied here.
    pub fn change_peer(&self, change: ChangePeer) -> KvResult<()> {
        self.wait(|callback| PeerMsg::ChangePeer(change, callback))
    }

    /// Proposes a split (planned with new ids) and waits until it applied here.
    pub fn split(&self, request: SplitRequest) -> KvResult<()> {
        self.wait(|callback| PeerMsg::ProposeSplit(request, callback))
    }
}

impl Replication for PeerHandle {
    /// A sole voter's leader answers at once (see [`Peer::serves_local_reads`]); otherwise the
    /// peer confirms the read (ReadIndex, or its lease).
    fn read_barrier(&self) -> KvResult<ReadFence> {
        if self.state.local_reads.load(Ordering::Acquire) && self.is_alive() {
            // Read the term after the flag: a term published with the flag or later, so a
            // write fenced with it is refused if leadership changed in between.
            return Ok(ReadFence {
                term: self.state.term.load(Ordering::Acquire),
            });
        }
        self.wait(PeerMsg::ReadIndex)
    }

    /// Waits for the write to apply for `write_timeout`, well beyond a client's request
    /// timeout: the command's latches are held until then, so that a command retried after
    /// a lost answer (a rollback after an unanswered commit, say) waits for this one instead
    /// of being computed while this one may still commit.
    fn write(&self, batch: WriteBatch, fence: ReadFence) -> KvResult<()> {
        self.wait_for(self.write_timeout, |callback| {
            PeerMsg::Write(batch, fence, callback)
        })
    }

    fn check_snapshot(&self) -> KvResult<()> {
        if self.destroying.load(Ordering::SeqCst) {
            return Err(KvError::RegionNotFound {
                region_id: self.region_id,
            });
        }
        Ok(())
    }

    fn key_range(&self) -> (Vec<u8>, Vec<u8>) {
        let region = self.region();
        (region.start_key, region.end_key)
    }
}
