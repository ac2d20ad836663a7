//! The scheduler's gRPC service: timestamps, IDs and the cluster metadata ([`Cluster`]).
//!
//! Every call that may touch a file (the high-water marks, the cluster state) runs on the
//! blocking pool. Errors: invalid input is `InvalidArgument`, a failed write `Internal`.

use std::sync::Arc;
use std::time::Instant;

use proto::scheduler as pb;
use proto::scheduler::scheduler_server::{Scheduler, SchedulerServer};
use scheduler_api::{ClusterError, TsoError};
use tonic::{Request, Response, Status};

use crate::cluster::{Cluster, ClusterConfig};
use crate::id_alloc::{IdAllocator, IdError};
use crate::tso::TimestampOracle;

pub struct SchedulerService {
    tso: Arc<TimestampOracle>,
    ids: Arc<IdAllocator>,
    cluster: Arc<Cluster>,
}

impl SchedulerService {
    /// A service whose cluster metadata is kept in memory only (default [`ClusterConfig`]).
    pub fn new(tso: Arc<TimestampOracle>, ids: Arc<IdAllocator>) -> SchedulerService {
        let cluster = Arc::new(Cluster::in_memory(ClusterConfig::default()));
        SchedulerService::with_cluster(tso, ids, cluster)
    }

    /// A service over `cluster`; `ids` also allocates the replica checker's new peer ids.
    pub fn with_cluster(
        tso: Arc<TimestampOracle>,
        ids: Arc<IdAllocator>,
        cluster: Arc<Cluster>,
    ) -> SchedulerService {
        SchedulerService { tso, ids, cluster }
    }

    /// Runs `f` on the cluster on the blocking pool (it may fsync).
    async fn on_cluster<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Cluster, &IdAllocator) -> Result<T, ClusterError> + Send + 'static,
    ) -> Result<T, Status> {
        let cluster = Arc::clone(&self.cluster);
        let ids = Arc::clone(&self.ids);
        tokio::task::spawn_blocking(move || f(&cluster, &ids))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(cluster_status)
    }

    pub fn into_server(self) -> SchedulerServer<SchedulerService> {
        SchedulerServer::new(self)
    }
}

