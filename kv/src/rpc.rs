//! The wire form of the transactional commands, both directions, in one place: a
//! [`TxnRequest`] and its [`TxnResponse`] as the `regiondb.kvrpc.TxnKv` messages, and the
//! domain types inside them (`Mutation`, `Lock`, `KvError`, …). The remote client
//! ([`crate::client::RemoteTxnCommands`]) and the gRPC service ([`crate::server::TxnService`])
//! both go through here, so that they agree by construction.
//!
//! Each request message implements [`KvCall`]: the service turns it into a [`TxnRequest`]
//! ([`KvCall::into_request`]) and the store's answer into the response message
//! ([`KvCall::answer`]); the client reads the response message back
//! ([`KvCall::into_response`]). The client's side starts from [`Call::new`], the message
//! carrying a request, and [`Call::send`] makes the call of that message.
//!
//! A lock met travels in the response's `KeyError.locked` (reads and prewrites answer it, see
//! [`crate::txn::request`]); any other error in the other fields of `KeyError`. A transport
//! failure is a `tonic::Status`, which the client reports as [`KvError::Unavailable`].

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_client::TxnKvClient;
use scheduler_api::Timestamp;
use tonic::transport::Channel;
use tonic::{Response, Status};

use crate::error::{KvError, KvResult};
use crate::mvcc::reader::ReadOutcome;
use crate::mvcc::{Lock, LockKind};
use crate::storage::KvPair;
use crate::txn::{LockMode, Mutation, TxnRequest, TxnResponse, TxnStatus};

/// One `TxnKv` call, implemented by its request message.
pub trait KvCall: Sized + Send + 'static {
    type Response: Send + 'static;
    /// Service: the request this message carries, and the region it names. Fails on a
    /// malformed message.
    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String>;
    /// Service: the message answering the request with `result`.
    fn answer(result: KvResult<TxnResponse>) -> Self::Response;
    /// Client: what the response message answers to `request` (which this message carried).
    fn into_response(message: Self::Response, request: &TxnRequest) -> KvResult<TxnResponse>;
}

/// Client: the message carrying a request.
pub enum Call {
    Get(pb::GetRequest),
    BatchGet(pb::BatchGetRequest),
    Scan(pb::ScanRequest),
    Prewrite(pb::PrewriteRequest),
    AcquirePessimisticLock(pb::PessimisticLockRequest),
    PessimisticRollback(pb::PessimisticRollbackRequest),
    Commit(pb::CommitRequest),
    Rollback(pb::BatchRollbackRequest),
    CheckTxnStatus(pb::CheckTxnStatusRequest),
    ResolveLock(pb::ResolveLockRequest),
    TxnHeartbeat(pb::TxnHeartBeatRequest),
    DetectDeadlock(pb::DetectDeadlockRequest),
}

impl Call {
    /// The message carrying `request` to the region `context` names (none: a store without
    /// regions).
    pub fn new(request: &TxnRequest, context: Option<pb::Context>) -> Call {
        match request {
            TxnRequest::Get { key, ts } => Call::Get(pb::GetRequest {
                context,
                key: key.clone(),
                version: ts.0,
            }),
            TxnRequest::BatchGet { keys, ts } => Call::BatchGet(pb::BatchGetRequest {
                context,
                keys: keys.clone(),
                version: ts.0,
            }),
            TxnRequest::Scan {
                start,
                end,
                ts,
                limit,
            } => Call::Scan(pb::ScanRequest {
                context,
                start_key: start.clone(),
                end_key: end.clone().unwrap_or_default(),
                version: ts.0,
                limit: if *limit == usize::MAX {
                    0
                } else {
                    *limit as u64
                },
            }),
            TxnRequest::Prewrite {
                mutations,
                pessimistic,
                primary,
                start_ts,
                ttl_ms,
            } => Call::Prewrite(pb::PrewriteRequest {
                context,
                mutations: mutations.iter().map(mutation_to_pb).collect(),
                pessimistic: pessimistic.clone(),
                primary: primary.clone(),
                start_ts: start_ts.0,
                lock_ttl_ms: *ttl_ms,
            }),
            TxnRequest::AcquirePessimisticLock {
                keys,
                primary,
                start_ts,
                for_update_ts,
                ttl_ms,
                wait_ms,
                mode,
            } => Call::AcquirePessimisticLock(pb::PessimisticLockRequest {
                lock_if_changed: mode.lock_if_changed,
                return_values: mode.return_values,
                context,
                keys: keys.clone(),
                primary: primary.clone(),
                start_ts: start_ts.0,
                for_update_ts: for_update_ts.0,
                lock_ttl_ms: *ttl_ms,
                wait_ms: *wait_ms,
            }),
            TxnRequest::PessimisticRollback {
                keys,
                start_ts,
                for_update_ts,
            } => Call::PessimisticRollback(pb::PessimisticRollbackRequest {
                context,
                keys: keys.clone(),
                start_ts: start_ts.0,
                for_update_ts: for_update_ts.0,
            }),
            TxnRequest::Commit {
                keys,
                start_ts,
                commit_ts,
            } => Call::Commit(pb::CommitRequest {
                context,
                keys: keys.clone(),
                start_ts: start_ts.0,
                commit_ts: commit_ts.0,
            }),
            TxnRequest::Rollback { keys, start_ts } => Call::Rollback(pb::BatchRollbackRequest {
                context,
                keys: keys.clone(),
                start_ts: start_ts.0,
            }),
            TxnRequest::CheckTxnStatus {
                primary,
                lock_ts,
                current_ts,
            } => Call::CheckTxnStatus(pb::CheckTxnStatusRequest {
                context,
                primary: primary.clone(),
                lock_ts: lock_ts.0,
                current_ts: current_ts.0,
            }),
            TxnRequest::ResolveLock {
                key,
                start_ts,
                commit_ts,
            } => Call::ResolveLock(pb::ResolveLockRequest {
                context,
                key: key.clone(),
                start_ts: start_ts.0,
                commit_ts: commit_ts.map_or(0, |t| t.0),
            }),
            TxnRequest::TxnHeartbeat {
                primary,
                start_ts,
                ttl_ms,
            } => Call::TxnHeartbeat(pb::TxnHeartBeatRequest {
                context,
                primary: primary.clone(),
                start_ts: start_ts.0,
                advise_ttl_ms: *ttl_ms,
            }),
            TxnRequest::DetectDeadlock {
                txn,
                wait_for,
                key,
                clean_up,
            } => Call::DetectDeadlock(pb::DetectDeadlockRequest {
                context,
                txn: txn.0,
                wait_for: wait_for.0,
                key: key.clone(),
                clean_up: *clean_up,
            }),
        }
    }

