//! The transactional commands of a [`Store`]: each request names a region; the store checks
//! that it holds an initialised replica of it, that the request's epoch is current and that
//! every key lies in the region, then runs the Percolator command on that replica (reads after
//! a ReadIndex barrier, writes through Raft: see [`TxnStore::with_replication`]).
//!
//! Errors a client reacts to by re-routing: `RegionNotFound` (no replica here),
//! `EpochNotMatch` (the region's range changed: the request's `version` is not the current
//! one; a membership change alone does not invalidate a request), `KeyNotInRegion`, and from
//! the replica `NotLeader`, `StaleCommand`, `ServerIsBusy`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::driver::PeerHandle;
use super::region;
use super::store::Store;
use crate::error::{KvError, KvResult};
use crate::storage::Engine;
use crate::txn::{
    CommandRouter, RegionContext, SharedLocking, TxnCommands, TxnRequest, TxnResponse, TxnStore,
};

/// Routes a store's requests to its regions.
pub struct StoreCommands<E: Engine> {
    store: Arc<Store<E>>,
    /// One command set per region replica, by region id, with the replica's peer id (a
    /// replica removed and added back gets a new one).
    regions: Mutex<BTreeMap<u64, CachedRegion<E>>>,
    /// The latches, lock waits and wait-for graph every region's commands share.
    locking: Arc<SharedLocking>,
}

/// A region's commands and the peer id of the replica they run on.
type CachedRegion<E> = (u64, Arc<RegionCommands<E>>);

impl<E: Engine> StoreCommands<E> {
    pub fn new(store: Arc<Store<E>>) -> Self {
        StoreCommands {
            store,
            regions: Mutex::new(BTreeMap::new()),
            locking: Arc::default(),
        }
    }

    /// Sends this store's lock waits to the cluster's deadlock detector through `commands`
    /// (the node's routing client; see `txn::detector`). Without it, the store detects only
    /// the deadlocks among its own waits.
    pub fn report_deadlocks_through(&self, commands: std::sync::Weak<dyn TxnCommands>) {
        self.locking.detector().send_reports_to(commands);
    }
}

impl<E: Engine> CommandRouter for StoreCommands<E> {
    fn route(&self, context: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>> {
        let context = match context {
            Some(context) => context,
            // No region named: allowed while the store holds exactly one region.
            None => match self.store.region_ids().as_slice() {
                [only] => RegionContext {
                    region_id: *only,
                    ..RegionContext::default()
                },
                _ => {
                    return Err(KvError::Server(
                        "the request names no region; this store holds several".into(),
                    ));
                }
            },
        };
        let region_id = context.region_id;
        // The common case: the replica's commands are cached, it is running and the request's
        // version is current.
        if let Some((_, commands)) = self
            .regions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&region_id)
            && commands.handle.is_alive()
            && commands.handle.is_initialized()
            && commands.handle.with_region(|r| {
                context.version == 0 || region::epoch(r).version == context.version
            })
        {
            return Ok(Arc::clone(commands) as Arc<dyn TxnCommands>);
        }
        let not_found = || KvError::RegionNotFound { region_id };
        let handle = self.store.peer(region_id).ok_or_else(not_found)?;
        if !handle.is_initialized() {
            return Err(not_found());
        }
        let region = handle.region();
        let current = region::epoch(&region);
        if context.version != 0 && context.version != current.version {
            return Err(KvError::EpochNotMatch {
                region_id,
                current: Some(Box::new(region)),
            });
        }
        let peer_id = region::peer_on_store(&region, self.store.id())
            .map(|p| p.id)
            .ok_or_else(not_found)?;
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached_peer, commands)) = regions.get(&region_id)
            && *cached_peer == peer_id
        {
            return Ok(Arc::clone(commands) as Arc<dyn TxnCommands>);
        }
        let txn = TxnStore::with_replication(
            Arc::clone(self.store.engine()),
            Arc::new(handle.clone()),
            Arc::clone(&self.locking),
        );
        let commands = Arc::new(RegionCommands { handle, txn });
        regions.insert(region_id, (peer_id, Arc::clone(&commands)));
        Ok(commands)
    }
}

/// One region replica's commands, refusing keys outside the region.
///
/// The region's range is read afresh for every command, since a split may shrink it at any
/// time. Writes need no more than the check before the command: a write batch whose keys left
/// the region before it applied is skipped by every replica (see `command`). A read checks
/// its keys again after reading: if a split moved them out meanwhile, the new region may
/// already hold writes this replica's barrier did not wait for, so the read is refused
/// (EpochNotMatch) and the client retries in the right region.
struct RegionCommands<E: Engine> {
    handle: PeerHandle,
    txn: TxnStore<E>,
}

impl<E: Engine> RegionCommands<E> {
    fn check_keys<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) -> KvResult<()> {
        self.handle.with_region(|region| {
            for key in keys {
                if !region::contains_key(region, key) {
                    return Err(KvError::KeyNotInRegion {
                        key: key.to_vec(),
                        region_id: region.id,
                    });
                }
            }
            Ok(())
        })
    }

    /// After a read at `read_version` (the region's epoch version when the read started):
    /// refuses it if the region's range changed meanwhile.
    fn check_unchanged(&self, read_version: u64) -> KvResult<()> {
        if self.version() != read_version {
            let region = self.handle.region();
            return Err(KvError::EpochNotMatch {
                region_id: region.id,
                current: Some(Box::new(region)),
            });
        }
        Ok(())
    }

    fn version(&self) -> u64 {
        self.handle.with_region(|r| region::epoch(r).version)
    }
}

impl<E: Engine> TxnCommands for RegionCommands<E> {
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        match request {
            // A scan runs over the part of `[start, end)` inside the region: `start` must be
            // in it, and the scan stops at the region's end (the client continues in the next
            // region).
            TxnRequest::Scan {
                start,
                end,
                ts,
                limit,
            } => {
                let region = self.handle.region();
                let version = region::epoch(&region).version;
                self.check_keys([start.as_slice()])?;
                let end = match (end, region.end_key.is_empty()) {
                    (end, true) => end.clone(),
                    (Some(end), false) if *end <= region.end_key => Some(end.clone()),
                    (_, false) => Some(region.end_key),
                };
                let clamped = TxnRequest::Scan {
                    start: start.clone(),
                    end,
                    ts: *ts,
                    limit: *limit,
                };
                let response = self.txn.execute(&clamped)?;
                self.check_unchanged(version)?;
                Ok(response)
            }
            // What a read answers must come from the region as it was when the read started.
            TxnRequest::Get { .. }
            | TxnRequest::BatchGet { .. }
            | TxnRequest::CheckTxnStatus { .. } => {
                let version = self.version();
                self.check_keys(request.keys())?;
                let response = self.txn.execute(request)?;
                self.check_unchanged(version)?;
                Ok(response)
            }
            TxnRequest::Prewrite { .. }
            | TxnRequest::AcquirePessimisticLock { .. }
            | TxnRequest::PessimisticRollback { .. }
            | TxnRequest::Commit { .. }
            | TxnRequest::Rollback { .. }
            | TxnRequest::ResolveLock { .. }
            | TxnRequest::TxnHeartbeat { .. }
            | TxnRequest::DetectDeadlock { .. } => {
                self.check_keys(request.keys())?;
                self.txn.execute(request)
            }
        }
    }
}
