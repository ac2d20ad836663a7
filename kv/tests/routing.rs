//! The routed client's retries do not hide an ambiguous attempt: a primary commit whose first
//! attempt was applied with its answer lost, followed by attempts that fail with region
//! errors until the deadline, is reported as CommitUnknown (SQLSTATE 40003), not as the last
//! region error.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv::client::{RoutedCommands, StoreConnector};
use kv::storage::MemoryEngine;
use kv::txn::{CommandRouter, RegionContext, TxnCommands, TxnRequest, TxnResponse, TxnStore};
use kv::{KvError, KvResult, Transaction, TxnClient, TxnOptions};
use proto::metapb::{Peer, Region, RegionEpoch, Store};
use scheduler::{Cluster, ClusterApi, ClusterConfig, IdAllocator, LocalCluster, TimestampOracle};

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
