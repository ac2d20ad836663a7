//! [`PeerFsm`]: a [`Peer`] as its store's pool drives it (`batch_system`) — its input, its
//! ticks, its Ready in two halves around the pool's shared write, and what it tells its store
//! afterwards; and hibernation.
//!
//! # After each Ready
//!
//! - Log GC.
//! - The regions its applied splits created go to the store ([`StoreEvents::region_split`])
//!   and, from a leader, to the scheduler at once.
//! - A leader asks for a split check once `split_check_diff` bytes were applied since the
//!   last one, every `split_check_ticks` while its region changes, and soon after it starts
//!   leading a region not measured since it last split.
//! - Peers it removed get a tombstone notice; a replica that applied its own removal
//!   destroys itself.
//! - Reads waiting on a previous leader fail.
//! - A leader reports its region ([`StoreEvents::region_heartbeat`]) every `heartbeat_ticks`
//!   and whenever its region or term changed.
//!
//! # Hibernation
//!
//! A quiet region stops ticking, so thousands of idle regions cost (nearly) nothing:
//!
//! - A leader that stayed quiet for `hibernate_after_ticks` ([`Peer::can_hibernate_as_leader`]:
//!   nothing proposed, read or unapplied; every peer holds its whole log; no membership
//!   change or transfer under way; the region measured) hibernates and tells its peers so
//!   (an envelope marked `hibernate`, carrying its term and last index). A follower that holds
//!   exactly that log, follows that leader in that term and is quiet hibernates too.
//! - A hibernating peer gets a slow tick every `slow_tick_every` periods instead of a tick,
//!   and its Raft node does not tick. Every `keepalive_slow_ticks` slow ticks the leader
//!   repeats its notice (so its followers know it lives) and reports its region to the
//!   scheduler (whose answer may wake it with an operator step).
//! - Any input that is work wakes a peer: a raft message, a proposal, a read, a membership
//!   change, a transfer, an election. A follower that heard nothing of its leader for
//!   `leader_missing_slow_ticks` slow ticks wakes by itself and ticks again, so it elects
//!   another leader if the old one is gone; a follower that missed the notice simply keeps
//!   ticking, times out, and its pre-vote wakes the leader, which soon sleeps again.
//! - Safety: a woken leader forgets which voters answered recently
//!   ([`Peer::forget_quorum_activity`]): while it slept its followers may have woken, elected
//!   another leader and committed writes, so it serves no read by lease until a majority
//!   answered it again. A hibernating follower's election timer is stopped, which only makes
//!   it slower to vote for another candidate, never faster. A region with a single voter has
//!   no one else to elect, so its leader's local reads are unaffected.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use proto::metapb::Region;
use proto::scheduler::RegionHeartbeatRequest;
use raft::{Message, MessageBody};
use tracing::{debug, info, warn};

use super::Peer;
use super::batch_system::{BatchSystem, Fsm, Mailbox};
use super::driver::{
    DriverConfig, MAX_PENDING_PROPOSALS, PeerMsg, PeerStatus, SharedState, StoreEvents,
};
use super::peer::{ApplyReply, ApplyRoute};
use super::region;
use super::transport::{RaftEnvelope, Transport};
use crate::error::KvError;
use crate::storage::{Engine, WriteBatch};

/// Ticks between a merging peer's nudges of the other region's replica on its store.
const MERGE_NUDGE_TICKS: u64 = 3;

/// Hibernation state of one peer (see the module docs).
#[derive(Default)]
struct Hibernation {
    asleep: bool,
    /// Consecutive ticks a leader could have hibernated.
    quiet_ticks: u64,
    /// Slow ticks since the leader's last notice (leader: sent; follower: heard).
    slow_ticks: u64,
    /// Ticks of this poll, judged once its Ready is handled.
    ticked: u64,
    /// A leader's notice of this poll (leader id, term, last index), judged once the Ready
    /// is handled (the heartbeat before it may still be answered).
    notice: Option<(u64, u64, u64)>,
}

