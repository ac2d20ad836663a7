//! Driving peers: one thread per peer, fed through a channel, ticking on a timer.
//!
//! # Threading model
//!
//! Each [`Peer`] is owned by one thread that takes messages from its channel (raft messages
//! from the transport, writes and reads from the store's commands, membership changes and
//! transfers from the scheduler's answers), ticks it every `tick`, and after each batch of
//! input handles its Ready: persist, send through the [`Transport`], apply, complete
//! callbacks. Callers block on their callback's answer with a timeout, so a region that cannot
//! reach a quorum fails requests with an error instead of hanging them. A leader reports its
//! region to the store ([`StoreEvents::region_heartbeat`]) every `heartbeat_ticks` and when
//! its region or leadership changes; a replica that applied its own removal destroys itself
//! and tells the store ([`StoreEvents::peer_destroyed`]).
//!
//! Every peer persists through its store's group-commit writer (`write_batcher`), so the
//! Readies of many peers share one engine write and one fsync.
//!
//! Splits: a leader asks its store for a split check ([`StoreEvents::split_check`]) once
//! `split_check_diff` bytes were applied since the last one, every `split_check_ticks`
//! while it has changed, and soon after it starts leading a region not measured since it
//! last split (so a bulk load split off into a new region is measured at once); the check's measurement comes back as [`PeerMsg::SplitChecked`] and
//! a split to propose as [`PeerMsg::ProposeSplit`]. A split that this replica applied hands the
//! new region to the store ([`StoreEvents::region_split`]), which starts its peer here.
//!
//! Not yet: a pool of threads instead of one per peer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use proto::metapb::{Peer as PeerMeta, Region};
use proto::scheduler::RegionHeartbeatRequest;
use raft::Message;
use std::sync::RwLock;
use tracing::{info, warn};

use super::command::SplitRequest;
use super::peer::RegionSize;
use super::region::{self, ChangePeer};
use super::transport::Transport;
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

/// Input of a peer's thread.
pub enum PeerMsg {
    /// A raft message from the peer `from`.
    Raft(PeerMeta, Message),
    Write(WriteBatch, ReadFence, Callback),
    ReadIndex(ReadCallback),
    ChangePeer(ChangePeer, Callback),
    /// Propose this split (it applies only if the region is still at its version).
    ProposeSplit(SplitRequest, Callback),
    /// A split check measured the region at this epoch version.
    SplitChecked(u64, RegionSize),
    /// Start an election now (a region just split off a leader's region; a sole voter).
    Campaign,
    TransferLeader(u64),
    Unreachable(u64),
    SnapshotStatus(u64, bool),
    /// The peer was removed from its region (a newer membership says so): destroy its data
    /// and end the thread.
    Destroy,
    /// Asks for the peer's state (tests, operators).
    Status(Box<dyn FnOnce(PeerStatus) + Send>),
    Stop,
}

/// A snapshot of a peer's state.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub raft: raft::Status,
    pub peer_id: u64,
    /// The last log index removed by log GC.
    pub truncated: u64,
    pub region: Region,
}

/// What a peer thread tells its store.
pub trait StoreEvents: Send + Sync + 'static {
    /// The leader's region report, for the scheduler.
    fn region_heartbeat(&self, report: RegionHeartbeatRequest);
    /// The peer applied its own removal and destroyed its data; its thread has ended.
    fn peer_destroyed(&self, region_id: u64, peer_id: u64);
    /// The leader asks for its region to be measured (and split if it is too big).
    fn split_check(&self, region: Region);
    /// The peer applied a split that created `region` (with a replica on this store);
    /// `campaign`: the splitting replica leads, so the new one should start an election.
    fn region_split(&self, region: Region, campaign: bool);
}

/// How peer threads run.
#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub tick: Duration,
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
    /// Bytes applied after which a leader asks for a split check.
    pub split_check_diff: u64,
    /// A leader whose region changed asks for a check at least every this many ticks.
    pub split_check_ticks: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            tick: Duration::from_millis(100),
            timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            log_gc_limit: RAFT_LOG_GC_LIMIT,
            log_gc_size_limit: RAFT_LOG_GC_SIZE_LIMIT,
            heartbeat_ticks: 10,
            split_check_diff: super::split_check::SplitConfig::default().check_diff(),
            split_check_ticks: 100,
        }
    }
}