    /// Makes the call on `client`: the answer to `request` (which this call carries), or the
    /// transport's failure.
    pub async fn send(
        self,
        mut client: TxnKvClient<Channel>,
        request: &TxnRequest,
    ) -> Result<KvResult<TxnResponse>, Status> {
        fn read<M: KvCall>(
            answer: Result<Response<M::Response>, Status>,
            request: &TxnRequest,
        ) -> Result<KvResult<TxnResponse>, Status> {
            Ok(M::into_response(answer?.into_inner(), request))
        }
        match self {
            Call::Get(m) => read::<pb::GetRequest>(client.get(m).await, request),
            Call::BatchGet(m) => read::<pb::BatchGetRequest>(client.batch_get(m).await, request),
            Call::Scan(m) => read::<pb::ScanRequest>(client.scan(m).await, request),
            Call::Prewrite(m) => read::<pb::PrewriteRequest>(client.prewrite(m).await, request),
            Call::AcquirePessimisticLock(m) => read::<pb::PessimisticLockRequest>(
                client.acquire_pessimistic_lock(m).await,
                request,
            ),
            Call::PessimisticRollback(m) => read::<pb::PessimisticRollbackRequest>(
                client.pessimistic_rollback(m).await,
                request,
            ),
            Call::Commit(m) => read::<pb::CommitRequest>(client.commit(m).await, request),
            Call::Rollback(m) => {
                read::<pb::BatchRollbackRequest>(client.batch_rollback(m).await, request)
            }
            Call::CheckTxnStatus(m) => {
                read::<pb::CheckTxnStatusRequest>(client.check_txn_status(m).await, request)
            }
            Call::ResolveLock(m) => {
                read::<pb::ResolveLockRequest>(client.resolve_lock(m).await, request)
            }
            Call::TxnHeartbeat(m) => {
                read::<pb::TxnHeartBeatRequest>(client.txn_heart_beat(m).await, request)
            }
            Call::DetectDeadlock(m) => {
                read::<pb::DetectDeadlockRequest>(client.detect_deadlock(m).await, request)
            }
        }
    }
}

/// The transaction an error in the answer to `request` is about.
fn txn_ts(request: &TxnRequest) -> Timestamp {
    match request {
        TxnRequest::Get { ts, .. }
        | TxnRequest::BatchGet { ts, .. }
        | TxnRequest::Scan { ts, .. } => *ts,
        TxnRequest::CheckTxnStatus { lock_ts, .. } => *lock_ts,
        TxnRequest::Prewrite { start_ts, .. }
        | TxnRequest::AcquirePessimisticLock { start_ts, .. }
        | TxnRequest::PessimisticRollback { start_ts, .. }
        | TxnRequest::Commit { start_ts, .. }
        | TxnRequest::Rollback { start_ts, .. }
        | TxnRequest::ResolveLock { start_ts, .. }
        | TxnRequest::TxnHeartbeat { start_ts, .. } => *start_ts,
        TxnRequest::DetectDeadlock { txn, .. } => *txn,
    }
}

/// The error of the answer to a command that either is done or was stopped by another
/// transaction's lock (prewrite, acquiring pessimistic locks): the lock met travels as the
/// error's `locked`. `locked` takes the lock out of the request's own answer.
fn locked_error(
    request: &str,
    result: KvResult<TxnResponse>,
    locked: impl FnOnce(TxnResponse) -> Result<Option<(Vec<u8>, Lock)>, TxnResponse>,
) -> Option<pb::KeyError> {
    match result.map(locked) {
        Ok(Ok(None)) => None,
        Ok(Ok(Some((key, lock)))) => Some(locked_to_pb(&key, &lock)),
        Ok(Err(other)) => Some(mismatched(request, &other)),
        Err(e) => Some(error_to_pb(&e)),
    }
}

