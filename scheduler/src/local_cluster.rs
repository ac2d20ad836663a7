//! [`LocalCluster`]: the [`ClusterApi`] (defined in `scheduler-api`, with its other
//! implementation, the gRPC [`crate::SchedulerClient`]) in-process, over a [`Cluster`] and an
//! [`IdAllocator`] (the single-node cluster and in-process cluster tests).

use std::sync::Arc;
use std::time::Instant;

use proto::metapb::{Peer, Region, Store};
use proto::scheduler::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, StoreHeartbeatRequest,
};

use scheduler_api::{ClusterApi, ClusterError};

use crate::cluster::Cluster;
use crate::id_alloc::{IdAllocator, IdError};

impl From<IdError> for ClusterError {
    fn from(e: IdError) -> ClusterError {
        match e {
            IdError::BadCount { .. } => ClusterError::Invalid(e.to_string()),
            IdError::Persist(_) => ClusterError::Storage(e.to_string()),
        }
    }
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
        self.cluster.split_regions(keys, Instant::now())
    }

    fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError> {
        self.cluster.unsplit_regions(start, end)
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
