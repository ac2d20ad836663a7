//! `regiondb node`: one store and one SQL gateway of a multi-node cluster.
//!
//! Startup: open the engine in `DATA_DIR/store`; get the store id (persisted in the engine, or
//! a new one from the scheduler); bind the gRPC and PostgreSQL listeners; start the store
//! (which registers its address with the scheduler, bootstraps the cluster if nobody has, and
//! reopens its replicas); then serve, on the gRPC address, the transactional KV service (for
//! other nodes' gateways) and the raft transport (for other stores), and SQL on the PostgreSQL
//! address. The gateway's transactions are routed to region leaders through the scheduler;
//! commands for this node's own store are called in-process.
//!
//! Shutdown (SIGTERM/Ctrl-C): stop taking connections, end the raft streams, stop the peers.
//! Everything acknowledged is already persisted; a node killed with SIGKILL restarts from its
//! engine like after a clean stop.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use kv::client::{GrpcStores, LocalFirst, RoutedCommands, SchedulerRegions, StoreConnector};
use kv::raftstore::grpc_transport::{GrpcTransport, RaftService};
use kv::raftstore::split_check::SplitConfig;
use kv::raftstore::store::ensure_store_id;
use kv::raftstore::store_commands::StoreCommands;
use kv::raftstore::{RaftEnvelope, RaftRouter, Store, StoreConfig, StoreResolver, Transport};
use kv::server::TxnService;
use kv::{TxnClient, TxnOptions};

use scheduler::{ClusterApi, SchedulerClient, Store as StoreMeta};
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::config::NodeConfig;

/// How long a node waits for the scheduler at startup.
const SCHEDULER_WAIT: Duration = Duration::from_secs(30);

/// How long the SQL gateway's commands keep retrying (leader changes, a node down).
const ROUTING_TIMEOUT: Duration = Duration::from_secs(20);

/// Store addresses, looked up in the scheduler on every (re)connection.
struct SchedulerResolver(Arc<dyn ClusterApi>);

impl StoreResolver for SchedulerResolver {
    fn address(&self, store_id: u64) -> Option<String> {
        self.0
            .get_store(store_id)
            .ok()
            .flatten()
            .map(|store| store.address)
    }
}

/// The store's router, set once the store exists (the transport is created before it).
#[derive(Default)]
struct LateRouter(OnceLock<Arc<dyn RaftRouter>>);

impl RaftRouter for LateRouter {
    fn deliver(&self, envelope: RaftEnvelope) {
        if let Some(router) = self.0.get() {
            router.deliver(envelope);
        }
    }

    fn report_unreachable(&self, region_id: u64, to_peer_id: u64) {
        if let Some(router) = self.0.get() {
            router.report_unreachable(region_id, to_peer_id);
        }
    }

    fn report_snapshot(&self, region_id: u64, to_peer_id: u64, success: bool) {
        if let Some(router) = self.0.get() {
            router.report_snapshot(region_id, to_peer_id, success);
        }
    }
}

/// Runs `f` on the blocking pool (the scheduler client and the store block).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("startup task failed: {e}"))?
}

