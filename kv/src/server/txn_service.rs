//! The `regiondb.kvrpc.TxnKv` gRPC service over a store's [`TxnCommands`], found per request
//! by a [`CommandRouter`] from the request's region context. A request the router refuses
//! (region not here, stale epoch) gets the region error in its response.

use std::sync::Arc;

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_server::{TxnKv, TxnKvServer};
use scheduler_api::Timestamp;
use tonic::{Request, Response, Status};

use crate::error::{KvError, KvResult};
use crate::mvcc::reader::ReadOutcome;
use crate::rpc::{error_from_pb, error_to_pb, lock_to_pb, mutation_from_pb, prewrite_error_to_pb};
use crate::storage::KvPair;
use crate::txn::actions::{Mutation, PrewriteError};
use crate::txn::{CommandRouter, RegionContext, SingleKeyspace, TxnCommands, TxnStatus};

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

    /// Runs a blocking store command on the blocking pool, on the commands of the region
    /// `context` names (or on commands that answer the routing error).
    async fn run<T: Send + 'static>(
        &self,
        context: Option<pb::Context>,
        command: impl FnOnce(&dyn TxnCommands) -> T + Send + 'static,
    ) -> Result<Response<T>, Status> {
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
            let commands: Arc<dyn TxnCommands> = match router.route(context) {
                Ok(commands) => commands,
                Err(e) => Arc::new(Refused(error_to_pb(&e))),
            };
            command(commands.as_ref())
        })
        .await
        .map(Response::new)
        .map_err(|e| Status::internal(format!("store command failed: {e}")))
    }
}

fn limit(l: u64) -> usize {
    if l == 0 {
        usize::MAX
    } else {
        usize::try_from(l).unwrap_or(usize::MAX)
    }
}

#[tonic::async_trait]
impl TxnKv for TxnService {
    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| {
            match c.get(&r.key, Timestamp(r.version)) {
                Ok(ReadOutcome::Value(Some(value))) => pb::GetResponse {
                    found: true,
                    value,
                    ..Default::default()
                },
                Ok(ReadOutcome::Value(None)) => pb::GetResponse::default(),
                Ok(ReadOutcome::Locked { key, lock }) => pb::GetResponse {
                    error: Some(pb::KeyError {
                        locked: Some(lock_to_pb(&key, &lock)),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                Err(e) => pb::GetResponse {
                    error: Some(error_to_pb(&e)),
                    ..Default::default()
                },
            }
        })
        .await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| {
            let end = (!r.end_key.is_empty()).then_some(r.end_key.as_slice());
            match c.scan(&r.start_key, end, Timestamp(r.version), limit(r.limit)) {
                Ok(ReadOutcome::Value(pairs)) => pb::ScanResponse {
                    error: None,
                    pairs: pairs
                        .into_iter()
                        .map(|(key, value)| pb::KvPair { key, value })
                        .collect(),
                },
                Ok(ReadOutcome::Locked { key, lock }) => pb::ScanResponse {
                    error: Some(pb::KeyError {
                        locked: Some(lock_to_pb(&key, &lock)),
                        ..Default::default()
                    }),
                    pairs: vec![],
                },
                Err(e) => pb::ScanResponse {
                    error: Some(error_to_pb(&e)),
                    pairs: vec![],
                },
            }
        })
        .await
    }

