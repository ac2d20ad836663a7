//! [`Database`]: the SQL layer's entry point, shared by all sessions.

use std::sync::Arc;

use kv::TransactionSource;

use crate::session::Session;

/// The SQL engine over a transactional key-value store. Cheap to clone.
#[derive(Clone)]
pub struct Database {
    source: Arc<dyn TransactionSource>,
}

impl Database {
    pub fn new(source: Arc<dyn TransactionSource>) -> Self {
        Self { source }
    }

    /// A database over a fresh in-memory store: for tests.
    pub fn in_memory() -> Self {
        Self::new(kv::in_memory_source())
    }

    pub fn session(&self) -> Session {
        Session::new(Arc::clone(&self.source))
    }
}
