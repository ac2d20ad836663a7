//! The single-node cluster: scheduler, one store and the SQL gateway in one process, over the
//! same stack as a multi-node cluster — the raftstore (regions with one voter each, split as
//! they grow), the scheduler's cluster metadata, and the routing transaction client — with
//! in-process calls where a cluster uses gRPC.
//!
//! Layout of the data directory: `store/` holds the RocksDB instance (data and Raft state);
//! `scheduler/` holds the scheduler's state (timestamp and ID high-water marks, stores and
//! regions), the same files a `regiondb scheduler` keeps. Every acknowledged commit is in the
//! Raft log, fsynced, before the client hears about it, so it survives a crash or `kill -9`;
//! a commit interrupted half-way leaves Percolator locks that the next reader resolves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kv::client::{RoutedCommands, SchedulerRegions, StoreConnector};
use kv::raftstore::split_check::SplitConfig;
use kv::raftstore::store::ensure_store_id;
use kv::raftstore::store_commands::StoreCommands;
use kv::raftstore::{RaftEnvelope, Store, StoreConfig, Transport};
use kv::txn::CommandRouter;
use kv::{KvError, KvResult, TxnClient, TxnOptions};
use scheduler::{
    Cluster, ClusterApi, ClusterConfig, IdAllocator, LocalCluster, Store as StoreMeta,
    TimestampOracle,
};
use tokio::net::TcpListener;
use tracing::info;

use crate::config::SingleNodeConfig;

/// How long the SQL gateway's commands keep retrying (a region splitting, say).
const ROUTING_TIMEOUT: Duration = Duration::from_secs(20);

/// The raft transport of a cluster with one store: every region's only voter is here, so
/// there is nobody to send to.
struct NoOtherStores;

impl Transport for NoOtherStores {
    fn send(&self, _envelope: RaftEnvelope) {}
}

/// The gateway's view of the stores: just this one, in-process.
struct OnlyStore {
    id: u64,
    commands: Arc<dyn CommandRouter>,
}

impl StoreConnector for OnlyStore {
    fn store(&self, store_id: u64) -> KvResult<Arc<dyn CommandRouter>> {
        if store_id == self.id {
            Ok(Arc::clone(&self.commands))
        } else {
            Err(KvError::Unavailable(format!(
                "store {store_id} is not part of this single-node cluster"
            )))
        }
    }
}

/// Store settings of the single node (and the split sizes it was given).
pub fn store_config(config: &SingleNodeConfig) -> StoreConfig {
    StoreConfig {
        split: SplitConfig::by_size(config.regions.split_size.0, config.regions.max_size.0),
        ..StoreConfig::default()
    }
}

/// Opens the node's storage and serves PostgreSQL clients until `shutdown` resolves.
pub async fn run(
    config: SingleNodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let engine = Arc::new(crate::data_dir::open_store(&config.data_dir)?);
    let scheduler_dir = config.data_dir.join("scheduler");
    let tso = Arc::new(TimestampOracle::open(&scheduler_dir).map_err(|e| e.to_string())?);
    let ids = Arc::new(IdAllocator::open(&scheduler_dir).map_err(|e| e.to_string())?);
    let metadata = Cluster::open(&scheduler_dir, {
        let mut cluster_config = ClusterConfig {
            max_replicas: 1,
            ..ClusterConfig::default()
        };
        config.merge.apply(&mut cluster_config.merge);
        cluster_config
    })
    .map_err(|e| e.to_string())?;
    let cluster: Arc<dyn ClusterApi> = Arc::new(LocalCluster::new(Arc::new(metadata), ids));

    let listener = TcpListener::bind(config.pg_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.pg_listen))?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;

    let store_config = store_config(&config);
    let store = {
        let cluster = Arc::clone(&cluster);
        tokio::task::spawn_blocking(move || {
            let store_id = ensure_store_id(engine.as_ref(), cluster.as_ref())
                .map_err(|e| format!("cannot identify the store: {e}"))?;
            let meta = StoreMeta {
                id: store_id,
                address: "in-process".into(),
                pg_address: address.to_string(),
            };
            Store::start(engine, meta, cluster, Arc::new(NoOtherStores), store_config)
                .map(Arc::new)
                .map_err(|e| format!("cannot start the store: {e}"))
        })
        .await
        .map_err(|e| format!("startup task failed: {e}"))??
    };
    let stores: Arc<dyn StoreConnector> = Arc::new(OnlyStore {
        id: store.id(),
        commands: Arc::new(StoreCommands::new(Arc::clone(&store))),
    });
    let commands = RoutedCommands::new(Arc::clone(&cluster), stores, ROUTING_TIMEOUT);
    let client = TxnClient::new(Arc::new(commands), tso, TxnOptions::default());
    let database = sql::Database::new(Arc::new(client))
        .with_regions(Arc::new(SchedulerRegions::new(Arc::clone(&cluster))))
        .with_txn_mode(config.txn_mode);

    info!(data_dir = %config.data_dir.display(), %address, "RegionDB single-node cluster is up");
    println!(
        "RegionDB is ready. Connect with: psql -h {} -p {} -U postgres",
        address.ip(),
        address.port()
    );
    let served = pgserver::serve(listener, database, shutdown).await;
    tokio::task::spawn_blocking(move || store.stop())
        .await
        .map_err(|e| format!("shutdown task failed: {e}"))?;
    served.map_err(|e| format!("PostgreSQL server failed: {e}"))?;
    info!("RegionDB stopped");
    Ok(())
}
