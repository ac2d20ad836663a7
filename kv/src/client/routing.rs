//! [`RoutedCommands`]: the Percolator commands of a whole cluster, each sent to the leader of
//! the region holding its keys.
//!
//! A region cache (key range → region, leader) is filled from the scheduler on a miss. Each
//! command runs on one region (multi-key commands are split by region; a scan walks the
//! regions in key order) and reacts to what comes back:
//!
//! - `NotLeader` with a hint: retry at once on the hinted peer (even on a store that failed
//!   earlier in this command), backing off after a few hints in a row; without one, try the
//!   next replica after a short back-off (an election is probably under way);
//! - `RegionNotFound`, `EpochNotMatch`, `KeyNotInRegion`: drop the cached region and ask the
//!   scheduler again;
//! - `StaleCommand`, `ServerIsBusy`: back off and retry;
//! - a store that cannot be reached: avoid it for this command, refresh the region from the
//!   scheduler (which learns the new leader from its heartbeats) and retry.
//!
//! Back-off grows from 20 ms to 500 ms, and a command gives up once its deadline passes: with
//! `Unavailable` if any attempt went unanswered (it may have been applied: the transaction
//! client then treats the outcome as unknown), else with the last error. Retrying is safe
//! because every command is idempotent. Other errors (a lock, a write conflict, an aborted
//! transaction) are the transaction client's to handle.
//!
//! Multi-key commands (prewrite, commit, rollback) are grouped by region and sent to all the
//! regions at once, one thread per region; a group whose region split meanwhile is grouped
//! again. The transaction client commits the primary key alone first, then the secondaries.
//! A scan asks for at most [`SCAN_PAGE`] keys per request, going on within a region after the
//! last key returned and then in the next region. Lock resolution goes to the region of the
//! lock that was met.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::metapb::{Peer as PeerMeta, Region};
use scheduler_api::{ClusterApi, Timestamp};
use tokio::runtime::Handle;
use tracing::debug;

use super::remote::RemoteTxnCommands;
use crate::error::{KvError, KvResult};
use crate::mvcc::reader::ReadOutcome;
use crate::raftstore::region::{contains_key, ranges_overlap};
use crate::storage::KvPair;
use crate::txn::actions::{Mutation, PrewriteError, TxnStatus};
use crate::txn::{CommandRouter, RegionContext, TxnCommands};

/// Reaches the stores of a cluster: the command router of a store, by id.
pub trait StoreConnector: Send + Sync {
    fn store(&self, store_id: u64) -> KvResult<Arc<dyn CommandRouter>>;
    /// The store could not be reached: drop what is cached about it (it may have restarted
    /// on another address).
    fn forget(&self, _store_id: u64) {}
}

/// Stores reached over gRPC, their addresses resolved through the scheduler (and cached
/// until a connection fails).
pub struct GrpcStores {
    cluster: Arc<dyn ClusterApi>,
    runtime: Handle,
    stores: Mutex<BTreeMap<u64, Arc<RemoteStore>>>,
}

impl GrpcStores {
    pub fn new(cluster: Arc<dyn ClusterApi>, runtime: Handle) -> Self {
        GrpcStores {
            cluster,
            runtime,
            stores: Mutex::new(BTreeMap::new()),
        }
    }
}

struct RemoteStore(RemoteTxnCommands);

impl CommandRouter for RemoteStore {
    fn route(&self, context: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>> {
        Ok(match context {
            Some(context) => Arc::new(self.0.for_region(context)),
            None => Arc::new(self.0.clone()),
        })
    }
}

impl StoreConnector for GrpcStores {
    fn store(&self, store_id: u64) -> KvResult<Arc<dyn CommandRouter>> {
        if let Some(store) = self
            .stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&store_id)
        {
            return Ok(Arc::clone(store) as Arc<dyn CommandRouter>);
        }
        let meta = self
            .cluster
            .get_store(store_id)
            .map_err(|e| KvError::Unavailable(format!("scheduler: {e}")))?
            .ok_or_else(|| KvError::Unavailable(format!("store {store_id} is unknown")))?;
        let remote = RemoteTxnCommands::connect_lazy(
            &format!("http://{}", meta.address),
            self.runtime.clone(),
        )?;
        let store = Arc::new(RemoteStore(remote));
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(store_id, Arc::clone(&store));
        Ok(store)
    }

    fn forget(&self, store_id: u64) {
        self.stores
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&store_id);
    }
}

/// The local store in-process, every other store through `remote`: a node's gateway reaches
/// the replicas of its own store without a network round trip.
pub struct LocalFirst {
    pub local_id: u64,
    pub local: Arc<dyn CommandRouter>,
    pub remote: Arc<dyn StoreConnector>,
}

