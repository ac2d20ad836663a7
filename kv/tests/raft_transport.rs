//! Raft messages between stores over the gRPC transport: real servers on loopback ports, a
//! router that records what it is given, and sends from plain threads.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use kv::raftstore::grpc_transport::{GrpcTransport, GrpcTransportConfig, RaftService};
use kv::raftstore::transport::{RaftEnvelope, RaftRouter, StoreResolver, Transport};
use proto::metapb::{Peer as PeerMeta, RegionEpoch};
use raft::{ConfState, Entry, Message, MessageBody, Snapshot, SnapshotMeta};
use tokio::runtime::Runtime;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Recorder {
    delivered: Mutex<Vec<RaftEnvelope>>,
    unreachable: Mutex<Vec<(u64, u64)>>,
    snapshots: Mutex<Vec<(u64, u64, bool)>>,
}

impl RaftRouter for Recorder {
    fn deliver(&self, envelope: RaftEnvelope) {
        self.delivered.lock().unwrap().push(envelope);
    }
    fn report_unreachable(&self, region_id: u64, to_peer_id: u64) {
        self.unreachable
            .lock()
            .unwrap()
            .push((region_id, to_peer_id));
    }
    fn report_snapshot(&self, region_id: u64, to_peer_id: u64, success: bool) {
        self.snapshots
            .lock()
            .unwrap()
            .push((region_id, to_peer_id, success));
    }
}

