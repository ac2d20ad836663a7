//! Raft messages between stores over gRPC: the sending side ([`GrpcTransport`], a
//! [`Transport`]) and the receiving side ([`RaftService`], the `regiondb.raftpb.RaftTransport`
//! service, which hands what arrives to the store's [`RaftRouter`]).
//!
//! # Streams
//!
//! Each store keeps one long-lived client stream (`Raft`) to every store it sends to, created
//! lazily on the first message for that store and carrying the messages of all regions. It is
//! fed by a bounded queue that [`Transport::send`] fills without blocking (so raft threads that
//! are not tokio threads can call it); one task per target store takes messages from the queue
//! and writes them to the stream. The receiver decodes each message and calls
//! [`RaftRouter::deliver`] in arrival order, on the server's tokio threads: delivering must
//! not block (hand the message to the peer's queue and return).
//!
//! Snapshots can be large, and a large message would hold up every other region's heartbeats
//! behind it, so a message whose body is a snapshot goes on its own `Snapshot` call, in its own
//! task and on its own connection: the first chunk carries the envelope with empty snapshot
//! data, the following chunks the data, [`SNAPSHOT_CHUNK_SIZE`] bytes at a time. The receiver
//! reassembles the data and delivers the whole message once the stream has ended. When the
//! receiver has answered (or the call has failed) the sender calls
//! [`RaftRouter::report_snapshot`]; success means the receiving store took the snapshot, not
//! that the peer applied it.
//!
//! # Ordering
//!
//! Per pair of stores, messages on the `Raft` stream arrive in the order `send` was called, with
//! gaps where messages were lost (a broken stream, a full queue). Across a reconnection the order
//! still holds: the old stream is gone before the new one starts. A snapshot travels separately
//! and can overtake, or be overtaken by, the messages sent around it. Raft is fine with all of
//! this: it tolerates lost, duplicated and reordered messages; in-order delivery only makes
//! progress quicker.
//!
//! # Failures
//!
//! Delivery is best effort and the sending peer is told when a message is known to be lost
//! ([`RaftRouter::report_unreachable`]), so it can fall back to probing instead of waiting for an
//! answer that will not come:
//! - the queue to a store is full (the store is slow or gone): the new message is dropped;
//! - the store's address is unknown, the connection cannot be made within the connect timeout,
//!   or the stream breaks: the message in hand is dropped, and so is every message that arrives
//!   while the task backs off (100 ms doubling to 2 s). After the back-off the task waits for the
//!   next message, resolves the store's address again (a store may have moved, or restarted on
//!   the same address) and reconnects. A store nobody sends to costs nothing.
//!
//! Messages already written to a stream that then breaks (at most the stream's small buffer and
//! what the connection has in flight) are lost without a report. HTTP/2 keep-alive pings detect
//! a peer that vanished without closing its connection.
//!
//! On the receiving side a message that does not decode is logged and skipped; the stream goes
//! on. A snapshot stream is refused (and nothing delivered) when its first chunk carries no
//! message, its message is not a snapshot, or its data grows beyond the configured maximum
//! (1 GiB by default).
//!
//! A server's graceful shutdown waits for open streams, and the `Raft` streams of other stores
//! never end by themselves: give the service a stop signal ([`RaftService::with_stop`]) and
//! raise it when the node shuts down, so the streams end and the server can stop.
//!
//! # Left out
//!
//! No flow control beyond the queue bound (no batching into larger messages, no limit on
//! concurrent snapshot sends), no compression, no TLS or authentication: any process that can
//! reach the port can deliver raft messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use proto::raftpb as pb;
use proto::raftpb::raft_transport_client::RaftTransportClient;
use proto::raftpb::raft_transport_server::{RaftTransport, RaftTransportServer};
use raft::MessageBody;
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tonic::codegen::tokio_stream;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::transport::{RaftEnvelope, RaftRouter, StoreResolver, Transport};
use super::wire;

/// Largest gRPC message either side accepts: bounds one `Append` batch.
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;
/// Snapshot data travels in chunks of this size.
pub const SNAPSHOT_CHUNK_SIZE: usize = 1 << 20;
/// The largest snapshot a [`RaftService`] accepts unless told otherwise.
pub const DEFAULT_MAX_SNAPSHOT_SIZE: usize = 1 << 30;

/// Messages taken from the queue but not yet written to the connection. Small, because they
/// are lost without a report when the stream breaks.
const STREAM_BUFFER: usize = 64;

/// The receiving side: the `RaftTransport` gRPC service of one store.
pub struct RaftService {
    router: Arc<dyn RaftRouter>,
    max_snapshot_size: usize,
    stop: Option<watch::Receiver<bool>>,
}