pub async fn run(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let engine = Arc::new(crate::data_dir::open_store(&config.data_dir)?);
    let runtime = tokio::runtime::Handle::current();
    let scheduler = Arc::new(
        SchedulerClient::connect_lazy(&format!("http://{}", config.scheduler), runtime.clone())
            .map_err(|e| format!("bad scheduler address {}: {e}", config.scheduler))?,
    );
    let cluster: Arc<dyn ClusterApi> = scheduler.clone();

    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and delayed
    // acknowledgements add tens of milliseconds to every call.
    let grpc = TcpIncoming::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?
        .with_nodelay(Some(true));
    let grpc_address = grpc.local_addr().map_err(|e| e.to_string())?;
    let pg = TcpListener::bind(config.pg_listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.pg_listen))?;
    let pg_address = pg.local_addr().map_err(|e| e.to_string())?;

    let store_id = {
        let (engine, cluster) = (Arc::clone(&engine), Arc::clone(&cluster));
        let scheduler_address = config.scheduler;
        blocking(move || {
            let started = Instant::now();
            loop {
                match ensure_store_id(engine.as_ref(), cluster.as_ref()) {
                    Ok(id) => return Ok(id),
                    Err(e) if started.elapsed() < SCHEDULER_WAIT => {
                        info!(error = %e, "waiting for the scheduler");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    Err(e) => {
                        return Err(format!(
                            "cannot reach the scheduler at {scheduler_address}: {e}"
                        ));
                    }
                }
            }
        })
        .await?
    };

    let router = Arc::new(LateRouter::default());
    let transport: Arc<dyn Transport> = Arc::new(GrpcTransport::new(
        Arc::new(SchedulerResolver(Arc::clone(&cluster))),
        router.clone(),
        runtime.clone(),
    ));
    let meta = StoreMeta {
        id: store_id,
        address: grpc_address.to_string(),
        pg_address: pg_address.to_string(),
    };
    let store_config = StoreConfig {
        split: SplitConfig::by_size(config.regions.split_size.0, config.regions.max_size.0),
        ..StoreConfig::default()
    };
    let store = {
        let (engine, cluster) = (Arc::clone(&engine), Arc::clone(&cluster));
        blocking(move || {
            Store::start(engine, meta, cluster, transport, store_config)
                .map(Arc::new)
                .map_err(|e| format!("cannot start the store: {e}"))
        })
        .await?
    };
    let _ = router.0.set(store.router());

    // The gRPC services: KV commands for other gateways, raft messages for other stores.
    let (stop_streams, streams_stopped) = tokio::sync::watch::channel(false);
    let store_commands = Arc::new(StoreCommands::new(Arc::clone(&store)));
    let kv_service = TxnService::routed(store_commands.clone());
    let raft_service = RaftService::new(store.router()).with_stop(streams_stopped);
    let (grpc_done, grpc_shutdown) = tokio::sync::oneshot::channel::<()>();
    let grpc_server = tokio::spawn(
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(20)))
            .add_service(kv_service.into_server())
            .add_service(raft_service.into_server())
            .serve_with_incoming_shutdown(grpc, async {
                let _ = grpc_shutdown.await;
            }),
    );

    // The SQL gateway.
    let stores: Arc<dyn StoreConnector> = Arc::new(LocalFirst {
        local_id: store_id,
        local: store_commands.clone(),
        remote: Arc::new(GrpcStores::new(Arc::clone(&cluster), runtime.clone())),
    });
    let commands = Arc::new(RoutedCommands::new(
        Arc::clone(&cluster),
        Arc::clone(&stores),
        ROUTING_TIMEOUT,
    ));
    // Lock waits go to the cluster's deadlock detector, wherever it runs, through a routing
    // client that gives up soon (a wait goes on without it).
    let reports: Arc<dyn kv::txn::TxnCommands> = Arc::new(RoutedCommands::new(
        Arc::clone(&cluster),
        Arc::clone(&stores),
        kv::txn::detector::REPORT_TIMEOUT,
    ));
    store_commands.report_deadlocks_through(Arc::downgrade(&reports));
    let client = TxnClient::new(commands, scheduler, TxnOptions::default());
    let database = sql::Database::new(Arc::new(client))
        .with_regions(Arc::new(SchedulerRegions::new(Arc::clone(&cluster))))
        .with_txn_mode(config.txn_mode);
    info!(
        store_id,
        %grpc_address,
        %pg_address,
        data_dir = %config.data_dir.display(),
        "RegionDB node is up"
    );
    println!(
        "RegionDB node {store_id} is ready (gRPC on {grpc_address}). Connect with: psql -h {} -p {} -U postgres",
        pg_address.ip(),
        pg_address.port()
    );
    let served = pgserver::serve(pg, database, shutdown).await;

    let _ = stop_streams.send(true);
    let _ = grpc_done.send(());
    let _ = grpc_server.await;
    blocking(move || {
        store.stop();
        Ok(())
    })
    .await?;
    served.map_err(|e| format!("PostgreSQL server failed: {e}"))?;
    info!("RegionDB node stopped");
    Ok(())
}
