//! [`TxnCommands`]: the Percolator commands as one interface, wherever the store is.
//!
//! [`TxnStore`](super::TxnStore) implements it in-process; `client::RemoteTxnCommands`
//! implements it by calling a store's gRPC service. The transaction client only knows this
//! trait, so it runs unchanged against a local store (the single-node cluster, tests) and a
//! remote one.

use scheduler_api::Timestamp;

use super::actions::{Mutation, PrewriteError, TxnStatus};
use crate::error::KvResult;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::KvPair;

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

    /// Commits (`Some`) or rolls back (`None`) every lock of the transaction in the region
    /// holding `key` (a lock of the transaction found there); a store without regions resolves
    /// every lock of the transaction it holds.
    fn resolve_lock(
        &self,
        key: &[u8],
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    ) -> KvResult<usize>;

    fn txn_heartbeat(&self, primary: &[u8], start_ts: Timestamp, ttl_ms: u64) -> KvResult<u64>;
}

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
    fn route(&self, context: Option<RegionContext>) -> KvResult<std::sync::Arc<dyn TxnCommands>>;
}

/// A single store without regions: every request goes to its one set of commands.
pub struct SingleKeyspace(pub std::sync::Arc<dyn TxnCommands>);

impl CommandRouter for SingleKeyspace {
    fn route(&self, _context: Option<RegionContext>) -> KvResult<std::sync::Arc<dyn TxnCommands>> {
        Ok(std::sync::Arc::clone(&self.0))
    }
}