/// What a peer's thread publishes for other threads, after each Ready.
struct SharedState {
    /// The region as the peer last applied it (updated by the peer itself as it applies).
    region: Arc<RwLock<Region>>,
    /// Whether the peer is initialised (has its region's data and membership).
    initialized: AtomicBool,
    /// Whether the peer leads its region.
    leader: AtomicBool,
    /// Cleared when the peer's thread ends (stopped, destroyed, or failed).
    alive: AtomicBool,
    /// Whether reads need no confirmation by the peer's thread ([`Peer::serves_local_reads`]),
    /// and the term they are served in (the fence of writes computed from them).
    local_reads: AtomicBool,
    term: std::sync::atomic::AtomicU64,
}

impl SharedState {
    fn publish<E: Engine>(&self, peer: &Peer<E>) {
        self.initialized
            .store(peer.is_initialized(), Ordering::Release);
        self.leader.store(peer.is_leader(), Ordering::Release);
        self.term.store(peer.term(), Ordering::Release);
        self.local_reads
            .store(peer.serves_local_reads(), Ordering::Release);
    }
}

/// A handle to a peer's thread; also the region replica's [`Replication`] for a `TxnStore`.
#[derive(Clone)]
pub struct PeerHandle {
    region_id: u64,
    peer_id: u64,
    /// What the peer's thread publishes about it.
    state: Arc<SharedState>,
    /// Set just before the replica's data is deleted (shared with the peer itself).
    destroying: Arc<AtomicBool>,
    sender: Sender<PeerMsg>,
    /// How long a caller waits for a read to be confirmed, or a membership change to apply.
    timeout: Duration,
    /// How long a caller waits for a write to apply.
    write_timeout: Duration,
}

impl PeerHandle {
    pub fn send(&self, message: PeerMsg) -> bool {
        self.sender.send(message).is_ok()
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
        self.state.alive.load(Ordering::Acquire)
    }

