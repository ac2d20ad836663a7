//! Driving peers: one thread per peer, fed through a channel, ticking on a timer.
//!
//! # Threading model (first version)
//!
//! Each [`Peer`] is owned by one thread that takes messages from its channel (raft messages
//! from the transport, writes and reads from the store's commands), ticks it every `tick`,
//! and after each batch of input handles its Ready: persist, send through the [`Transport`],
//! apply, complete callbacks. Callers block on their callback's answer with a timeout, so a
//! region that cannot reach a quorum fails requests with an error instead of hanging them.
//!
//! Not yet: batching the Readies of many peers into one write and one fsync, a pool of
//! threads instead of one per peer, and a gRPC transport (an in-process one is here).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::Message;
use tracing::warn;

use super::{Callback, Peer, ReadCallback};
use crate::error::{KvError, KvResult};
use crate::storage::{Engine, WriteBatch};
use crate::txn::Replication;

/// Applied entries a peer keeps in its log before compacting (raft log GC).
pub const RAFT_LOG_GC_LIMIT: u64 = 1000;

/// Input of a peer's thread.
pub enum PeerMsg {
    Raft(Message),
    Write(WriteBatch, Callback),
    ReadIndex(ReadCallback),
    Campaign,
    Stop,
}

/// Carries raft messages between the peers of a region.
pub trait Transport: Send + Sync + 'static {
    /// Best effort: a message that cannot be delivered is dropped (Raft retries).
    fn send(&self, region_id: u64, message: Message);
}

/// A handle to a peer's thread; also the region replica's [`Replication`] for a `TxnStore`.
#[derive(Clone)]
pub struct PeerHandle {
    region_id: u64,
    sender: Sender<PeerMsg>,
    /// How long a caller waits for a write to apply or a read to be confirmed.
    timeout: Duration,
}

impl PeerHandle {
    pub fn send(&self, message: PeerMsg) -> bool {
        self.sender.send(message).is_ok()
    }

    fn wait<T: Send + 'static>(
        &self,
        request: impl FnOnce(Box<dyn FnOnce(KvResult<T>) + Send>) -> PeerMsg,
    ) -> KvResult<T> {
        let (answer, result) = mpsc::channel();
        let callback = Box::new(move |r| {
            let _ = answer.send(r);
        });
        if !self.send(request(callback)) {
            return Err(KvError::Unavailable(format!(
                "region {} replica stopped",
                self.region_id
            )));
        }
        result.recv_timeout(self.timeout).unwrap_or_else(|_| {
            Err(KvError::Unavailable(format!(
                "region {}: no answer within {:?}",
                self.region_id, self.timeout
            )))
        })
    }
}

impl Replication for PeerHandle {
    fn read_barrier(&self) -> KvResult<()> {
        self.wait(PeerMsg::ReadIndex).map(drop)
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        self.wait(|callback| PeerMsg::Write(batch, callback))
    }
}

/// A running peer thread.
pub struct PeerThread {
    pub handle: PeerHandle,
    thread: Option<JoinHandle<()>>,
}

impl PeerThread {
    /// Stops the thread (the peer's persisted state stays in its engine).
    pub fn stop(mut self) {
        self.handle.send(PeerMsg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for PeerThread {
    fn drop(&mut self) {
        self.handle.send(PeerMsg::Stop);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts driving `peer` of `region_id` on its own thread.
pub fn spawn_peer<E: Engine>(
    mut peer: Peer<E>,
    region_id: u64,
    transport: Arc<dyn Transport>,
    tick: Duration,
    timeout: Duration,
) -> PeerThread {
    let (sender, inbox) = mpsc::channel::<PeerMsg>();
    let thread = std::thread::spawn(move || {
        let mut next_tick = Instant::now() + tick;
        let mut known_leader = peer.leader();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match inbox.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Take everything queued, so one Ready covers it all.
            for message in first
                .into_iter()
                .chain(std::iter::from_fn(|| inbox.try_recv().ok()))
            {
                match message {
                    PeerMsg::Raft(m) => peer.step(m),
                    PeerMsg::Write(batch, callback) => peer.propose_write(batch, callback),
                    PeerMsg::ReadIndex(callback) => peer.read_index(callback),
                    PeerMsg::Campaign => peer.campaign(),
                    PeerMsg::Stop => return,
                }
            }
            if Instant::now() >= next_tick {
                peer.tick();
                next_tick += tick;
            }
            match peer.handle_ready().and_then(|messages| {
                peer.maybe_compact_log(RAFT_LOG_GC_LIMIT)?;
                Ok(messages)
            }) {
                Ok(messages) => {
                    for message in messages {
                        transport.send(region_id, message);
                    }
                }
                Err(e) => {
                    // Storage failure: stop this replica rather than diverge from what is
                    // persisted. Pending callers time out.
                    warn!(region_id, error = %e, "peer stopped: storage failure");
                    return;
                }
            }
            // Reads waiting on a previous leader's confirmation may never get it.
            if peer.leader() != known_leader {
                peer.fail_pending_reads();
                known_leader = peer.leader();
            }
        }
    });
    PeerThread {
        handle: PeerHandle {
            region_id,
            sender,
            timeout,
        },
        thread: Some(thread),
    }
}

/// An in-process transport: peers register their handles; cut links drop messages (tests).
#[derive(Default)]
pub struct LocalTransport {
    peers: Mutex<BTreeMap<u64, Sender<PeerMsg>>>,
    /// Peers whose messages are dropped both ways.
    isolated: Mutex<Vec<u64>>,
}

impl LocalTransport {
    pub fn register(&self, peer_id: u64, handle: &PeerHandle) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer_id, handle.sender.clone());
    }

    pub fn unregister(&self, peer_id: u64) {
        self.peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer_id);
    }

    pub fn isolate(&self, peer_id: u64) {
        self.isolated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(peer_id);
    }

    pub fn heal(&self) {
        self.isolated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Transport for LocalTransport {
    fn send(&self, _region_id: u64, message: Message) {
        let isolated = self.isolated.lock().unwrap_or_else(|e| e.into_inner());
        if isolated.contains(&message.from) || isolated.contains(&message.to) {
            return;
        }
        drop(isolated);
        let peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sender) = peers.get(&message.to) {
            let _ = sender.send(PeerMsg::Raft(message));
        }
    }
}
