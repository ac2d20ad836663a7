//! The transaction client: what the SQL layer uses to read and write.
//!
//! The SQL layer sees only the [`Transaction`] trait (and [`TransactionSource`] to begin one).
//! [`TxnClient`] implements them with Percolator over a [`TxnStore`](crate::txn::TxnStore):
//! reads at `start_ts` (resolving any lock they meet), writes buffered in the transaction, and
//! two-phase commit on `commit`. Today the store is in the same process (single node); routing
//! to region leaders over gRPC replaces the direct calls when regions are replicated.

#[cfg(test)]
mod tests;
mod transaction;
mod txn_client;

pub use transaction::{Transaction, TransactionSource};
pub use txn_client::{TxnClient, TxnOptions};
