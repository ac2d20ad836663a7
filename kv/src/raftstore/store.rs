//! [`Store`]: the replicas of one node's engine — the peers of every region it holds, routing
//! raft messages to them, creating and destroying them, and talking to the scheduler.
//!
//! # Lifecycle of a replica
//!
//! - **Bootstrap.** The first store of a cluster creates its first region (the whole
//!   keyspace, itself the only voter), persists it, and registers it with the scheduler;
//!   exactly one bootstrap wins, a loser discards its region. A bootstrap whose call failed
//!   (or whose node crashed) after persisting is offered again, unchanged, on the next start.
//! - **Removal.** A replica that applies its own removal destroys its data and Raft state and
//!   writes its tombstone in the same batch; one that missed its removal learns of it from a
//!   tombstone notice (sent by the members that applied it, or in answer to its messages) or
//!   from the scheduler's view of the region, checked with every store heartbeat.
//! - **Startup.** A store reopens every region whose state it persisted (tombstones excepted;
//!   a region that no longer lists this store is destroyed); each peer resumes from its
//!   persisted Raft and apply state. A region whose only voter is here campaigns at once.
//! - **Creation on demand.** A store that receives a leader's message (append, heartbeat or
//!   snapshot) for a region it does not hold, addressed to a peer on this store, creates that
//!   peer empty; the leader's snapshot initialises it (data, membership, region). A tombstone
//!   from an epoch at least as new as the message's stops stale messages from recreating a
//!   removed peer; a newer membership (the peer was added back) does recreate it.
//!
//! # Scheduler
//!
//! A heartbeat thread (`store_heartbeat`) sends the store's heartbeat every
//! `store_heartbeat` and forwards each leader's region report; the scheduler's answer may
//! carry one membership change (the replica checker), which the thread hands to the region's
//! leader as a proposal.
//!
//! # Splits
//!
//! See `store_split`: the split-check thread, the peers splits create, and messages for a
//! region that arrive before this store applied the split creating it.
//!
//! # Merges
//!
//! The scheduler's answer may ask a source region's leader to merge into a target
//! ([`Inner::ask_merge`]); the two regions' replicas on a store talk through the store
//! ([`StoreEvents::commit_merge`], [`StoreEvents::finish_merge`]), and a region that a
//! local region is frozen to merge into is not split nor changed in membership meanwhile
//! ([`Inner::is_merge_target`]). See `peer::merge`.
//!
//! Not here: balancing leaders (the scheduler decides; a leader hands over on request).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use proto::metapb::{Peer as PeerMeta, Region, Store as StoreMeta};
use proto::scheduler::RegionHeartbeatRequest;
use raft::{Config as RaftConfig, MessageBody};
use scheduler_api::ClusterApi;
use tracing::{debug, info, warn};

use super::batch_system::BatchSystem;
use super::command::CommitMergeRequest;
use super::driver::{DriverConfig, PeerHandle, PeerMsg, StoreEvents};
use super::keys;
use super::region::{self, RegionLocalState};
use super::split_check::SplitConfig;
use super::store_split::{SplitTask, split_loop};
use super::transport::{RaftEnvelope, RaftRouter, Transport};
use super::write_batcher::{RaftWriter, WriteBatcher};
use super::{Peer, PeerStorage};
use crate::error::{KvError, KvResult};
use crate::storage::{Cf, Engine, Snapshot, WriteBatch};

/// How a store runs its peers.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub raft: RaftConfig,
    pub driver: DriverConfig,
    /// How often the store sends its own heartbeat to the scheduler.
    pub store_heartbeat: Duration,
    /// When regions split.
    pub split: SplitConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            raft: RaftConfig {
                // Reads on the leader within its check-quorum lease skip the heartbeat round
                // (raft's `read_only` module gives the timing assumption).
                lease_read: true,
                ..RaftConfig::new(0)
            },
            driver: DriverConfig::default(),
            store_heartbeat: Duration::from_secs(1),
            split: SplitConfig::default(),
        }
    }
}

