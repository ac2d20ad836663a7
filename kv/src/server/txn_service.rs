//! The `regiondb.kvrpc.TxnKv` gRPC service over a store's [`TxnCommands`].

use std::sync::Arc;

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_server::{TxnKv, TxnKvServer};
use scheduler::Timestamp;
use tonic::{Request, Response, Status};

use crate::mvcc::reader::ReadOutcome;
use crate::rpc::{error_to_pb, lock_to_pb, mutation_from_pb, prewrite_error_to_pb};
use crate::txn::{TxnCommands, TxnStatus};

pub struct TxnService {
    commands: Arc<dyn TxnCommands>,
}

impl TxnService {
    pub fn new(commands: Arc<dyn TxnCommands>) -> Self {
        Self { commands }
    }

    /// The service wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> TxnKvServer<TxnService> {
        TxnKvServer::new(self)
            .max_decoding_message_size(crate::client::remote::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(crate::client::remote::MAX_MESSAGE_SIZE)
    }

    /// Runs a blocking store command on the blocking pool.
    async fn run<T: Send + 'static>(
        &self,
        command: impl FnOnce(&dyn TxnCommands) -> T + Send + 'static,
    ) -> Result<Response<T>, Status> {
        let commands = Arc::clone(&self.commands);
        tokio::task::spawn_blocking(move || command(commands.as_ref()))
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
        let r = request.into_inner();
        self.run(move |c| match c.get(&r.key, Timestamp(r.version)) {
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
        })
        .await
    }

    async fn scan(
        &self,
        request: Request<pb::ScanRequest>,
    ) -> Result<Response<pb::ScanResponse>, Status> {
        let r = request.into_inner();
        self.run(move |c| {
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
        let r = request.into_inner();
        let mutations = r
            .mutations
            .into_iter()
            .map(mutation_from_pb)
            .collect::<Result<Vec<_>, _>>()
            .map_err(Status::invalid_argument)?;
        self.run(move |c| pb::PrewriteResponse {
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
        let r = request.into_inner();
        self.run(move |c| pb::CommitResponse {
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
        let r = request.into_inner();
        self.run(move |c| pb::BatchRollbackResponse {
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
        let r = request.into_inner();
        self.run(move |c| {
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
        let r = request.into_inner();
        let commit_ts = (r.commit_ts != 0).then_some(Timestamp(r.commit_ts));
        self.run(
            move |c| match c.resolve_lock(Timestamp(r.start_ts), commit_ts) {
                Ok(n) => pb::ResolveLockResponse {
                    error: None,
                    resolved: n as u64,
                },
                Err(e) => pb::ResolveLockResponse {
                    error: Some(error_to_pb(&e)),
                    resolved: 0,
                },
            },
        )
        .await
    }

    async fn txn_heart_beat(
        &self,
        request: Request<pb::TxnHeartBeatRequest>,
    ) -> Result<Response<pb::TxnHeartBeatResponse>, Status> {
        let r = request.into_inner();
        self.run(move |c| {
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
