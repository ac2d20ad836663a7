//! The transaction client: what the SQL layer uses to read and write.
//!
//! The SQL layer sees only the [`Transaction`] trait (and [`TransactionSource`] to begin one).
//! [`TxnClient`] implements them with Percolator over a store's
//! [`TxnCommands`](crate::txn::TxnCommands): reads at `start_ts` (resolving any lock they meet),
//! writes buffered in the transaction, and two-phase commit on `commit`. The store is either in
//! the same process ([`TxnStore`](crate::txn::TxnStore), the single-node cluster) or reached
//! over gRPC ([`RemoteTxnCommands`]), or a whole cluster of replicated regions
//! ([`RoutedCommands`], which sends each command to the leader of its keys' region).
//! [`RegionAdmin`] is the SQL layer's view of the regions themselves (`SHOW REGIONS`, splits).

pub mod regions;
pub mod remote;
pub mod routing;
mod transaction;
mod txn_client;

pub use regions::{RegionAdmin, RegionSummary, SchedulerRegions};
pub use remote::RemoteTxnCommands;
pub use routing::{GrpcStores, LocalFirst, RoutedCommands, StoreConnector};
pub use transaction::{
    CHANGED_BEFORE_COMMIT, Isolation, LockPurpose, Transaction, TransactionSource, TxnConfig,
    TxnMode,
};
pub use txn_client::{TxnClient, TxnOptions};
