//! [`Cluster`]: the scheduler's view of the cluster — stores, regions, their leaders and sizes
//! — built from bootstrap, store registration and heartbeats, and the operators that repair,
//! split and balance regions.
//!
//! # State
//!
//! - *Persisted* (one file, [`STATE_FILE`], in the data directory, a prost-encoded
//!   `ClusterState`, replaced atomically on every change): the bootstrapped flag, the stores,
//!   the regions. A change is written before it becomes visible in memory; if the write fails
//!   the change is dropped and the caller gets [`ClusterError::Storage`].
//! - *Soft* (rebuilt from heartbeats after a restart): each store's last heartbeat and counts,
//!   each region's last reported leader and term, the pending operators. After a restart every
//!   store counts as down until it heartbeats or registers again, so the replica checker adds
//!   nothing on stale liveness information.
//!
//! Time is a parameter (`now`), never read here, so tests control the clock.
//!
//! # Regions and staleness
//!
//! Regions are keyed by id, with an index by start key: the region containing `key` is the one
//! with the greatest `start_key <= key`, if `key < end_key` (an empty end key is unbounded).
//! The index never holds overlapping ranges. A region heartbeat is *stale* — answered with a
//! reason in `stale` and otherwise ignored — if its epoch's `version` or `conf_ver` is lower than
//! the known one of the same region, or its `version` is lower than that of a known region
//! (another id) whose range overlaps it. An accepted report replaces the region and drops every
//! overlapping region (all of which then have a version lower than or equal to the report's:
//! the newer report wins). Among reports with the same epoch, one with a lower Raft `term` than
//! the known leader's is from a deposed leader: it does not replace the leader and gets no
//! operation.
//!
//! # Operators and balancing
//!
//! What the scheduler decides for a region becomes an *operator* ([`crate::operator`]) kept
//! until it is done, expired, or (for a balancing operator) stranded by one of its stores going
//! down; each heartbeat of the region is answered with the operator's next step (a membership
//! change or a leader transfer). A region without an operator gets the replica checker's
//! decision ([`crate::replica_checker`]) if it needs repair; a healthy one gives the balancing
//! schedulers a chance to run ([`crate::balance`]: at most once per `balance_interval`, with at
//! most `max_balance_operators` of their operators under way): a replica move by region size,
//! else a leader transfer by leader count.
//!
//! # Splits
//!
//! Leaders split their regions themselves when they grow too big, and report both halves.
//! Splits asked for through [`Cluster::split_regions`] (a new table's first key, `ALTER TABLE
//! … SPLIT AT`) are soft state: a heartbeat of a region holding a wanted key strictly inside
//! it is answered with that key in `split_key` (the smallest one) unless a membership
//! operator is pending; a key is done once a region starts at it, and forgotten after
//! `operator_timeout` if that never happens.
//!
//! # Merges
//!
//! A settled region (see [`crate::merge_checker`]) that no operator, repair or balancing
//! wants is checked for a merge into a neighbour; a merge becomes two operators, one on each
//! region (so nothing else touches either), handing the source's leader first to the store of
//! the target's leader and then the merge itself (`merge_target`). The merged target's report
//! drops the source from the tree. Split keys asked for through [`Cluster::split_regions`] are
//! *sticky* (persisted): never merged across, so a table keeps its own regions.
//!
//! # Draining a store
//!
//! [`Cluster::remove_store`] (`RemoveStore`) marks a store as being removed, persisted with
//! the stores: it never counts as up again, so nothing is placed on it, its replicas are
//! replaced elsewhere as if it were down, and a leader on it transfers its leadership away
//! before its own replica is removed. The answer counts the regions still on it.
//!
//! # Deliberately left out
//!
//! Replicating the scheduler itself (this is the single authority, like the TSO).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prost::Message;
use proto::metapb::{Peer, Region, RegionEpoch, Store};
use proto::scheduler::{
    ChangePeer, ChangePeerType, ClusterState, RegionHeartbeatRequest, RegionHeartbeatResponse,
    RegionInfo, StoreHeartbeatRequest,
};
use scheduler_api::ClusterError;

use crate::atomic_file::write_atomically;
use crate::id_alloc::IdAllocator;
use crate::merge_checker::{self, Candidate, MergeConfig};
use crate::operator::{Operator, OperatorKind, Step};
use crate::replica_checker::{self, ReplicaChange};

/// The file holding the persisted cluster state in the data directory.
pub const STATE_FILE: &str = "cluster-state";

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The wanted number of replicas per region.
    pub max_replicas: usize,
    /// A store not heard from (heartbeat or registration) for longer than this is down.
    pub store_down_after: Duration,
    /// How long an operator is answered before the checker may decide again.
    pub operator_timeout: Duration,
    /// A store down for longer than this is gone: its replicas are replaced elsewhere. Much
    /// longer than `store_down_after`, so that a restart or a short outage moves no data.
    pub replace_down_after: Duration,
    /// How often the balancing schedulers may decide (zero: never balance).
    pub balance_interval: Duration,
    /// At most this many balancing operators (moves, leader transfers) at once.
    pub max_balance_operators: usize,
    /// How long a region move may take (a snapshot to the new replica included).
    pub move_timeout: Duration,
    /// Leaders are balanced until the counts of any two up stores differ by at most this.
    pub leader_tolerance: u32,
    /// When small regions merge.
    pub merge: MergeConfig,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            max_replicas: 3,
            store_down_after: Duration::from_secs(10),
            operator_timeout: Duration::from_secs(30),
            replace_down_after: Duration::from_secs(10 * 60),
            balance_interval: Duration::from_secs(1),
            max_balance_operators: 4,
            move_timeout: Duration::from_secs(10 * 60),
            leader_tolerance: 1,
            merge: MergeConfig::default(),
        }
    }
}

/// What is persisted. Cloned, changed, written, then swapped in: a failed write changes nothing.
#[derive(Clone, Default)]
struct Meta {
    bootstrapped: bool,
    stores: BTreeMap<u64, Store>,
    regions: BTreeMap<u64, Region>,
    /// start key -> region id; the ranges never overlap.
    by_start: BTreeMap<Vec<u8>, u64>,
    /// Stores being drained (`remove_store`): never up, their replicas replaced at once.
    removed: BTreeSet<u64>,
    /// Keys asked to split at: region boundaries never merged across.
    sticky: BTreeSet<Vec<u8>>,
}

/// A store's liveness and its last reported load (0 before its first heartbeat).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStats {
    pub up: bool,
    pub region_count: u32,
    pub leader_count: u32,
}

#[derive(Clone, Copy)]
struct StoreStatus {
    last_seen: Instant,
    region_count: u32,
    leader_count: u32,
}

struct Leader {
    peer: Peer,
    term: u64,
}

