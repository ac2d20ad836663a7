//! Crash and failure windows in a replica's lifecycle, on the in-process cluster: a bootstrap
//! whose scheduler call failed after the region was persisted, and a crash between a replica
//! applying its own removal and finishing its destruction.

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::raftstore::region::{ChangePeer, RegionLocalState};
use kv::storage::{Cf, Engine, RocksEngine, Snapshot, WriteBatch};
use kv::{KvResult, Transaction, TxnClient};
use proto::metapb::{Peer, Region, Store};
use proto::scheduler::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, StoreHeartbeatRequest,
};
use scheduler_api::{ClusterApi, ClusterError};
use support_cluster::TestCluster;

/// The scheduler, except that `bootstrap` fails (the call timed out, or the node was killed
/// right after persisting its region).
struct FailingBootstrap(Arc<dyn ClusterApi>);

impl ClusterApi for FailingBootstrap {
    fn alloc_id(&self) -> Result<u64, ClusterError> {
        self.0.alloc_id()
    }
    fn is_bootstrapped(&self) -> Result<bool, ClusterError> {
        self.0.is_bootstrapped()
    }
    fn bootstrap(&self, _: Store, _: Region) -> Result<bool, ClusterError> {
        Err(ClusterError::Unavailable("timed out".into()))
    }
    fn put_store(&self, store: Store) -> Result<(), ClusterError> {
        self.0.put_store(store)
    }
    fn get_store(&self, id: u64) -> Result<Option<Store>, ClusterError> {
        self.0.get_store(id)
    }
    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<(), ClusterError> {
        self.0.store_heartbeat(request)
    }
    fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClusterError> {
        self.0.region_heartbeat(request)
    }
    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        self.0.get_region(key)
    }
    fn get_region_by_id(&self, id: u64) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        self.0.get_region_by_id(id)
    }
    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, ClusterError> {
        self.0.scan_regions(start, end, limit)
    }
    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError> {
        self.0.split_regions(keys)
    }
    fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError> {
        self.0.unsplit_regions(start, end)
    }
    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError> {
        self.0.remove_store(store_id)
    }
}

fn put(client: &TxnClient, key: &str, value: &str) -> KvResult<()> {
    let mut txn = client.begin_txn()?;
    txn.put(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    txn.commit()
}

fn get(client: &TxnClient, key: &str) -> KvResult<Option<Vec<u8>>> {
    let mut txn = client.begin_txn()?;
    txn.get(key.as_bytes())
}

#[test]
fn a_bootstrap_that_failed_after_persisting_its_region_is_completed_on_restart() {
    let mut cluster = TestCluster::new(0, 3);
    let api = Arc::new(FailingBootstrap(
        Arc::clone(&cluster.scheduler) as Arc<dyn ClusterApi>
    ));
    let (first, result) = cluster.try_add_store_with(api);
    assert!(
        result.is_err(),
        "the store's start fails on the bootstrap error"
    );
    // Restarted, the store offers the region it persisted again.
    cluster.start(first);
    assert!(cluster.scheduler.is_bootstrapped().unwrap());
    let region_id = cluster.region_id();
    assert_eq!(cluster.store(first).region_ids(), vec![region_id]);
    // A second store joins the same cluster instead of bootstrapping another one.
    let second = cluster.add_store();
    put(&cluster.client, "k", "v").expect("write acknowledged");
    let mut seen = BTreeSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if let Ok(Some((region, _))) = cluster.scheduler.get_region(b"") {
            seen.insert(region.id);
        }
        assert!(
            get(&cluster.fresh_client(), "k").unwrap().is_some(),
            "an acknowledged write was not visible"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        seen,
        BTreeSet::from([region_id]),
        "one region covers the keyspace"
    );
    assert!(
        cluster
            .store(second)
            .region_ids()
            .iter()
            .all(|&id| id == region_id),
        "the second store holds a region of its own"
    );
}

#[test]
fn a_crash_between_applying_a_removal_and_destroying_the_replica_is_finished_on_restart() {
    let mut cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "a", "1").unwrap();
    let victim = cluster.follower(&region);
    cluster.wait_caught_up(region_id, victim.store_id);
    cluster.stop(victim.store_id);
    cluster.change_peer(region_id, ChangePeer::Remove(victim));
    let after = cluster.wait_for_voters(region_id, 2);
    // The victim's engine as if it applied its removal and crashed before destroying itself
    // (the state before the removal and its destruction were made one batch).
    {
        let engine = RocksEngine::open(&cluster.dir(victim.store_id)).unwrap();
        let state = RegionLocalState::new(after.clone());
        let mut key = vec![b'R'];
        key.extend_from_slice(&region_id.to_be_bytes());
        let mut batch = WriteBatch::new();
        batch.put(Cf::Raft, key, state.encode());
        engine.write(batch).unwrap();
    }
    cluster.start(victim.store_id);
    // It destroys the removed replica at startup; the scheduler then adds the store back.
    let region = cluster.wait_for_voters(region_id, 3);
    let back = TestCluster::peer_on(&region, victim.store_id).expect("the store is added back");
    assert_ne!(back.id, victim.id);
    cluster.wait_caught_up(region_id, victim.store_id);
    let engine = cluster.store(victim.store_id).engine();
    assert!(engine.snapshot().scan(Cf::Write, b"", None).count() > 0);
    assert_eq!(
        get(&cluster.client, "a").unwrap().as_deref(),
        Some(&b"1"[..])
    );
}
