//! A node's data directory: created if missing; `store/` holds its RocksDB instance.

use std::path::Path;

use kv::storage::RocksEngine;

/// Creates `data_dir` if needed and opens the store engine in it.
pub fn open_store(data_dir: &Path) -> Result<RocksEngine, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create data directory {}: {e}", data_dir.display()))?;
    RocksEngine::open(&data_dir.join("store")).map_err(|e| {
        format!(
            "cannot open the store in {} (is another regiondb using it?): {e}",
            data_dir.display()
        )
    })
}