fn tso_status(e: TsoError) -> Status {
    match e {
        TsoError::BadCount { .. } => Status::invalid_argument(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

/// The gRPC status for a cluster error; [`scheduler_api::client`] maps it back.
pub(crate) fn cluster_status(e: ClusterError) -> Status {
    match e {
        ClusterError::Invalid(m) => Status::invalid_argument(m),
        ClusterError::Storage(m) => Status::internal(m),
        ClusterError::Unavailable(m) => Status::unavailable(m),
    }
}

fn id_status(e: IdError) -> Status {
    match e {
        IdError::BadCount { .. } => Status::invalid_argument(e.to_string()),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl Scheduler for SchedulerService {
    async fn get_timestamps(
        &self,
        request: Request<pb::TimestampRequest>,
    ) -> Result<Response<pb::TimestampResponse>, Status> {
        let count = request.into_inner().count;
        // Persisting the high-water mark is a rare, short fsync: run it on the blocking pool.
        let tso = Arc::clone(&self.tso);
        let last = tokio::task::spawn_blocking(move || tso.get_timestamps(count))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(tso_status)?;
        Ok(Response::new(pb::TimestampResponse {
            last: last.0,
            count,
        }))
    }

    async fn alloc_ids(
        &self,
        request: Request<pb::AllocIdsRequest>,
    ) -> Result<Response<pb::AllocIdsResponse>, Status> {
        let count = request.into_inner().count;
        let ids = Arc::clone(&self.ids);
        let first = tokio::task::spawn_blocking(move || ids.alloc(count))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(id_status)?;
        Ok(Response::new(pb::AllocIdsResponse { first, count }))
    }

    async fn is_bootstrapped(
        &self,
        _request: Request<pb::IsBootstrappedRequest>,
    ) -> Result<Response<pb::IsBootstrappedResponse>, Status> {
        let bootstrapped = self.on_cluster(|c, _| Ok(c.is_bootstrapped())).await?;
        Ok(Response::new(pb::IsBootstrappedResponse { bootstrapped }))
    }

    async fn bootstrap(
        &self,
        request: Request<pb::BootstrapRequest>,
    ) -> Result<Response<pb::BootstrapResponse>, Status> {
        let pb::BootstrapRequest { store, region } = request.into_inner();
        let store = store.ok_or_else(|| Status::invalid_argument("bootstrap without a store"))?;
        let region =
            region.ok_or_else(|| Status::invalid_argument("bootstrap without a region"))?;
        let bootstrapped = self
            .on_cluster(move |c, _| c.bootstrap(store, region, Instant::now()))
            .await?;
        Ok(Response::new(pb::BootstrapResponse {
            already_bootstrapped: !bootstrapped,
        }))
    }

    async fn put_store(
        &self,
        request: Request<pb::PutStoreRequest>,
    ) -> Result<Response<pb::PutStoreResponse>, Status> {
        let store = request
            .into_inner()
            .store
            .ok_or_else(|| Status::invalid_argument("put_store without a store"))?;
        self.on_cluster(move |c, _| c.put_store(store, Instant::now()))
            .await?;
        Ok(Response::new(pb::PutStoreResponse {}))
    }

    async fn get_store(
        &self,
        request: Request<pb::GetStoreRequest>,
    ) -> Result<Response<pb::GetStoreResponse>, Status> {
        let store_id = request.into_inner().store_id;
        let store = self
            .on_cluster(move |c, _| Ok(c.get_store(store_id)))
            .await?;
        Ok(Response::new(pb::GetStoreResponse { store }))
    }

    async fn get_all_stores(
        &self,
        _request: Request<pb::GetAllStoresRequest>,
    ) -> Result<Response<pb::GetAllStoresResponse>, Status> {
        let stores = self.on_cluster(|c, _| Ok(c.all_stores())).await?;
        Ok(Response::new(pb::GetAllStoresResponse { stores }))
    }

    async fn store_heartbeat(
        &self,
        request: Request<pb::StoreHeartbeatRequest>,
    ) -> Result<Response<pb::StoreHeartbeatResponse>, Status> {
        let request = request.into_inner();
        self.on_cluster(move |c, _| c.store_heartbeat(&request, Instant::now()))
            .await?;
        Ok(Response::new(pb::StoreHeartbeatResponse {}))
    }

    async fn region_heartbeat(
        &self,
        request: Request<pb::RegionHeartbeatRequest>,
    ) -> Result<Response<pb::RegionHeartbeatResponse>, Status> {
        let request = request.into_inner();
        let response = self
            .on_cluster(move |c, ids| c.region_heartbeat(request, ids, Instant::now()))
            .await?;
        Ok(Response::new(response))
    }

    async fn get_region(
        &self,
        request: Request<pb::GetRegionRequest>,
    ) -> Result<Response<pb::GetRegionResponse>, Status> {
        let key = request.into_inner().key;
        let found = self.on_cluster(move |c, _| Ok(c.get_region(&key))).await?;
        Ok(Response::new(region_response(found)))
    }

    async fn get_region_by_id(
        &self,
        request: Request<pb::GetRegionByIdRequest>,
    ) -> Result<Response<pb::GetRegionResponse>, Status> {
        let region_id = request.into_inner().region_id;
        let found = self
            .on_cluster(move |c, _| Ok(c.get_region_by_id(region_id)))
            .await?;
        Ok(Response::new(region_response(found)))
    }

    async fn scan_regions(
        &self,
        request: Request<pb::ScanRegionsRequest>,
    ) -> Result<Response<pb::ScanRegionsResponse>, Status> {
        let request = request.into_inner();
        let regions = self
            .on_cluster(move |c, _| {
                Ok(c.scan_regions(&request.start_key, &request.end_key, request.limit as usize))
            })
            .await?;
        Ok(Response::new(pb::ScanRegionsResponse { regions }))
    }

    async fn remove_store(
        &self,
        request: Request<pb::RemoveStoreRequest>,
    ) -> Result<Response<pb::RemoveStoreResponse>, Status> {
        let store_id = request.into_inner().store_id;
        let regions_left = self
            .on_cluster(move |c, _| c.remove_store(store_id))
            .await?;
        Ok(Response::new(pb::RemoveStoreResponse { regions_left }))
    }

    async fn split_regions(
        &self,
        request: Request<pb::SplitRegionsRequest>,
    ) -> Result<Response<pb::SplitRegionsResponse>, Status> {
        let keys = request.into_inner().keys;
        self.on_cluster(move |c, _| c.split_regions(keys, Instant::now()))
            .await?;
        Ok(Response::new(pb::SplitRegionsResponse {}))
    }

    async fn unsplit_regions(
        &self,
        request: Request<pb::UnsplitRegionsRequest>,
    ) -> Result<Response<pb::UnsplitRegionsResponse>, Status> {
        let request = request.into_inner();
        let keys = self
            .on_cluster(move |c, _| c.unsplit_regions(&request.start_key, &request.end_key))
            .await?;
        Ok(Response::new(pb::UnsplitRegionsResponse { keys }))
    }
}

fn region_response(
    found: Option<(proto::metapb::Region, Option<proto::metapb::Peer>)>,
) -> pb::GetRegionResponse {
    match found {
        Some((region, leader)) => pb::GetRegionResponse {
            region: Some(region),
            leader,
        },
        None => pb::GetRegionResponse::default(),
    }
}
