//! RegionDB's key-value layer.
//!
//! From the bottom up:
//! - [`storage`]: the engine trait (column families, atomic durable batches, snapshots) with a
//!   RocksDB and an in-memory implementation;
//! - [`codec`]: order-preserving encodings shared with the SQL layer;
//! - [`mvcc`]: versions, locks and commit records over the `default`/`lock`/`write` families;
//! - [`txn`]: the Percolator actions, the commands as one request type
//!   ([`txn::TxnRequest`] → [`txn::TxnResponse`], run by [`txn::TxnCommands::execute`]) and
//!   the store that runs them under latches;
//! - [`client`]: the [`Transaction`] interface the SQL layer uses, implemented by
//!   [`TxnClient`] with Percolator's two-phase commit over any [`txn::TxnCommands`]: a local
//!   store, one remote store ([`client::RemoteTxnCommands`]) or a whole cluster
//!   ([`client::RoutedCommands`]: region cache from the scheduler, routing to region leaders,
//!   retries on region errors);
//! - [`server`]: the gRPC service that exposes a store's commands, per region (the messages
//!   map to requests and answers in one module, `rpc`, for both the service and the client);
//! - [`raftstore`]: region replicas — peer storage in the `raft` column family, peers whose
//!   log entries are write batches, threads driving them, the store that creates, routes and
//!   destroys them, and the gRPC raft transport — so that a [`txn::TxnStore`] writes and reads
//!   through Raft ([`txn::Replication`]).
//!
//! The scheduler is reached through the `scheduler-api` crate only (timestamps, the
//! [`scheduler_api::TimestampSource`] and [`scheduler_api::ClusterApi`] interfaces, the gRPC
//! client): this crate does not build the scheduler server.
//!
//! Still to come: region merge (see [`raftstore`]), and pessimistic locking, async commit /
//! 1PC and garbage collection of old versions (see [`txn`]).

pub mod client;
pub mod codec;
pub mod error;
pub mod mvcc;
pub mod raftstore;
mod rpc;
pub mod server;
pub mod storage;
pub mod txn;

pub use client::{
    CHANGED_BEFORE_COMMIT, Isolation, LockPurpose, Transaction, TransactionSource, TxnClient,
    TxnConfig, TxnMode, TxnOptions,
};
pub use error::{KvError, KvResult};
/// The timestamps errors and transactions carry (from the scheduler's oracle).
pub use scheduler_api::Timestamp;

/// A single-node transactional store over the in-memory engine, with timestamps from a
/// counter in memory: for tests of the layers above.
pub fn in_memory_source() -> std::sync::Arc<dyn TransactionSource> {
    let engine = std::sync::Arc::new(storage::MemoryEngine::new());
    let store = std::sync::Arc::new(txn::TxnStore::new(engine));
    let tso = std::sync::Arc::new(scheduler_api::MemoryTso::new());
    std::sync::Arc::new(TxnClient::new(store, tso, TxnOptions::default()))
}
