//! [`TxnCommands`]: the Percolator commands as one interface, wherever the store is.
//!
//! One method, [`TxnCommands::execute`], takes a [`TxnRequest`] and answers its
//! [`TxnResponse`] (see [`super::request`] for the shape, and for why a lock met is an answer
//! rather than an error). Implemented by [`TxnStore`](super::TxnStore) in-process, by a region
//! replica of a store (`raftstore::StoreCommands`), by `client::RemoteTxnCommands` over gRPC
//! and by `client::RoutedCommands` over a whole cluster. The transaction client only knows
//! this trait, so it runs unchanged against all of them.
//!
//! [`TxnCommandsExt`] gives every implementation a typed function per command (`get`,
//! `prewrite`, …) that builds the request and takes the matching answer apart; it is the only
//! place that does, and implementations never override it.
//!
//! The request is borrowed: a router retries one request on several replicas, and a store in
//! the same process runs it without copying its keys and values.

use std::sync::Arc;

use scheduler_api::Timestamp;

use super::actions::{LockMode, Mutation, PrewriteError, TxnStatus};
use super::request::{TxnRequest, TxnResponse};
use crate::error::{KvError, KvResult};
use crate::mvcc::reader::ReadOutcome;
use crate::storage::KvPair;

pub trait TxnCommands: Send + Sync {
    /// Runs `request`. The answer is the [`TxnResponse`] variant of the request's name.
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse>;
}

/// An answer that is not the one the request asked for: a bug on the answering side.
fn mismatch(request: &'static str, response: &TxnResponse) -> KvError {
    KvError::Server(format!(
        "a {request} request was answered as {}",
        response.name()
    ))
}

/// The commands as typed functions, for every [`TxnCommands`].
pub trait TxnCommandsExt: TxnCommands {
    fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        let request = TxnRequest::Get {
            key: key.to_vec(),
            ts,
        };
        match self.execute(&request)? {
            TxnResponse::Get(outcome) => Ok(outcome),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    /// The pairs of `keys` that have a version visible at `ts`, in no particular order.
    fn batch_get(&self, keys: &[Vec<u8>], ts: Timestamp) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let request = TxnRequest::BatchGet {
            keys: keys.to_vec(),
            ts,
        };
        match self.execute(&request)? {
            TxnResponse::BatchGet(outcome) => Ok(outcome),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let request = TxnRequest::Scan {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
            ts,
            limit,
        };
        match self.execute(&request)? {
            TxnResponse::Scan(outcome) => Ok(outcome),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    /// A lock met is [`PrewriteError::Locked`], so that the caller resolves it.
    fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        self.prewrite_pessimistic(mutations, &[], primary, start_ts, ttl_ms)
    }

    /// A prewrite whose keys flagged in `pessimistic` hold the transaction's pessimistic
    /// locks already.
    fn prewrite_pessimistic(
        &self,
        mutations: &[Mutation],
        pessimistic: &[bool],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        let request = TxnRequest::Prewrite {
            mutations: mutations.to_vec(),
            pessimistic: pessimistic.to_vec(),
            primary: primary.to_vec(),
            start_ts,
            ttl_ms,
        };
        match self.execute(&request)? {
            TxnResponse::Prewrite { locked: None } => Ok(()),
            TxnResponse::Prewrite {
                locked: Some((key, lock)),
            } => Err(PrewriteError::Locked { key, lock }),
            other => Err(mismatch(request.name(), &other).into()),
        }
    }

    /// Meeting another transaction's lock, waits up to `wait_ms` for it to go. Answers the
    /// newest values of the keys that have one if `mode.return_values`.
    #[allow(clippy::too_many_arguments)]
    fn acquire_pessimistic_lock(
        &self,
        keys: &[Vec<u8>],
        primary: &[u8],
        start_ts: Timestamp,
        for_update_ts: Timestamp,
        ttl_ms: u64,
        wait_ms: u64,
        mode: LockMode,
    ) -> Result<Vec<KvPair>, PrewriteError> {
        let request = TxnRequest::AcquirePessimisticLock {
            keys: keys.to_vec(),
            primary: primary.to_vec(),
            start_ts,
            for_update_ts,
            ttl_ms,
            wait_ms,
            mode,
        };
        match self.execute(&request)? {
            TxnResponse::AcquirePessimisticLock {
                locked: None,
                values,
            } => Ok(values),
            TxnResponse::AcquirePessimisticLock {
                locked: Some((key, lock)),
                ..
            } => Err(PrewriteError::Locked { key, lock }),
            other => Err(mismatch(request.name(), &other).into()),
        }
    }

    fn pessimistic_rollback(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        for_update_ts: Timestamp,
    ) -> KvResult<()> {
        let request = TxnRequest::PessimisticRollback {
            keys: keys.to_vec(),
            start_ts,
            for_update_ts,
        };
        match self.execute(&request)? {
            TxnResponse::PessimisticRollback => Ok(()),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    fn commit(&self, keys: &[Vec<u8>], start_ts: Timestamp, commit_ts: Timestamp) -> KvResult<()> {
        let request = TxnRequest::Commit {
            keys: keys.to_vec(),
            start_ts,
            commit_ts,
        };
        match self.execute(&request)? {
            TxnResponse::Commit => Ok(()),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    /// BatchRollback.
    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()> {
        let request = TxnRequest::Rollback {
            keys: keys.to_vec(),
            start_ts,
        };
        match self.execute(&request)? {
            TxnResponse::Rollback => Ok(()),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus> {
        let request = TxnRequest::CheckTxnStatus {
            primary: primary.to_vec(),
            lock_ts,
            current_ts,
        };
        match self.execute(&request)? {
            TxnResponse::CheckTxnStatus(status) => Ok(status),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    /// See [`TxnRequest::ResolveLock`]; returns how many keys were resolved.
    fn resolve_lock(
        &self,
        key: &[u8],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> KvResult<usize> {
        let request = TxnRequest::ResolveLock {
            key: key.to_vec(),
            start_ts,
            commit_ts,
        };
        match self.execute(&request)? {
            TxnResponse::ResolveLock(resolved) => Ok(resolved),
            other => Err(mismatch(request.name(), &other)),
        }
    }

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64> {
        let request = TxnRequest::TxnHeartbeat {
            primary: primary.to_vec(),
            start_ts,
            ttl_ms,
        };
        match self.execute(&request)? {
            TxnResponse::TxnHeartbeat(ttl) => Ok(ttl),
            other => Err(mismatch(request.name(), &other)),
        }
    }
}

impl<T: TxnCommands + ?Sized> TxnCommandsExt for T {}

/// The region context of a request, as the client knows the region (see `kvrpc.Context`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionContext {
    pub region_id: u64,
    pub conf_ver: u64,
    pub version: u64,
}

/// Finds the commands for a request's region on a store: a store of replicated regions checks
/// that it holds the region, at the request's epoch; a plain single store has one keyspace.
pub trait CommandRouter: Send + Sync {
    /// `None`: the request named no region (single-node clients).
    fn route(&self, context: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>>;
}

/// A single store without regions: every request goes to its one set of commands.
pub struct SingleKeyspace(pub Arc<dyn TxnCommands>);

impl CommandRouter for SingleKeyspace {
    fn route(&self, _context: Option<RegionContext>) -> KvResult<Arc<dyn TxnCommands>> {
        Ok(Arc::clone(&self.0))
    }
}