pub struct PeerFsm<E: Engine> {
    peer: Peer<E>,
    region_id: u64,
    shared: Arc<SharedState>,
    transport: Arc<dyn Transport>,
    events: Arc<dyn StoreEvents>,
    config: DriverConfig,
    /// Bytes applied after which a leader asks for a split check (from the store's
    /// `SplitConfig`).
    split_check_diff: u64,
    /// The leader as of the last poll (reads waiting on another one fail).
    known_leader: Option<u64>,
    /// The last region report (region, term), to report again on a change.
    reported: Option<(Region, u64)>,
    ticks_since_report: u64,
    ticks_since_check: u64,
    /// Ticks since this peer last nudged the other side of a merge (see `peer::merge`).
    ticks_since_merge_nudge: u64,
    hibernation: Hibernation,
    /// An end asked for while a task of this peer was in the apply pool (destroy, or end
    /// overtaken): done once its result is back (the task writes into the region's data).
    end_after_apply: Option<PeerMsg>,
}

impl<E: Engine> PeerFsm<E> {
    pub fn new(
        peer: Peer<E>,
        transport: Arc<dyn Transport>,
        events: Arc<dyn StoreEvents>,
        config: DriverConfig,
        split_check_diff: u64,
    ) -> (PeerFsm<E>, Arc<SharedState>, Arc<AtomicBool>) {
        let shared = Arc::new(SharedState::new(&peer));
        let destroying = peer.destroy_flag();
        let known_leader = peer.leader();
        let fsm = PeerFsm {
            region_id: peer.region_id(),
            peer,
            shared: Arc::clone(&shared),
            transport,
            events,
            config,
            split_check_diff,
            known_leader,
            reported: None,
            ticks_since_report: 0,
            ticks_since_check: 0,
            ticks_since_merge_nudge: MERGE_NUDGE_TICKS,
            hibernation: Hibernation::default(),
            end_after_apply: None,
        };
        (fsm, shared, destroying)
    }

    /// Destroys the replica (its data; a tombstone stays) and tells the store.
    fn destroy(&mut self, why: &str) {
        let peer_id = self.peer.meta().id;
        let region_id = self.region_id;
        match self.peer.destroy() {
            Ok(()) => info!(region_id, peer_id, "{why}: destroyed"),
            Err(e) => warn!(region_id, peer_id, error = %e, "destroying failed"),
        }
        self.shared.retire();
        self.events.peer_destroyed(region_id, peer_id);
    }

    /// Ends the peer as `message` (Destroy or Overtaken) asks. Returns false (ended).
    fn end(&mut self, message: PeerMsg) -> bool {
        if !matches!(message, PeerMsg::Overtaken) {
            self.destroy("stale replica");
            return false;
        }
        let (region_id, peer_id) = (self.region_id, self.peer.meta().id);
        match self.peer.end_overtaken() {
            Ok(()) => info!(
                region_id,
                peer_id, "a newer region took over this range: ended, its data kept"
            ),
            Err(e) => warn!(region_id, error = %e, "ending failed"),
        }
        self.shared.retire();
        self.events.peer_destroyed(region_id, peer_id);
        false
    }

    /// Ends the peer without destroying it (its persisted state stays).
    fn stop(&self) -> bool {
        self.shared.retire();
        false
    }

    fn wake(&mut self) {
        if !self.hibernation.asleep {
            return;
        }
        self.hibernation = Hibernation::default();
        debug!(region_id = self.region_id, "woken");
        if self.peer.is_leader() {
            self.peer.forget_quorum_activity();
        }
    }

    /// The leader's notice to every other peer that it hibernates (or still does).
    fn send_hibernate_notices(&self) {
        let message = Message {
            from: self.peer.meta().id,
            to: 0,
            term: self.peer.term(),
            body: MessageBody::Heartbeat {
                commit: self.peer.last_index(),
                context: None,
            },
        };
        let region = self.peer.region();
        for to_peer in region.peers.iter().filter(|p| p.id != self.peer.meta().id) {
            self.transport.send(RaftEnvelope {
                region_id: self.region_id,
                from_peer: *self.peer.meta(),
                to_peer: *to_peer,
                epoch: region::epoch(region),
                start_key: region.start_key.clone(),
                end_key: region.end_key.clone(),
                message: Message {
                    to: to_peer.id,
                    ..message.clone()
                },
                is_tombstone: false,
                hibernate: true,
            });
        }
    }

    /// A follower told by its leader that it hibernates sleeps too, if it is in step.
    fn follow_into_hibernation(&mut self, leader: u64, term: u64, last_index: u64) {
        if self
            .peer
            .can_hibernate_as_follower(leader, term, last_index)
        {
            if !self.hibernation.asleep {
                debug!(region_id = self.region_id, "hibernating with its leader");
            }
            self.hibernation.asleep = true;
            self.hibernation.slow_ticks = 0;
        }
    }

