//! [`TxnCommands`]: the Percolator commands as one interface, wherever the store is.
//!
//! [`TxnStore`](super::TxnStore) implements it in-process; `client::RemoteTxnCommands`
//! implements it by calling a store's gRPC service. The transaction client only knows this
//! trait, so it runs unchanged against a local store (the single-node cluster, tests) and a
//! remote one.

use scheduler::Timestamp;

use super::actions::{Mutation, PrewriteError, TxnStatus};
use super::store::TxnStore;
use crate::error::KvResult;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::{Engine, KvPair};

pub trait TxnCommands: Send + Sync {
    fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>>;

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>>;

    fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError>;

    fn commit(&self, keys: &[Vec<u8>], start_ts: Timestamp, commit_ts: Timestamp) -> KvResult<()>;

    /// BatchRollback.
    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()>;

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus>;

    /// Commits (`Some`) or rolls back (`None`) every lock of the transaction on the store.
    fn resolve_lock(&self, start_ts: Timestamp, commit_ts: Option<Timestamp>) -> KvResult<usize>;

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64>;
}

impl<E: Engine> TxnCommands for TxnStore<E> {
    fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        TxnStore::get(self, key, ts)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        TxnStore::scan(self, start, end, ts, limit)
    }

    fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        TxnStore::prewrite(self, mutations, primary, start_ts, ttl_ms)
    }

    fn commit(&self, keys: &[Vec<u8>], start_ts: Timestamp, commit_ts: Timestamp) -> KvResult<()> {
        TxnStore::commit(self, keys, start_ts, commit_ts)
    }

    fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()> {
        TxnStore::rollback(self, keys, start_ts)
    }

    fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus> {
        TxnStore::check_txn_status(self, primary, lock_ts, current_ts)
    }

    fn resolve_lock(&self, start_ts: Timestamp, commit_ts: Option<Timestamp>) -> KvResult<usize> {
        TxnStore::resolve_lock(self, start_ts, commit_ts)
    }

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64> {
        TxnStore::txn_heartbeat(self, primary, start_ts, ttl_ms)
    }
}
