//! gRPC services of a store.
//!
//! [`TxnService`] serves the Percolator commands (`regiondb.kvrpc.TxnKv`) of a store. Store
//! commands block (latches, fsync), so each request runs on tokio's blocking pool. Raft
//! message and snapshot services join it with replicated regions.

mod txn_service;

pub use txn_service::TxnService;
