//! `regiondb scheduler`: the scheduler as its own process, serving timestamps, IDs and the
//! cluster metadata (stores, regions, heartbeats, the replica checker) over gRPC. Its state
//! (the high-water marks and the cluster's stores and regions) lives in its data directory,
//! so timestamps and IDs keep increasing and the cluster is remembered across restarts.

use std::future::Future;
use std::sync::Arc;

use scheduler::service::SchedulerService;
use scheduler::{Cluster, ClusterConfig, IdAllocator, TimestampOracle};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::info;

use crate::config::SchedulerConfig;

pub async fn run(
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let tso = TimestampOracle::open(&config.data_dir).map_err(|e| e.to_string())?;
    let ids = IdAllocator::open(&config.data_dir).map_err(|e| e.to_string())?;
    let mut cluster_config = ClusterConfig::default();
    if let Some(down) = config.max_store_down_time {
        cluster_config.replace_down_after = down;
    }
    config.merge.apply(&mut cluster_config.merge);
    let cluster = Cluster::open(&config.data_dir, cluster_config).map_err(|e| e.to_string())?;
    // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and delayed
    // acknowledgements add tens of milliseconds to every call.
    let incoming = TcpIncoming::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?
        .with_nodelay(Some(true));
    let address = incoming.local_addr().map_err(|e| e.to_string())?;
    info!(data_dir = %config.data_dir.display(), %address, "RegionDB scheduler is up");
    println!("RegionDB scheduler is ready on {address}");
    let service = SchedulerService::with_cluster(Arc::new(tso), Arc::new(ids), Arc::new(cluster));
    Server::builder()
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| format!("scheduler server failed: {e}"))?;
    info!("RegionDB scheduler stopped");
    Ok(())
}
