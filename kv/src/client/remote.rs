//! [`RemoteTxnCommands`]: the Percolator commands of a store reached over gRPC.
//!
//! The transaction client is synchronous (the SQL layer runs on blocking threads), so each
//! call blocks on the async gRPC request through a runtime handle. It must therefore be called
//! from a thread that is not driving that runtime (a `spawn_blocking` task or a plain thread).
//! A transport failure is reported as [`KvError::Unavailable`]; the transaction client decides
//! what it means for the transaction.

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_client::TxnKvClient;
use scheduler_api::Timestamp;
use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::error::{KvError, KvResult};
use crate::mvcc::reader::ReadOutcome;
use crate::rpc::{error_from_pb, lock_from_pb, mutation_to_pb, prewrite_error_from_pb};
use crate::storage::KvPair;
use crate::txn::actions::PrewriteError;
use crate::txn::{Mutation, RegionContext, TxnCommands, TxnStatus};

/// Largest gRPC message either side accepts. Scans and prewrites are not paged yet, so this
/// bounds the size of one read or one transaction's writes over the network.
pub const MAX_MESSAGE_SIZE: usize = 256 << 20;

/// How long connecting to a store may take, and how long one request may wait for its answer
/// (longer than a store's own wait for a write to apply, so that its answer gets through).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub struct RemoteTxnCommands {
    client: TxnKvClient<Channel>,
    runtime: Handle,
    /// The region every request names (none for a store without regions).
    context: Option<pb::Context>,
}

fn unavailable(status: tonic::Status) -> KvError {
    KvError::Unavailable(format!("{}: {}", status.code(), status.message()))
}

impl RemoteTxnCommands {
    /// Connects lazily to the store at `endpoint` (e.g. `http://127.0.0.1:20160`); requests
    /// run on `runtime`.
    pub fn connect_lazy(endpoint: &str, runtime: Handle) -> KvResult<Self> {
        // The channel spawns its connection task on the runtime.
        let _context = runtime.enter();
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| KvError::Unavailable(format!("bad endpoint {endpoint}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            client: TxnKvClient::new(channel),
            runtime,
            context: None,
        })
    }

    /// The same store's commands, for the region `context` names (shares the connection).
    pub fn for_region(&self, context: RegionContext) -> RemoteTxnCommands {
        RemoteTxnCommands {
            context: Some(pb::Context {
                region_id: context.region_id,
                region_epoch: Some(proto::metapb::RegionEpoch {
                    conf_ver: context.conf_ver,
                    version: context.version,
                }),
            }),
            ..self.clone()
        }
    }

    fn call<T>(
        &self,
        request: impl AsyncFnOnce(TxnKvClient<Channel>) -> Result<tonic::Response<T>, tonic::Status>,
    ) -> KvResult<T> {
        let client = self.client.clone();
        match self
            .runtime
            .block_on(async { tokio::time::timeout(REQUEST_TIMEOUT, request(client)).await })
        {
            Ok(answer) => answer.map(tonic::Response::into_inner).map_err(unavailable),
            Err(_) => Err(KvError::Unavailable(format!(
                "no answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }
}

/// A read's answer: the value, a lock to resolve, or an error.
fn read_outcome<T>(
    error: Option<pb::KeyError>,
    ts: Timestamp,
    value: T,
) -> KvResult<ReadOutcome<T>> {
    match error {
        None => Ok(ReadOutcome::Value(value)),
        Some(pb::KeyError {
            locked: Some(info), ..
        }) => {
            let (key, lock) = lock_from_pb(info);
            Ok(ReadOutcome::Locked { key, lock })
        }
        Some(e) => Err(error_from_pb(e, ts)),
    }
}

fn result(error: Option<pb::KeyError>, start_ts: Timestamp) -> KvResult<()> {
    match error {
        None => Ok(()),
        Some(e) => Err(error_from_pb(e, start_ts)),
    }
}

impl TxnCommands for RemoteTxnCommands {
    fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        let request = pb::GetRequest {
            context: self.context,
            key: key.to_vec(),
            version: ts.0,
        };
        let r = self.call(async move |mut c| c.get(request).await)?;
        read_outcome(r.error, ts, r.found.then_some(r.value))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let request = pb::ScanRequest {
            context: self.context,
            start_key: start.to_vec(),
            end_key: end.map(<[u8]>::to_vec).unwrap_or_default(),
            version: ts.0,
            limit: if limit == usize::MAX { 0 } else { limit as u64 },
        };
        let r = self.call(async move |mut c| c.scan(request).await)?;
        let pairs = r.pairs.into_iter().map(|p| (p.key, p.value)).collect();
        read_outcome(r.error, ts, pairs)
    }

    fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        let request = pb::PrewriteRequest {
            context: self.context,
            mutations: mutations.iter().map(mutation_to_pb).collect(),
            primary: primary.to_vec(),
            start_ts: start_ts.0,
            lock_ttl_ms: ttl_ms,
        };
        let r = self.call(async move |mut c| c.prewrite(request).await)?;
        match r.error {
            None => Ok(()),
            Some(e) => Err(prewrite_error_from_pb(e, start_ts)),
        }
    }

    fn commit(&self, keys: &[Vec<u8>], start_ts: Timestamp, commit_ts: Timestamp) -> KvResult<()> {
        let request = pb::CommitRequest {
            context: self.context,
            keys: keys.to_vec(),
            start_ts: start_ts.0,
            commit_ts: commit_ts.0,
        };
        let r = self.call(async move |mut c| c.commit(request).await)?;
        result(r.error, start_ts)
    }

    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()> {
        let request = pb::BatchRollbackRequest {
            context: self.context,
            keys: keys.to_vec(),
            start_ts: start_ts.0,
        };
        let r = self.call(async move |mut c| c.batch_rollback(request).await)?;
        result(r.error, start_ts)
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus> {
        let request = pb::CheckTxnStatusRequest {
            context: self.context,
            primary: primary.to_vec(),
            lock_ts: lock_ts.0,
            current_ts: current_ts.0,
        };
        let r = self.call(async move |mut c| c.check_txn_status(request).await)?;
        result(r.error, lock_ts)?;
        Ok(if r.commit_ts != 0 {
            TxnStatus::Committed {
                commit_ts: Timestamp(r.commit_ts),
            }
        } else if r.rolled_back {
            TxnStatus::RolledBack
        } else {
            TxnStatus::Alive {
                ttl_ms: r.lock_ttl_ms,
            }
        })
    }

    fn resolve_lock(
        &self,
        key: &[u8],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> KvResult<usize> {
        let request = pb::ResolveLockRequest {
            context: self.context,
            key: key.to_vec(),
            start_ts: start_ts.0,
            commit_ts: commit_ts.map_or(0, |t| t.0),
        };
        let r = self.call(async move |mut c| c.resolve_lock(request).await)?;
        result(r.error, start_ts)?;
        Ok(r.resolved as usize)
    }

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64> {
        let request = pb::TxnHeartBeatRequest {
            context: self.context,
            primary: primary.to_vec(),
            start_ts: start_ts.0,
            advise_ttl_ms: ttl_ms,
        };
        let r = self.call(async move |mut c| c.txn_heart_beat(request).await)?;
        result(r.error, start_ts)?;
        Ok(r.lock_ttl_ms)
    }
}