impl RaftService {
    pub fn new(router: Arc<dyn RaftRouter>) -> Self {
        Self {
            router,
            max_snapshot_size: DEFAULT_MAX_SNAPSHOT_SIZE,
            stop: None,
        }
    }

    /// Refuses snapshots whose data is larger than `bytes`.
    pub fn with_max_snapshot_size(mut self, bytes: usize) -> Self {
        self.max_snapshot_size = bytes;
        self
    }

    /// Ends every open stream (with `UNAVAILABLE`) and refuses new ones once `stop` becomes
    /// true or its sender is dropped, so that a graceful server shutdown can complete.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// The service wrapped for `tonic::transport::Server::add_service`.
    pub fn into_server(self) -> RaftTransportServer<RaftService> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

/// The next message of `stream`, unless the stop signal comes first.
async fn next_message<T>(
    stream: &mut Streaming<T>,
    stop: &mut Option<watch::Receiver<bool>>,
) -> Result<Option<T>, Status> {
    match stop {
        None => stream.message().await,
        Some(stop) => tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => {
                Err(Status::unavailable("the store is shutting down"))
            }
            message = stream.message() => message,
        },
    }
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn raft(
        &self,
        request: Request<Streaming<pb::RaftMessage>>,
    ) -> Result<Response<pb::Done>, Status> {
        let remote = request.remote_addr();
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        while let Some(message) = next_message(&mut stream, &mut stop).await? {
            match wire::envelope_from_pb(message) {
                Ok(envelope) => self.router.deliver(envelope),
                Err(error) => warn!(?remote, %error, "skipping malformed raft message"),
            }
        }
        Ok(Response::new(pb::Done {}))
    }

    async fn snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::Done>, Status> {
        let remote = request.remote_addr();
        let mut stream = request.into_inner();
        let mut stop = self.stop.clone();
        let result = self.receive_snapshot(&mut stream, &mut stop).await;
        match result {
            Ok(envelope) => {
                self.router.deliver(envelope);
                Ok(Response::new(pb::Done {}))
            }
            Err(status) => {
                warn!(?remote, %status, "snapshot stream refused");
                Err(status)
            }
        }
    }
}

impl RaftService {
    async fn receive_snapshot(
        &self,
        stream: &mut Streaming<pb::SnapshotChunk>,
        stop: &mut Option<watch::Receiver<bool>>,
    ) -> Result<RaftEnvelope, Status> {
        let first = next_message(stream, stop)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let message = first
            .message
            .ok_or_else(|| Status::invalid_argument("the first snapshot chunk has no message"))?;
        let mut envelope = wire::envelope_from_pb(message).map_err(Status::invalid_argument)?;
        let MessageBody::Snapshot { snapshot } = &mut envelope.message.body else {
            return Err(Status::invalid_argument(format!(
                "snapshot stream carries a {} message",
                envelope.message.body.name()
            )));
        };
        let mut data = std::mem::take(&mut snapshot.data);
        let mut append = |chunk: Vec<u8>| {
            if data.len().saturating_add(chunk.len()) > self.max_snapshot_size {
                return Err(Status::resource_exhausted(format!(
                    "snapshot of region {} is larger than {} bytes",
                    envelope.region_id, self.max_snapshot_size
                )));
            }
            if data.is_empty() {
                data = chunk;
            } else {
                data.extend_from_slice(&chunk);
            }
            Ok(())
        };
        append(first.data)?;
        while let Some(chunk) = next_message(stream, stop).await? {
            if chunk.message.is_some() {
                return Err(Status::invalid_argument(
                    "a snapshot chunk after the first carries a message",
                ));
            }
            append(chunk.data)?;
        }
        if let MessageBody::Snapshot { snapshot } = &mut envelope.message.body {
            snapshot.data = data;
        }
        Ok(envelope)
    }
}

/// Tunables of [`GrpcTransport`]; the defaults suit a cluster on one network.
#[derive(Clone, Debug)]
pub struct GrpcTransportConfig {
    /// Messages waiting for one store's stream; more are dropped and reported unreachable.
    pub queue_capacity: usize,
    /// How long connecting to a store (TCP and HTTP/2 handshake) may take.
    pub connect_timeout: Duration,
    /// Back-off after a failure, doubling from `backoff_min` up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// HTTP/2 pings find a peer that vanished without closing the connection.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub snapshot_chunk_size: usize,
    pub max_message_size: usize,
}

impl Default for GrpcTransportConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            connect_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(20),
            snapshot_chunk_size: SNAPSHOT_CHUNK_SIZE,
            max_message_size: MAX_MESSAGE_SIZE,
        }
    }
}

/// The sending side: a [`Transport`] over one gRPC stream per target store.
pub struct GrpcTransport {
    context: Arc<Context>,
    runtime: Handle,
    /// The queue of each target store's stream task. Dropping the transport drops the senders,
    /// which ends the tasks.
    queues: Mutex<HashMap<u64, mpsc::Sender<RaftEnvelope>>>,
}