pub(super) enum Event {
    RegionReport(RegionHeartbeatRequest),
    Stop,
}

pub(super) struct Inner<E: Engine> {
    pub(super) store_id: u64,
    pub(super) engine: Arc<E>,
    pub(super) cluster: Arc<dyn ClusterApi>,
    pub(super) transport: Arc<dyn Transport>,
    pub(super) config: StoreConfig,
    pub(super) peers: Mutex<BTreeMap<u64, PeerHandle>>,
    /// Held while replicas are created or destroyed, so that a replica of a region is never
    /// created while an older one of the same region is still being destroyed.
    pub(super) lifecycle: Mutex<()>,
    /// Group commit of every peer's writes.
    pub(super) writer: Arc<WriteBatcher>,
    /// The pollers and the clock that run every peer.
    pub(super) system: BatchSystem,
    pub(super) events: Mutex<Sender<Event>>,
    /// Set when the store shuts down: no new peers.
    pub(super) stopped: std::sync::atomic::AtomicBool,
    /// Work for the split-check thread (`store_split`).
    pub(super) split_tasks: Mutex<Sender<SplitTask>>,
    /// Messages for regions a split here is about to create (`store_split`).
    pub(super) early_messages: Mutex<Vec<(std::time::Instant, RaftEnvelope)>>,
}

/// One node's store. Cloning shares it.
pub struct Store<E: Engine> {
    inner: Arc<Inner<E>>,
    heartbeat: Mutex<Option<std::thread::JoinHandle<()>>>,
    split_checker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Reads the store id persisted in `engine`, if it was assigned one.
pub fn load_store_id<E: Engine>(engine: &E) -> KvResult<Option<u64>> {
    match engine.snapshot().get(Cf::Raft, &keys::store_ident())? {
        Some(bytes) => {
            let id: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| KvError::Corrupt("malformed store identity".into()))?;
            Ok(Some(u64::from_be_bytes(id)))
        }
        None => Ok(None),
    }
}

/// Gets this engine's store id: the persisted one, or a new one from the scheduler, persisted.
pub fn ensure_store_id<E: Engine>(engine: &E, cluster: &dyn ClusterApi) -> KvResult<u64> {
    if let Some(id) = load_store_id(engine)? {
        return Ok(id);
    }
    let id = cluster.alloc_id().map_err(cluster_error)?;
    let mut batch = WriteBatch::new();
    batch.put(Cf::Raft, keys::store_ident(), id.to_be_bytes().to_vec());
    engine.write(batch)?;
    Ok(id)
}

pub fn cluster_error(e: scheduler_api::ClusterError) -> KvError {
    KvError::Unavailable(format!("scheduler: {e}"))
}

