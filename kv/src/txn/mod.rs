//! Percolator transactions, server side: the per-key actions, the commands as one request
//! type ([`request`], behind the one interface [`commands`]) and the store that runs them.
//!
//! # Protocol (Percolator, as in Google's paper and TiKV's `txn` layer)
//!
//! A transaction reads at `start_ts` and buffers its writes. To commit, the client
//! 1. **prewrites** every key: fails on a write record newer than `start_ts` (write conflict)
//!    or another transaction's lock; otherwise writes a lock naming the *primary* key and the
//!    value at `start_ts`;
//! 2. takes `commit_ts` from the TSO;
//! 3. **commits the primary**: replaces its lock by a write record at `commit_ts`. This single
//!    atomic write is the commit point;
//! 4. commits the secondaries the same way (a failure here does not undo the commit: any reader
//!    finding a leftover secondary lock rolls it forward through the primary's status).
//!
//! A client that dies leaves locks behind. A reader that meets one asks the primary's status
//! ([`actions::check_txn_status`]): committed → roll the lock forward; lock TTL expired →
//! roll the transaction back (leaving a rollback record, so a late prewrite or commit of the
//! dead transaction fails); alive → wait and retry.
//!
//! # Invariants
//!
//! - Every action is computed against one snapshot while holding latches on its keys
//!   ([`latches`]), and its whole effect is one atomic write batch: commands on the same key
//!   are serialized and a command that fails on any key applies nothing.
//! - Every action is idempotent: repeating one that took effect returns the same answer and
//!   writes nothing new.
//!
//! Not here yet: pessimistic locking, async commit / 1PC, and garbage collection of old
//! versions.

pub mod actions;
pub mod commands;
pub mod deadlock;
pub mod detector;
pub mod latches;
pub mod lock_waits;
pub mod request;
pub mod store;

pub use actions::{LockMode, Mutation, TxnStatus};
pub use commands::{CommandRouter, RegionContext, SingleKeyspace, TxnCommands, TxnCommandsExt};
pub use request::{Route, TxnRequest, TxnResponse};
pub use store::{ReadFence, Replication, SharedLocking, TxnStore};