/// The other direction of [`locked_error`]: the lock met, if any, or the error.
fn locked_from_error(
    error: Option<pb::KeyError>,
    request: &TxnRequest,
) -> KvResult<Option<(Vec<u8>, Lock)>> {
    match error {
        None => Ok(None),
        Some(pb::KeyError {
            locked: Some(info), ..
        }) => Ok(Some(lock_from_pb(info))),
        Some(e) => Err(error_from_pb(e, txn_ts(request))),
    }
}

/// The error for an answer that is not the request's: a bug in the store.
fn mismatched(request: &str, response: &TxnResponse) -> pb::KeyError {
    error_to_pb(&KvError::Server(format!(
        "a {request} request was answered as {}",
        response.name()
    )))
}

fn locked_to_pb(key: &[u8], lock: &Lock) -> pb::KeyError {
    pb::KeyError {
        locked: Some(lock_to_pb(key, lock)),
        ..Default::default()
    }
}

/// A read's answer from its response: the value, a lock to resolve, or an error.
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

/// The error and pairs of a response to a read of pairs (a batch get, a scan): `outcome` takes
/// the read's outcome out of the answer, or gives back an answer of another command.
fn pairs_to_pb(
    request: &str,
    result: KvResult<TxnResponse>,
    outcome: impl FnOnce(TxnResponse) -> Result<ReadOutcome<Vec<KvPair>>, TxnResponse>,
) -> (Option<pb::KeyError>, Vec<pb::KvPair>) {
    match result.map(outcome) {
        Ok(Ok(ReadOutcome::Value(pairs))) => (None, pairs_to_messages(pairs)),
        Ok(Ok(ReadOutcome::Locked { key, lock })) => (Some(locked_to_pb(&key, &lock)), vec![]),
        Ok(Err(other)) => (Some(mismatched(request, &other)), vec![]),
        Err(e) => (Some(error_to_pb(&e)), vec![]),
    }
}

/// Pairs as the messages a response carries them in.
fn pairs_to_messages(pairs: Vec<KvPair>) -> Vec<pb::KvPair> {
    pairs
        .into_iter()
        .map(|(key, value)| pb::KvPair { key, value })
        .collect()
}

/// The pairs of a response to a read of pairs.
fn pairs_from_pb(pairs: Vec<pb::KvPair>) -> Vec<KvPair> {
    pairs.into_iter().map(|p| (p.key, p.value)).collect()
}

/// The outcome of a command that cannot meet a lock, from its response's error.
fn result(error: Option<pb::KeyError>, ts: Timestamp) -> KvResult<()> {
    match error {
        None => Ok(()),
        Some(e) => Err(error_from_pb(e, ts)),
    }
}

/// The error of a result whose answer carries nothing but success (`is_answer`).
fn unit_error(
    request: &str,
    result: KvResult<TxnResponse>,
    is_answer: impl FnOnce(&TxnResponse) -> bool,
) -> Option<pb::KeyError> {
    match result {
        Ok(response) if is_answer(&response) => None,
        Ok(other) => Some(mismatched(request, &other)),
        Err(e) => Some(error_to_pb(&e)),
    }
}

/// A scan's limit on the wire: 0 is none.
fn limit_from_pb(limit: u64) -> usize {
    if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    }
}

