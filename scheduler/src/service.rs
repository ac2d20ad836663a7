//! The scheduler's gRPC service: timestamps and IDs.

use std::sync::Arc;

use proto::scheduler as pb;
use proto::scheduler::scheduler_server::{Scheduler, SchedulerServer};
use tonic::{Request, Response, Status};

use crate::id_alloc::{IdAllocator, IdError};
use crate::tso::{TimestampOracle, TsoError};

pub struct SchedulerService {
    tso: Arc<TimestampOracle>,
    ids: Arc<IdAllocator>,
}

impl SchedulerService {
    pub fn new(tso: Arc<TimestampOracle>, ids: Arc<IdAllocator>) -> SchedulerService {
        SchedulerService { tso, ids }
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
}
