//! [`Database`]: the SQL layer's entry point, shared by all sessions.

use std::sync::Arc;

use kv::TransactionSource;
use kv::client::RegionAdmin;

use crate::session::Session;

/// The SQL engine over a transactional key-value store. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    source: Arc<dyn TransactionSource>,
    /// The cluster's regions (`SHOW REGIONS`, splits); `None` for a store without regions.
    regions: Option<Arc<dyn RegionAdmin>>,
}

impl Database {
    pub fn new(source: Arc<dyn TransactionSource>) -> Self {
        Self {
            source,
            regions: None,
        }
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
        Session::new(Arc::clone(&self.source)).with_regions(self.regions.clone())
    }
}