impl KvCall for pb::GetRequest {
    type Response = pb::GetResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::Get {
            key: self.key,
            ts: Timestamp(self.version),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::GetResponse {
        match result {
            Ok(TxnResponse::Get(ReadOutcome::Value(value))) => pb::GetResponse {
                found: value.is_some(),
                value: value.unwrap_or_default(),
                error: None,
            },
            Ok(TxnResponse::Get(ReadOutcome::Locked { key, lock })) => pb::GetResponse {
                error: Some(locked_to_pb(&key, &lock)),
                ..Default::default()
            },
            Ok(other) => pb::GetResponse {
                error: Some(mismatched("get", &other)),
                ..Default::default()
            },
            Err(e) => pb::GetResponse {
                error: Some(error_to_pb(&e)),
                ..Default::default()
            },
        }
    }

    fn into_response(m: pb::GetResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        read_outcome(m.error, txn_ts(request), m.found.then_some(m.value)).map(TxnResponse::Get)
    }
}

impl KvCall for pb::BatchGetRequest {
    type Response = pb::BatchGetResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::BatchGet {
            keys: self.keys,
            ts: Timestamp(self.version),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::BatchGetResponse {
        let (error, pairs) = pairs_to_pb("batch_get", result, |response| match response {
            TxnResponse::BatchGet(outcome) => Ok(outcome),
            other => Err(other),
        });
        pb::BatchGetResponse { error, pairs }
    }

    fn into_response(m: pb::BatchGetResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        read_outcome(m.error, txn_ts(request), pairs_from_pb(m.pairs)).map(TxnResponse::BatchGet)
    }
}

impl KvCall for pb::ScanRequest {
    type Response = pb::ScanResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::Scan {
            start: self.start_key,
            end: (!self.end_key.is_empty()).then_some(self.end_key),
            ts: Timestamp(self.version),
            limit: limit_from_pb(self.limit),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::ScanResponse {
        let (error, pairs) = pairs_to_pb("scan", result, |response| match response {
            TxnResponse::Scan(outcome) => Ok(outcome),
            other => Err(other),
        });
        pb::ScanResponse { error, pairs }
    }

    fn into_response(m: pb::ScanResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        read_outcome(m.error, txn_ts(request), pairs_from_pb(m.pairs)).map(TxnResponse::Scan)
    }
}

impl KvCall for pb::PrewriteRequest {
    type Response = pb::PrewriteResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        if !self.pessimistic.is_empty() && self.pessimistic.len() != self.mutations.len() {
            return Err(format!(
                "{} pessimistic flags for {} mutations",
                self.pessimistic.len(),
                self.mutations.len()
            ));
        }
        let request = TxnRequest::Prewrite {
            mutations: self
                .mutations
                .into_iter()
                .map(mutation_from_pb)
                .collect::<Result<_, _>>()?,
            pessimistic: self.pessimistic,
            primary: self.primary,
            start_ts: Timestamp(self.start_ts),
            ttl_ms: self.lock_ttl_ms,
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::PrewriteResponse {
        let error = locked_error("prewrite", result, |response| match response {
            TxnResponse::Prewrite { locked } => Ok(locked),
            other => Err(other),
        });
        pb::PrewriteResponse { error }
    }

    fn into_response(m: pb::PrewriteResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        locked_from_error(m.error, request).map(|locked| TxnResponse::Prewrite { locked })
    }
}

impl KvCall for pb::PessimisticLockRequest {
    type Response = pb::PessimisticLockResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::AcquirePessimisticLock {
            keys: self.keys,
            primary: self.primary,
            start_ts: Timestamp(self.start_ts),
            for_update_ts: Timestamp(self.for_update_ts),
            ttl_ms: self.lock_ttl_ms,
            wait_ms: self.wait_ms,
            mode: LockMode {
                lock_if_changed: self.lock_if_changed,
                return_values: self.return_values,
            },
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::PessimisticLockResponse {
        let mut values = Vec::new();
        let error = locked_error(
            "acquire_pessimistic_lock",
            result,
            |response| match response {
                TxnResponse::AcquirePessimisticLock {
                    locked,
                    values: found,
                } => {
                    values = found;
                    Ok(locked)
                }
                other => Err(other),
            },
        );
        pb::PessimisticLockResponse {
            error,
            values: pairs_to_messages(values),
        }
    }

    fn into_response(
        m: pb::PessimisticLockResponse,
        request: &TxnRequest,
    ) -> KvResult<TxnResponse> {
        let values = pairs_from_pb(m.values);
        locked_from_error(m.error, request)
            .map(|locked| TxnResponse::AcquirePessimisticLock { locked, values })
    }
}

impl KvCall for pb::PessimisticRollbackRequest {
    type Response = pb::PessimisticRollbackResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::PessimisticRollback {
            keys: self.keys,
            start_ts: Timestamp(self.start_ts),
            for_update_ts: Timestamp(self.for_update_ts),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::PessimisticRollbackResponse {
        pb::PessimisticRollbackResponse {
            error: unit_error("pessimistic_rollback", result, |r| {
                matches!(r, TxnResponse::PessimisticRollback)
            }),
        }
    }

    fn into_response(
        m: pb::PessimisticRollbackResponse,
        request: &TxnRequest,
    ) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request)).map(|()| TxnResponse::PessimisticRollback)
    }
}

impl KvCall for pb::CommitRequest {
    type Response = pb::CommitResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::Commit {
            keys: self.keys,
            start_ts: Timestamp(self.start_ts),
            commit_ts: Timestamp(self.commit_ts),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::CommitResponse {
        pb::CommitResponse {
            error: unit_error("commit", result, |r| matches!(r, TxnResponse::Commit)),
        }
    }

    fn into_response(m: pb::CommitResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request)).map(|()| TxnResponse::Commit)
    }
}

impl KvCall for pb::BatchRollbackRequest {
    type Response = pb::BatchRollbackResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::Rollback {
            keys: self.keys,
            start_ts: Timestamp(self.start_ts),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::BatchRollbackResponse {
        pb::BatchRollbackResponse {
            error: unit_error("rollback", result, |r| matches!(r, TxnResponse::Rollback)),
        }
    }

    fn into_response(m: pb::BatchRollbackResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request)).map(|()| TxnResponse::Rollback)
    }
}

impl KvCall for pb::CheckTxnStatusRequest {
    type Response = pb::CheckTxnStatusResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::CheckTxnStatus {
            primary: self.primary,
            lock_ts: Timestamp(self.lock_ts),
            current_ts: Timestamp(self.current_ts),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::CheckTxnStatusResponse {
        match result {
            Ok(TxnResponse::CheckTxnStatus(TxnStatus::Committed { commit_ts })) => {
                pb::CheckTxnStatusResponse {
                    commit_ts: commit_ts.0,
                    ..Default::default()
                }
            }
            Ok(TxnResponse::CheckTxnStatus(TxnStatus::RolledBack)) => pb::CheckTxnStatusResponse {
                rolled_back: true,
                ..Default::default()
            },
            Ok(TxnResponse::CheckTxnStatus(TxnStatus::Alive { ttl_ms })) => {
                pb::CheckTxnStatusResponse {
                    lock_ttl_ms: ttl_ms,
                    ..Default::default()
                }
            }
            Ok(other) => pb::CheckTxnStatusResponse {
                error: Some(mismatched("check_txn_status", &other)),
                ..Default::default()
            },
            Err(e) => pb::CheckTxnStatusResponse {
                error: Some(error_to_pb(&e)),
                ..Default::default()
            },
        }
    }

    fn into_response(m: pb::CheckTxnStatusResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request))?;
        let status = if m.commit_ts != 0 {
            TxnStatus::Committed {
                commit_ts: Timestamp(m.commit_ts),
            }
        } else if m.rolled_back {
            TxnStatus::RolledBack
        } else {
            TxnStatus::Alive {
                ttl_ms: m.lock_ttl_ms,
            }
        };
        Ok(TxnResponse::CheckTxnStatus(status))
    }
}