#[derive(Default)]
struct State {
    meta: Meta,
    stores: HashMap<u64, StoreStatus>,
    leaders: HashMap<u64, Leader>,
    /// Each region's peers its leader last reported as far behind.
    pending: HashMap<u64, Vec<Peer>>,
    operators: HashMap<u64, Operator>,
    /// When the balancing schedulers last ran, and how many times (their choices vary with it).
    last_balance: Option<Instant>,
    balance_rounds: u64,
    /// Each region's last reported size: (bytes, keys).
    sizes: HashMap<u64, (u64, u64)>,
    /// Regions whose last reported size was measured.
    measured: std::collections::HashSet<u64>,
    /// When this scheduler process first heard of each region.
    first_seen: HashMap<u64, Instant>,
    /// Split keys asked for (`SplitRegions`) and not yet a region's start, with when asked.
    wanted_splits: BTreeMap<Vec<u8>, Instant>,
    /// The first time this scheduler process was asked to decide: a known store never heard
    /// from since counts as down from then on (its real last heartbeat died with the last run).
    started: Option<Instant>,
}

/// The cluster metadata. Thread-safe; share it behind an `Arc`.
pub struct Cluster {
    config: ClusterConfig,
    /// `None`: in memory only.
    dir: Option<PathBuf>,
    state: Mutex<State>,
}

fn epoch(region: &Region) -> RegionEpoch {
    region.epoch.unwrap_or_default()
}

fn storage_error(path: &Path, e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(format!("{}: {e}", path.display()))
}

impl State {
    /// Records a sign of life from `store_id` (keeping its last reported counts).
    fn seen(&mut self, store_id: u64, now: Instant) {
        self.stores
            .entry(store_id)
            .or_insert(StoreStatus {
                last_seen: now,
                region_count: 0,
                leader_count: 0,
            })
            .last_seen = now;
    }
}

impl Meta {
    fn from_state(state: ClusterState) -> Meta {
        let mut meta = Meta {
            bootstrapped: state.bootstrapped,
            ..Meta::default()
        };
        for store in state.stores {
            meta.stores.insert(store.id, store);
        }
        for region in state.regions {
            meta.insert_region(region);
        }
        meta.removed = state.removed_stores.into_iter().collect();
        meta.sticky = state.sticky_split_keys.into_iter().collect();
        meta
    }

    fn to_state(&self) -> ClusterState {
        ClusterState {
            bootstrapped: self.bootstrapped,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.values().cloned().collect(),
            removed_stores: self.removed.iter().copied().collect(),
            sticky_split_keys: self.sticky.iter().cloned().collect(),
        }
    }

    /// Ids of the regions whose range overlaps `[start, end)`, excluding `except` (none for
    /// an empty or reversed range).
    fn overlapping(&self, start: &[u8], end: &[u8], except: u64) -> Vec<u64> {
        let mut ids = Vec::new();
        if !end.is_empty() && end <= start {
            return ids;
        }
        // The region starting before `start` overlaps if it reaches past it.
        if let Some((_, id)) = self
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(start)))
            .next_back()
        {
            let region = &self.regions[id];
            if region.end_key.is_empty() || region.end_key.as_slice() > start {
                ids.push(*id);
            }
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        ids.extend(
            self.by_start
                .range::<[u8], _>((Bound::Included(start), upper))
                .map(|(_, id)| *id),
        );
        ids.retain(|id| *id != except);
        ids
    }

    /// Inserts or replaces `region`, dropping every other region overlapping it.
    fn insert_region(&mut self, region: Region) {
        self.replace_region(region);
    }

    /// Puts `region` in place of its older version and of every region it overlaps; returns
    /// what it replaced (for [`Meta::undo_replace`]).
    fn replace_region(&mut self, region: Region) -> Vec<Region> {
        let overlapping = self.overlapping(&region.start_key, &region.end_key, region.id);
        let mut removed = Vec::new();
        for id in overlapping.into_iter().chain([region.id]) {
            if let Some(old) = self.regions.remove(&id) {
                self.by_start.remove(&old.start_key);
                removed.push(old);
            }
        }
        self.by_start.insert(region.start_key.clone(), region.id);
        self.regions.insert(region.id, region);
        removed
    }

    /// Undoes [`Meta::replace_region`] of region `region_id`.
    fn undo_replace(&mut self, region_id: u64, removed: Vec<Region>) {
        if let Some(inserted) = self.regions.remove(&region_id) {
            self.by_start.remove(&inserted.start_key);
        }
        for old in removed {
            self.by_start.insert(old.start_key.clone(), old.id);
            self.regions.insert(old.id, old);
        }
    }
}

fn validate_region(region: &Region) -> Result<(), ClusterError> {
    let invalid = |why: &str| {
        Err(ClusterError::Invalid(format!(
            "region {}: {why}",
            region.id
        )))
    };
    if region.id == 0 {
        return invalid("the region id must not be 0");
    }
    if !region.end_key.is_empty() && region.start_key >= region.end_key {
        return invalid("empty key range");
    }
    if region.peers.is_empty() {
        return invalid("no peers");
    }
    for (i, peer) in region.peers.iter().enumerate() {
        if peer.id == 0 || peer.store_id == 0 {
            return invalid("a peer id or store id is 0");
        }
        if region.peers[..i]
            .iter()
            .any(|p| p.id == peer.id || p.store_id == peer.store_id)
        {
            return invalid("two peers share an id or a store");
        }
    }
    Ok(())
}

impl Cluster {
    /// The cluster state persisted in `dir` (created if missing; empty if never written).
    pub fn open(dir: &Path, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|e| storage_error(dir, e))?;
        let path = dir.join(STATE_FILE);
        let meta = match std::fs::read(&path) {
            Ok(bytes) => Meta::from_state(
                ClusterState::decode(bytes.as_slice()).map_err(|e| storage_error(&path, e))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Meta::default(),
            Err(e) => return Err(storage_error(&path, e)),
        };
        Ok(Cluster {
            config,
            dir: Some(dir.to_path_buf()),
            state: Mutex::new(State {
                meta,
                ..State::default()
            }),
        })
    }