impl<E: Engine> Store<E> {
    /// Opens the store: registers it with the scheduler (address `meta.address`), bootstraps
    /// the cluster if nobody has, and starts every region replica persisted in the engine.
    pub fn start(
        engine: Arc<E>,
        meta: StoreMeta,
        cluster: Arc<dyn ClusterApi>,
        transport: Arc<dyn Transport>,
        config: StoreConfig,
    ) -> KvResult<Store<E>> {
        let store_id = meta.id;
        cluster.put_store(meta.clone()).map_err(cluster_error)?;
        let (sender, receiver) = mpsc::channel();
        let (split_sender, split_receiver) = mpsc::channel();
        let writer = Arc::new(WriteBatcher::start(Arc::clone(&engine)));
        let system = BatchSystem::start(
            Arc::clone(&writer) as Arc<dyn RaftWriter>,
            config.driver.pollers,
            config.driver.appliers,
            config.driver.tick,
            config.driver.slow_tick_every,
        );
        let inner = Arc::new(Inner {
            store_id,
            engine,
            cluster,
            transport,
            config,
            peers: Mutex::new(BTreeMap::new()),
            lifecycle: Mutex::new(()),
            writer,
            system,
            events: Mutex::new(sender),
            stopped: std::sync::atomic::AtomicBool::new(false),
            split_tasks: Mutex::new(split_sender),
            early_messages: Mutex::new(Vec::new()),
        });
        inner.bootstrap_if_needed(&meta)?;
        for region in inner.local_regions()? {
            let Some(me) = region::peer_on_store(&region, store_id).copied() else {
                // Removed from the region (its removal applied) but not destroyed: finish.
                info!(
                    store_id,
                    region_id = region.id,
                    "destroying a removed replica"
                );
                let mut storage = PeerStorage::open(Arc::clone(&inner.engine), &region)?;
                let mut batch = WriteBatch::new();
                storage.destroy(&mut batch)?;
                inner.engine.write(batch)?;
                continue;
            };
            let handle = inner.start_peer(&region, me)?;
            // A region whose only voter is this replica elects it at once (a single-node
            // cluster should not wait an election timeout after every start).
            let voters: Vec<_> = region.peers.iter().filter(|p| !p.learner).collect();
            if voters.len() == 1 && voters[0].id == me.id {
                handle.send(PeerMsg::Campaign);
            }
        }
        let weak = Arc::downgrade(&inner);
        let heartbeat =
            std::thread::spawn(move || super::store_heartbeat::heartbeat_loop(weak, receiver));
        let weak = Arc::downgrade(&inner);
        let split_checker = std::thread::spawn(move || split_loop(weak, split_receiver));
        Ok(Store {
            inner,
            heartbeat: Mutex::new(Some(heartbeat)),
            split_checker: Mutex::new(Some(split_checker)),
        })
    }

    pub fn id(&self) -> u64 {
        self.inner.store_id
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.inner.engine
    }

    /// The handle of this store's replica of `region_id`.
    pub fn peer(&self, region_id: u64) -> Option<PeerHandle> {
        self.inner.peer(region_id)
    }

