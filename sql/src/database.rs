//! [`Database`]: the SQL layer's entry point, shared by all sessions.

use std::sync::Arc;

use kv::client::RegionAdmin;
use kv::{TransactionSource, TxnMode};

use crate::sequence::Sequences;
use crate::session::Session;

/// The SQL engine over a transactional key-value store. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    source: Arc<dyn TransactionSource>,
    /// The cluster's regions (`SHOW REGIONS`, splits); `None` for a store without regions.
    regions: Option<Arc<dyn RegionAdmin>>,
    /// How sessions' transactions meet other writers unless they set `regiondb_txn_mode`.
    txn_mode: TxnMode,
    /// The identity columns' value batches this process holds.
    sequences: Arc<Sequences>,
}

impl Database {
    pub fn new(source: Arc<dyn TransactionSource>) -> Self {
        Self {
            sequences: Arc::new(Sequences::new(Arc::clone(&source))),
            source,
            regions: None,
            txn_mode: TxnMode::default(),
        }
    }

    /// The same database, its sessions' transactions running in `mode` by default.
    pub fn with_txn_mode(mut self, mode: TxnMode) -> Self {
        self.txn_mode = mode;
        self
    }

    /// The same database, seeing the cluster's regions through `regions`.
    pub fn with_regions(mut self, regions: Arc<dyn RegionAdmin>) -> Self {
        self.regions = Some(regions);
        self
    }

    /// The cluster's regions, if this database has any.
    pub fn regions(&self) -> Option<&Arc<dyn RegionAdmin>> {
        self.regions.as_ref()
    }

    /// A database over a fresh in-memory store: for tests.
    pub fn in_memory() -> Self {
        Self::new(kv::in_memory_source())
    }

    pub fn session(&self) -> Session {
        Session::with_txn_mode(Arc::clone(&self.source), self.txn_mode)
            .with_regions(self.regions.clone())
            .with_sequences(Arc::clone(&self.sequences))
    }
}