impl Recorder {
    fn delivered(&self) -> Vec<RaftEnvelope> {
        self.delivered.lock().unwrap().clone()
    }
    fn delivered_count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
    fn unreachable(&self) -> Vec<(u64, u64)> {
        self.unreachable.lock().unwrap().clone()
    }
    fn snapshots(&self) -> Vec<(u64, u64, bool)> {
        self.snapshots.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Resolver(Mutex<HashMap<u64, String>>);

impl StoreResolver for Resolver {
    fn address(&self, store_id: u64) -> Option<String> {
        self.0.lock().unwrap().get(&store_id).cloned()
    }
}

impl Resolver {
    fn set(&self, store_id: u64, address: impl ToString) {
        self.0.lock().unwrap().insert(store_id, address.to_string());
    }
}

/// A store's `RaftService` on its own runtime: dropping it kills the server and every
/// connection to it, like a crashed process.
struct StoreServer {
    address: SocketAddr,
    _runtime: Runtime,
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn start_server(
    router: Arc<Recorder>,
    bind: SocketAddr,
    service: Option<RaftService>,
) -> StoreServer {
    let runtime = runtime();
    // A restarted server binds the port its predecessor just released.
    let started = Instant::now();
    let incoming = loop {
        match runtime.block_on(async { TcpIncoming::bind(bind) }) {
            Ok(incoming) => break incoming,
            Err(e) if started.elapsed() < DEADLINE => {
                eprintln!("bind {bind}: {e}; retrying");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("bind {bind}: {e}"),
        }
    };
    let address = incoming.local_addr().expect("address");
    let service = service.unwrap_or_else(|| RaftService::new(router));
    runtime.spawn(
        Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(incoming),
    );
    StoreServer {
        address,
        _runtime: runtime,
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Polls `condition` until it holds or the deadline passes.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn peer(store_id: u64) -> PeerMeta {
    PeerMeta {
        id: store_id * 100,
        store_id,
        learner: false,
    }
}

fn envelope(region_id: u64, from_store: u64, to_store: u64, body: MessageBody) -> RaftEnvelope {
    RaftEnvelope {
        region_id,
        from_peer: peer(from_store),
        to_peer: peer(to_store),
        epoch: RegionEpoch {
            conf_ver: 2,
            version: 3,
        },
        start_key: b"a".to_vec(),
        end_key: b"z".to_vec(),
        message: Message {
            from: from_store * 100,
            to: to_store * 100,
            term: 4,
            body,
        },
        is_tombstone: false,
        hibernate: false,
    }
}

/// The i-th message of a sequence: varied bodies, each telling its position.
fn numbered(i: u64, from_store: u64, to_store: u64) -> RaftEnvelope {
    let body = match i % 4 {
        0 => MessageBody::Append {
            prev_index: i,
            prev_term: 4,
            entries: vec![Entry::normal(4, i + 1, format!("entry {i}").into_bytes())],
            commit: i,
        },
        1 => MessageBody::Heartbeat {
            commit: i,
            context: if i % 8 == 1 { None } else { Some(vec![]) },
        },
        2 => MessageBody::AppendResponse {
            reject: false,
            index: i,
            hint_index: 0,
            hint_term: 0,
        },
        _ => MessageBody::ReadIndex {
            context: i.to_be_bytes().to_vec(),
        },
    };
    envelope(1 + i % 3, from_store, to_store, body)
}

/// A client runtime and a transport for store `store_id`, sending with `resolver`.
struct Sender {
    transport: GrpcTransport,
    router: Arc<Recorder>,
    _runtime: Runtime,
}

fn sender(resolver: Arc<Resolver>, config: GrpcTransportConfig) -> Sender {
    let runtime = runtime();
    let router = Arc::new(Recorder::default());
    let transport =
        GrpcTransport::with_config(resolver, router.clone(), runtime.handle().clone(), config);
    Sender {
        transport,
        router,
        _runtime: runtime,
    }
}

#[test]
fn messages_arrive_in_order_and_intact_both_ways() {
    let routers = [Arc::new(Recorder::default()), Arc::new(Recorder::default())];
    let servers = [
        start_server(routers[0].clone(), any_port(), None),
        start_server(routers[1].clone(), any_port(), None),
    ];
    let resolver = Arc::new(Resolver::default());
    resolver.set(1, servers[0].address);
    resolver.set(2, format!("http://{}", servers[1].address));
    let a = Arc::new(sender(resolver.clone(), GrpcTransportConfig::default()));
    let b = Arc::new(sender(resolver, GrpcTransportConfig::default()));

    const COUNT: u64 = 3000;
    // Sent from plain threads, as raft threads do.
    let threads = [(a.clone(), 1, 2), (b.clone(), 2, 1)].map(|(s, from, to)| {
        thread::spawn(move || {
            for i in 0..COUNT {
                s.transport.send(numbered(i, from, to));
            }
        })
    });
    for t in threads {
        t.join().unwrap();
    }
    for (router, from, to) in [(&routers[1], 1, 2), (&routers[0], 2, 1)] {
        eventually("all messages", || {
            router.delivered_count() >= COUNT as usize
        });
        let expected: Vec<_> = (0..COUNT).map(|i| numbered(i, from, to)).collect();
        assert!(router.delivered() == expected, "messages lost or reordered");
    }
    assert!(a.router.unreachable().is_empty());
    assert!(b.router.unreachable().is_empty());
}

fn snapshot_envelope(region_id: u64, size: usize) -> RaftEnvelope {
    let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    envelope(
        region_id,
        1,
        2,
        MessageBody::Snapshot {
            snapshot: Snapshot {
                meta: SnapshotMeta {
                    index: 1000,
                    term: 4,
                    conf_state: ConfState::with_voters([100, 200, 300]),
                },
                data,
            },
        },
    )
}

#[test]
fn a_large_snapshot_arrives_whole() {
    let router = Arc::new(Recorder::default());
    // The receiver takes no gRPC message over 2 MiB, so 5 MiB only arrive in chunks.
    let small_messages = RaftService::new(router.clone());
    let runtime = runtime();
    let incoming = runtime
        .block_on(async { TcpIncoming::bind(any_port()) })
        .expect("bind");
    let address = incoming.local_addr().unwrap();
    runtime.spawn(
        Server::builder()
            .add_service(
                small_messages
                    .into_server()
                    .max_decoding_message_size(2 << 20),
            )
            .serve_with_incoming(incoming),
    );
    let resolver = Arc::new(Resolver::default());
    resolver.set(2, address);
    let a = sender(resolver, GrpcTransportConfig::default());

    let snapshot = snapshot_envelope(9, 5 << 20);
    a.transport.send(snapshot.clone());
    eventually("the snapshot report", || !a.router.snapshots().is_empty());
    assert_eq!(a.router.snapshots(), vec![(9, 200, true)]);
    eventually("the snapshot", || router.delivered_count() == 1);
    assert!(
        router.delivered()[0] == snapshot,
        "snapshot arrived damaged"
    );

    // Raft messages still flow beside it.
    a.transport.send(numbered(0, 1, 2));
    eventually("a message after the snapshot", || {
        router.delivered_count() == 2
    });
}

#[test]
fn oversized_and_unsendable_snapshots_are_reported_failed() {
    let router = Arc::new(Recorder::default());
    let limited = RaftService::new(router.clone()).with_max_snapshot_size(1 << 20);
    let server = start_server(router.clone(), any_port(), Some(limited));
    let resolver = Arc::new(Resolver::default());
    resolver.set(2, server.address);
    let a = sender(resolver.clone(), GrpcTransportConfig::default());

    a.transport.send(snapshot_envelope(5, 3 << 20));
    eventually("the snapshot report", || !a.router.snapshots().is_empty());
    assert_eq!(a.router.snapshots(), vec![(5, 200, false)]);
    assert_eq!(router.delivered_count(), 0);

    // Within the limit it is taken.
    a.transport.send(snapshot_envelope(6, 1 << 20));
    eventually("the second report", || a.router.snapshots().len() == 2);
    assert_eq!(a.router.snapshots()[1], (6, 200, true));
    assert_eq!(router.delivered_count(), 1);

    // To a store without an address.
    let mut to_nowhere = snapshot_envelope(7, 10);
    to_nowhere.to_peer = peer(3);
    a.transport.send(to_nowhere);
    eventually("the third report", || a.router.snapshots().len() == 3);
    assert_eq!(a.router.snapshots()[2], (7, 300, false));
}

#[test]
fn unreachable_stores_are_reported_without_blocking() {
    // A port nobody listens on: bind one, then let it go.
    let closed = std::net::TcpListener::bind(any_port())
        .unwrap()
        .local_addr()
        .unwrap();
    // A store that accepts connections and then hangs: only keep-alive notices.
    let hung = std::net::TcpListener::bind(any_port()).unwrap();
    let resolver = Arc::new(Resolver::default());
    resolver.set(4, closed);
    resolver.set(5, hung.local_addr().unwrap());
    let config = GrpcTransportConfig {
        connect_timeout: Duration::from_millis(300),
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(300),
        ..GrpcTransportConfig::default()
    };
    let a = sender(resolver, config);
    let heartbeat = |store| {
        envelope(
            store,
            1,
            store,
            MessageBody::Heartbeat {
                commit: 1,
                context: None,
            },
        )
    };
    let reports = |store| {
        a.router
            .unreachable()
            .iter()
            .filter(|&&report| report == (store, store * 100))
            .count()
    };

    // Store 3 has no address at all; store 4's refuses connections. Every message is reported.
    for store in [3, 4] {
        for _ in 0..100 {
            a.transport.send(heartbeat(store));
        }
    }
    for store in [3, 4] {
        eventually("unreachable reports", || reports(store) == 100);
    }

    // Messages written into the hung connection are lost silently; once keep-alive gives up
    // on it, the following ones are reported. Sending never waits on the hung store.
    eventually("unreachable reports from the hung store", || {
        a.transport.send(heartbeat(5));
        reports(5) > 0
    });
    drop(hung);
}

#[test]
fn messages_flow_again_after_the_receiver_restarts() {
    let router = Arc::new(Recorder::default());
    let server = start_server(router.clone(), any_port(), None);
    let address = server.address;
    let resolver = Arc::new(Resolver::default());
    resolver.set(2, address);
    let a = sender(resolver, GrpcTransportConfig::default());

    a.transport.send(numbered(0, 1, 2));
    eventually("the first message", || router.delivered_count() == 1);

    // The receiver crashes: messages are reported unreachable from now on.
    drop(server);
    let mut i = 1;
    eventually("an unreachable report", || {
        a.transport.send(numbered(i, 1, 2));
        i += 1;
        !a.router.unreachable().is_empty()
    });

    // It comes back on the same address, with fresh state.
    let router = Arc::new(Recorder::default());
    let _server = start_server(router.clone(), address, None);
    eventually("a message to the restarted store", || {
        a.transport.send(numbered(i, 1, 2));
        i += 1;
        router.delivered_count() > 0
    });
    // Once a message got through, the stream is up again and everything arrives in order
    // (behind, perhaps, a few of the probes above that were still in flight).
    let expected: Vec<_> = (i..i + 500).map(|j| numbered(j, 1, 2)).collect();
    for message in &expected {
        a.transport.send(message.clone());
    }
    eventually("the messages after the restart", || {
        router.delivered().last() == expected.last()
    });
    assert!(
        router.delivered().ends_with(&expected),
        "messages lost or reordered"
    );
}

#[test]
fn a_stop_signal_lets_the_server_shut_down_gracefully() {
    let router = Arc::new(Recorder::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runtime = runtime();
    let incoming = runtime
        .block_on(async { TcpIncoming::bind(any_port()) })
        .expect("bind");
    let address = incoming.local_addr().unwrap();
    let mut shutdown = stopped.clone();
    let server = runtime.spawn(
        Server::builder()
            .add_service(
                RaftService::new(router.clone())
                    .with_stop(stopped)
                    .into_server(),
            )
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = shutdown.wait_for(|stopped| *stopped).await;
            }),
    );
    let resolver = Arc::new(Resolver::default());
    resolver.set(2, address);
    let a = sender(resolver, GrpcTransportConfig::default());
    a.transport.send(numbered(0, 1, 2));
    eventually("a message", || router.delivered_count() == 1);

    // The sender's stream stays open; without the stop signal the shutdown would wait for it.
    stop.send_replace(true);
    eventually("the server to stop", || server.is_finished());
    let served = runtime.block_on(server).expect("server task");
    assert!(served.is_ok(), "{served:?}");
}