    /// Ticks of an awake peer.
    fn fast_ticks(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.peer.tick();
        }
        let ticks = u64::from(ticks);
        self.ticks_since_report += ticks;
        self.ticks_since_check += ticks;
        self.ticks_since_merge_nudge += ticks;
        self.hibernation.ticked += ticks;
    }

    /// After the Ready of a poll: a follower told so, or a leader quiet long enough, falls
    /// asleep.
    fn maybe_hibernate(&mut self) {
        if let Some((leader, term, last_index)) = self.hibernation.notice.take()
            && self.config.hibernate
        {
            self.follow_into_hibernation(leader, term, last_index);
        }
        let ticks = std::mem::take(&mut self.hibernation.ticked);
        if !self.config.hibernate || self.hibernation.asleep || ticks == 0 {
            return;
        }
        if self.peer.can_hibernate_as_leader() {
            self.hibernation.quiet_ticks += ticks;
        } else {
            self.hibernation.quiet_ticks = 0;
        }
        if self.hibernation.quiet_ticks >= self.config.hibernate_after_ticks {
            // What was written since the last check is measured before the region sleeps.
            if self.peer.written_since_check() > 0 {
                self.peer.split_check_asked();
                self.events.split_check(self.peer.region().clone());
            }
            debug!(region_id = self.region_id, "hibernating");
            self.hibernation = Hibernation {
                asleep: true,
                ..Hibernation::default()
            };
            self.send_hibernate_notices();
        }
    }

    /// A slow tick of a hibernating peer.
    fn slow_tick(&mut self) {
        self.hibernation.slow_ticks += 1;
        if self.peer.is_leader() {
            if self.hibernation.slow_ticks >= self.config.keepalive_slow_ticks {
                self.hibernation.slow_ticks = 0;
                self.send_hibernate_notices();
                self.ticks_since_report = self.config.heartbeat_ticks;
            }
        } else if self.hibernation.slow_ticks >= self.config.leader_missing_slow_ticks {
            debug!(
                region_id = self.region_id,
                "no word from the hibernating leader: waking"
            );
            self.hibernation = Hibernation::default();
        }
    }

    /// What follows a Ready (see the module docs). False: the peer ended.
    fn after_ready(&mut self) -> bool {
        let region_id = self.region_id;
        if let Err(e) = self
            .peer
            .maybe_compact_log(self.config.log_gc_limit, self.config.log_gc_size_limit)
        {
            warn!(region_id, error = %e, "peer stopped: storage failure");
            return self.stop();
        }
        self.shared.publish(&self.peer);
        let splits = self.peer.take_splits();
        for region in &splits {
            self.events
                .region_split(region.clone(), self.peer.is_leader());
        }
        let written = self.peer.written_since_check();
        let due = written >= self.split_check_diff
            || (self.peer.approximate_size().is_none() && self.ticks_since_check >= 2)
            || (self.ticks_since_check >= self.config.split_check_ticks && written > 0);
        if self.peer.is_leader() && due {
            self.ticks_since_check = 0;
            self.peer.split_check_asked();
            self.events.split_check(self.peer.region().clone());
        }
        // Peers removed from the region are told so (a removed learner never speaks up).
        for notice in self.peer.take_removal_notices() {
            self.transport.send(notice);
        }
        if self.peer.is_removed() {
            self.destroy("removed from the region");
            return false;
        }
        // Reads waiting on a previous leader's confirmation may never get it.
        if self.peer.leader() != self.known_leader {
            self.peer.fail_pending_reads();
            self.known_leader = self.peer.leader();
        }
        // The leader reports its region periodically and whenever it changed.
        if let Some(report) = self.peer.heartbeat_report() {
            let key = (report.region.clone().unwrap_or_default(), report.term);
            if self.ticks_since_report >= self.config.heartbeat_ticks
                || self.reported.as_ref() != Some(&key)
            {
                self.ticks_since_report = 0;
                self.reported = Some(key);
                self.events.region_heartbeat(report);
            }
        } else {
            self.reported = None;
        }
        if self.peer.is_leader() {
            // The scheduler learns of the regions a split created at once (after the shrunk
            // region's own report, above), as if their replicas here led them already (they
            // campaign now; term 0 yields to their first real report), so that their ranges
            // are not missing from the scheduler until they report.
            for region in splits {
                self.events.region_heartbeat(RegionHeartbeatRequest {
                    leader: region::peer_on_store(&region, self.peer.meta().store_id).copied(),
                    region: Some(region),
                    term: 0,
                    ..Default::default()
                });
            }
        }
        self.nudge_merge();
        self.maybe_hibernate();
        true
    }

    /// A merge under way moves on through the other region's replica on this store: a frozen
    /// source's leader hands the CommitMerge to the target, a target waiting at its
    /// CommitMerge asks the source to finish (see `peer::merge`).
    fn nudge_merge(&mut self) {
        if self.ticks_since_merge_nudge < MERGE_NUDGE_TICKS {
            return;
        }
        let request = self
            .peer
            .merge_waiting_for_source()
            .cloned()
            .map(|r| (r, false))
            .or_else(|| self.peer.commit_merge_request().map(|r| (r, true)));
        if let Some((request, to_target)) = request {
            self.ticks_since_merge_nudge = 0;
            if to_target {
                self.events.commit_merge(request);
            } else {
                self.events.finish_merge(request);
            }
        }
    }
}