impl KvCall for pb::ResolveLockRequest {
    type Response = pb::ResolveLockResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::ResolveLock {
            key: self.key,
            start_ts: Timestamp(self.start_ts),
            commit_ts: (self.commit_ts != 0).then_some(Timestamp(self.commit_ts)),
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::ResolveLockResponse {
        match result {
            Ok(TxnResponse::ResolveLock(resolved)) => pb::ResolveLockResponse {
                error: None,
                resolved: resolved as u64,
            },
            Ok(other) => pb::ResolveLockResponse {
                error: Some(mismatched("resolve_lock", &other)),
                resolved: 0,
            },
            Err(e) => pb::ResolveLockResponse {
                error: Some(error_to_pb(&e)),
                resolved: 0,
            },
        }
    }

    fn into_response(m: pb::ResolveLockResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request))?;
        Ok(TxnResponse::ResolveLock(m.resolved as usize))
    }
}

impl KvCall for pb::TxnHeartBeatRequest {
    type Response = pb::TxnHeartBeatResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::TxnHeartbeat {
            primary: self.primary,
            start_ts: Timestamp(self.start_ts),
            ttl_ms: self.advise_ttl_ms,
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::TxnHeartBeatResponse {
        match result {
            Ok(TxnResponse::TxnHeartbeat(ttl)) => pb::TxnHeartBeatResponse {
                error: None,
                lock_ttl_ms: ttl,
            },
            Ok(other) => pb::TxnHeartBeatResponse {
                error: Some(mismatched("txn_heartbeat", &other)),
                lock_ttl_ms: 0,
            },
            Err(e) => pb::TxnHeartBeatResponse {
                error: Some(error_to_pb(&e)),
                lock_ttl_ms: 0,
            },
        }
    }

    fn into_response(m: pb::TxnHeartBeatResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request))?;
        Ok(TxnResponse::TxnHeartbeat(m.lock_ttl_ms))
    }
}

impl KvCall for pb::DetectDeadlockRequest {
    type Response = pb::DetectDeadlockResponse;

    fn into_request(self) -> Result<(Option<pb::Context>, TxnRequest), String> {
        let request = TxnRequest::DetectDeadlock {
            txn: Timestamp(self.txn),
            wait_for: Timestamp(self.wait_for),
            key: self.key,
            clean_up: self.clean_up,
        };
        Ok((self.context, request))
    }

    fn answer(result: KvResult<TxnResponse>) -> pb::DetectDeadlockResponse {
        match result {
            Ok(TxnResponse::DetectDeadlock { deadlock }) => pb::DetectDeadlockResponse {
                error: None,
                deadlock,
            },
            Ok(other) => pb::DetectDeadlockResponse {
                error: Some(mismatched("detect_deadlock", &other)),
                deadlock: false,
            },
            Err(e) => pb::DetectDeadlockResponse {
                error: Some(error_to_pb(&e)),
                deadlock: false,
            },
        }
    }

    fn into_response(m: pb::DetectDeadlockResponse, request: &TxnRequest) -> KvResult<TxnResponse> {
        result(m.error, txn_ts(request))?;
        Ok(TxnResponse::DetectDeadlock {
            deadlock: m.deadlock,
        })
    }
}

// --- The domain types inside the messages.

fn mutation_to_pb(m: &Mutation) -> pb::Mutation {
    let (op, key, value) = match m {
        Mutation::Put { key, value } => (pb::mutation::Op::Put, key.clone(), value.clone()),
        Mutation::Delete { key } => (pb::mutation::Op::Delete, key.clone(), Vec::new()),
        Mutation::Lock { key } => (pb::mutation::Op::Lock, key.clone(), Vec::new()),
    };
    pb::Mutation {
        op: op as i32,
        key,
        value,
    }
}

fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, String> {
    Ok(match pb::mutation::Op::try_from(m.op) {
        Ok(pb::mutation::Op::Put) => Mutation::Put {
            key: m.key,
            value: m.value,
        },
        Ok(pb::mutation::Op::Delete) => Mutation::Delete { key: m.key },
        Ok(pb::mutation::Op::Lock) => Mutation::Lock { key: m.key },
        Err(_) => return Err(format!("unknown mutation op {}", m.op)),
    })
}

fn lock_to_pb(key: &[u8], lock: &Lock) -> pb::LockInfo {
    let kind = match lock.kind {
        LockKind::Put => pb::LockKind::Put,
        LockKind::Delete => pb::LockKind::Delete,
        LockKind::Lock => pb::LockKind::Lock,
        LockKind::Pessimistic => pb::LockKind::Pessimistic,
    };
    pb::LockInfo {
        key: key.to_vec(),
        primary: lock.primary.clone(),
        start_ts: lock.start_ts.0,
        ttl_ms: lock.ttl_ms,
        kind: kind as i32,
        for_update_ts: lock.for_update_ts.0,
    }
}