/// What the tasks share. Deliberately not the queues: a task holding its own sender would
/// never see its queue close.
struct Context {
    resolver: Arc<dyn StoreResolver>,
    router: Arc<dyn RaftRouter>,
    config: GrpcTransportConfig,
}

impl GrpcTransport {
    /// `router` is the local store's, to report failures to; tasks run on `runtime`.
    pub fn new(
        resolver: Arc<dyn StoreResolver>,
        router: Arc<dyn RaftRouter>,
        runtime: Handle,
    ) -> Self {
        Self::with_config(resolver, router, runtime, GrpcTransportConfig::default())
    }

    pub fn with_config(
        resolver: Arc<dyn StoreResolver>,
        router: Arc<dyn RaftRouter>,
        runtime: Handle,
        config: GrpcTransportConfig,
    ) -> Self {
        Self {
            context: Arc::new(Context {
                resolver,
                router,
                config,
            }),
            runtime,
            queues: Mutex::new(HashMap::new()),
        }
    }

    fn start_stream(&self, store_id: u64) -> mpsc::Sender<RaftEnvelope> {
        let (sender, receiver) = mpsc::channel(self.context.config.queue_capacity.max(1));
        self.runtime
            .spawn(run_stream(Arc::clone(&self.context), store_id, receiver));
        sender
    }
}

impl Transport for GrpcTransport {
    fn send(&self, envelope: RaftEnvelope) {
        if matches!(envelope.message.body, MessageBody::Snapshot { .. }) {
            self.runtime
                .spawn(send_snapshot(Arc::clone(&self.context), envelope));
            return;
        }
        let (region_id, to_peer_id) = (envelope.region_id, envelope.to_peer.id);
        let store_id = envelope.to_peer.store_id;
        let dropped = {
            let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
            let queue = queues
                .entry(store_id)
                .or_insert_with(|| self.start_stream(store_id));
            match queue.try_send(envelope) {
                Ok(()) => false,
                Err(TrySendError::Full(_)) => true,
                // The task is gone: its runtime was shut down. Start another once; if that
                // runtime is gone too, the new queue is closed as well and the message lost.
                Err(TrySendError::Closed(envelope)) => {
                    let queue = self.start_stream(store_id);
                    let dropped = queue.try_send(envelope).is_err();
                    queues.insert(store_id, queue);
                    dropped
                }
            }
        };
        // Outside the lock: the router may well send again.
        if dropped {
            debug!(store_id, region_id, "raft message dropped: queue full");
            self.context
                .router
                .report_unreachable(region_id, to_peer_id);
        }
    }
}

impl Context {
    fn report_unreachable(&self, envelope: &RaftEnvelope) {
        self.router
            .report_unreachable(envelope.region_id, envelope.to_peer.id);
    }

    /// Resolves the store's address (again: it may have changed) and connects to it.
    async fn connect(&self, store_id: u64) -> Result<RaftTransportClient<Channel>, String> {
        // The resolver may ask the scheduler, synchronously.
        let resolver = Arc::clone(&self.resolver);
        let address = tokio::task::spawn_blocking(move || resolver.address(store_id))
            .await
            .map_err(|e| format!("resolving the address of store {store_id}: {e}"))?
            .ok_or_else(|| format!("no address known for store {store_id}"))?;
        let uri = if address.contains("://") {
            address
        } else {
            format!("http://{address}")
        };
        let config = &self.config;
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad address {uri} of store {store_id}: {e}"))?
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(config.keepalive_interval)
            .keep_alive_timeout(config.keepalive_timeout)
            .keep_alive_while_idle(true);
        // The connect timeout covers TCP only; a peer that accepts but never speaks HTTP/2
        // must not hang the task either.
        let channel = tokio::time::timeout(config.connect_timeout, endpoint.connect())
            .await
            .map_err(|_| format!("connecting to store {store_id} at {uri}: timed out"))?
            .map_err(|e| format!("connecting to store {store_id} at {uri}: {e}"))?;
        Ok(RaftTransportClient::new(channel)
            .max_encoding_message_size(config.max_message_size)
            .max_decoding_message_size(config.max_message_size))
    }
}