    /// A cluster that persists nothing: for tests and throwaway clusters.
    pub fn in_memory(config: ClusterConfig) -> Cluster {
        Cluster {
            config,
            dir: None,
            state: Mutex::new(State::default()),
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Durably writes `meta`, then makes it the current state.
    fn commit(&self, state: &mut State, meta: Meta) -> Result<(), ClusterError> {
        self.persist(&meta)?;
        state.meta = meta;
        Ok(())
    }

    /// Writes `meta` to the data directory, if there is one.
    fn persist(&self, meta: &Meta) -> Result<(), ClusterError> {
        if let Some(dir) = &self.dir {
            let bytes = meta.to_state().encode_to_vec();
            write_atomically(dir, STATE_FILE, &bytes)
                .map_err(|e| storage_error(&dir.join(STATE_FILE), e))?;
        }
        Ok(())
    }

    pub fn is_bootstrapped(&self) -> bool {
        self.lock().meta.bootstrapped
    }

    /// Bootstraps the cluster with its first store and region; Ok(false) if it already was
    /// (nothing changes then). The region's peers must be on `store` or on known stores.
    pub fn bootstrap(
        &self,
        store: Store,
        region: Region,
        now: Instant,
    ) -> Result<bool, ClusterError> {
        if store.id == 0 {
            return Err(ClusterError::Invalid("the store id must not be 0".into()));
        }
        validate_region(&region)?;
        let mut state = self.lock();
        if state.meta.bootstrapped {
            return Ok(false);
        }
        if let Some(peer) = region
            .peers
            .iter()
            .find(|p| p.store_id != store.id && !state.meta.stores.contains_key(&p.store_id))
        {
            return Err(ClusterError::Invalid(format!(
                "peer {} of region {} is on unknown store {}",
                peer.id, region.id, peer.store_id
            )));
        }
        let mut meta = state.meta.clone();
        meta.bootstrapped = true;
        let store_id = store.id;
        meta.stores.insert(store_id, store);
        meta.insert_region(region);
        self.commit(&mut state, meta)?;
        state.seen(store_id, now);
        Ok(true)
    }

    /// Registers a store or updates its addresses; counts as a sign of life.
    pub fn put_store(&self, store: Store, now: Instant) -> Result<(), ClusterError> {
        if store.id == 0 {
            return Err(ClusterError::Invalid("the store id must not be 0".into()));
        }
        if store.address.is_empty() {
            return Err(ClusterError::Invalid(format!(
                "store {} has no address",
                store.id
            )));
        }
        let mut state = self.lock();
        let store_id = store.id;
        if state.meta.stores.get(&store_id) != Some(&store) {
            let mut meta = state.meta.clone();
            meta.stores.insert(store_id, store);
            self.commit(&mut state, meta)?;
        }
        state.seen(store_id, now);
        Ok(())
    }

    pub fn get_store(&self, store_id: u64) -> Option<Store> {
        self.lock().meta.stores.get(&store_id).cloned()
    }

    /// Every known store, by id.
    pub fn all_stores(&self) -> Vec<Store> {
        self.lock().meta.stores.values().cloned().collect()
    }

    /// Records a store's sign of life and load. The store must be registered.
    pub fn store_heartbeat(
        &self,
        request: &StoreHeartbeatRequest,
        now: Instant,
    ) -> Result<(), ClusterError> {
        let mut state = self.lock();
        if !state.meta.stores.contains_key(&request.store_id) {
            return Err(ClusterError::Invalid(format!(
                "heartbeat from unknown store {}",
                request.store_id
            )));
        }
        state.stores.insert(
            request.store_id,
            StoreStatus {
                last_seen: now,
                region_count: request.region_count,
                leader_count: request.leader_count,
            },
        );
        Ok(())
    }

    /// Whether the store was heard from within `store_down_after` before `now`.
    pub fn is_store_up(&self, store_id: u64, now: Instant) -> bool {
        let state = self.lock();
        self.up_stores(&state, now).contains_key(&store_id)
    }

    /// What is known about a registered store's liveness and load.
    pub fn store_stats(&self, store_id: u64, now: Instant) -> Option<StoreStats> {
        let state = self.lock();
        state.meta.stores.get(&store_id)?;
        let status = state.stores.get(&store_id);
        Some(StoreStats {
            up: self.up_stores(&state, now).contains_key(&store_id),
            region_count: status.map_or(0, |s| s.region_count),
            leader_count: status.map_or(0, |s| s.leader_count),
        })
    }

    /// Known stores down for longer than `replace_down_after`, and stores being removed.
    fn gone_stores(&self, state: &mut State, now: Instant) -> BTreeSet<u64> {
        let started = *state.started.get_or_insert(now);
        state
            .meta
            .stores
            .keys()
            .filter(|id| {
                let last_seen = state.stores.get(id).map_or(started, |s| s.last_seen);
                state.meta.removed.contains(id)
                    || now.saturating_duration_since(last_seen) > self.config.replace_down_after
            })
            .copied()
            .collect()
    }

    /// Starts draining `store_id` (see `RemoveStore` in the proto); returns how many regions
    /// still have a replica on it.
    pub fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError> {
        let mut state = self.lock();
        if !state.meta.stores.contains_key(&store_id) {
            return Err(ClusterError::Invalid(format!("unknown store {store_id}")));
        }
        if !state.meta.removed.contains(&store_id) {
            let mut meta = state.meta.clone();
            meta.removed.insert(store_id);
            self.commit(&mut state, meta)?;
            tracing::info!(store_id, "draining the store");
        }
        Ok(state
            .meta
            .regions
            .values()
            .filter(|r| r.peers.iter().any(|p| p.store_id == store_id))
            .count() as u64)
    }

    /// The up stores (stores being removed excepted) with their reported region counts.
    fn up_stores(&self, state: &State, now: Instant) -> BTreeMap<u64, u32> {
        state
            .stores
            .iter()
            .filter(|(id, status)| {
                state.meta.stores.contains_key(id)
                    && !state.meta.removed.contains(id)
                    && now.saturating_duration_since(status.last_seen)
                        <= self.config.store_down_after
            })
            .map(|(id, status)| (*id, status.region_count))
            .collect()
    }

    /// The region containing `key` and its last reported leader.
    pub fn get_region(&self, key: &[u8]) -> Option<(Region, Option<Peer>)> {
        let state = self.lock();
        let (_, id) = state
            .meta
            .by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let region = &state.meta.regions[id];
        if !region.end_key.is_empty() && key >= region.end_key.as_slice() {
            return None;
        }
        let leader = state.leaders.get(id).map(|l| l.peer);
        Some((region.clone(), leader))
    }

    pub fn get_region_by_id(&self, region_id: u64) -> Option<(Region, Option<Peer>)> {
        let state = self.lock();
        let region = state.meta.regions.get(&region_id)?;
        let leader = state.leaders.get(&region_id).map(|l| l.peer);
        Some((region.clone(), leader))
    }

    /// Takes a region leader's report (see the module doc for the staleness rule) and answers
    /// with the region's pending operation, if any. `ids` allocates new peer ids.
    pub fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
        ids: &IdAllocator,
        now: Instant,
    ) -> Result<RegionHeartbeatResponse, ClusterError> {
        let RegionHeartbeatRequest {
            region,
            leader,
            pending_peers,
            term,
            approximate_size,
            approximate_keys,
            size_measured,
            merging_into,
        } = request;
        let request_size = (approximate_size, approximate_keys);
        let region = region
            .ok_or_else(|| ClusterError::Invalid("a region heartbeat without a region".into()))?;
        validate_region(&region)?;
        let leader = leader.ok_or_else(|| {
            ClusterError::Invalid(format!(
                "heartbeat of region {} without a leader",
                region.id
            ))
        })?;
        if !region.peers.iter().any(|p| p.id == leader.id) {
            return Err(ClusterError::Invalid(format!(
                "the leader {} of region {} is not one of its peers",
                leader.id, region.id
            )));
        }
        let mut response = RegionHeartbeatResponse {
            region_id: region.id,
            ..RegionHeartbeatResponse::default()
        };
        let mut state = self.lock();
        if !state.meta.bootstrapped {
            return Err(ClusterError::Invalid(
                "region heartbeat before the cluster was bootstrapped".into(),
            ));
        }
        if let Some(reason) = Self::stale_reason(&state.meta, &region) {
            response.stale = reason;
            return Ok(response);
        }
        let reported = epoch(&region);
        let same_epoch = state
            .meta
            .regions
            .get(&region.id)
            .is_some_and(|known| epoch(known) == reported);
        let deposed = same_epoch
            && state
                .leaders
                .get(&region.id)
                .is_some_and(|known| term < known.term);
        if deposed {
            return Ok(response);
        }

        if state.meta.regions.get(&region.id) != Some(&region) {
            // Changed in place (not a copy of the whole tree per report: a store reports
            // thousands of regions), and undone if it cannot be persisted.
            let removed = state.meta.replace_region(region.clone());
            if let Err(e) = self.persist(&state.meta) {
                state.meta.undo_replace(region.id, removed);
                return Err(e);
            }
            let dropped = removed
                .into_iter()
                .map(|r| r.id)
                .filter(|&id| id != region.id);
            for id in dropped {
                state.leaders.remove(&id);
                state.operators.remove(&id);
                state.sizes.remove(&id);
                state.measured.remove(&id);
                state.first_seen.remove(&id);
                state.pending.remove(&id);
            }
        }
        state.first_seen.entry(region.id).or_insert(now);
        if size_measured {
            state.measured.insert(region.id);
        } else {
            state.measured.remove(&region.id);
        }
        state
            .leaders
            .insert(region.id, Leader { peer: leader, term });
        state.sizes.insert(region.id, request_size);
        state.pending.insert(region.id, pending_peers.clone());
        let split_key = self.wanted_split(&mut state, &region, now);
        if merging_into != 0 {
            self.keep_merging(&mut state, &region, merging_into, now);
        }

        if let Some(op) = state.operators.get(&region.id) {
            // A balancing operator involving a store that went down is abandoned (its
            // new replica could never catch up); repairs take over.
            let up = self.up_stores(&state, now);
            let stranded = op.is_balance() && op.stores().iter().any(|s| !up.contains_key(s));
            let target_now = match &op.kind {
                OperatorKind::Merge { target } => state
                    .meta
                    .regions
                    .get(&target.id)
                    .map(|r| (r, state.leaders.get(&target.id).map(|l| l.peer))),
                _ => None,
            };
            let step = if op.expired(now) || stranded {
                Step::Done
            } else {
                op.step_with_target(&region, &leader, &pending_peers, target_now)
            };
            if step == Step::Done {
                state.operators.remove(&region.id);
            } else {
                step.answer(&mut response);
                return Ok(response);
            }
        }
        if let Some(key) = split_key {
            response.split_key = key;
            return Ok(response);
        }
        let up = self.up_stores(&state, now);
        let gone = self.gone_stores(&mut state, now);
        // A leader on a store being removed hands over first: the checker never removes the
        // leader, so its replica could not go otherwise.
        if state.meta.removed.contains(&leader.store_id)
            && let Some(to) = region.peers.iter().find(|p| {
                !p.learner
                    && up.contains_key(&p.store_id)
                    && !pending_peers.iter().any(|q| q.id == p.id)
            })
        {
            state.operators.insert(
                region.id,
                Operator::new(
                    OperatorKind::TransferLeader { to: *to },
                    now,
                    self.config.operator_timeout,
                ),
            );
            response.transfer_leader = Some(*to);
            return Ok(response);
        }
        let Some(decision) = replica_checker::check(
            &region,
            &leader,
            &pending_peers,
            &up,
            &gone,
            self.config.max_replicas,
        ) else {
            // Healthy: a chance for the balancing schedulers (which may pick this region),
            // else for a merge.
            self.balance(&mut state, ids, now)?;
            if !state.operators.contains_key(&region.id) {
                self.check_merge(&mut state, &region, &up, ids, now)?;
            }
            if let Some(op) = state.operators.get(&region.id) {
                let target_now = match &op.kind {
                    OperatorKind::Merge { target } => state
                        .meta
                        .regions
                        .get(&target.id)
                        .map(|r| (r, state.leaders.get(&target.id).map(|l| l.peer))),
                    _ => None,
                };
                op.step_with_target(&region, &leader, &pending_peers, target_now)
                    .answer(&mut response);
            }
            return Ok(response);
        };
        let change = match decision {
            ReplicaChange::AddLearner { store_id } => ChangePeer {
                change_type: ChangePeerType::ChangePeerAddLearner as i32,
                peer: Some(Peer {
                    id: ids.alloc(1)?,
                    store_id,
                    learner: true,
                }),
            },
            ReplicaChange::Promote(peer) => ChangePeer {
                change_type: ChangePeerType::ChangePeerPromote as i32,
                peer: Some(peer),
            },
            ReplicaChange::Remove(peer) => ChangePeer {
                change_type: ChangePeerType::ChangePeerRemove as i32,
                peer: Some(peer),
            },
        };
        state.operators.insert(
            region.id,
            Operator::new(
                OperatorKind::ChangePeer {
                    change,
                    conf_ver: reported.conf_ver,
                },
                now,
                self.config.operator_timeout,
            ),
        );
        response.change_peer = Some(change);
        Ok(response)
    }

    /// Runs the balancing schedulers, at most once per `balance_interval`, while fewer than
    /// `max_balance_operators` of their operators are under way: one region move
    /// (balance-region) or, if none is worth it, one leader transfer (balance-leader).
    fn balance(
        &self,
        state: &mut State,
        ids: &IdAllocator,
        now: Instant,
    ) -> Result<(), ClusterError> {
        if self.config.balance_interval.is_zero()
            || state.last_balance.is_some_and(|last| {
                now.saturating_duration_since(last) < self.config.balance_interval
            })
        {
            return Ok(());
        }
        state.last_balance = Some(now);
        state.operators.retain(|_, op| !op.expired(now));
        let running = state
            .operators
            .values()
            .filter(|op| op.is_balance())
            .count();
        if running >= self.config.max_balance_operators {
            return Ok(());
        }
        let up = self.up_stores(state, now);
        let busy: BTreeSet<u64> = state.operators.keys().copied().collect();
        state.balance_rounds += 1;
        let decision = crate::balance::decide(
            &state.meta.regions,
            &state.leaders.iter().map(|(id, l)| (*id, l.peer)).collect(),
            &state.pending,
            &state.sizes,
            &up,
            &busy,
            self.config.max_replicas,
            self.config.leader_tolerance,
            state.balance_rounds,
        );
        let Some(decision) = decision else {
            return Ok(());
        };
        let (region_id, kind, timeout) = match decision {
            crate::balance::Decision::MoveRegion {
                region_id,
                from_store,
                to_store,
            } => (
                region_id,
                OperatorKind::MovePeer {
                    from_store,
                    to: Peer {
                        id: ids.alloc(1)?,
                        store_id: to_store,
                        learner: false,
                    },
                },
                self.config.move_timeout,
            ),
            crate::balance::Decision::TransferLeader { region_id, to } => (
                region_id,
                OperatorKind::TransferLeader { to },
                self.config.operator_timeout,
            ),
        };
        tracing::info!(region_id, ?kind, "balancing");
        state
            .operators
            .insert(region_id, Operator::new(kind, now, timeout));
        Ok(())
    }

    /// Asks for splits at `keys` (see the module doc): each wanted key strictly inside a
    /// known region is handed to that region's leader with its next heartbeat. The keys stay
    /// region boundaries (never merged across), persisted.
    pub fn split_regions(&self, keys: Vec<Vec<u8>>, now: Instant) -> Result<(), ClusterError> {
        let mut state = self.lock();
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        if keys.iter().any(|k| !state.meta.sticky.contains(k)) {
            let mut meta = state.meta.clone();
            meta.sticky.extend(keys.iter().cloned());
            self.commit(&mut state, meta)?;
        }
        for key in keys {
            if !state.meta.by_start.contains_key(&key) {
                state.wanted_splits.insert(key, now);
            }
        }
        Ok(())
    }

    /// Forgets the sticky split keys in `[start, end)` (an empty `end`: unbounded), persisted;
    /// returns them.
    pub fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError> {
        let mut state = self.lock();
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let keys: Vec<Vec<u8>> = state
            .meta
            .sticky
            .range::<[u8], _>((Bound::Included(start), upper))
            .cloned()
            .collect();
        if !keys.is_empty() {
            let mut meta = state.meta.clone();
            for key in &keys {
                meta.sticky.remove(key);
            }
            self.commit(&mut state, meta)?;
            for key in &keys {
                state.wanted_splits.remove(key);
            }
        }
        Ok(keys)
    }

    /// A region reported frozen to merge into `target_id` gets its merge operators back if it
    /// lost them (expired, or a restarted scheduler): whatever it was doing before, its merge
    /// must finish (see `kv`'s `peer::merge`).
    fn keep_merging(&self, state: &mut State, region: &Region, target_id: u64, now: Instant) {
        let merging = state.operators.get(&region.id).is_some_and(
            |op| matches!(&op.kind, OperatorKind::Merge { target } if target.id == target_id),
        );
        let Some(target) = state.meta.regions.get(&target_id).cloned() else {
            return;
        };
        if !merging {
            self.start_merge(state, region.id, target, now);
        }
    }

    /// The two operators of a merge of `source_id` into `target`.
    fn start_merge(&self, state: &mut State, source_id: u64, target: Region, now: Instant) {
        let version = epoch(&target).version;
        state.operators.insert(
            target.id,
            Operator::new(
                OperatorKind::MergeTarget {
                    source: source_id,
                    version,
                },
                now,
                self.config.operator_timeout,
            ),
        );
        state.operators.insert(
            source_id,
            Operator::new(
                OperatorKind::Merge { target },
                now,
                self.config.operator_timeout,
            ),
        );
    }

    /// Whether `region` (healthy, with no operator) should merge into a neighbour (see
    /// [`crate::merge_checker`]); if so, puts the two operators in place.
    fn check_merge(
        &self,
        state: &mut State,
        region: &Region,
        up: &BTreeMap<u64, u32>,
        ids: &IdAllocator,
        now: Instant,
    ) -> Result<(), ClusterError> {
        let merge = &self.config.merge;
        if merge.max_size == 0
            || state.operators.values().filter(|op| op.is_merge()).count() >= merge.max_merges
        {
            return Ok(());
        }
        let candidate = |id: u64| -> Option<Candidate<'_>> {
            let region = state.meta.regions.get(&id)?;
            let settled = state.leaders.contains_key(&id)
                && state.pending.get(&id).is_none_or(|p| p.is_empty())
                && !state.operators.contains_key(&id)
                && region.peers.iter().all(|p| up.contains_key(&p.store_id))
                && state.first_seen.get(&id).is_some_and(|seen| {
                    now.saturating_duration_since(*seen) >= merge.split_merge_interval
                });
            Some(Candidate {
                region,
                size: state
                    .measured
                    .contains(&id)
                    .then(|| state.sizes.get(&id).copied().unwrap_or_default()),
                settled,
            })
        };
        let Some(source) = candidate(region.id) else {
            return Ok(());
        };
        let previous = (!region.start_key.is_empty())
            .then(|| {
                state
                    .meta
                    .by_start
                    .range::<[u8], _>((
                        Bound::Unbounded,
                        Bound::Excluded(region.start_key.as_slice()),
                    ))
                    .next_back()
                    .map(|(_, id)| *id)
            })
            .flatten()
            .filter(|id| state.meta.regions[id].end_key == region.start_key);
        let next = (!region.end_key.is_empty())
            .then(|| state.meta.by_start.get(&region.end_key).copied())
            .flatten();
        let neighbours = [previous.and_then(candidate), next.and_then(candidate)];
        let sticky = |key: &[u8]| state.meta.sticky.contains(key);
        if let Some(target) = merge_checker::choose_target(source, neighbours, sticky, merge) {
            let target = target.clone();
            tracing::info!(source = region.id, target = target.id, "merging");
            self.start_merge(state, region.id, target, now);
            return Ok(());
        }
        // Replicas on other stores than the neighbour's: one replica move towards it (a
        // balancing move, within their limit), then the merge on a later report.
        let moving = state
            .operators
            .values()
            .filter(|op| op.is_balance())
            .count();
        if moving >= self.config.max_balance_operators {
            return Ok(());
        }
        let usable = |store: u64| up.contains_key(&store) && !state.meta.removed.contains(&store);
        let Some(alignment) =
            merge_checker::choose_alignment(source, neighbours, sticky, usable, merge)
        else {
            return Ok(());
        };
        let (target_id, from_store, to_store) = (
            alignment.target.id,
            alignment.from_store,
            alignment.to_store,
        );
        tracing::info!(
            source = region.id,
            target = target_id,
            from_store,
            to_store,
            "moving a replica to merge"
        );
        let kind = OperatorKind::MovePeer {
            from_store,
            to: Peer {
                id: ids.alloc(1)?,
                store_id: to_store,
                learner: false,
            },
        };
        state.operators.insert(
            region.id,
            Operator::new(kind, now, self.config.move_timeout),
        );
        Ok(())
    }