fn lock_from_pb(info: pb::LockInfo) -> (Vec<u8>, Lock) {
    let kind = match pb::LockKind::try_from(info.kind) {
        Ok(pb::LockKind::Delete) => LockKind::Delete,
        Ok(pb::LockKind::Lock) => LockKind::Lock,
        Ok(pb::LockKind::Pessimistic) => LockKind::Pessimistic,
        _ => LockKind::Put,
    };
    let lock = Lock {
        kind,
        primary: info.primary,
        start_ts: Timestamp(info.start_ts),
        ttl_ms: info.ttl_ms,
        for_update_ts: Timestamp(info.for_update_ts),
    };
    (info.key, lock)
}

fn error_to_pb(e: &KvError) -> pb::KeyError {
    let mut out = pb::KeyError::default();
    match e {
        KvError::WriteConflict {
            key,
            start_ts,
            conflict_commit_ts,
        } => {
            out.conflict = Some(pb::WriteConflict {
                key: key.clone(),
                start_ts: start_ts.0,
                conflict_commit_ts: conflict_commit_ts.0,
            });
        }
        KvError::TxnAborted { reason, .. } => out.aborted = reason.clone(),
        KvError::Deadlock { key, lock_ts, .. } => {
            out.deadlock = Some(pb::Deadlock {
                key: key.clone(),
                lock_ts: lock_ts.0,
            });
        }
        region_error if region_error.is_region_error() => {
            out.region = Some(region_error_to_pb(region_error));
        }
        KvError::Corrupt(m) => out.corrupt = m.clone(),
        KvError::Storage(crate::storage::StorageError::Corrupt(m)) => out.corrupt = m.clone(),
        other => out.server = other.to_string(),
    }
    out
}

/// The error a response carries, if any. `start_ts` is the transaction the command was for.
fn error_from_pb(e: pb::KeyError, start_ts: Timestamp) -> KvError {
    if let Some(c) = e.conflict {
        return KvError::WriteConflict {
            key: c.key,
            start_ts: Timestamp(c.start_ts),
            conflict_commit_ts: Timestamp(c.conflict_commit_ts),
        };
    }
    if let Some(locked) = e.locked {
        // A lock reported where the command has no way to handle it: the server broke the
        // protocol (reads and prewrites handle locks before calling this).
        return KvError::Server(format!("unexpected lock on key {:?}", locked.key));
    }
    if let Some(d) = e.deadlock {
        return KvError::Deadlock {
            key: d.key,
            start_ts,
            lock_ts: Timestamp(d.lock_ts),
        };
    }
    if !e.aborted.is_empty() {
        return KvError::TxnAborted {
            start_ts,
            reason: e.aborted,
        };
    }
    if !e.corrupt.is_empty() {
        return KvError::Corrupt(e.corrupt);
    }
    if let Some(region) = e.region {
        return region_error_from_pb(region);
    }
    KvError::Server(e.server)
}

fn region_error_to_pb(e: &KvError) -> pb::RegionError {
    let mut out = pb::RegionError::default();
    match e {
        KvError::NotLeader { region_id, leader } => {
            out.not_leader = Some(pb::NotLeader {
                region_id: *region_id,
                leader: leader.unwrap_or(0),
            });
        }
        KvError::StaleCommand { region_id } => out.stale_command = *region_id,
        KvError::RegionNotFound { region_id } => out.region_not_found = *region_id,
        KvError::EpochNotMatch { region_id, current } => {
            out.epoch_not_match = Some(pb::EpochNotMatch {
                region_id: *region_id,
                current: current.as_deref().cloned(),
            });
        }
        KvError::KeyNotInRegion { key, region_id } => {
            out.key_not_in_region = Some(pb::KeyNotInRegion {
                key: key.clone(),
                region_id: *region_id,
            });
        }
        KvError::ServerIsBusy(reason) => out.server_is_busy = reason.clone(),
        other => out.server_is_busy = other.to_string(),
    }
    out
}

