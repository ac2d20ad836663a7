//! The cluster metadata over gRPC: a real `SchedulerService` on a loopback port, used through
//! `SchedulerClient` as a `ClusterApi` from a plain thread, as a store would.

use std::sync::Arc;

use proto::scheduler::{ChangePeerType, RegionHeartbeatRequest, StoreHeartbeatRequest};
use scheduler::service::SchedulerService;
use scheduler::{
    Cluster, ClusterApi, ClusterConfig, ClusterError, IdAllocator, Peer, Region, RegionEpoch,
    SchedulerClient, Store, TimestampOracle,
};
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Serves a scheduler with its cluster state in `dir`; returns its endpoint.
fn serve(runtime: &tokio::runtime::Runtime, dir: &std::path::Path) -> String {
    let cluster = Cluster::open(dir, ClusterConfig::default()).unwrap();
    let service = SchedulerService::with_cluster(
        Arc::new(TimestampOracle::open(dir).unwrap()),
        Arc::new(IdAllocator::open(dir).unwrap()),
        Arc::new(cluster),
    );
    let incoming = runtime
        .block_on(async { TcpIncoming::bind("127.0.0.1:0".parse().unwrap()) })
        .unwrap();
    let address = incoming.local_addr().unwrap();
    runtime.spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming),
    );
    format!("http://{address}")
}

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 30000 + id),
        pg_address: String::new(),
    }
}

#[test]
fn bootstrap_register_and_get_a_new_replica_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let endpoint = serve(&runtime, dir.path());
    let client = SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap();
    let api: &dyn ClusterApi = &client;

    assert!(!api.is_bootstrapped().unwrap());
    assert_eq!(api.get_region(b"k").unwrap(), None);

    // The first store bootstraps with ids from the scheduler.
    let store_id = api.alloc_id().unwrap();
    let region_id = api.alloc_id().unwrap();
    let peer_id = api.alloc_id().unwrap();
    assert!(store_id < region_id && region_id < peer_id);
    let leader = Peer {
        id: peer_id,
        store_id,
        learner: false,
    };
    let region = Region {
        id: region_id,
        start_key: vec![],
        end_key: vec![],
        epoch: Some(RegionEpoch {
            conf_ver: 1,
            version: 1,
        }),
        peers: vec![leader],
    };
    assert!(api.bootstrap(store(store_id), region.clone()).unwrap());
    assert!(
        !api.bootstrap(store(store_id), region.clone()).unwrap(),
        "a second bootstrap loses"
    );
    assert!(api.is_bootstrapped().unwrap());

    // Invalid input comes back as Invalid, not as Unavailable.
    assert!(matches!(
        api.store_heartbeat(StoreHeartbeatRequest {
            store_id: 999,
            ..StoreHeartbeatRequest::default()
        }),
        Err(ClusterError::Invalid(_))
    ));

    let second = api.alloc_id().unwrap();
    api.put_store(store(second)).unwrap();
    assert_eq!(api.get_store(second).unwrap(), Some(store(second)));
    assert_eq!(api.get_store(12345).unwrap(), None);
    api.store_heartbeat(StoreHeartbeatRequest {
        store_id,
        region_count: 1,
        leader_count: 1,
    })
    .unwrap();

    // One region, one replica, two up stores: the checker adds a learner on the new store.
    let heartbeat = RegionHeartbeatRequest {
        region: Some(region.clone()),
        leader: Some(leader),
        term: 1,
        ..RegionHeartbeatRequest::default()
    };
    let response = api.region_heartbeat(heartbeat.clone()).unwrap();
    assert_eq!(response.region_id, region_id);
    assert_eq!(response.stale, "");
    let change = response.change_peer.expect("a replica is missing");
    assert_eq!(
        change.change_type,
        ChangePeerType::ChangePeerAddLearner as i32
    );
    let learner = change.peer.unwrap();
    assert_eq!(learner.store_id, second);
    assert!(learner.learner);
    assert!(learner.id > second, "a fresh id");
    // The same operation (same peer id) until the leader carried it out.
    let again = api.region_heartbeat(heartbeat).unwrap();
    assert_eq!(again.change_peer, Some(change));

    assert_eq!(
        api.get_region(b"any key").unwrap(),
        Some((region.clone(), Some(leader)))
    );
    assert_eq!(
        api.get_region_by_id(region_id).unwrap(),
        Some((region, Some(leader)))
    );
    assert_eq!(api.get_region_by_id(region_id + 1000).unwrap(), None);
}

#[test]
fn an_unreachable_scheduler_is_unavailable_not_a_hang() {
    let runtime = runtime();
    // Nothing listens on port 1.
    let client =
        SchedulerClient::connect_lazy("http://127.0.0.1:1", runtime.handle().clone()).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        client.is_bootstrapped(),
        Err(ClusterError::Unavailable(_))
    ));
    assert!(matches!(
        client.get_region(b"k"),
        Err(ClusterError::Unavailable(_))
    ));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn a_scheduler_that_never_answers_is_unavailable_after_the_deadline() {
    let runtime = runtime();
    // Accepts connections (the kernel's backlog) but never speaks HTTP/2.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let client = SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(
        client.alloc_id(),
        Err(ClusterError::Unavailable(_))
    ));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= scheduler_api::client::CALL_TIMEOUT / 2
            && elapsed < std::time::Duration::from_secs(10),
        "{elapsed:?}"
    );
}

#[test]
fn concurrent_callers_get_increasing_unique_timestamps_and_ids() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = runtime();
    let endpoint = serve(&runtime, dir.path());
    let client =
        Arc::new(SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap());
    scheduler_api::testing::assert_concurrent_callers_get_unique_increasing_timestamps(
        client.as_ref(),
        4,
        200,
    );
    let first = runtime.block_on(client.alloc_ids(10)).unwrap();
    let second = runtime.block_on(client.alloc_ids(1)).unwrap();
    assert!(second >= first + 10);
}
