//! The KV layer's error, grouped by how the caller reacts.

use scheduler_api::{Timestamp, TsoError};

use crate::codec::memcomparable::DecodeError;
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    // --- Retry the whole transaction (SQLSTATE 40001). The client never retries by itself:
    // re-running the statements is the application's decision.
    /// Another transaction committed a write to `key` after this one started.
    #[error(
        "could not serialize access due to concurrent update (another transaction committed a \
         write to the same key at {conflict_commit_ts}, after this one started at {start_ts})"
    )]
    WriteConflict {
        key: Vec<u8>,
        start_ts: Timestamp,
        conflict_commit_ts: Timestamp,
    },
    /// The transaction can no longer commit (rolled back by a lock resolver, or its locks were
    /// lost).
    #[error("could not serialize access: transaction {start_ts} was aborted: {reason}")]
    TxnAborted { start_ts: Timestamp, reason: String },
    /// A key stayed locked by a live transaction for longer than we are willing to wait.
    #[error(
        "could not serialize access: a key stayed locked by transaction {lock_ts} for too long"
    )]
    LockWaitTimeout { key: Vec<u8>, lock_ts: Timestamp },
    /// Waiting for `lock_ts`'s lock on `key` would close a cycle of transactions waiting for
    /// each other: this one is refused (SQLSTATE 40P01), the others go on.
    #[error(
        "deadlock detected: transaction {start_ts} would wait for transaction {lock_ts}, which \
         waits for it"
    )]
    Deadlock {
        key: Vec<u8>,
        start_ts: Timestamp,
        lock_ts: Timestamp,
    },

    /// A statement waited for `lock_ts`'s lock on `key` as long as its transaction allows
    /// (`lock_timeout`; SQLSTATE 55P03). Only the statement failed: nothing of it was applied.
    #[error("canceling statement due to lock timeout (waiting for transaction {lock_ts})")]
    LockTimeout { key: Vec<u8>, lock_ts: Timestamp },

    /// The primary's commit was sent but its answer was lost: the transaction may or may not
    /// have committed. Only reading tells.
    #[error("the outcome of transaction {start_ts} is unknown: {reason}")]
    CommitUnknown { start_ts: Timestamp, reason: String },

    // --- Retry the request (elsewhere): region errors of the raftstore.
    /// This peer is not the region's leader; `leader` is the peer id it knows, if any.
    #[error("region {region_id}: not the leader (leader: {leader:?})")]
    NotLeader { region_id: u64, leader: Option<u64> },
    /// The proposal was overwritten by a new leader's log before it committed.
    #[error("region {region_id}: the command was dropped by a leader change; retry it")]
    StaleCommand { region_id: u64 },
    /// This store has no replica of the region (never had, or it was removed).
    #[error("region {region_id} is not on this store")]
    RegionNotFound { region_id: u64 },
    /// The request's region epoch is not the current one (the membership or range changed):
    /// refresh the region and retry. `current` is the region as this store knows it.
    #[error("region {region_id}: stale epoch (the region changed); refresh and retry")]
    EpochNotMatch {
        region_id: u64,
        current: Option<Box<proto::metapb::Region>>,
    },
    /// A key of the request lies outside the region's range.
    #[error("region {region_id}: key is not in the region")]
    KeyNotInRegion { key: Vec<u8>, region_id: u64 },
    /// The store is overloaded (too many proposals waiting): back off and retry.
    #[error("server is busy: {0}")]
    ServerIsBusy(String),

    // --- Broken invariants in stored data: stop and report.
    #[error("corrupt data: {0}")]
    Corrupt(String),

    // --- Infrastructure failures.
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tso(#[from] TsoError),
    /// A remote store could not be reached or failed (transport-level).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A remote store failed to execute a command.
    #[error("store error: {0}")]
    Server(String),
}

impl KvError {
    /// A region error: the request reached the wrong replica or a stale view of the region;
    /// the client refreshes its routing and retries the same request.
    pub fn is_region_error(&self) -> bool {
        matches!(
            self,
            KvError::NotLeader { .. }
                | KvError::StaleCommand { .. }
                | KvError::RegionNotFound { .. }
                | KvError::EpochNotMatch { .. }
                | KvError::KeyNotInRegion { .. }
                | KvError::ServerIsBusy(_)
        )
    }

    /// Whether re-running the whole transaction from the start may succeed.
    pub fn is_retryable_transaction(&self) -> bool {
        matches!(
            self,
            KvError::WriteConflict { .. }
                | KvError::TxnAborted { .. }
                | KvError::LockWaitTimeout { .. }
                | KvError::Deadlock { .. }
        )
    }
}

impl From<DecodeError> for KvError {
    fn from(e: DecodeError) -> Self {
        KvError::Corrupt(e.to_string())
    }
}

pub type KvResult<T> = Result<T, KvError>;