    /// Merges region `source` into the adjacent region `target` through their replicas
    /// here (which must lead both; the replicas must be on the same stores), and waits until
    /// the target's replica here serves the merged range. For tools and tests; the scheduler
    /// merges small regions by itself.
    pub fn merge_regions(&self, source: u64, target: u64, timeout: Duration) -> KvResult<Region> {
        let source_peer = self
            .peer(source)
            .ok_or(KvError::RegionNotFound { region_id: source })?;
        let target_peer = self
            .peer(target)
            .ok_or(KvError::RegionNotFound { region_id: target })?;
        source_peer.prepare_merge(target_peer.region())?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let merged = target_peer.region();
            let source_region = source_peer.region();
            if region::contains_key(&merged, &source_region.start_key) && !source_peer.is_alive() {
                return Ok(merged);
            }
            if std::time::Instant::now() >= deadline {
                return Err(KvError::Unavailable(format!(
                    "regions {source} and {target} not merged within {timeout:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn region_ids(&self) -> Vec<u64> {
        self.inner
            .lock_peers()
            .iter()
            .filter(|(_, p)| p.is_alive())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Splits the region at `key` through its replica here (which must lead it): new ids
    /// from the scheduler, then the split proposed and applied. For tools and benchmarks;
    /// regions split by themselves as they grow, or when the scheduler asks.
    /// Returns the new region's id (it holds `key` and what follows in the old range).
    pub fn split_region(&self, region_id: u64, key: &[u8]) -> KvResult<u64> {
        let handle = self
            .peer(region_id)
            .ok_or(KvError::RegionNotFound { region_id })?;
        let region = handle.region();
        let plan = super::split_check::plan_split(&region, key.to_vec(), || {
            self.inner.cluster.alloc_id().map_err(cluster_error)
        })?;
        let new_region_id = plan.new_region_id;
        handle.split(plan)?;
        Ok(new_region_id)
    }

    /// The router the transport delivers this store's incoming messages to.
    pub fn router(&self) -> Arc<dyn RaftRouter> {
        Arc::new(Router(Arc::downgrade(&self.inner)))
    }

    /// Stops every peer and the heartbeat thread (persisted state stays).
    pub fn stop(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Event::Stop);
        if let Some(thread) = self
            .heartbeat
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
        let _ = self
            .inner
            .split_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(SplitTask::Stop);
        if let Some(thread) = self
            .split_checker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
        self.inner.system.shutdown();
        self.inner.lock_peers().clear();
    }
}

impl<E: Engine> Drop for Store<E> {
    fn drop(&mut self) {
        self.stop();
    }
}

impl<E: Engine> Inner<E> {
    pub(super) fn lock_peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, PeerHandle>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The regions persisted in the engine (tombstones excluded).
    pub(super) fn local_regions(&self) -> KvResult<Vec<Region>> {
        let (from, to) = keys::region_state_range();
        let snapshot = self.engine.snapshot();
        let mut regions = Vec::new();
        for item in snapshot.scan(Cf::Raft, &from, Some(&to)) {
            let (_, value) = item?;
            let state = RegionLocalState::decode(&value)?;
            if !state.tombstone {
                regions.push(state.region);
            }
        }
        Ok(regions)
    }

    fn local_state(&self, region_id: u64) -> KvResult<Option<RegionLocalState>> {
        match self
            .engine
            .snapshot()
            .get(Cf::Raft, &keys::region_state(region_id))?
        {
            Some(bytes) => Ok(Some(RegionLocalState::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Creates the cluster's first region here if the cluster has no region yet.
    ///
    /// The region is persisted before the scheduler hears of it, so a crash (or a failed call)
    /// in between leaves it on disk: the next start offers the same region again. If another
    /// store bootstrapped meanwhile, the region prepared here never served anything (clients
    /// route through the scheduler, which never knew it) and is dropped.
    fn bootstrap_if_needed(&self, meta: &StoreMeta) -> KvResult<()> {
        let local = self.local_regions()?;
        let prepared = local
            .iter()
            .find(|r| {
                r.peers.len() == 1
                    && r.peers[0].store_id == self.store_id
                    && region::epoch(r) == region::initial_epoch()
            })
            .cloned();
        if self.cluster.is_bootstrapped().map_err(cluster_error)? {
            // A prepared region the scheduler does not know lost the race: drop it.
            if let Some(region) = prepared
                && self
                    .cluster
                    .get_region_by_id(region.id)
                    .map_err(cluster_error)?
                    .is_none()
            {
                info!(
                    region_id = region.id,
                    "dropping a region whose bootstrap lost"
                );
                let mut batch = WriteBatch::new();
                batch.delete(Cf::Raft, keys::region_state(region.id));
                self.engine.write(batch)?;
            }
            return Ok(());
        }
        let region = match prepared {
            Some(region) => region,
            None if !local.is_empty() => {
                return Err(KvError::Server(
                    "this store holds regions but the scheduler knows no cluster: is it the \
                     right scheduler?"
                        .into(),
                ));
            }
            None => {
                let region_id = self.cluster.alloc_id().map_err(cluster_error)?;
                let peer_id = self.cluster.alloc_id().map_err(cluster_error)?;
                let region = Region {
                    id: region_id,
                    start_key: Vec::new(),
                    end_key: Vec::new(),
                    epoch: Some(region::initial_epoch()),
                    peers: vec![PeerMeta {
                        id: peer_id,
                        store_id: self.store_id,
                        learner: false,
                    }],
                };
                let state = RegionLocalState::new(region.clone());
                let mut batch = WriteBatch::new();
                batch.put(Cf::Raft, keys::region_state(region_id), state.encode());
                self.engine.write(batch)?;
                region
            }
        };
        let region_id = region.id;
        if self
            .cluster
            .bootstrap(meta.clone(), region)
            .map_err(cluster_error)?
        {
            info!(
                store_id = self.store_id,
                region_id, "bootstrapped the cluster"
            );
        } else if self
            .cluster
            .get_region_by_id(region_id)
            .map_err(cluster_error)?
            .is_some()
        {
            // An earlier call of ours (whose answer was lost) got there first.
            info!(
                store_id = self.store_id,
                region_id, "bootstrapped the cluster"
            );
        } else {
            // Another store won: forget the region prepared here.
            let mut batch = WriteBatch::new();
            batch.delete(Cf::Raft, keys::region_state(region_id));
            self.engine.write(batch)?;
        }
        Ok(())
    }

    pub(super) fn start_peer(
        self: &Arc<Self>,
        region: &Region,
        me: PeerMeta,
    ) -> KvResult<PeerHandle> {
        let peer = Peer::open(
            Arc::clone(&self.engine),
            region,
            me,
            self.config.raft.clone(),
        )?
        .with_writer(Arc::clone(&self.writer) as Arc<dyn RaftWriter>);
        let events: Arc<dyn StoreEvents> = Arc::new(Events(Arc::downgrade(self)));
        let peer_id = me.id;
        let (mailbox, state, destroying) = super::peer_fsm::spawn(
            &self.system,
            peer,
            Arc::clone(&self.transport),
            events,
            self.config.driver.clone(),
            self.config.split.check_diff(),
        );
        let handle = PeerHandle::new(peer_id, state, destroying, mailbox, &self.config.driver);
        self.lock_peers().insert(region.id, handle.clone());
        Ok(handle)
    }

    /// Whether an envelope for a region this store does not hold should create its peer.
    fn should_create(&self, envelope: &RaftEnvelope) -> KvResult<bool> {
        if envelope.to_peer.store_id != self.store_id
            || !matches!(
                envelope.message.body,
                MessageBody::Append { .. }
                    | MessageBody::Heartbeat { .. }
                    | MessageBody::Snapshot { .. }
            )
        {
            return Ok(false);
        }
        Ok(match self.local_state(envelope.region_id)? {
            None => true,
            // A removed peer comes back only through a newer membership.
            Some(state) if state.tombstone => {
                region::epoch(&state.region).conf_ver < envelope.epoch.conf_ver
            }
            // Persisted but not running: being destroyed or stopped.
            Some(_) => false,
        })
    }

    fn deliver(self: &Arc<Self>, envelope: RaftEnvelope) {
        let region_id = envelope.region_id;
        if envelope.hibernate {
            // A leader's hibernation notice: only for the running replica it names.
            if let Some(peer) = self.lock_peers().get(&region_id)
                && peer.peer_id() == envelope.to_peer.id
                && let MessageBody::Heartbeat { commit, .. } = envelope.message.body
            {
                peer.send(PeerMsg::LeaderHibernates {
                    from: envelope.from_peer,
                    term: envelope.message.term,
                    last_index: commit,
                });
            }
            return;
        }
        let newer = |local: &Region| region::epoch(local).conf_ver < envelope.epoch.conf_ver;
        // A replica to destroy before going on: taken out of the map under its lock, destroyed
        // outside it (it waits for the peer to end), under the lifecycle lock.
        let mut stale = None;
        {
            let mut peers = self.lock_peers();
            if let Some(peer) = peers.get(&region_id) {
                let local = peer.region();
                let is_local_peer = peer.peer_id() == envelope.to_peer.id;
                if envelope.is_tombstone {
                    // Removed from the region: destroy the replica if the notice is for it.
                    if !(is_local_peer && newer(&local)) {
                        return;
                    }
                    info!(region_id, "told that this replica was removed");
                    stale = peers.remove(&region_id);
                } else if !is_local_peer {
                    if !newer(&local) {
                        return; // For an older incarnation of this store's replica.
                    }
                    // A newer membership has another peer here: the local one is stale.
                    info!(region_id, "replaced by a newer replica of the region");
                    stale = peers.remove(&region_id);
                } else {
                    // A peer that is no longer in the region (by a newer epoch than the
                    // message's) learns so, since the group no longer talks to it.
                    let initialized = peer.is_initialized();
                    if initialized
                        && region::find_peer(&local, envelope.from_peer.id).is_none()
                        && region::epoch(&local).conf_ver > envelope.epoch.conf_ver
                    {
                        drop(peers);
                        self.send_tombstone(&local, envelope);
                        return;
                    }
                    let message = PeerMsg::Raft(envelope.from_peer, envelope.message);
                    if !peer.send(message) {
                        // The peer ended (it was destroyed): forget it. A later
                        // message of a newer membership may create it again.
                        peers.remove(&region_id);
                    }
                    return;
                }
            }
        }
        let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(peer) = stale {
            peer.end(true);
        }
        if envelope.is_tombstone || self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        // Created by another delivery meanwhile?
        if let Some(peer) = self.lock_peers().get(&region_id)
            && peer.peer_id() == envelope.to_peer.id
        {
            peer.send(PeerMsg::Raft(envelope.from_peer, envelope.message));
            return;
        }
        // A region that a replica here still covers (it has not applied the split that
        // created this one yet): creating an empty replica would put the same keys in two
        // replicas here. Keep the message (votes included) for when the split creates it.
        // (The overlap test reads every persisted region state: it comes last.)
        if envelope.to_peer.store_id == self.store_id
            && matches!(self.local_state(region_id), Ok(None))
            && self.overlaps_local_region(&envelope)
        {
            debug!(
                region_id,
                "message for a region a local split will create: kept"
            );
            self.keep_early_message(envelope);
            return;
        }
        match self.should_create(&envelope) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                warn!(region_id, error = %e, "cannot read region state");
                return;
            }
        }
        let region = Region {
            id: region_id,
            start_key: envelope.start_key.clone(),
            end_key: envelope.end_key.clone(),
            epoch: Some(envelope.epoch),
            peers: Vec::new(),
        };
        info!(
            store_id = self.store_id,
            region_id,
            peer_id = envelope.to_peer.id,
            start = ?keys::printable(&envelope.start_key),
            end = ?keys::printable(&envelope.end_key),
            "creating a replica for the leader's message"
        );
        match self.start_peer(&region, envelope.to_peer) {
            Ok(handle) => {
                handle.send(PeerMsg::Raft(envelope.from_peer, envelope.message));
            }
            Err(e) => warn!(region_id, error = %e, "cannot create replica"),
        }
    }

    /// Tells the sender of `envelope` that it is no longer a member of `local`.
    fn send_tombstone(&self, local: &Region, envelope: RaftEnvelope) {
        let Some(me) = region::peer_on_store(local, self.store_id).cloned() else {
            return;
        };
        debug!(
            region_id = local.id,
            to = envelope.from_peer.id,
            "telling a removed replica to go"
        );
        self.transport.send(RaftEnvelope {
            region_id: local.id,
            from_peer: me,
            to_peer: envelope.from_peer,
            epoch: region::epoch(local),
            start_key: local.start_key.clone(),
            end_key: local.end_key.clone(),
            message: envelope.message,
            is_tombstone: true,
            hibernate: false,
        });
    }

    /// Queues a split of `region` at `key` for the split thread (the scheduler asked for it).
    pub(super) fn ask_split(&self, region: Region, key: Vec<u8>) {
        let _ = self
            .split_tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(SplitTask::At(region, key));
    }

    /// Whether a region on this store is frozen to merge into `region_id` (which must then
    /// keep its epoch: no split, no membership change, until the merge is done).
    pub(super) fn is_merge_target(&self, region_id: u64) -> bool {
        self.lock_peers()
            .values()
            .any(|p| p.is_alive() && p.merge_target() == Some(region_id))
    }

    /// Hands the scheduler's merge of `source` into `target` to the source's replica here, if
    /// the target's replica here has the planned epoch (and the source is not frozen yet).
    pub(super) fn ask_merge(&self, source: &Region, target: Region) {
        let (Some(source_peer), Some(target_peer)) = (self.peer(source.id), self.peer(target.id))
        else {
            return;
        };
        if source_peer.merge_target().is_some()
            || target_peer.with_region(|r| region::epoch(r) != region::epoch(&target))
        {
            return;
        }
        info!(
            source = source.id,
            target = target.id,
            "scheduler asks for a merge"
        );
        let source_id = source.id;
        let callback = Box::new(move |result: KvResult<()>| {
            if let Err(e) = result {
                debug!(source = source_id, error = %e, "prepare merge not applied");
            }
        });
        source_peer.send(PeerMsg::PrepareMerge(target, callback));
    }

    fn peer(&self, region_id: u64) -> Option<PeerHandle> {
        self.lock_peers()
            .get(&region_id)
            .filter(|p| p.is_alive())
            .cloned()
    }

    pub(super) fn send_to_peer(&self, region_id: u64, message: PeerMsg) {
        if let Some(peer) = self.lock_peers().get(&region_id) {
            peer.send(message);
        }
    }
}

struct Events<E: Engine>(Weak<Inner<E>>);

impl<E: Engine> StoreEvents for Events<E> {
    fn region_heartbeat(&self, report: RegionHeartbeatRequest) {
        if let Some(inner) = self.0.upgrade() {
            let _ = inner
                .events
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(Event::RegionReport(report));
        }
    }

    fn split_check(&self, region: Region) {
        if let Some(inner) = self.0.upgrade() {
            let _ = inner
                .split_tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .send(SplitTask::Check(region));
        }
    }

    fn region_split(&self, region: Region, campaign: bool) {
        if let Some(inner) = self.0.upgrade() {
            inner.start_split_peer(region, campaign);
        }
    }

    fn commit_merge(&self, request: CommitMergeRequest) {
        if let Some(inner) = self.0.upgrade() {
            let (source, target) = (request.source.id, request.merge.target.id);
            let callback = Box::new(move |result: KvResult<()>| {
                if let Err(e) = result {
                    debug!(source, target, error = %e, "commit merge not proposed");
                }
            });
            inner.send_to_peer(target, PeerMsg::CommitMerge(request, callback));
        }
    }

    fn finish_merge(&self, request: CommitMergeRequest) {
        if let Some(inner) = self.0.upgrade() {
            inner.send_to_peer(request.source.id, PeerMsg::FinishMerge(request));
        }
    }

    fn clear_range_for_snapshot(&self, region: &Region) -> bool {
        self.0
            .upgrade()
            .is_some_and(|inner| inner.clear_range_for_snapshot(region))
    }

    fn peer_destroyed(&self, region_id: u64, peer_id: u64) {
        // Called from the peer's own thread as it ends: the heartbeat thread drops the entry
        // (requests and deliveries already skip a replica whose thread is gone).
        if let Some(inner) = self.0.upgrade() {
            info!(
                store_id = inner.store_id,
                region_id, peer_id, "replica destroyed"
            );
        }
    }
}

/// Delivers incoming envelopes to this store's peers.
struct Router<E: Engine>(Weak<Inner<E>>);

impl<E: Engine> RaftRouter for Router<E> {
    fn deliver(&self, envelope: RaftEnvelope) {
        if let Some(inner) = self.0.upgrade() {
            inner.deliver(envelope);
        }
    }

    fn report_unreachable(&self, region_id: u64, to_peer_id: u64) {
        if let Some(inner) = self.0.upgrade() {
            inner.send_to_peer(region_id, PeerMsg::Unreachable(to_peer_id));
        }
    }

    fn report_snapshot(&self, region_id: u64, to_peer_id: u64, success: bool) {
        if let Some(inner) = self.0.upgrade() {
            inner.send_to_peer(region_id, PeerMsg::SnapshotStatus(to_peer_id, success));
        }
    }
}