    /// The smallest wanted split key strictly inside `region`, dropping wanted keys that are
    /// done (a region starts there) or expired.
    fn wanted_split(&self, state: &mut State, region: &Region, now: Instant) -> Option<Vec<u8>> {
        if state.wanted_splits.is_empty() {
            return None;
        }
        let timeout = self.config.operator_timeout;
        let meta = &state.meta;
        state.wanted_splits.retain(|key, asked| {
            !meta.by_start.contains_key(key) && now.saturating_duration_since(*asked) < timeout
        });
        let upper = if region.end_key.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(region.end_key.as_slice())
        };
        state
            .wanted_splits
            .range::<[u8], _>((Bound::Excluded(region.start_key.as_slice()), upper))
            .next()
            .map(|(key, _)| key.clone())
    }

    /// The regions overlapping `[start, end)` (an empty `end`: unbounded) in key order, at most
    /// `limit` (0: all), with their last reported leaders and sizes.
    pub fn scan_regions(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<RegionInfo> {
        let state = self.lock();
        let mut ids = state.meta.overlapping(start, end, 0);
        ids.sort_by(|a, b| {
            state.meta.regions[a]
                .start_key
                .cmp(&state.meta.regions[b].start_key)
        });
        if limit > 0 {
            ids.truncate(limit);
        }
        ids.into_iter()
            .map(|id| {
                let (approximate_size, approximate_keys) =
                    state.sizes.get(&id).copied().unwrap_or_default();
                RegionInfo {
                    region: Some(state.meta.regions[&id].clone()),
                    leader: state.leaders.get(&id).map(|l| l.peer),
                    approximate_size,
                    approximate_keys,
                }
            })
            .collect()
    }

    /// Why a report of `region` is stale, or `None` if it is not.
    fn stale_reason(meta: &Meta, region: &Region) -> Option<String> {
        let reported = epoch(region);
        if let Some(known) = meta.regions.get(&region.id) {
            let known = epoch(known);
            if reported.version < known.version || reported.conf_ver < known.conf_ver {
                return Some(format!(
                    "region {} epoch (conf_ver {}, version {}) is older than the known \
                     (conf_ver {}, version {})",
                    region.id, reported.conf_ver, reported.version, known.conf_ver, known.version
                ));
            }
        }
        // A region the scheduler does not know must be strictly newer than what it overlaps
        // (a split's result): an unknown region of the same version is a stray (for example
        // one prepared by a bootstrap that lost), and must not displace a known region.
        let unknown = !meta.regions.contains_key(&region.id);
        meta.overlapping(&region.start_key, &region.end_key, region.id)
            .into_iter()
            .map(|id| &meta.regions[&id])
            .find(|other| {
                epoch(other).version > reported.version
                    || (unknown && epoch(other).version >= reported.version)
            })
            .map(|other| {
                format!(
                    "region {} version {} is older than overlapping region {} version {}",
                    region.id,
                    reported.version,
                    other.id,
                    epoch(other).version
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64) -> Store {
        Store {
            id,
            address: format!("127.0.0.1:{}", 20000 + id),
            pg_address: String::new(),
        }
    }

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            learner: false,
        }
    }

    fn region(
        id: u64,
        range: (&[u8], &[u8]),
        conf_ver: u64,
        version: u64,
        peers: Vec<Peer>,
    ) -> Region {
        Region {
            id,
            start_key: range.0.to_vec(),
            end_key: range.1.to_vec(),
            epoch: Some(RegionEpoch { conf_ver, version }),
            peers,
        }
    }

    fn report(region: &Region, leader: &Peer, term: u64) -> RegionHeartbeatRequest {
        RegionHeartbeatRequest {
            region: Some(region.clone()),
            leader: Some(*leader),
            term,
            ..RegionHeartbeatRequest::default()
        }
    }

    fn single_replica() -> ClusterConfig {
        ClusterConfig {
            max_replicas: 1,
            ..ClusterConfig::default()
        }
    }

    /// A cluster bootstrapped with store 1 and region 1 = [start, end) on peer 10.
    fn bootstrapped(config: ClusterConfig, range: (&[u8], &[u8]), now: Instant) -> Cluster {
        let cluster = Cluster::in_memory(config);
        let r = region(1, range, 1, 1, vec![peer(10, 1)]);
        assert!(cluster.bootstrap(store(1), r, now).unwrap());
        cluster
    }

    fn region_at(cluster: &Cluster, key: &[u8]) -> Option<u64> {
        cluster.get_region(key).map(|(r, _)| r.id)
    }

    #[test]
    fn exactly_one_bootstrap_wins_and_invalid_ones_change_nothing() {
        let now = Instant::now();
        let cluster = Cluster::in_memory(ClusterConfig::default());
        assert!(!cluster.is_bootstrapped());
        let invalid = [
            region(0, (b"", b""), 1, 1, vec![peer(10, 1)]),
            region(1, (b"", b""), 1, 1, vec![]),
            region(1, (b"", b""), 1, 1, vec![peer(10, 1), peer(11, 2)]), // store 2 unknown
            region(1, (b"b", b"a"), 1, 1, vec![peer(10, 1)]),
        ];
        for r in invalid {
            let result = cluster.bootstrap(store(1), r.clone(), now);
            assert!(matches!(result, Err(ClusterError::Invalid(_))), "{r:?}");
        }
        assert!(!cluster.is_bootstrapped());
        assert_eq!(cluster.get_region(b"a"), None);

        // A peer on an already registered store is fine.
        cluster.put_store(store(2), now).unwrap();
        let first = region(1, (b"", b""), 1, 1, vec![peer(10, 1), peer(11, 2)]);
        assert!(cluster.bootstrap(store(1), first.clone(), now).unwrap());
        let second = region(7, (b"", b""), 1, 1, vec![peer(70, 3)]);
        assert!(!cluster.bootstrap(store(3), second, now).unwrap());
        assert!(cluster.is_bootstrapped());
        assert_eq!(cluster.get_region_by_id(1), Some((first, None)));
        assert_eq!(cluster.get_region_by_id(7), None);
        assert_eq!(cluster.get_store(3), None);
        assert_eq!(
            cluster
                .all_stores()
                .iter()
                .map(|s| s.id)
                .collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn concurrent_bootstraps_have_one_winner() {
        let cluster = Cluster::in_memory(ClusterConfig::default());
        let now = Instant::now();
        let wins: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (1..=8u64)
                .map(|i| {
                    let cluster = &cluster;
                    scope.spawn(move || {
                        let r = region(i, (b"", b""), 1, 1, vec![peer(100 + i, i)]);
                        usize::from(cluster.bootstrap(store(i), r, now).unwrap())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(wins, 1);
        assert_eq!(cluster.all_stores().len(), 1);
    }

    #[test]
    fn lookup_by_key_respects_range_edges_and_the_unbounded_end() {
        let now = Instant::now();
        let ids = IdAllocator::in_memory();
        // [b, d) only: keys outside it have no region.
        let cluster = bootstrapped(single_replica(), (b"b", b"d"), now);
        assert_eq!(region_at(&cluster, b""), None);
        assert_eq!(region_at(&cluster, b"a\xff"), None);
        assert_eq!(region_at(&cluster, b"b"), Some(1));
        assert_eq!(region_at(&cluster, b"c\xff\xff"), Some(1));
        assert_eq!(region_at(&cluster, b"d"), None);

        // A split of [, ) into [, m) and [m, ).
        let cluster = bootstrapped(single_replica(), (b"", b""), now);
        assert_eq!(region_at(&cluster, b""), Some(1));
        assert_eq!(region_at(&cluster, b"\xff\xff\xff"), Some(1));
        let left = region(1, (b"", b"m"), 1, 2, vec![peer(10, 1)]);
        let right = region(2, (b"m", b""), 1, 2, vec![peer(20, 1)]);
        for r in [&right, &left] {
            let response = cluster
                .region_heartbeat(report(r, &r.peers[0], 1), &ids, now)
                .unwrap();
            assert_eq!(response.stale, "");
        }
        assert_eq!(region_at(&cluster, b""), Some(1));
        assert_eq!(region_at(&cluster, b"l\xff"), Some(1));
        assert_eq!(region_at(&cluster, b"m"), Some(2));
        assert_eq!(region_at(&cluster, b"\xff\xff\xff"), Some(2));
        assert_eq!(cluster.get_region(b"m").unwrap().1, Some(peer(20, 1)));
        assert_eq!(cluster.get_region_by_id(1).unwrap().0, left);
    }

    #[test]
    fn stale_reports_are_rejected_and_change_nothing() {
        let now = Instant::now();
        let ids = IdAllocator::in_memory();
        let cluster = bootstrapped(single_replica(), (b"", b""), now);
        let known = region(1, (b"", b""), 5, 5, vec![peer(10, 1)]);
        let leader = peer(10, 1);
        cluster
            .region_heartbeat(report(&known, &leader, 3), &ids, now)
            .unwrap();

        let lower_conf_ver = region(1, (b"", b""), 4, 9, vec![peer(10, 1), peer(11, 2)]);
        let lower_version = region(1, (b"", b"x"), 9, 4, vec![peer(10, 1)]);
        for r in [lower_conf_ver, lower_version] {
            let response = cluster
                .region_heartbeat(report(&r, &leader, 99), &ids, now)
                .unwrap();
            assert_eq!(response.region_id, 1);
            assert!(!response.stale.is_empty(), "{r:?} must be stale");
            assert_eq!(response.change_peer, None);
            assert_eq!(
                cluster.get_region_by_id(1),
                Some((known.clone(), Some(leader)))
            );
        }

        // Another region overlapping region 1 with a lower version is stale...
        let old = region(2, (b"m", b""), 1, 4, vec![peer(20, 1)]);
        let response = cluster
            .region_heartbeat(report(&old, &old.peers[0], 1), &ids, now)
            .unwrap();
        assert!(
            response.stale.contains("overlapping region 1"),
            "{}",
            response.stale
        );
        assert_eq!(cluster.get_region_by_id(2), None);
        assert_eq!(region_at(&cluster, b"z"), Some(1));
        // ...and with a higher version it replaces the overlapped part of the keyspace.
        let new = region(2, (b"m", b""), 1, 6, vec![peer(20, 1)]);
        let response = cluster
            .region_heartbeat(report(&new, &new.peers[0], 1), &ids, now)
            .unwrap();
        assert_eq!(response.stale, "");
        assert_eq!(region_at(&cluster, b"z"), Some(2));
        // Region 1 overlapped it with a lower version: dropped, the index stays consistent.
        assert_eq!(cluster.get_region_by_id(1), None);
        assert_eq!(region_at(&cluster, b"a"), None);
    }

    #[test]
    fn a_lower_term_with_the_same_epoch_does_not_replace_the_leader() {
        let now = Instant::now();
        let ids = IdAllocator::in_memory();
        let cluster = Cluster::in_memory(single_replica());
        cluster.put_store(store(2), now).unwrap();
        cluster.put_store(store(3), now).unwrap();
        let r = region(
            1,
            (b"", b""),
            3,
            1,
            vec![peer(10, 1), peer(11, 2), peer(12, 3)],
        );
        assert!(cluster.bootstrap(store(1), r.clone(), now).unwrap());

        cluster
            .region_heartbeat(report(&r, &peer(11, 2), 7), &ids, now)
            .unwrap();
        // The deposed leader of term 6 reports late: not stale, but ignored, and no operation
        // (the region has 3 peers for max_replicas 1: a new leader would get a removal).
        let response = cluster
            .region_heartbeat(report(&r, &peer(10, 1), 6), &ids, now)
            .unwrap();
        assert_eq!(response.stale, "");
        assert_eq!(response.change_peer, None);
        assert_eq!(cluster.get_region_by_id(1).unwrap().1, Some(peer(11, 2)));
        // A newer term takes over.
        let response = cluster
            .region_heartbeat(report(&r, &peer(12, 3), 8), &ids, now)
            .unwrap();
        assert_eq!(cluster.get_region(b"k").unwrap().1, Some(peer(12, 3)));
        let change = response.change_peer.unwrap();
        assert_eq!(change.change_type, ChangePeerType::ChangePeerRemove as i32);
        // The operator that removed peer 12 (now the leader) is replaced by one removing 11.
        assert_eq!(change.peer.unwrap().id, 11);
        // A newer epoch wins even with a lower term.
        let newer = region(1, (b"", b""), 4, 1, vec![peer(10, 1), peer(12, 3)]);
        cluster
            .region_heartbeat(report(&newer, &peer(10, 1), 2), &ids, now)
            .unwrap();
        assert_eq!(
            cluster.get_region_by_id(1),
            Some((newer, Some(peer(10, 1))))
        );
    }

    #[test]
    fn stores_are_up_while_they_heartbeat() {
        let t0 = Instant::now();
        let config = ClusterConfig::default();
        let down_after = config.store_down_after;
        let cluster = Cluster::in_memory(config);
        cluster.put_store(store(1), t0).unwrap();
        // Registration is a sign of life.
        assert!(cluster.is_store_up(1, t0 + down_after));
        assert!(!cluster.is_store_up(1, t0 + down_after + Duration::from_millis(1)));
        assert!(!cluster.is_store_up(2, t0));
        // Heartbeats from unknown stores are refused.
        let beat = |store_id, region_count| StoreHeartbeatRequest {
            store_id,
            region_count,
            leader_count: 1,
        };
        assert!(matches!(
            cluster.store_heartbeat(&beat(2, 0), t0),
            Err(ClusterError::Invalid(_))
        ));
        let t1 = t0 + Duration::from_secs(60);
        cluster.store_heartbeat(&beat(1, 4), t1).unwrap();
        assert_eq!(
            cluster.store_stats(1, t1 + Duration::from_secs(5)),
            Some(StoreStats {
                up: true,
                region_count: 4,
                leader_count: 1
            })
        );
        assert!(!cluster.store_stats(1, t1 + down_after * 2).unwrap().up);
        // Re-registration with a new address updates it.
        let moved = Store {
            address: "10.0.0.1:1".into(),
            ..store(1)
        };
        cluster.put_store(moved.clone(), t1).unwrap();
        assert_eq!(cluster.get_store(1), Some(moved));
        assert!(matches!(
            cluster.put_store(store(0), t1),
            Err(ClusterError::Invalid(_))
        ));
    }

    #[test]
    fn the_state_survives_reopening_and_write_failures_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let now = Instant::now();
        let ids = IdAllocator::in_memory();
        let r = region(1, (b"", b"m"), 2, 3, vec![peer(10, 1), peer(11, 2)]);
        {
            let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
            cluster.put_store(store(2), now).unwrap();
            let first = region(1, (b"", b""), 1, 1, vec![peer(10, 1)]);
            assert!(cluster.bootstrap(store(1), first, now).unwrap());
            cluster
                .region_heartbeat(report(&r, &peer(10, 1), 1), &ids, now)
                .unwrap();
        }
        let cluster = Cluster::open(dir.path(), ClusterConfig::default()).unwrap();
        assert!(cluster.is_bootstrapped());
        assert_eq!(cluster.all_stores(), vec![store(1), store(2)]);
        // Leaders and liveness are not persisted.
        assert_eq!(cluster.get_region(b"a"), Some((r.clone(), None)));
        assert_eq!(cluster.get_region(b"m"), None);
        assert!(!cluster.is_store_up(1, now));
        assert!(!cluster.bootstrap(store(1), r.clone(), now).unwrap());

        // A failed write is an error and the change is not visible.
        let gone = dir.path().join("gone");
        let cluster = Cluster::open(&gone, ClusterConfig::default()).unwrap();
        std::fs::remove_dir_all(&gone).unwrap();
        assert!(matches!(
            cluster.put_store(store(5), now),
            Err(ClusterError::Storage(_))
        ));
        assert_eq!(cluster.get_store(5), None);
        let only_store_1 = region(1, (b"", b""), 1, 1, vec![peer(10, 1)]);
        assert!(matches!(
            cluster.bootstrap(store(1), only_store_1, now),
            Err(ClusterError::Storage(_))
        ));
        assert!(!cluster.is_bootstrapped());

        std::fs::write(dir.path().join(STATE_FILE), b"\xff\xff\xff").unwrap();
        assert!(matches!(
            Cluster::open(dir.path(), ClusterConfig::default()),
            Err(ClusterError::Storage(_))
        ));
    }

    #[test]
    fn an_operator_is_repeated_until_applied_or_timed_out() {
        let t0 = Instant::now();
        let ids = IdAllocator::in_memory();
        let config = ClusterConfig::default();
        let timeout = config.operator_timeout;
        let cluster = bootstrapped(config, (b"", b""), t0);
        for id in [2, 3, 4] {
            cluster.put_store(store(id), t0).unwrap();
        }
        let leader = peer(10, 1);
        let r = region(1, (b"", b""), 1, 1, vec![leader]);
        let heartbeat = |r: &Region, now| {
            cluster
                .region_heartbeat(report(r, &leader, 1), &ids, now)
                .unwrap()
                .change_peer
        };
        let add = heartbeat(&r, t0).expect("a missing replica is added");
        assert_eq!(add.change_type, ChangePeerType::ChangePeerAddLearner as i32);
        let learner = add.peer.unwrap();
        assert!(learner.learner && learner.store_id == 2 && learner.id != 0);
        // Store 2 now looks loaded: a fresh decision would pick store 3, the operator does not.
        cluster
            .store_heartbeat(
                &StoreHeartbeatRequest {
                    store_id: 2,
                    region_count: 50,
                    leader_count: 0,
                },
                t0,
            )
            .unwrap();
        assert_eq!(heartbeat(&r, t0 + Duration::from_secs(1)), Some(add));
        assert_eq!(
            heartbeat(&r, t0 + timeout - Duration::from_millis(1)),
            Some(add)
        );

        // Timed out: decided again, with a new peer id, on the now least loaded store.
        let t1 = t0 + timeout;
        for id in [1, 3, 4] {
            cluster.put_store(store(id), t1).unwrap();
        }
        cluster
            .store_heartbeat(
                &StoreHeartbeatRequest {
                    store_id: 2,
                    region_count: 50,
                    leader_count: 0,
                },
                t1,
            )
            .unwrap();
        let again = heartbeat(&r, t1).unwrap();
        let learner = again.peer.unwrap();
        assert_eq!(learner.store_id, 3);
        assert_ne!(Some(learner), add.peer);
        assert_eq!(heartbeat(&r, t1), Some(again));

        // Applied (conf_ver advanced): the next decision is the promotion, then it stays.
        let with_learner = region(1, (b"", b""), 2, 1, vec![leader, learner]);
        let promote = heartbeat(&with_learner, t1).unwrap();
        assert_eq!(
            promote.change_type,
            ChangePeerType::ChangePeerPromote as i32
        );
        assert_eq!(promote.peer, Some(learner));
        assert_eq!(heartbeat(&with_learner, t1), Some(promote));
    }

    #[test]
    fn small_neighbours_merge_and_a_frozen_region_keeps_merging() {
        let t0 = Instant::now();
        let ids = IdAllocator::in_memory();
        let config = ClusterConfig {
            max_replicas: 2,
            balance_interval: Duration::ZERO,
            merge: MergeConfig {
                split_merge_interval: Duration::ZERO,
                ..MergeConfig::default()
            },
            ..ClusterConfig::default()
        };
        let (left, right) = (
            region(1, (b"", b"m"), 2, 2, vec![peer(10, 1), peer(11, 2)]),
            region(2, (b"m", b""), 2, 2, vec![peer(20, 1), peer(21, 2)]),
        );
        let measured = |r: &Region, leader: Peer, merging_into: u64| RegionHeartbeatRequest {
            approximate_size: 100,
            approximate_keys: 1,
            size_measured: true,
            merging_into,
            ..report(r, &leader, 1)
        };
        let new_cluster = || {
            let cluster = bootstrapped(config.clone(), (b"", b""), t0);
            cluster.put_store(store(2), t0).unwrap();
            cluster
                .region_heartbeat(measured(&left, peer(10, 1), 0), &ids, t0)
                .unwrap();
            cluster
        };
        // The right region, small and settled, merges into the left: its leader first moves
        // to the store of the left's leader, then it is asked to merge.
        let cluster = new_cluster();
        let answer = cluster
            .region_heartbeat(measured(&right, peer(21, 2), 0), &ids, t0)
            .unwrap();
        assert_eq!(answer.transfer_leader, Some(peer(20, 1)));
        let answer = cluster
            .region_heartbeat(measured(&right, peer(20, 1), 0), &ids, t0)
            .unwrap();
        assert_eq!(answer.merge_target, Some(left.clone()));
        // The left is held for the merge: no merge of its own, no other operator.
        let answer = cluster
            .region_heartbeat(measured(&left, peer(10, 1), 0), &ids, t0)
            .unwrap();
        assert_eq!(answer.merge_target, None);

        // A sticky boundary is never merged across.
        let cluster = new_cluster();
        cluster.split_regions(vec![b"m".to_vec()], t0).unwrap();
        for leader in [peer(21, 2), peer(20, 1)] {
            let answer = cluster
                .region_heartbeat(measured(&right, leader, 0), &ids, t0)
                .unwrap();
            assert_eq!((answer.merge_target, answer.transfer_leader), (None, None));
        }
        // ... but a region frozen to merge (its merge decided before a scheduler restart,
        // say) is brought to its end whatever the checker would say now.
        let frozen = region(2, (b"m", b""), 3, 3, vec![peer(20, 1), peer(21, 2)]);
        let answer = cluster
            .region_heartbeat(measured(&frozen, peer(21, 2), 1), &ids, t0)
            .unwrap();
        assert_eq!(answer.transfer_leader, Some(peer(20, 1)));
        let answer = cluster
            .region_heartbeat(measured(&frozen, peer(20, 1), 1), &ids, t0)
            .unwrap();
        assert_eq!(answer.merge_target, Some(left.clone()));
        // The merged left's report drops the right, and its operator with it.
        let merged = region(1, (b"", b""), 2, 4, vec![peer(10, 1), peer(11, 2)]);
        cluster
            .region_heartbeat(measured(&merged, peer(10, 1), 0), &ids, t0)
            .unwrap();
        assert_eq!(region_at(&cluster, b"z"), Some(1));
        assert!(cluster.get_region_by_id(2).is_none());
    }
}