impl StoreConnector for LocalFirst {
    fn store(&self, store_id: u64) -> KvResult<Arc<dyn CommandRouter>> {
        if store_id == self.local_id {
            Ok(Arc::clone(&self.local))
        } else {
            self.remote.store(store_id)
        }
    }

    fn forget(&self, store_id: u64) {
        self.remote.forget(store_id);
    }
}

#[derive(Clone, Debug)]
struct CachedRegion {
    region: Region,
    leader: Option<PeerMeta>,
}

/// The cluster's commands, routed by key.
pub struct RoutedCommands {
    cluster: Arc<dyn ClusterApi>,
    stores: Arc<dyn StoreConnector>,
    /// By start key.
    cache: Mutex<BTreeMap<Vec<u8>, Arc<CachedRegion>>>,
    /// How long one command keeps retrying.
    timeout: Duration,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Leader hints followed at once before retries back off.
const MAX_IMMEDIATE_HINTS: u32 = 3;

/// The region error inside a command's error, if it is one the router handles.
trait RoutingError {
    fn routing_error(&self) -> Option<&KvError>;
}

impl RoutingError for KvError {
    fn routing_error(&self) -> Option<&KvError> {
        (self.is_region_error() || matches!(self, KvError::Unavailable(_))).then_some(self)
    }
}

impl RoutingError for PrewriteError {
    fn routing_error(&self) -> Option<&KvError> {
        match self {
            PrewriteError::Failed(e) => e.routing_error(),
            PrewriteError::Locked { .. } => None,
        }
    }
}

impl RoutedCommands {
    pub fn new(
        cluster: Arc<dyn ClusterApi>,
        stores: Arc<dyn StoreConnector>,
        timeout: Duration,
    ) -> Self {
        RoutedCommands {
            cluster,
            stores,
            cache: Mutex::new(BTreeMap::new()),
            timeout,
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Arc<CachedRegion>>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The region holding `key`, from the cache or the scheduler.
    fn locate(&self, key: &[u8]) -> KvResult<Arc<CachedRegion>> {
        if let Some((_, cached)) = self
            .lock_cache()
            .range::<[u8], _>((std::ops::Bound::Unbounded, std::ops::Bound::Included(key)))
            .next_back()
            && contains_key(&cached.region, key)
        {
            return Ok(Arc::clone(cached));
        }
        let (region, leader) = self
            .cluster
            .get_region(key)
            .map_err(|e| KvError::Unavailable(format!("scheduler: {e}")))?
            .ok_or_else(|| KvError::Unavailable("the cluster has no region yet".into()))?;
        let cached = Arc::new(CachedRegion { region, leader });
        self.insert(Arc::clone(&cached));
        Ok(cached)
    }

    /// Caches `cached`, dropping the cached regions it overlaps.
    fn insert(&self, cached: Arc<CachedRegion>) {
        let mut cache = self.lock_cache();
        let fresh = &cached.region;
        cache.retain(|_, c| {
            !ranges_overlap(
                &c.region.start_key,
                &c.region.end_key,
                &fresh.start_key,
                &fresh.end_key,
            )
        });
        cache.insert(cached.region.start_key.clone(), cached);
    }

    fn invalidate(&self, region_id: u64) {
        self.lock_cache().retain(|_, c| c.region.id != region_id);
    }

    fn set_leader(&self, region_id: u64, leader: Option<u64>) {
        let mut cache = self.lock_cache();
        let Some(cached) = cache.values_mut().find(|c| c.region.id == region_id) else {
            return;
        };
        match leader {
            Some(id) => match cached.region.peers.iter().find(|p| p.id == id) {
                Some(peer) => Arc::make_mut(cached).leader = Some(*peer),
                // A leader this view of the region does not know: it is stale.
                None => {
                    let region_id = cached.region.id;
                    drop(cache);
                    self.invalidate(region_id);
                }
            },
            None => Arc::make_mut(cached).leader = None,
        }
    }

    /// Runs `op` on the leader of the region holding `key`, retrying as the module explains.
    /// `op` gets the region it runs on.
    fn on_region<T, E: RoutingError + From<KvError>>(
        &self,
        key: &[u8],
        mut op: impl FnMut(&dyn TxnCommands, &Region) -> Result<T, E>,
    ) -> Result<T, E> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut avoid: BTreeSet<u64> = BTreeSet::new();
        // Whether an attempt reached a store and got no answer: it may have been applied.
        let ambiguous = std::cell::Cell::new(false);
        // The epoch version of the region the last attempt was sent to.
        let tried_version = std::cell::Cell::new(0);
        // Leader hints followed so far.
        let mut hints = 0;
        loop {
            let attempt = (|| -> Result<T, E> {
                let cached = self.locate(key)?;
                let region = &cached.region;
                tried_version.set(region.epoch.unwrap_or_default().version);
                let target = cached
                    .leader
                    .filter(|l| !avoid.contains(&l.store_id))
                    .or_else(|| {
                        region
                            .peers
                            .iter()
                            .find(|p| !p.learner && !avoid.contains(&p.store_id))
                            .copied()
                    })
                    .or_else(|| region.peers.first().copied())
                    .ok_or_else(|| KvError::Unavailable("region has no peers".into()))?;
                let router = self.stores.store(target.store_id)?;
                let epoch = region.epoch.unwrap_or_default();
                let commands = router.route(Some(RegionContext {
                    region_id: region.id,
                    conf_ver: epoch.conf_ver,
                    version: epoch.version,
                }));
                let commands = match commands {
                    Ok(c) => c,
                    Err(e) => {
                        avoid.insert(target.store_id);
                        return Err(e.into());
                    }
                };
                op(commands.as_ref(), region).inspect_err(|e| {
                    if let Some(KvError::Unavailable(_)) = e.routing_error() {
                        avoid.insert(target.store_id);
                        self.stores.forget(target.store_id);
                        ambiguous.set(true);
                    }
                })
            })();
            let error = match attempt {
                Ok(value) => return Ok(value),
                Err(e) => e,
            };
            let Some(routing) = error.routing_error() else {
                return Err(error);
            };
            if Instant::now() >= deadline {
                // Giving up: if an earlier attempt may have been applied, say so (the caller
                // treats `Unavailable` as "outcome unknown"), whatever the last attempt said.
                if ambiguous.get() && !matches!(routing, KvError::Unavailable(_)) {
                    return Err(E::from(KvError::Unavailable(format!(
                        "an earlier attempt got no answer and may have been applied; the last \
                         one failed: {routing}"
                    ))));
                }
                return Err(error);
            }
            debug!(error = %routing, "re-routing a command");
            let mut wait = true;
            match routing {
                KvError::NotLeader {
                    region_id,
                    leader: Some(leader),
                } => {
                    self.set_leader(*region_id, Some(*leader));
                    // A hint is fresher than an earlier failure to reach the hinted store
                    // (it may have restarted): try it again. Hints that lead nowhere (a
                    // leader that lost its leadership, a store still down) back off after a
                    // few immediate retries instead of spinning.
                    if let Ok(cached) = self.locate(key)
                        && let Some(hinted) = cached.leader
                    {
                        avoid.remove(&hinted.store_id);
                    }
                    hints += 1;
                    wait = hints > MAX_IMMEDIATE_HINTS;
                }
                KvError::NotLeader {
                    region_id,
                    leader: None,
                } => {
                    self.set_leader(*region_id, None);
                    self.invalidate(*region_id);
                }
                KvError::EpochNotMatch {
                    region_id,
                    current: Some(current),
                } if current.id == *region_id
                    && current.epoch.unwrap_or_default().version > tried_version.get() =>
                {
                    // The store's region is newer than the cached one: use it (its leader is
                    // probably the store that answered).
                    self.invalidate(*region_id);
                    self.insert(Arc::new(CachedRegion {
                        region: (**current).clone(),
                        leader: None,
                    }));
                }
                KvError::RegionNotFound { region_id }
                | KvError::EpochNotMatch { region_id, .. }
                | KvError::KeyNotInRegion { region_id, .. } => {
                    self.invalidate(*region_id);
                }
                KvError::Unavailable(_) => {
                    // Ask the scheduler again: it may know a newer leader.
                    if let Ok(cached) = self.locate(key) {
                        self.invalidate(cached.region.id);
                    }
                    // Every replica failed once: give them all another chance.
                    if let Ok(cached) = self.locate(key)
                        && cached
                            .region
                            .peers
                            .iter()
                            .all(|p| avoid.contains(&p.store_id))
                    {
                        avoid.clear();
                    }
                }
                _ => {}
            }
            if wait {
                std::thread::sleep(backoff.min(deadline.saturating_duration_since(Instant::now())));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Splits items by the region of their keys (regions in order of first appearance).
    fn group_by_region<K: Clone>(
        &self,
        items: &[K],
        key: impl Fn(&K) -> &[u8],
    ) -> KvResult<Vec<Vec<K>>> {
        let mut groups: Vec<(u64, Vec<K>)> = Vec::new();
        for item in items {
            let region = self.locate(key(item))?.region.id;
            match groups.iter_mut().find(|(id, _)| *id == region) {
                Some((_, group)) => group.push(item.clone()),
                None => groups.push((region, vec![item.clone()])),
            }
        }
        Ok(groups.into_iter().map(|(_, g)| g).collect())
    }

    /// Runs `op` once per region over the items whose keys that region holds, the regions in
    /// parallel. A group whose keys are no longer all in one region (it split since the items
    /// were grouped) is grouped again by the fresh regions.
    fn on_regions<K, E>(
        &self,
        items: &[K],
        key: impl Fn(&K) -> &[u8] + Sync,
        op: impl Fn(&dyn TxnCommands, &[K]) -> Result<(), E> + Sync,
    ) -> Result<(), E>
    where
        K: Clone + Send + Sync,
        E: RoutingError + From<KvError> + Send,
    {
        let groups = self.group_by_region(items, &key)?;
        let run = |group: Vec<K>| self.on_group(group, &key, &op);
        if groups.len() == 1 {
            return groups.into_iter().try_for_each(run);
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = groups
                .into_iter()
                .map(|group| scope.spawn(move || run(group)))
                .collect();
            let mut result = Ok(());
            for thread in running {
                let outcome = thread.join().unwrap_or_else(|_| {
                    Err(E::from(KvError::Server("a routed call panicked".into())))
                });
                if result.is_ok() {
                    result = outcome;
                }
            }
            result
        })
    }

    /// Runs `op` on one group of items (see `on_regions`), regrouping if the region split.
    fn on_group<K: Clone, E: RoutingError + From<KvError>>(
        &self,
        group: Vec<K>,
        key: &impl Fn(&K) -> &[u8],
        op: &impl Fn(&dyn TxnCommands, &[K]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut pending = vec![group];
        while let Some(group) = pending.pop() {
            let Some(first) = group.first() else { continue };
            let mut regroup = false;
            self.on_region(key(first), |commands, region| {
                regroup = !group.iter().all(|item| contains_key(region, key(item)));
                if regroup {
                    return Ok(());
                }
                op(commands, &group)
            })?;
            if regroup {
                pending.extend(self.group_by_region(&group, key)?);
            }
        }
        Ok(())
    }
}

/// Keys per scan request: a scan over many rows is paged, never one huge message.
pub const SCAN_PAGE: usize = 1024;

impl TxnCommands for RoutedCommands {
    fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        self.on_region(key, |c, _| c.get(key, ts))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let mut pairs = Vec::new();
        let mut from = start.to_vec();
        loop {
            let page = (limit - pairs.len()).min(SCAN_PAGE);
            let (outcome, region_end) = self.on_region(&from, |c, region| {
                Ok::<_, KvError>((c.scan(&from, end, ts, page)?, region.end_key.clone()))
            })?;
            let found = match outcome {
                ReadOutcome::Value(found) => found,
                locked @ ReadOutcome::Locked { .. } => return Ok(locked),
            };
            let full_page = found.len() >= page;
            let last = found.last().map(|(key, _)| key.clone());
            pairs.extend(found);
            if pairs.len() >= limit {
                return Ok(ReadOutcome::Value(pairs));
            }
            from = match last {
                // More may follow in this region: go on right after the last key.
                Some(mut key) if full_page => {
                    key.push(0);
                    key
                }
                _ => {
                    if region_end.is_empty() || end.is_some_and(|end| end <= region_end.as_slice())
                    {
                        return Ok(ReadOutcome::Value(pairs));
                    }
                    region_end
                }
            };
        }
    }

    /// Every region's mutations at once: a secondary lock written before the primary's is
    /// harmless (a reader that meets it checks the primary, and a rollback recorded there
    /// makes the primary's prewrite fail).
    fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        self.on_regions(mutations, Mutation::key, |c, group| {
            c.prewrite(group, primary, start_ts, ttl_ms)
        })
    }

    fn commit(&self, keys: &[Vec<u8>], start_ts: Timestamp, commit_ts: Timestamp) -> KvResult<()> {
        self.on_regions(keys, Vec::as_slice, |c, group| {
            c.commit(group, start_ts, commit_ts)
        })
    }

    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()> {
        self.on_regions(keys, Vec::as_slice, |c, group| c.rollback(group, start_ts))
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus> {
        self.on_region(primary, |c, _| {
            c.check_txn_status(primary, lock_ts, current_ts)
        })
    }

    fn resolve_lock(
        &self,
        key: &[u8],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> KvResult<usize> {
        self.on_region(key, |c, _| c.resolve_lock(key, start_ts, commit_ts))
    }

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64> {
        self.on_region(primary, |c, _| c.txn_heartbeat(primary, start_ts, ttl_ms))
    }
}