/// Starts `peer` on `system`, applying its committed writes on the system's apply pool;
/// returns its mailbox, its shared state and its destroy flag (for its `PeerHandle`).
pub fn spawn<E: Engine>(
    system: &BatchSystem,
    peer: Peer<E>,
    transport: Arc<dyn Transport>,
    events: Arc<dyn StoreEvents>,
    config: DriverConfig,
    split_check_diff: u64,
) -> (Arc<Mailbox>, Arc<SharedState>, Arc<AtomicBool>) {
    let region_id = peer.region_id();
    let apply_pool = system.apply_pool();
    let mut made = None;
    let mailbox = system.spawn_with(region_id, |mailbox| {
        // An apply task's result comes back through the peer's mailbox (dropped if the
        // peer has ended).
        let reply: ApplyReply = Arc::new(move |applied| {
            if let Some(mailbox) = mailbox.upgrade() {
                mailbox.send(PeerMsg::Applied(applied));
            }
        });
        let peer = peer.with_apply_pool(ApplyRoute {
            pool: apply_pool,
            reply,
            inline_max_bytes: config.apply_inline_max_bytes,
        });
        let (fsm, state, destroying) =
            PeerFsm::new(peer, transport, events, config, split_check_diff);
        made = Some((state, destroying));
        Box::new(fsm)
    });
    let (state, destroying) = made.expect("spawn_with builds the peer");
    (mailbox, state, destroying)
}

/// Sends a peer's raft messages through `transport`.
fn sender<E: Engine>(transport: &dyn Transport) -> impl FnMut(&Peer<E>, Vec<Message>) + '_ {
    move |peer, messages| {
        for envelope in peer.envelopes(messages) {
            transport.send(envelope);
        }
    }
}

