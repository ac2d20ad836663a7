//! The `regiondb.kvrpc.TxnKv` gRPC service over a store's [`TxnCommands`], found per request
//! by a [`CommandRouter`] from the request's region context. Every call is served the same way
//! ([`TxnService::serve`]): its message becomes a [`TxnRequest`](crate::txn::TxnRequest)
//! (`crate::rpc` maps both directions), the router finds the commands of the region it names,
//! they run it, and the answer — or the error, including the router's refusal (region not
//! here, stale epoch) — goes back in the response message.

use std::sync::Arc;

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_server::{TxnKv, TxnKvServer};
use tonic::{Request, Response, Status};

use crate::rpc::KvCall;
use crate::txn::{CommandRouter, RegionContext, SingleKeyspace, TxnCommands};

pub struct TxnService {
    router: Arc<dyn CommandRouter>,
}

impl TxnService {
    /// A store with one keyspace (no regions): every request runs on `commands`.
    pub fn new(commands: Arc<dyn TxnCommands>) -> Self {
        Self::routed(Arc::new(SingleKeyspace(commands)))
    }

    /// A store of regions: each request runs on the commands of the region it names.
    pub fn routed(router: Arc<dyn CommandRouter>) -> Self {
        Self { router }
    }

    /// The service wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> TxnKvServer<TxnService> {
        TxnKvServer::new(self)
            .max_decoding_message_size(crate::client::remote::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::client::remote::MAX_MESSAGE_SIZE)
    }

    /// Serves one call. Store commands block (latches, fsync, waiting for Raft), so the
    /// command runs on tokio's blocking pool. A malformed message is `InvalidArgument`.
    async fn serve<M: KvCall>(&self, message: Request<M>) -> Result<Response<M::Response>, Status> {
        let (context, request) = message
            .into_inner()
            .into_request()
            .map_err(Status::invalid_argument)?;
        let router = Arc::clone(&self.router);
        tokio::task::spawn_blocking(move || {
            let context = context.map(|c| {
                let epoch = c.region_epoch.unwrap_or_default();
                RegionContext {
                    region_id: c.region_id,
                    conf_ver: epoch.conf_ver,
                    version: epoch.version,
                }
            });
            let result = router
                .route(context)
                .and_then(|commands| commands.execute(&request));
            M::answer(result)
        })
        .await
        .map(Response::new)
        .map_err(|e| Status::internal(format!("store command failed: {e}")))
    }
}

#[tonic::async_trait]
impl TxnKv for TxnService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        self.serve(request).await
    }

    async fn batch_get(
        &self,
        request: Request<pb::BatchGetRequest>,
    ) -> Result<Response<pb::BatchGetResponse>, Status> {
        self.serve(request).await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        self.serve(request).await
    }

    async fn prewrite(
        &self,
        request: Request<pb::PrewriteRequest>,
    ) -> Result<Response<pb::PrewriteResponse>, Status> {
        self.serve(request).await
    }

    async fn acquire_pessimistic_lock(
        &self,
        request: Request<pb::PessimisticLockRequest>,
    ) -> Result<Response<pb::PessimisticLockResponse>, Status> {
        self.serve(request).await
    }

    async fn pessimistic_rollback(
        &self,
        request: Request<pb::PessimisticRollbackRequest>,
    ) -> Result<Response<pb::PessimisticRollbackResponse>, Status> {
        self.serve(request).await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        self.serve(request).await
    }

    async fn batch_rollback(
        &self,
        request: Request<pb::BatchRollbackRequest>,
    ) -> Result<Response<pb::BatchRollbackResponse>, Status> {
        self.serve(request).await
    }

    async fn check_txn_status(
        &self,
        request: Request<pb::CheckTxnStatusRequest>,
    ) -> Result<Response<pb::CheckTxnStatusResponse>, Status> {
        self.serve(request).await
    }

    async fn resolve_lock(
        &self,
        request: Request<pb::ResolveLockRequest>,
    ) -> Result<Response<pb::ResolveLockResponse>, Status> {
        self.serve(request).await
    }

    async fn txn_heart_beat(
        &self,
        request: Request<pb::TxnHeartBeatRequest>,
    ) -> Result<Response<pb::TxnHeartBeatResponse>, Status> {
        self.serve(request).await
    }

    async fn detect_deadlock(
        &self,
        request: Request<pb::DetectDeadlockRequest>,
    ) -> Result<Response<pb::DetectDeadlockResponse>, Status> {
        self.serve(request).await
    }
}
