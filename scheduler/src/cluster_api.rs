//! [`ClusterApi`]: the scheduler's cluster metadata as the stores and clients see it, as a
//! synchronous trait with two implementations:
//!
//! - [`LocalCluster`]: in-process, over a [`Cluster`] and an [`IdAllocator`] (the embedded
//!   single-node mode and in-process cluster tests);
//! - [`crate::SchedulerClient`]: a remote scheduler over gRPC (see [`crate::client`]).
//!
//! Errors are grouped by what the caller does about them: [`ClusterError::Unavailable`] — retry
//! later (network, timeout); [`ClusterError::Invalid`] — a bug in the caller, do not retry;
//! [`ClusterError::Storage`] — the scheduler could not persist, retry later or alert.

use std::sync::Arc;
use std::time::Instant;

use proto::metapb::{Peer, Region, Store};
use proto::scheduler::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, StoreHeartbeatRequest,
};

use crate::cluster::Cluster;
use crate::id_alloc::{IdAllocator, IdError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The scheduler could not be reached or did not answer in time: retry.
    #[error("scheduler unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed or does not fit the cluster's state.
    #[error("invalid cluster request: {0}")]
    Invalid(String),
    /// The scheduler could not persist its state.
    #[error("scheduler storage error: {0}")]
    Storage(String),
}

impl From<IdError> for ClusterError {
    fn from(e: IdError) -> ClusterError {
        match e {
            IdError::BadCount { .. } => ClusterError::Invalid(e.to_string()),
            IdError::Persist(_) => ClusterError::Storage(e.to_string()),
        }
    }
}

/// The cluster metadata operations of the scheduler. Synchronous: remote implementations block,
/// so call them from plain threads (or `spawn_blocking`), not from inside an async runtime.
pub trait ClusterApi: Send + Sync + 'static {
    fn alloc_id(&self) -> Result<u64, ClusterError>;
    fn is_bootstrapped(&self) -> Result<bool, ClusterError>;
    /// Ok(true) if this call bootstrapped the cluster, Ok(false) if it already was.
    fn bootstrap(&self, store: Store, region: Region) -> Result<bool, ClusterError>;
    fn put_store(&self, store: Store) -> Result<(), ClusterError>;
    fn get_store(&self, store_id: u64) -> Result<Option<Store>, ClusterError>;
    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<(), ClusterError>;
    fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClusterError>;
    /// The region containing `key`, with its last reported leader.
    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError>;
    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> Result<Option<(Region, Option<Peer>)>, ClusterError>;
    /// The regions overlapping `[start, end)` (empty `end`: unbounded) in key order, at most
    /// `limit` (0: all), with leaders and sizes.
    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, ClusterError>;
    /// Asks for the regions to be split at `keys` (carried out by their leaders, later).
    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError>;
    /// Drains a store (see `RemoveStore` in scheduler.proto); returns the regions left on it.
    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError>;
}

/// The cluster metadata in this process. The clock is the real one ([`Instant::now`]).
#[derive(Clone)]
pub struct LocalCluster {
    cluster: Arc<Cluster>,
    ids: Arc<IdAllocator>,
}

impl LocalCluster {
    pub fn new(cluster: Arc<Cluster>, ids: Arc<IdAllocator>) -> LocalCluster {
        LocalCluster { cluster, ids }
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }
}

impl ClusterApi for LocalCluster {
    fn alloc_id(&self) -> Result<u64, ClusterError> {
        Ok(self.ids.alloc(1)?)
    }

    fn is_bootstrapped(&self) -> Result<bool, ClusterError> {
        Ok(self.cluster.is_bootstrapped())
    }

    fn bootstrap(&self, store: Store, region: Region) -> Result<bool, ClusterError> {
        self.cluster.bootstrap(store, region, Instant::now())
    }

    fn put_store(&self, store: Store) -> Result<(), ClusterError> {
        self.cluster.put_store(store, Instant::now())
    }

    fn get_store(&self, store_id: u64) -> Result<Option<Store>, ClusterError> {
        Ok(self.cluster.get_store(store_id))
    }

    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<(), ClusterError> {
        self.cluster.store_heartbeat(&request, Instant::now())
    }

    fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClusterError> {
        self.cluster
            .region_heartbeat(request, &self.ids, Instant::now())
    }

    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        Ok(self.cluster.get_region(key))
    }

    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        Ok(self.cluster.get_region_by_id(region_id))
    }

    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, ClusterError> {
        Ok(self.cluster.scan_regions(start, end, limit))
    }

    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError> {
        self.cluster.split_regions(keys, Instant::now());
        Ok(())
    }

    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError> {
        self.cluster.remove_store(store_id)
    }
}

#[cfg(test)]
mod tests {
    use proto::metapb::RegionEpoch;
    use proto::scheduler::ChangePeerType;

    use super::*;
    use crate::cluster::ClusterConfig;

    #[test]
    fn the_local_cluster_bootstraps_and_answers_heartbeats() {
        let local = LocalCluster::new(
            Arc::new(Cluster::in_memory(ClusterConfig::default())),
            Arc::new(IdAllocator::in_memory()),
        );
        let api: &dyn ClusterApi = &local;
        let (store_id, region_id, peer_id) = (
            api.alloc_id().unwrap(),
            api.alloc_id().unwrap(),
            api.alloc_id().unwrap(),
        );
        let store = |id| Store {
            id,
            address: format!("127.0.0.1:{id}"),
            pg_address: String::new(),
        };
        let leader = Peer {
            id: peer_id,
            store_id,
            learner: false,
        };
        let region = Region {
            id: region_id,
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: vec![leader],
            ..Region::default()
        };
        assert!(api.bootstrap(store(store_id), region.clone()).unwrap());
        assert!(!api.bootstrap(store(store_id), region.clone()).unwrap());
        let other = api.alloc_id().unwrap();
        api.put_store(store(other)).unwrap();
        let response = api
            .region_heartbeat(RegionHeartbeatRequest {
                region: Some(region.clone()),
                leader: Some(leader),
                term: 1,
                ..RegionHeartbeatRequest::default()
            })
            .unwrap();
        let change = response.change_peer.unwrap();
        assert_eq!(
            change.change_type,
            ChangePeerType::ChangePeerAddLearner as i32
        );
        assert_eq!(change.peer.unwrap().store_id, other);
        assert_eq!(api.get_region(b"x").unwrap(), Some((region, Some(leader))));
        assert!(matches!(
            api.store_heartbeat(StoreHeartbeatRequest {
                store_id: 77_777,
                ..StoreHeartbeatRequest::default()
            }),
            Err(ClusterError::Invalid(_))
        ));
    }
}
