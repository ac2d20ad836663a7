//! The single-node cluster: scheduler (timestamp oracle), one store and the SQL gateway in one
//! process.
//!
//! Layout of the data directory: `store/` holds the RocksDB instance with all data; `scheduler/`
//! holds the timestamp oracle's high-water mark. Every acknowledged commit is fsynced by
//! RocksDB before the client hears about it, so it survives a crash or `kill -9`; a commit
//! interrupted half-way leaves Percolator locks that the next reader resolves.

use std::future::Future;
use std::sync::Arc;

use kv::txn::{TxnCommands, TxnStore};
use kv::{TxnClient, TxnOptions};
use scheduler::TimestampOracle;
use tokio::net::TcpListener;
use tracing::info;

use crate::config::SingleNodeConfig;

/// Opens the node's storage and serves PostgreSQL clients until `shutdown` resolves.
pub async fn run(
    config: SingleNodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let engine = crate::data_dir::open_store(&config.data_dir)?;
    let tso =
        TimestampOracle::open(&config.data_dir.join("scheduler")).map_err(|e| e.to_string())?;
    let store: Arc<dyn TxnCommands> = Arc::new(TxnStore::new(Arc::new(engine)));
    let client = TxnClient::new(store, Arc::new(tso), TxnOptions::default());
    let database = sql::Database::new(Arc::new(client));

    let listener = TcpListener::bind(config.pg_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.pg_listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    info!(data_dir = %config.data_dir.display(), %address, "RegionDB single-node cluster is up");
    println!(
        "RegionDB is ready. Connect with: psql -h {} -p {} -U postgres",
        address.ip(),
        address.port()
    );
    pgserver::serve(listener, database, shutdown)
        .await
        .map_err(|e| format!("PostgreSQL server failed: {e}"))?;
    info!("RegionDB stopped");
    Ok(())
}
