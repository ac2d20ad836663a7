//! The interface between the SQL layer and the key-value layer.
//!
//! A transaction is begun with a [`TxnConfig`]: how it meets other writers ([`TxnMode`]),
//! what its statements see ([`Isolation`]), and how long it waits for a lock.
//!
//! - **Pessimistic** (the default, as PostgreSQL behaves): a statement locks each row it is
//!   about to write ([`Transaction::lock_for_write`]) and waits for other writers' locks; the
//!   commit then cannot meet a write conflict on those rows.
//!   - `ReadCommitted`: every statement reads a snapshot of its own
//!     ([`Transaction::begin_statement`]); a row it locks comes back at its newest committed
//!     version, for the statement to re-check (PostgreSQL's EvalPlanQual).
//!   - `RepeatableRead`: one snapshot for the whole transaction; locking a row changed since
//!     that snapshot fails with a serialization error once the other writer is done.
//! - **Optimistic**: nothing is locked before the commit, every statement reads the one
//!   snapshot, and the commit fails with a serialization error if another transaction wrote
//!   one of its keys since it began (first committer wins). Cheaper where conflicts are rare.

use std::time::Duration;

use crate::error::KvResult;
use crate::storage::KvPair;

/// How a transaction meets other writers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TxnMode {
    /// Lock rows as statements write them; wait for other writers.
    #[default]
    Pessimistic,
    /// Lock nothing before the commit; the commit fails on a write-write conflict.
    Optimistic,
}

/// What a transaction's statements read (pessimistic mode; optimistic transactions always
/// read one snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// A snapshot per statement.
    #[default]
    ReadCommitted,
    /// One snapshot for the whole transaction.
    RepeatableRead,
}

/// How a transaction is to run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxnConfig {
    pub mode: TxnMode,
    pub isolation: Isolation,
    /// How long a statement waits for another transaction's lock before failing with
    /// [`KvError::LockTimeout`](crate::KvError::LockTimeout); `None`: until the lock goes
    /// (or its holder is found dead, or a deadlock is found).
    pub lock_timeout: Option<Duration>,
}

impl TxnConfig {
    /// An optimistic snapshot-isolated transaction.
    pub fn optimistic() -> Self {
        TxnConfig {
            mode: TxnMode::Optimistic,
            isolation: Isolation::RepeatableRead,
            lock_timeout: None,
        }
    }

    /// A pessimistic transaction at `isolation`, waiting for locks without limit.
    pub fn pessimistic(isolation: Isolation) -> Self {
        TxnConfig {
            mode: TxnMode::Pessimistic,
            isolation,
            lock_timeout: None,
        }
    }
}

/// Why a statement locks keys (see [`Transaction::lock_for_write`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockPurpose {
    /// To change or delete rows the statement has read (UPDATE, DELETE, SELECT FOR UPDATE).
    Update,
    /// To create rows: whether each key exists is decided on its newest committed version,
    /// at every isolation level, as PostgreSQL's unique checks do.
    Insert,
}

/// A transaction over the ordered key space (see the module doc for its modes).
///
/// Reads see the transaction's snapshot (the statement's, under READ COMMITTED) plus the
/// transaction's own writes. Writes are buffered and become visible to others atomically at
/// [`Transaction::commit`]. After `commit` or `rollback` returns, the transaction must not be
/// used again.
pub trait Transaction: Send {
    /// Called before each statement, with how long it may wait for a lock (`None`: without
    /// limit): under READ COMMITTED, the reads that follow see what was committed before the
    /// call.
    fn begin_statement(&mut self, lock_timeout: Option<Duration>) -> KvResult<()>;

    fn get(&mut self, key: &[u8]) -> KvResult<Option<Vec<u8>>>;

    /// The values of `keys`, in their order (`None`: absent). An implementation over a
    /// cluster reads each region's keys in one request.
    fn batch_get(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>>;

    /// Pairs with `start <= key < end` (`end = None`: unbounded), in key order, at most `limit`.
    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> KvResult<Vec<KvPair>>;

    /// As [`Transaction::scan`], but over everything committed before the call (and this
    /// transaction's own writes), not the statement's snapshot: for a constraint check that
    /// must see what committed while the statement waited for a lock (a foreign key's
    /// referencing rows, looked for by the transaction deleting the row they reference).
    fn scan_newest(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<KvPair>>;

    /// Pessimistic: locks `keys` until the transaction ends, waiting for other transactions'
    /// locks, and returns the value of each that the statement is to work on (in order; this
    /// transaction's own writes over them): the newest committed one under READ COMMITTED and
    /// for [`LockPurpose::Insert`]. Under REPEATABLE READ, locking a key another transaction
    /// changed since the snapshot fails with a serialization error.
    ///
    /// Returns `None` when nothing was locked: an optimistic transaction, whose commit finds
    /// conflicts, and a REPEATABLE READ update, whose values are those the statement read.
    fn lock_for_write(
        &mut self,
        keys: &[Vec<u8>],
        purpose: LockPurpose,
    ) -> KvResult<Option<Vec<Option<Vec<u8>>>>>;

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>);

    fn delete(&mut self, key: Vec<u8>);

    /// Optimistic: makes the commit check `key` for conflicts as if writing it, without
    /// changing it (`SELECT … FOR UPDATE`).
    fn lock(&mut self, key: Vec<u8>);

    /// Makes a commit that writes anything read `key` again at its commit timestamp, after
    /// prewriting: if the value there is not `expected`, the commit rolls back and fails
    /// with a serialization error. (A schema change that committed between the transaction's
    /// reading of a table's descriptor and its commit thus fails the writer instead of
    /// letting it commit rows the new schema would have written differently.) A key the
    /// transaction writes itself is not checked.
    fn check_at_commit(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>);

    /// Commits the buffered writes atomically. A write-write conflict with a transaction that
    /// committed after this one started (on a key it did not lock) fails with a retryable
    /// error and applies nothing.
    fn commit(&mut self) -> KvResult<()>;

    /// Discards the buffered writes and releases the locks.
    fn rollback(&mut self) -> KvResult<()>;

    /// The transaction's start timestamp (for diagnostics and unique hidden keys).
    fn start_ts(&self) -> u64;
}

/// In the message of the serialization failure of a commit whose [`Transaction::check_at_commit`]
/// found a key changed: a statement that failed only so may be run again from the start.
pub const CHANGED_BEFORE_COMMIT: &str = "changed while the transaction ran";

/// Where transactions come from.
pub trait TransactionSource: Send + Sync {
    fn begin(&self, config: TxnConfig) -> KvResult<Box<dyn Transaction>>;
}