/// The task that owns the stream to one store, for as long as the transport lives.
async fn run_stream(context: Arc<Context>, store_id: u64, mut queue: mpsc::Receiver<RaftEnvelope>) {
    let config = &context.config;
    let mut backoff = config.backoff_min;
    let mut failures = 0u32;
    // Connect only when there is something to send: a store nobody talks to costs nothing.
    while let Some(first) = queue.recv().await {
        let error = match context.connect(store_id).await {
            Ok(client) => {
                backoff = config.backoff_min;
                failures = 0;
                match stream_messages(&context, client, first, &mut queue).await {
                    Ok(()) => return,
                    Err(error) => error,
                }
            }
            Err(error) => {
                context.report_unreachable(&first);
                error
            }
        };
        failures += 1;
        if failures == 1 {
            warn!(store_id, %error, ?backoff, "raft stream failed; reconnecting");
        } else {
            debug!(store_id, %error, ?backoff, failures, "raft stream failed again");
        }
        if !drop_for(&context, &mut queue, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// Writes the queue's messages to a new `Raft` stream until the stream breaks (`Err`) or the
/// transport is dropped (`Ok`).
async fn stream_messages(
    context: &Context,
    mut client: RaftTransportClient<Channel>,
    first: RaftEnvelope,
    queue: &mut mpsc::Receiver<RaftEnvelope>,
) -> Result<(), String> {
    let (body, body_receiver) = mpsc::channel(STREAM_BUFFER);
    if let Err(error) = body.try_send(wire::envelope_to_pb(first)) {
        // A fresh channel has room; only a bug gets here.
        return Err(format!("queueing the first message: {error}"));
    }
    let call = client.raft(ReceiverStream::new(body_receiver));
    tokio::pin!(call);
    let broken = |result: Result<Response<pb::Done>, Status>| match result {
        Ok(_) => "the receiver ended the stream".to_string(),
        Err(status) => format!("{}: {}", status.code(), status.message()),
    };
    loop {
        tokio::select! {
            result = &mut call => return Err(broken(result)),
            next = queue.recv() => {
                let Some(envelope) = next else {
                    // The transport is gone: end the stream, letting the receiver take what is
                    // in flight, but do not wait long for an answer.
                    drop(body);
                    let _ = tokio::time::timeout(context.config.connect_timeout, call).await;
                    return Ok(());
                };
                let (region_id, to_peer_id) = (envelope.region_id, envelope.to_peer.id);
                let message = wire::envelope_to_pb(envelope);
                tokio::select! {
                    sent = body.send(message) => {
                        // The stream is closing; the call's result follows.
                        if sent.is_err() {
                            context.router.report_unreachable(region_id, to_peer_id);
                        }
                    }
                    result = &mut call => {
                        context.router.report_unreachable(region_id, to_peer_id);
                        return Err(broken(result));
                    }
                }
            }
        }
    }
}

/// Waits out a back-off, dropping (and reporting) the messages that arrive meanwhile. False if
/// the transport is gone.
async fn drop_for(
    context: &Context,
    queue: &mut mpsc::Receiver<RaftEnvelope>,
    backoff: Duration,
) -> bool {
    let sleep = tokio::time::sleep(backoff);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            _ = &mut sleep => return true,
            next = queue.recv() => match next {
                Some(envelope) => context.report_unreachable(&envelope),
                None => return false,
            },
        }
    }
}

/// Sends one snapshot message on its own `Snapshot` call and reports how it went.
async fn send_snapshot(context: Arc<Context>, mut envelope: RaftEnvelope) {
    let (region_id, to_peer_id) = (envelope.region_id, envelope.to_peer.id);
    let store_id = envelope.to_peer.store_id;
    let data = match &mut envelope.message.body {
        MessageBody::Snapshot { snapshot } => std::mem::take(&mut snapshot.data),
        _ => Vec::new(),
    };
    let size = data.len();
    let result = async {
        let mut client = context.connect(store_id).await?;
        let chunks = snapshot_chunks(
            wire::envelope_to_pb(envelope),
            data,
            context.config.snapshot_chunk_size,
        );
        client
            .snapshot(tokio_stream::iter(chunks))
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))?;
        Ok::<(), String>(())
    }
    .await;
    match &result {
        Ok(()) => debug!(store_id, region_id, to_peer_id, size, "snapshot sent"),
        Err(error) => warn!(store_id, region_id, to_peer_id, size, %error, "snapshot not sent"),
    }
    context
        .router
        .report_snapshot(region_id, to_peer_id, result.is_ok());
}

/// The chunks of a `Snapshot` call: the message (its data taken out), then the data.
fn snapshot_chunks(
    message: pb::RaftMessage,
    data: Vec<u8>,
    chunk_size: usize,
) -> impl Iterator<Item = pb::SnapshotChunk> + Send + 'static {
    let chunk_size = chunk_size.max(1);
    let len = data.len();
    let first = pb::SnapshotChunk {
        message: Some(message),
        data: Vec::new(),
    };
    let rest = (0..len)
        .step_by(chunk_size)
        .map(move |start| pb::SnapshotChunk {
            message: None,
            data: data[start..len.min(start + chunk_size)].to_vec(),
        });
    std::iter::once(first).chain(rest)
}