    async fn prewrite(
        &self,
        request: Request<pb::PrewriteRequest>,
    ) -> Result<Response<pb::PrewriteResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        let mutations = r
            .mutations
            .into_iter()
            .map(mutation_from_pb)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        self.run(context, move |c| pb::PrewriteResponse {
            error: c
                .prewrite(&mutations, &r.primary, Timestamp(r.start_ts), r.lock_ttl_ms)
                .err()
                .map(|e| prewrite_error_to_pb(&e)),
        })
        .await
    }

    async fn commit(
        &self,
        request: Request<pb::CommitRequest>,
    ) -> Result<Response<pb::CommitResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| pb::CommitResponse {
            error: c
                .commit(&r.keys, Timestamp(r.start_ts), Timestamp(r.commit_ts))
                .err()
                .map(|e| error_to_pb(&e)),
        })
        .await
    }

    async fn batch_rollback(
        &self,
        request: Request<pb::BatchRollbackRequest>,
    ) -> Result<Response<pb::BatchRollbackResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| pb::BatchRollbackResponse {
            error: c
                .rollback(&r.keys, Timestamp(r.start_ts))
                .err()
                .map(|e| error_to_pb(&e)),
        })
        .await
    }

    async fn check_txn_status(
        &self,
        request: Request<pb::CheckTxnStatusRequest>,
    ) -> Result<Response<pb::CheckTxnStatusResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| {
            match c.check_txn_status(&r.primary, Timestamp(r.lock_ts), Timestamp(r.current_ts)) {
                Ok(TxnStatus::Committed { commit_ts }) => pb::CheckTxnStatusResponse {
                    commit_ts: commit_ts.0,
                    ..Default::default()
                },
                Ok(TxnStatus::RolledBack) => pb::CheckTxnStatusResponse {
                    rolled_back: true,
                    ..Default::default()
                },
                Ok(TxnStatus::Alive { ttl_ms }) => pb::CheckTxnStatusResponse {
                    lock_ttl_ms: ttl_ms,
                    ..Default::default()
                },
                Err(e) => pb::CheckTxnStatusResponse {
                    error: Some(error_to_pb(&e)),
                    ..Default::default()
                },
            }
        })
        .await
    }

    async fn resolve_lock(
        &self,
        request: Request<pb::ResolveLockRequest>,
    ) -> Result<Response<pb::ResolveLockResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        let commit_ts = (r.commit_ts != 0).then_some(Timestamp(r.commit_ts));
        self.run(context, move |c| {
            match c.resolve_lock(&r.key, Timestamp(r.start_ts), commit_ts) {
                Ok(n) => pb::ResolveLockResponse {
                    error: None,
                    resolved: n as u64,
                },
                Err(e) => pb::ResolveLockResponse {
                    error: Some(error_to_pb(&e)),
                    resolved: 0,
                },
            }
        })
        .await
    }

    async fn txn_heart_beat(
        &self,
        request: Request<pb::TxnHeartBeatRequest>,
    ) -> Result<Response<pb::TxnHeartBeatResponse>, Status> {
        let mut r = request.into_inner();
        let context = r.context.take();
        self.run(context, move |c| {
            match c.txn_heartbeat(&r.primary, Timestamp(r.start_ts), r.advise_ttl_ms) {
                Ok(ttl) => pb::TxnHeartBeatResponse {
                    error: None,
                    lock_ttl_ms: ttl,
                },
                Err(e) => pb::TxnHeartBeatResponse {
                    error: Some(error_to_pb(&e)),
                    lock_ttl_ms: 0,
                },
            }
        })
        .await
    }
}

/// The commands of a request the router refused: every command answers the routing error.
struct Refused(pb::KeyError);

impl Refused {
    fn error(&self) -> KvError {
        error_from_pb(self.0.clone(), Timestamp(0))
    }
}

impl TxnCommands for Refused {
    fn get(&self, _: &[u8], _: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        Err(self.error())
    }

    fn scan(
        &self,
        _: &[u8],
        _: Option<&[u8]>,
        _: Timestamp,
        _: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        Err(self.error())
    }

    fn prewrite(
        &self,
        _: &[Mutation],
        _: &[u8],
        _: Timestamp,
        _: u64,
    ) -> Result<(), PrewriteError> {
        Err(PrewriteError::Failed(self.error()))
    }

    fn commit(&self, _: &[Vec<u8>], _: Timestamp, _: Timestamp) -> KvResult<()> {
        Err(self.error())
    }

    fn rollback(&self, _: &[Vec<u8>], _: Timestamp) -> KvResult<()> {
        Err(self.error())
    }

    fn check_txn_status(&self, _: &[u8], _: Timestamp, _: Timestamp) -> KvResult<TxnStatus> {
        Err(self.error())
    }

    fn resolve_lock(&self, _: &[u8], _: Timestamp, _: Option<Timestamp>) -> KvResult<usize> {
        Err(self.error())
    }

    fn txn_heartbeat(&self, _: &[u8], _: Timestamp, _: u64) -> KvResult<u64> {
        Err(self.error())
    }
}
