//! The routed client's retries do not hide an ambiguous attempt: a primary commit whose first
//! attempt was applied with its answer lost, followed by attempts that fail with region
//! errors until the deadline, is reported as CommitUnknown (SQLSTATE 40003), not as the last
//! region error.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv::client::{RoutedCommands, StoreConnector};
use kv::mvcc::reader::ReadOutcome;
use kv::storage::MemoryEngine;
use kv::txn::{CommandRouter, RegionContext, TxnCommands, TxnRequest, TxnResponse, TxnStore};
use kv::{KvError, KvResult, Transaction, TxnClient, TxnOptions};
use proto::metapb::{Peer, Region, RegionEpoch, Store};
use proto::scheduler::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, StoreHeartbeatRequest,
};
use scheduler::{
    Cluster, ClusterApi, ClusterConfig, ClusterError, IdAllocator, LocalCluster, TimestampOracle,
};

struct Flaky {
    inner: Arc<TxnStore<MemoryEngine>>,
    commits: AtomicU64,
}

impl TxnCommands for Flaky {
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        match request {
            TxnRequest::Commit { .. } => {
                if self.commits.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Applied; the answer is lost (the proposal's wait timed out).
                    self.inner.execute(request)?;
                    return Err(KvError::Unavailable("region 1: no answer within 5s".into()));
                }
                // Later attempts: an election is under way.
                Err(KvError::NotLeader {
                    region_id: 1,
                    leader: None,
                })
            }
            // The client's best-effort rollback reaches no leader either.
            TxnRequest::Rollback { .. } => Err(KvError::NotLeader {
                region_id: 1,
                leader: None,
            }),
            _ => self.inner.execute(request),
        }
    }
}

struct OneStore(Arc<Flaky>);
impl CommandRouter for OneStore {
    fn route(&self, _: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>> {
        Ok(Arc::clone(&self.0) as Arc<dyn TxnCommands>)
    }
}
impl StoreConnector for OneStore {
    fn store(&self, _: u64) -> KvResult<Arc<dyn CommandRouter>> {
        Ok(Arc::new(OneStore(Arc::clone(&self.0))))
    }
}

#[test]
fn a_committed_primary_whose_answer_was_lost_is_reported_as_commit_unknown() {
    let scheduler = Arc::new(LocalCluster::new(
        Arc::new(Cluster::in_memory(ClusterConfig::default())),
        Arc::new(IdAllocator::in_memory()),
    ));
    let store = Store {
        id: 1,
        address: "s1".into(),
        pg_address: String::new(),
    };
    let region = Region {
        id: 1,
        start_key: vec![],
        end_key: vec![],
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 2,
            store_id: 1,
            learner: false,
        }],
    };
    assert!(scheduler.bootstrap(store, region).unwrap());
    let inner = Arc::new(TxnStore::new(Arc::new(MemoryEngine::new())));
    let flaky = Arc::new(Flaky {
        inner: Arc::clone(&inner),
        commits: AtomicU64::new(0),
    });
    let routed = RoutedCommands::new(
        scheduler as Arc<dyn ClusterApi>,
        Arc::new(OneStore(flaky)),
        Duration::from_millis(300),
    );
    let tso = Arc::new(TimestampOracle::in_memory());
    let client = TxnClient::new(Arc::new(routed), tso.clone(), TxnOptions::default());
    let mut txn = client.begin_txn().unwrap();
    txn.put(b"k".to_vec(), b"v".to_vec());
    let outcome = txn.commit();
    let direct = TxnClient::new(inner, tso, TxnOptions::default());
    let committed = direct.begin_txn().unwrap().get(b"k").unwrap();
    println!("commit returned {outcome:?}; k in the store: {committed:?}");
    assert!(committed.is_some());
    assert!(
        matches!(outcome, Err(KvError::CommitUnknown { .. })),
        "got {outcome:?}"
    );
}

/// A scheduler whose region tree has a hole for a while (as right after a split, before the
/// new region's first report): its first `misses` lookups by key find nothing.
struct RegionHole {
    inner: Arc<dyn ClusterApi>,
    misses: AtomicU64,
}

impl ClusterApi for RegionHole {
    fn alloc_id(&self) -> Result<u64, ClusterError> {
        self.inner.alloc_id()
    }
    fn is_bootstrapped(&self) -> Result<bool, ClusterError> {
        self.inner.is_bootstrapped()
    }
    fn bootstrap(&self, store: Store, region: Region) -> Result<bool, ClusterError> {
        self.inner.bootstrap(store, region)
    }
    fn put_store(&self, store: Store) -> Result<(), ClusterError> {
        self.inner.put_store(store)
    }
    fn get_store(&self, id: u64) -> Result<Option<Store>, ClusterError> {
        self.inner.get_store(id)
    }
    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<(), ClusterError> {
        self.inner.store_heartbeat(request)
    }
    fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClusterError> {
        self.inner.region_heartbeat(request)
    }
    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        let missed = self
            .misses
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if missed {
            return Ok(None);
        }
        self.inner.get_region(key)
    }
    fn get_region_by_id(&self, id: u64) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        self.inner.get_region_by_id(id)
    }
    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, ClusterError> {
        self.inner.scan_regions(start, end, limit)
    }
    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError> {
        self.inner.split_regions(keys)
    }
    fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError> {
        self.inner.unsplit_regions(start, end)
    }
    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError> {
        self.inner.remove_store(store_id)
    }
}

struct PlainStore(Arc<TxnStore<MemoryEngine>>);
impl CommandRouter for PlainStore {
    fn route(&self, _: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>> {
        Ok(Arc::clone(&self.0) as Arc<dyn TxnCommands>)
    }
}
impl StoreConnector for PlainStore {
    fn store(&self, _: u64) -> KvResult<Arc<dyn CommandRouter>> {
        Ok(Arc::new(PlainStore(Arc::clone(&self.0))))
    }
}

#[test]
fn a_multi_key_request_waits_out_a_hole_in_the_schedulers_regions() {
    let scheduler = Arc::new(LocalCluster::new(
        Arc::new(Cluster::in_memory(ClusterConfig::default())),
        Arc::new(IdAllocator::in_memory()),
    ));
    let store = Store {
        id: 1,
        address: "s1".into(),
        pg_address: String::new(),
    };
    let region = Region {
        id: 1,
        start_key: vec![],
        end_key: vec![],
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![Peer {
            id: 2,
            store_id: 1,
            learner: false,
        }],
    };
    assert!(scheduler.bootstrap(store, region).unwrap());
    let holey = RegionHole {
        inner: scheduler as Arc<dyn ClusterApi>,
        misses: AtomicU64::new(3),
    };
    let routed = RoutedCommands::new(
        Arc::new(holey),
        Arc::new(PlainStore(Arc::new(TxnStore::new(Arc::new(
            MemoryEngine::new(),
        ))))),
        Duration::from_secs(5),
    );
    let request = TxnRequest::BatchGet {
        keys: vec![b"a".to_vec(), b"b".to_vec()],
        ts: scheduler_api::Timestamp(10),
    };
    let answer = routed.execute(&request);
    assert!(
        matches!(answer, Ok(TxnResponse::BatchGet(ReadOutcome::Value(ref pairs))) if pairs.is_empty()),
        "got {answer:?}"
    );
}