    /// The peer's state (None if its thread has ended or does not answer in time).
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
    /// peer's thread confirms the read (ReadIndex, or its lease).
    fn read_barrier(&self) -> KvResult<ReadFence> {
        if self.state.local_reads.load(Ordering::Acquire)
            && self.state.alive.load(Ordering::Acquire)
        {
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

/// A running peer thread.
pub struct PeerThread {
    pub handle: PeerHandle,
    thread: Option<JoinHandle<()>>,
}

impl PeerThread {
    /// Destroys the peer (data, raft state; a tombstone stays) and waits for its thread.
    /// When called from the peer's own thread (an in-process transport delivering the
    /// notice on the sender's thread), it cannot wait: the thread destroys the peer as soon
    /// as the current step returns.
    pub fn destroy(mut self) {
        self.handle.send(PeerMsg::Destroy);
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }

    /// Stops the thread (the peer's persisted state stays in its engine).
    pub fn stop(mut self) {
        self.handle.send(PeerMsg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        self.handle.send(PeerMsg::Stop);
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            let _ = thread.join();
        }
    }
}

/// Starts driving `peer` on its own thread.
pub fn spawn_peer<E: Engine>(
    mut peer: Peer<E>,
    transport: Arc<dyn Transport>,
    events: Arc<dyn StoreEvents>,
    config: DriverConfig,
) -> PeerThread {
    let region_id = peer.region_id();
    let peer_id = peer.meta().id;
    let (sender, inbox) = mpsc::channel::<PeerMsg>();
    let (timeout, write_timeout) = (config.timeout, config.write_timeout);
    let state = Arc::new(SharedState {
        region: peer.published_region(),
        initialized: AtomicBool::new(peer.is_initialized()),
        leader: AtomicBool::new(false),
        alive: AtomicBool::new(true),
        local_reads: AtomicBool::new(false),
        term: std::sync::atomic::AtomicU64::new(0),
    });
    let destroying = peer.destroy_flag();
    let shared = Arc::clone(&state);
    let thread = std::thread::spawn(move || {
        // However the thread ends, its handle learns that it did.
        struct Alive(Arc<SharedState>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.alive.store(false, Ordering::Release);
            }
        }
        let shared = Alive(shared);
        let tick = config.tick;
        let mut next_tick = Instant::now() + tick;
        let mut known_leader = peer.leader();
        let mut reported = None;
        let mut ticks_since_report = 0;
        let mut ticks_since_check = 0;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match inbox.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Take everything queued, so one Ready covers it all.
            for message in first
                .into_iter()
                .chain(std::iter::from_fn(|| inbox.try_recv().ok()))
            {
                match message {
                    PeerMsg::Raft(from, m) => peer.step_from(from, m),
                    PeerMsg::Write(_, _, callback)
                        if peer.pending_proposals() >= MAX_PENDING_PROPOSALS =>
                    {
                        callback(Err(KvError::ServerIsBusy(format!(
                            "region {region_id}: {MAX_PENDING_PROPOSALS} proposals waiting"
                        ))))
                    }
                    PeerMsg::Write(batch, fence, callback) => {
                        peer.propose_write(batch, fence, callback)
                    }
                    PeerMsg::ReadIndex(callback) => peer.read_index(callback),
                    PeerMsg::ChangePeer(change, callback) => {
                        peer.propose_change_peer(change, callback)
                    }
                    PeerMsg::ProposeSplit(request, callback) => {
                        peer.propose_split(request, callback)
                    }
                    PeerMsg::SplitChecked(version, size) => {
                        if version == region::epoch(peer.region()).version {
                            peer.set_approximate_size(size);
                        }
                    }
                    PeerMsg::Campaign => peer.campaign(),
                    PeerMsg::TransferLeader(to) => peer.transfer_leader(to),
                    PeerMsg::Unreachable(to) => peer.report_unreachable(to),
                    PeerMsg::SnapshotStatus(to, ok) => peer.report_snapshot(to, ok),
                    PeerMsg::Status(callback) => callback(PeerStatus {
                        raft: peer.status(),
                        peer_id: peer.meta().id,
                        truncated: peer.truncated().0,
                        region: peer.region().clone(),
                    }),
                    PeerMsg::Destroy => {
                        let peer_id = peer.meta().id;
                        match peer.destroy() {
                            Ok(()) => info!(region_id, peer_id, "stale replica destroyed"),
                            Err(e) => warn!(region_id, peer_id, error = %e, "destroying failed"),
                        }
                        events.peer_destroyed(region_id, peer_id);
                        return;
                    }
                    PeerMsg::Stop => return,
                }
            }
            if Instant::now() >= next_tick {
                peer.tick();
                next_tick += tick;
                ticks_since_report += 1;
                ticks_since_check += 1;
            }
            let mut send = |peer: &Peer<E>, messages| {
                for envelope in peer.envelopes(messages) {
                    transport.send(envelope);
                }
            };
            match peer.handle_ready_sending(&mut send).and_then(|()| {
                peer.maybe_compact_log(config.log_gc_limit, config.log_gc_size_limit)
            }) {
                Ok(()) => {}
                Err(e) => {
                    // Storage failure: stop this replica rather than diverge from what is
                    // persisted. Pending callers time out.
                    warn!(region_id, error = %e, "peer stopped: storage failure");
                    return;
                }
            }
            shared.0.publish(&peer);
            for region in peer.take_splits() {
                events.region_split(region, peer.is_leader());
            }
            // A leader has its region measured once enough was written, and now and then
            // while it changes (to keep the reported size fresh).
            let written = peer.written_since_check();
            let due = written >= config.split_check_diff
                || (peer.approximate_size().is_none() && ticks_since_check >= 2)
                || (ticks_since_check >= config.split_check_ticks && written > 0);
            if peer.is_leader() && due {
                ticks_since_check = 0;
                peer.split_check_asked();
                events.split_check(peer.region().clone());
            }
            // Peers removed from the region are told so (a removed learner never speaks up).
            for notice in peer.take_removal_notices() {
                transport.send(notice);
            }
            if peer.is_removed() {
                let peer_id = peer.meta().id;
                match peer.destroy() {
                    Ok(()) => info!(region_id, peer_id, "removed from the region: destroyed"),
                    Err(e) => warn!(region_id, peer_id, error = %e, "destroying failed"),
                }
                events.peer_destroyed(region_id, peer_id);
                return;
            }
            // Reads waiting on a previous leader's confirmation may never get it.
            if peer.leader() != known_leader {
                peer.fail_pending_reads();
                known_leader = peer.leader();
            }
            // The leader reports its region periodically and whenever it changed.
            if let Some(report) = peer.heartbeat_report() {
                let key = (report.region.clone(), report.term);
                if ticks_since_report >= config.heartbeat_ticks || reported.as_ref() != Some(&key) {
                    ticks_since_report = 0;
                    reported = Some(key);
                    events.region_heartbeat(report);
                }
            } else {
                reported = None;
            }
        }
    });
    PeerThread {
        handle: PeerHandle {
            region_id,
            peer_id,
            state,
            destroying,
            sender,
            timeout,
            write_timeout,
        },
        thread: Some(thread),
    }
}