fn region_error_from_pb(e: pb::RegionError) -> KvError {
    if let Some(n) = e.not_leader {
        return KvError::NotLeader {
            region_id: n.region_id,
            leader: (n.leader != 0).then_some(n.leader),
        };
    }
    if e.stale_command != 0 {
        return KvError::StaleCommand {
            region_id: e.stale_command,
        };
    }
    if e.region_not_found != 0 {
        return KvError::RegionNotFound {
            region_id: e.region_not_found,
        };
    }
    if let Some(m) = e.epoch_not_match {
        return KvError::EpochNotMatch {
            region_id: m.region_id,
            current: m.current.map(Box::new),
        };
    }
    if let Some(k) = e.key_not_in_region {
        return KvError::KeyNotInRegion {
            key: k.key,
            region_id: k.region_id,
        };
    }
    KvError::ServerIsBusy(e.server_is_busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::LockKind;

    fn ts(t: u64) -> Timestamp {
        Timestamp(t)
    }

    fn requests() -> Vec<TxnRequest> {
        vec![
            TxnRequest::Get {
                key: b"k".to_vec(),
                ts: ts(5),
            },
            TxnRequest::Scan {
                start: b"a".to_vec(),
                end: Some(b"z".to_vec()),
                ts: ts(5),
                limit: 10,
            },
            TxnRequest::Scan {
                start: vec![],
                end: None,
                ts: ts(5),
                limit: usize::MAX,
            },
            TxnRequest::Prewrite {
                mutations: vec![
                    Mutation::Put {
                        key: b"p".to_vec(),
                        value: b"v".to_vec(),
                    },
                    Mutation::Delete { key: b"d".to_vec() },
                    Mutation::Lock { key: b"l".to_vec() },
                ],
                pessimistic: vec![],
                primary: b"p".to_vec(),
                start_ts: ts(5),
                ttl_ms: 3000,
            },
            TxnRequest::Prewrite {
                mutations: vec![
                    Mutation::Put {
                        key: b"p".to_vec(),
                        value: b"v".to_vec(),
                    },
                    Mutation::Delete { key: b"d".to_vec() },
                ],
                pessimistic: vec![true, false],
                primary: b"p".to_vec(),
                start_ts: ts(5),
                ttl_ms: 3000,
            },
            TxnRequest::AcquirePessimisticLock {
                keys: vec![b"p".to_vec(), b"q".to_vec()],
                primary: b"p".to_vec(),
                start_ts: ts(5),
                for_update_ts: ts(6),
                ttl_ms: 3000,
                wait_ms: 1500,
                mode: LockMode::default(),
            },
            TxnRequest::AcquirePessimisticLock {
                keys: vec![b"p".to_vec()],
                primary: b"p".to_vec(),
                start_ts: ts(5),
                for_update_ts: ts(6),
                ttl_ms: 3000,
                wait_ms: 0,
                mode: LockMode {
                    lock_if_changed: true,
                    return_values: true,
                },
            },
            TxnRequest::PessimisticRollback {
                keys: vec![b"q".to_vec()],
                start_ts: ts(5),
                for_update_ts: ts(6),
            },
            TxnRequest::Commit {
                keys: vec![b"p".to_vec(), b"d".to_vec()],
                start_ts: ts(5),
                commit_ts: ts(7),
            },
            TxnRequest::Rollback {
                keys: vec![b"p".to_vec()],
                start_ts: ts(5),
            },
            TxnRequest::CheckTxnStatus {
                primary: b"p".to_vec(),
                lock_ts: ts(5),
                current_ts: ts(9),
            },
            TxnRequest::BatchGet {
                keys: vec![b"a".to_vec(), b"b".to_vec()],
                ts: ts(5),
            },
            TxnRequest::ResolveLock {
                key: b"k".to_vec(),
                start_ts: ts(5),
                commit_ts: Some(ts(7)),
            },
            TxnRequest::ResolveLock {
                key: b"k".to_vec(),
                start_ts: ts(5),
                commit_ts: None,
            },
            TxnRequest::TxnHeartbeat {
                primary: b"p".to_vec(),
                start_ts: ts(5),
                ttl_ms: 6000,
            },
            TxnRequest::DetectDeadlock {
                txn: ts(5),
                wait_for: ts(3),
                key: b"k".to_vec(),
                clean_up: false,
            },
            TxnRequest::DetectDeadlock {
                txn: ts(5),
                wait_for: ts(3),
                key: vec![],
                clean_up: true,
            },
        ]
    }

    /// What the service makes of the message `call`, and the client of the service's answer.
    fn serve(
        call: Call,
        request: &TxnRequest,
        result: impl FnOnce(&TxnRequest) -> KvResult<TxnResponse>,
    ) -> (Option<pb::Context>, TxnRequest, KvResult<TxnResponse>) {
        fn over<M: KvCall>(
            message: M,
            request: &TxnRequest,
            result: impl FnOnce(&TxnRequest) -> KvResult<TxnResponse>,
        ) -> (Option<pb::Context>, TxnRequest, KvResult<TxnResponse>) {
            let (context, received) = message.into_request().unwrap();
            let answer = M::answer(result(&received));
            (context, received, M::into_response(answer, request))
        }
        match call {
            Call::Get(m) => over(m, request, result),
            Call::BatchGet(m) => over(m, request, result),
            Call::Scan(m) => over(m, request, result),
            Call::Prewrite(m) => over(m, request, result),
            Call::AcquirePessimisticLock(m) => over(m, request, result),
            Call::PessimisticRollback(m) => over(m, request, result),
            Call::Commit(m) => over(m, request, result),
            Call::Rollback(m) => over(m, request, result),
            Call::CheckTxnStatus(m) => over(m, request, result),
            Call::ResolveLock(m) => over(m, request, result),
            Call::TxnHeartbeat(m) => over(m, request, result),
            Call::DetectDeadlock(m) => over(m, request, result),
        }
    }

    fn lock() -> Lock {
        Lock {
            kind: LockKind::Put,
            primary: b"p".to_vec(),
            start_ts: ts(3),
            ttl_ms: 100,
            for_update_ts: Timestamp(0),
        }
    }

    /// The answers a store may give `request`.
    fn answers(request: &TxnRequest) -> Vec<TxnResponse> {
        let locked = || (b"k".to_vec(), lock());
        match request {
            TxnRequest::Get { .. } => vec![
                TxnResponse::Get(ReadOutcome::Value(None)),
                TxnResponse::Get(ReadOutcome::Value(Some(vec![]))),
                TxnResponse::Get(ReadOutcome::Value(Some(b"v".to_vec()))),
                TxnResponse::Get(ReadOutcome::Locked {
                    key: locked().0,
                    lock: locked().1,
                }),
            ],
            TxnRequest::BatchGet { .. } => vec![
                TxnResponse::BatchGet(ReadOutcome::Value(vec![])),
                TxnResponse::BatchGet(ReadOutcome::Value(vec![(b"a".to_vec(), b"1".to_vec())])),
                TxnResponse::BatchGet(ReadOutcome::Locked {
                    key: locked().0,
                    lock: locked().1,
                }),
            ],
            TxnRequest::Scan { .. } => vec![
                TxnResponse::Scan(ReadOutcome::Value(vec![])),
                TxnResponse::Scan(ReadOutcome::Value(vec![(b"a".to_vec(), b"1".to_vec())])),
                TxnResponse::Scan(ReadOutcome::Locked {
                    key: locked().0,
                    lock: locked().1,
                }),
            ],
            TxnRequest::Prewrite { .. } => vec![
                TxnResponse::Prewrite { locked: None },
                TxnResponse::Prewrite {
                    locked: Some(locked()),
                },
            ],
            TxnRequest::AcquirePessimisticLock { .. } => vec![
                TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    values: vec![],
                },
                TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    values: vec![(b"a".to_vec(), b"1".to_vec()), (b"b".to_vec(), vec![])],
                },
                TxnResponse::AcquirePessimisticLock {
                    values: vec![],
                    locked: Some((
                        b"k".to_vec(),
                        Lock {
                            kind: LockKind::Pessimistic,
                            for_update_ts: ts(4),
                            ..lock()
                        },
                    )),
                },
            ],
            TxnRequest::PessimisticRollback { .. } => vec![TxnResponse::PessimisticRollback],
            TxnRequest::Commit { .. } => vec![TxnResponse::Commit],
            TxnRequest::Rollback { .. } => vec![TxnResponse::Rollback],
            TxnRequest::CheckTxnStatus { .. } => vec![
                TxnResponse::CheckTxnStatus(TxnStatus::Committed { commit_ts: ts(7) }),
                TxnResponse::CheckTxnStatus(TxnStatus::RolledBack),
                TxnResponse::CheckTxnStatus(TxnStatus::Alive { ttl_ms: 42 }),
            ],
            TxnRequest::ResolveLock { .. } => vec![TxnResponse::ResolveLock(3)],
            TxnRequest::TxnHeartbeat { .. } => vec![TxnResponse::TxnHeartbeat(6000)],
            TxnRequest::DetectDeadlock { .. } => vec![
                TxnResponse::DetectDeadlock { deadlock: true },
                TxnResponse::DetectDeadlock { deadlock: false },
            ],
        }
    }

    #[test]
    fn every_request_and_answer_survives_the_wire() {
        let context = Some(pb::Context {
            region_id: 4,
            region_epoch: Some(proto::metapb::RegionEpoch {
                conf_ver: 2,
                version: 3,
            }),
        });
        for request in requests() {
            for answer in answers(&request) {
                let expected = format!("{answer:?}");
                let call = Call::new(&request, context);
                let (got_context, received, got) = serve(call, &request, |_| Ok(answer));
                assert_eq!(got_context, context);
                assert_eq!(received, request);
                assert_eq!(format!("{:?}", got.unwrap()), expected, "{request:?}");
            }
        }
    }

    #[test]
    fn errors_survive_the_wire() {
        for request in requests() {
            let errors = [
                KvError::WriteConflict {
                    key: b"k".to_vec(),
                    start_ts: ts(5),
                    conflict_commit_ts: ts(6),
                },
                KvError::NotLeader {
                    region_id: 4,
                    leader: Some(9),
                },
                KvError::EpochNotMatch {
                    region_id: 4,
                    current: None,
                },
                KvError::KeyNotInRegion {
                    key: b"k".to_vec(),
                    region_id: 4,
                },
                KvError::Corrupt("bad".into()),
            ];
            for error in errors {
                let expected = format!("{error:?}");
                let call = Call::new(&request, None);
                let (_, _, got) = serve(call, &request, |_| Err(error));
                assert_eq!(format!("{:?}", got.unwrap_err()), expected, "{request:?}");
            }
            // An aborted transaction names the request's transaction.
            let call = Call::new(&request, None);
            let (_, _, got) = serve(call, &request, |_| {
                Err(KvError::TxnAborted {
                    start_ts: ts(0),
                    reason: "rolled back".into(),
                })
            });
            assert!(
                matches!(got, Err(KvError::TxnAborted { start_ts, .. }) if start_ts == txn_ts(&request)),
                "{request:?}: {got:?}"
            );
        }
    }

    #[test]
    fn a_mismatched_answer_is_a_server_error() {
        let request = TxnRequest::Commit {
            keys: vec![b"k".to_vec()],
            start_ts: ts(5),
            commit_ts: ts(7),
        };
        let call = Call::new(&request, None);
        let (_, _, got) = serve(call, &request, |_| Ok(TxnResponse::Rollback));
        assert!(matches!(got, Err(KvError::Server(_))), "{got:?}");
    }

    #[test]
    fn a_malformed_mutation_is_refused() {
        let message = pb::PrewriteRequest {
            mutations: vec![pb::Mutation {
                op: 99,
                key: b"k".to_vec(),
                value: vec![],
            }],
            ..Default::default()
        };
        assert!(message.into_request().is_err());
    }
}