impl<E: Engine> Fsm for PeerFsm<E> {
    fn handle(&mut self, messages: Vec<PeerMsg>, ticks: u32) -> bool {
        let region_id = self.region_id;
        for message in messages {
            // Whether the message is work that wakes a hibernating peer. Not: the answers to
            // the leader's last heartbeats, arriving after it fell asleep, nor a keepalive
            // notice that did not reach a store that is down.
            let work = !matches!(
                message,
                PeerMsg::LeaderHibernates { .. }
                    | PeerMsg::SplitChecked(..)
                    | PeerMsg::Applied(_)
                    | PeerMsg::Status(_)
                    | PeerMsg::Unreachable(_)
                    | PeerMsg::Raft(
                        _,
                        Message {
                            body: MessageBody::HeartbeatResponse { context: None },
                            ..
                        }
                    )
            );
            if work {
                self.wake();
            }
            match message {
                PeerMsg::Raft(from, m) => self.peer.step_from(from, m),
                PeerMsg::LeaderHibernates {
                    from,
                    term,
                    last_index,
                } => self.hibernation.notice = Some((from.id, term, last_index)),
                PeerMsg::Write(_, _, callback)
                    if self.peer.pending_proposals() >= MAX_PENDING_PROPOSALS =>
                {
                    callback(Err(KvError::ServerIsBusy(format!(
                        "region {region_id}: {MAX_PENDING_PROPOSALS} proposals waiting"
                    ))))
                }
                PeerMsg::Write(batch, fence, callback) => {
                    self.peer.propose_write(batch, fence, callback)
                }
                PeerMsg::ReadIndex(callback) => self.peer.read_index(callback),
                PeerMsg::ChangePeer(change, callback) => {
                    self.peer.propose_change_peer(change, callback)
                }
                PeerMsg::ProposeSplit(request, callback) => {
                    self.peer.propose_split(request, callback)
                }
                PeerMsg::PrepareMerge(target, callback) => {
                    self.peer.propose_prepare_merge(target, callback)
                }
                PeerMsg::CommitMerge(request, callback) => {
                    self.peer.propose_commit_merge(request, callback)
                }
                PeerMsg::FinishMerge(request) => {
                    if let Err(e) = self.peer.finish_merge(&request) {
                        warn!(region_id, error = %e, "peer stopped: storage failure");
                        return self.stop();
                    }
                    if self.peer.is_merged() {
                        self.shared.retire();
                        self.events.peer_destroyed(region_id, self.peer.meta().id);
                        return false;
                    }
                }
                PeerMsg::SplitChecked(version, size) => {
                    if version == region::epoch(self.peer.region()).version {
                        self.peer.set_approximate_size(size);
                    }
                }
                PeerMsg::Campaign => self.peer.campaign(),
                PeerMsg::TransferLeader(to) => self.peer.transfer_leader(to),
                PeerMsg::Unreachable(to) => self.peer.report_unreachable(to),
                PeerMsg::SnapshotStatus(to, ok) => self.peer.report_snapshot(to, ok),
                PeerMsg::Status(callback) => callback(PeerStatus {
                    raft: self.peer.status(),
                    peer_id: self.peer.meta().id,
                    truncated: self.peer.truncated().0,
                    region: self.peer.region().clone(),
                    hibernating: self.hibernation.asleep,
                }),
                PeerMsg::Applied(applied) => {
                    if let Err(e) = self.peer.on_applied(applied) {
                        warn!(region_id, error = %e, "peer stopped: applying failed");
                        return self.stop();
                    }
                    if let Some(end) = self.end_after_apply.take() {
                        return self.end(end);
                    }
                    // Nothing is in flight now: the log may be compacted (under a steady
                    // load, the next task leaves the pool again in this very poll).
                    if let Err(e) = self
                        .peer
                        .maybe_compact_log(self.config.log_gc_limit, self.config.log_gc_size_limit)
                    {
                        warn!(region_id, error = %e, "peer stopped: storage failure");
                        return self.stop();
                    }
                }
                PeerMsg::Destroy | PeerMsg::Overtaken if self.peer.is_applying() => {
                    self.end_after_apply = Some(message)
                }
                PeerMsg::Destroy | PeerMsg::Overtaken => return self.end(message),
                PeerMsg::Stop => return self.stop(),
            }
        }
        if ticks > 0 {
            if self.hibernation.asleep {
                self.slow_tick();
            } else {
                self.fast_ticks(ticks);
            }
        }
        true
    }

    fn prepare(&mut self, batch: &mut WriteBatch) -> bool {
        if let Some(region) = self.peer.widening_snapshot()
            && !self.events.clear_range_for_snapshot(&region)
        {
            // Replicas of the regions it took over are still here: the snapshot waits (it is
            // tried again on every tick).
            debug!(
                region_id = self.region_id,
                "snapshot waits for overlapping replicas to end"
            );
            return true;
        }
        match self
            .peer
            .prepare_ready(batch, &mut sender(self.transport.as_ref()))
        {
            Ok(_) => true,
            Err(e) => {
                warn!(region_id = self.region_id, error = %e, "peer stopped: storage failure");
                self.stop()
            }
        }
    }

    fn finish(&mut self, persisted: Result<(), String>) -> bool {
        if let Err(e) = persisted {
            // Storage failure: stop this replica rather than diverge from what is persisted.
            // Pending callers time out.
            warn!(region_id = self.region_id, error = %e, "peer stopped: storage failure");
            return self.stop();
        }
        if let Err(e) = self.peer.finish_ready(&mut sender(self.transport.as_ref())) {
            warn!(region_id = self.region_id, error = %e, "peer stopped: storage failure");
            return self.stop();
        }
        self.after_ready()
    }

    fn hibernating(&self) -> bool {
        self.hibernation.asleep
    }
}
