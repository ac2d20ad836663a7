//! [`RoutedCommands`]: the Percolator commands of a whole cluster, each sent to the leader of
//! the region holding its keys.
//!
//! A region cache (key range → region, leader) is filled from the scheduler on a miss. Each
//! command runs on one region (multi-key commands are split by region; a scan walks the
//! regions in key order), as its request says ([`TxnRequest::route`]), and reacts to what
//! comes back:
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
//! Multi-key commands (prewrite, commit, rollback) are split into one request per region
//! ([`TxnRequest::part`]) and sent to all the regions at once, one thread per region; a part
//! whose region split meanwhile is split again. Their answer is the first part's error or lock
//! met, in the order of the parts. The transaction client commits the primary key alone first,
//! then the secondaries.
//! A scan asks for at most [`SCAN_PAGE`] keys per request, going on within a region after the
//! last key returned and then in the next region. Lock resolution goes to the region of the
//! lock that was met.

use std::borrow::Cow;
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
use crate::txn::{CommandRouter, RegionContext, Route, TxnCommands, TxnRequest, TxnResponse};

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

/// The region error (or an unreachable store) the router handles by retrying, if `error` is
/// one.
fn routing_error(error: &KvError) -> Option<&KvError> {
    (error.is_region_error() || matches!(error, KvError::Unavailable(_))).then_some(error)
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

    /// [`RoutedCommands::locate`], waiting with backoff (up to the command timeout) while the
    /// scheduler cannot answer or knows no region for `key`: right after a split it may miss
    /// the new region's range for a moment, until the new region's first report.
    fn locate_waiting(&self, key: &[u8]) -> KvResult<Arc<CachedRegion>> {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.locate(key) {
                Err(KvError::Unavailable(_)) if Instant::now() < deadline => {
                    std::thread::sleep(
                        backoff.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                located => return located,
            }
        }
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
    fn on_region<T>(
        &self,
        key: &[u8],
        mut op: impl FnMut(&dyn TxnCommands, &Region) -> KvResult<T>,
    ) -> KvResult<T> {
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
            let attempt = (|| -> KvResult<T> {
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
                        return Err(e);
                    }
                };
                op(commands.as_ref(), region).inspect_err(|e| {
                    if let KvError::Unavailable(_) = e {
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
            let Some(routing) = routing_error(&error) else {
                return Err(error);
            };
            if Instant::now() >= deadline {
                // Giving up: if an earlier attempt may have been applied, say so (the caller
                // treats `Unavailable` as "outcome unknown"), whatever the last attempt said.
                if ambiguous.get() && !matches!(routing, KvError::Unavailable(_)) {
                    return Err(KvError::Unavailable(format!(
                        "an earlier attempt got no answer and may have been applied; the last \
                         one failed: {routing}"
                    )));
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

    /// Splits a multi-key request into one part per region, over the keys that region holds
    /// (regions in order of their first key in the request). A request whose keys are all in
    /// one region is its own part.
    fn split_by_region<'r>(
        &self,
        request: Cow<'r, TxnRequest>,
    ) -> KvResult<Vec<Cow<'r, TxnRequest>>> {
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, key) in request.keys().enumerate() {
            let region = self.locate_waiting(key)?.region.id;
            match groups.iter_mut().find(|(id, _)| *id == region) {
                Some((_, group)) => group.push(i),
                None => groups.push((region, vec![i])),
            }
        }
        if groups.len() == 1 {
            return Ok(vec![request]);
        }
        Ok(groups
            .into_iter()
            .map(|(_, items)| Cow::Owned(request.part(&items)))
            .collect())
    }

    /// Runs a multi-key request once per region over the keys that region holds, the regions
    /// in parallel. A part whose keys are no longer all in one region (it split since the
    /// request was split) is split again by the fresh regions. The answer is the first part's
    /// (in the order of the parts) that concludes the request — an error or a lock met — else
    /// any part's (see [`TxnResponse::concludes`]).
    fn on_regions(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        let mut parts = self.split_by_region(Cow::Borrowed(request))?;
        if parts.len() <= 1 {
            return match parts.pop() {
                Some(part) => self.on_part(part),
                None => request.answer_without_keys().ok_or_else(|| {
                    KvError::Server(format!("a {} request without keys", request.name()))
                }),
            };
        }
        std::thread::scope(|scope| {
            let running: Vec<_> = parts
                .into_iter()
                .map(|part| scope.spawn(move || self.on_part(part)))
                .collect();
            let answers = running.into_iter().map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(KvError::Server("a routed call panicked".into())))
            });
            merge(answers)
        })
    }

    /// Runs one part of a multi-key request (see `on_regions`), splitting it again if its
    /// region split.
    fn on_part(&self, part: Cow<'_, TxnRequest>) -> KvResult<TxnResponse> {
        let mut pending = vec![part];
        let mut answers = Vec::new();
        while let Some(part) = pending.pop() {
            let Some(first) = part.keys().next() else {
                continue;
            };
            // `None`: the part's keys are no longer all in the region of its first key.
            let answer = self.on_region(first, |commands, region| {
                if !part.keys().all(|key| contains_key(region, key)) {
                    return Ok(None);
                }
                commands.execute(&part).map(Some)
            })?;
            match answer {
                Some(answer) if answer.concludes() => return Ok(answer),
                Some(answer) => answers.push(answer),
                None => pending.extend(self.split_by_region(part)?),
            }
        }
        merge(answers.into_iter().map(Ok))
    }

    /// A range scan, walking the regions in key order and paging within each (see the module
    /// doc).
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
            let page_limit = (limit - pairs.len()).min(SCAN_PAGE);
            let page = TxnRequest::Scan {
                start: from.clone(),
                end: end.map(<[u8]>::to_vec),
                ts,
                limit: page_limit,
            };
            let (outcome, region_end) = self.on_region(&from, |c, region| {
                let outcome = match c.execute(&page)? {
                    TxnResponse::Scan(outcome) => outcome,
                    other => {
                        return Err(KvError::Server(format!(
                            "a scan request was answered as {}",
                            other.name()
                        )));
                    }
                };
                Ok((outcome, region.end_key.clone()))
            })?;
            let found = match outcome {
                ReadOutcome::Value(found) => found,
                locked @ ReadOutcome::Locked { .. } => return Ok(locked),
            };
            let full_page = found.len() >= page_limit;
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
}

/// The answer of a request split by region, from its parts' answers in the parts' order: the
/// first that concludes the request (an error, a lock met), else all of them put together
/// ([`TxnResponse::absorb`]).
fn merge(answers: impl Iterator<Item = KvResult<TxnResponse>>) -> KvResult<TxnResponse> {
    let mut merged: Option<KvResult<TxnResponse>> = None;
    for answer in answers {
        merged = Some(match merged {
            Some(Err(e)) => Err(e),
            Some(Ok(done)) if done.concludes() => Ok(done),
            Some(Ok(so_far)) => answer.map(|answer| {
                if answer.concludes() {
                    answer
                } else {
                    so_far.absorb(answer)
                }
            }),
            None => answer,
        });
    }
    merged.unwrap_or_else(|| Err(KvError::Server("a request split into no parts".into())))
}

/// Keys per scan request: a scan over many rows is paged, never one huge message.
pub const SCAN_PAGE: usize = 1024;

/// Each request is routed where [`TxnRequest::route`] says: a one-key request to its region;
/// a multi-key one (prewrite, commit, rollback) to every region holding some of its keys, at
/// once — a secondary lock written before the primary's is harmless (a reader that meets it
/// checks the primary, and a rollback recorded there makes the primary's prewrite fail); a
/// scan region by region.
impl TxnCommands for RoutedCommands {
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        match request.route() {
            Route::Key(key) => self.on_region(key, |commands, _| commands.execute(request)),
            Route::Keys => self.on_regions(request),
            Route::Range => {
                let TxnRequest::Scan {
                    start,
                    end,
                    ts,
                    limit,
                } = request
                else {
                    return Err(KvError::Server(format!(
                        "a {} request routed as a range",
                        request.name()
                    )));
                };
                self.scan(start, end.as_deref(), *ts, *limit)
                    .map(TxnResponse::Scan)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Lock, LockKind};

    fn locked(start_ts: u64) -> TxnResponse {
        TxnResponse::Prewrite {
            locked: Some((
                b"k".to_vec(),
                Lock {
                    kind: LockKind::Put,
                    primary: b"p".to_vec(),
                    start_ts: Timestamp(start_ts),
                    ttl_ms: 100,
                    for_update_ts: Timestamp(0),
                },
            )),
        }
    }

    #[test]
    fn the_first_part_to_conclude_answers_for_the_request() {
        let ok = || Ok(TxnResponse::Prewrite { locked: None });
        assert_eq!(
            merge([ok(), ok()].into_iter()).unwrap(),
            TxnResponse::Prewrite { locked: None }
        );
        assert_eq!(
            merge([ok(), Ok(locked(3)), Ok(locked(4))].into_iter()).unwrap(),
            locked(3)
        );
        assert!(matches!(
            merge([ok(), Err(KvError::ServerIsBusy("a".into())), Ok(locked(4))].into_iter()),
            Err(KvError::ServerIsBusy(_))
        ));
        assert_eq!(
            merge([Ok(locked(3)), Err(KvError::ServerIsBusy("a".into()))].into_iter()).unwrap(),
            locked(3)
        );
    }
}
