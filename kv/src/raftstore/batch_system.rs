//! The batch system: a store's peers run on a fixed pool of poller threads, not a thread each
//! (TiKV's `batch-system`, CockroachDB's raft scheduler).
//!
//! # Shape
//!
//! - Every peer is a state machine ([`Fsm`]) parked in its [`Mailbox`]. Sending to a mailbox
//!   queues the message and, if the mailbox is not already scheduled, puts it on the pool's
//!   ready queue. So a peer is polled only when it has messages, proposals or ticks.
//! - A poller takes a batch of scheduled mailboxes (up to [`MAX_BATCH`]) and polls their
//!   peers in three phases: input (every queued message, then the ticks due), persistence
//!   (each peer adds its Ready's entries, hard state and snapshot to one shared write batch,
//!   written with one synced write: one fsync for the whole batch, merged further with the
//!   other pollers' batches by the store's group-commit writer), and completion (each peer
//!   sends its messages, applies what committed, answers its callers, reports to its store).
//!   A peer with nothing to persist completes before the write, so a read is not held up by
//!   another region's fsync.
//! - A poller waits for its batch's write, so a store runs more pollers than it has cores
//!   (`DriverConfig::pollers`, 8): while some wait for the disk, others take the next peers,
//!   and their writes join the same group commit. (TiKV instead hands the write to I/O
//!   threads and completes the peers when it is done: not done here.)
//! - The clock ([`Pool::tick`]) gives every awake peer one tick per period. A hibernating peer
//!   (see `peer_fsm`) gets one tick every `slow_tick_every` periods, spread over the periods by
//!   region id, and treats it as a slow tick: idle regions cost a few atomic loads per period.
//!
//! A mailbox is scheduled at most once at a time (its `scheduled` flag), so exactly one poller
//! owns a peer while it is polled, and a peer's messages are handled in the order they were
//! sent. After a poll the flag is cleared and the queue checked again, so a message sent
//! meanwhile is never left behind.
//!
//! # Deterministic driving
//!
//! [`BatchSystem::manual`] starts no thread: a test advances the virtual clock with
//! [`BatchSystem::tick`] and runs every scheduled peer on its own thread with
//! [`BatchSystem::poll_until_idle`]. With a transport that queues messages for the test to
//! deliver, a multi-region cluster then runs as a function of its inputs and its seed.
//!
//! The system also holds the store's [`ApplyPool`] (see `apply`): in the completion phase a
//! peer hands its committed writes to the pool's workers instead of writing them itself, so
//! a slow apply holds up neither its batch nor the peer's own ticks and elections. Manual
//! driving runs the pool's tasks too.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::apply::ApplyPool;
use super::driver::PeerMsg;
use super::write_batcher::RaftWriter;
use crate::storage::WriteBatch;

/// Peers a poller takes at once: their Readies share one write.
pub const MAX_BATCH: usize = 256;

/// A peer as the pool drives it.
pub trait Fsm: Send {
    /// Handles the queued messages, then `ticks` clock periods. False: the peer ended
    /// (stopped, destroyed, failed) and is dropped.
    fn handle(&mut self, messages: Vec<PeerMsg>, ticks: u32) -> bool;
    /// Adds what the peer's Ready persists to `batch`. False: the peer ended.
    fn prepare(&mut self, batch: &mut WriteBatch) -> bool;
    /// Completes the Ready after `batch` was written (or failed to be). False: the peer ended.
    fn finish(&mut self, persisted: Result<(), String>) -> bool;
    /// Whether the peer hibernates (the clock gives it slow ticks only).
    fn hibernating(&self) -> bool;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Queue {
    messages: VecDeque<PeerMsg>,
    /// The peer ended: messages are refused.
    closed: bool,
}

/// Where a peer's input waits, and where the peer is parked between polls.
pub struct Mailbox {
    region_id: u64,
    queue: Mutex<Queue>,
    /// Signalled when the mailbox closes.
    closed: Condvar,
    /// Set while the mailbox is on the ready queue or being polled.
    scheduled: AtomicBool,
    /// Clock periods not yet handed to the peer.
    ticks: AtomicU32,
    hibernating: AtomicBool,
    /// `queue.closed`, readable without the lock (hot paths ask whether a peer runs).
    ended: AtomicBool,
    fsm: Mutex<Option<Box<dyn Fsm>>>,
    pool: Weak<Pool>,
}

impl Mailbox {
    pub fn region_id(&self) -> u64 {
        self.region_id
    }

    /// Queues `message` for the peer. False if the peer has ended (the message is dropped,
    /// and with it any callback, whose caller then learns the replica stopped).
    pub fn send(self: &Arc<Self>, message: PeerMsg) -> bool {
        {
            let mut queue = lock(&self.queue);
            if queue.closed {
                return false;
            }
            queue.messages.push_back(message);
        }
        self.notify();
        true
    }

    pub fn is_closed(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn is_hibernating(&self) -> bool {
        self.hibernating.load(Ordering::Acquire)
    }

    /// Waits up to `timeout` for the peer to end. Returns at once on one of this pool's own
    /// pollers (the peer may be waiting for this very poll) or once the pool stopped.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let Some(pool) = self.pool.upgrade() else {
            return self.is_closed();
        };
        if POLLER_OF.with(Cell::get) == pool.id || pool.stopping.load(Ordering::Acquire) {
            return self.is_closed();
        }
        drop(pool);
        let deadline = Instant::now() + timeout;
        let mut queue = lock(&self.queue);
        while !queue.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            queue = self
                .closed
                .wait_timeout(queue, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    fn notify(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel)
            && let Some(pool) = self.pool.upgrade()
        {
            pool.schedule(Arc::clone(self));
        }
    }

    /// Ends the mailbox: later sends fail, queued messages are failed (their callers learn
    /// the replica stopped), waiters are woken.
    fn close(&self) {
        let queued = {
            let mut queue = lock(&self.queue);
            queue.closed = true;
            self.ended.store(true, Ordering::Release);
            std::mem::take(&mut queue.messages)
        };
        self.closed.notify_all();
        for message in queued {
            message.fail(self.region_id);
        }
    }

    fn take_input(&self) -> (Vec<PeerMsg>, u32) {
        let messages = lock(&self.queue).messages.drain(..).collect();
        (messages, self.ticks.swap(0, Ordering::AcqRel))
    }

    fn has_input(&self) -> bool {
        self.ticks.load(Ordering::Acquire) > 0 || !lock(&self.queue).messages.is_empty()
    }
}

thread_local! {
    /// The id of the pool whose poller this thread is (0: none).
    static POLLER_OF: Cell<usize> = const { Cell::new(0) };
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

/// The shared state of a store's pool: the ready queue, the mailboxes, the clock.
pub struct Pool {
    id: usize,
    ready: Mutex<VecDeque<Arc<Mailbox>>>,
    available: Condvar,
    /// Every open mailbox, for the clock.
    mailboxes: Mutex<Vec<Arc<Mailbox>>>,
    stopping: AtomicBool,
    writer: Arc<dyn RaftWriter>,
    /// Clock periods so far.
    now: AtomicU64,
    /// A hibernating peer gets one tick every this many periods.
    slow_tick_every: u64,
}

impl Pool {
    fn schedule(&self, mailbox: Arc<Mailbox>) {
        lock(&self.ready).push_back(mailbox);
        self.available.notify_one();
    }

    /// One clock period: a tick for every awake peer, and for the hibernating peers whose
    /// turn it is.
    pub fn tick(&self) {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        let due: Vec<Arc<Mailbox>> = {
            let mut mailboxes = lock(&self.mailboxes);
            mailboxes.retain(|m| !m.is_closed());
            mailboxes
                .iter()
                .filter(|m| {
                    !m.is_hibernating() || (now + m.region_id).is_multiple_of(self.slow_tick_every)
                })
                .cloned()
                .collect()
        };
        for mailbox in due {
            mailbox.ticks.fetch_add(1, Ordering::AcqRel);
            mailbox.notify();
        }
    }

    /// Takes up to [`MAX_BATCH`] scheduled mailboxes; waits for one if `block` (None once the
    /// pool stops).
    fn take_batch(&self, block: bool) -> Option<Vec<Arc<Mailbox>>> {
        let mut ready = lock(&self.ready);
        loop {
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            if !ready.is_empty() {
                let n = ready.len().min(MAX_BATCH);
                return Some(ready.drain(..n).collect());
            }
            if !block {
                return None;
            }
            ready = self
                .available
                .wait(ready)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Polls a batch of peers (see the module docs).
    fn poll(&self, batch: Vec<Arc<Mailbox>>) {
        let mut running: Vec<(Arc<Mailbox>, Box<dyn Fsm>)> = Vec::with_capacity(batch.len());
        for mailbox in batch {
            let fsm = lock(&mailbox.fsm).take();
            match fsm {
                Some(fsm) => running.push((mailbox, fsm)),
                // Ended meanwhile.
                None => mailbox.scheduled.store(false, Ordering::Release),
            }
        }
        let mut ended = Vec::new();
        // 1. Input.
        running.retain_mut(|(mailbox, fsm)| {
            let (messages, ticks) = mailbox.take_input();
            let alive = fsm.handle(messages, ticks);
            if !alive {
                ended.push(Arc::clone(mailbox));
            }
            alive
        });
        // 2. Persistence: one write for the batch. A peer with nothing to persist (a read
        // confirmed, a message answered) completes at once, without waiting for the others'
        // write.
        let mut write = WriteBatch::new();
        let mut done = Vec::with_capacity(running.len());
        let mut waiting = Vec::new();
        for (mailbox, mut fsm) in running {
            let before = write.len();
            if !fsm.prepare(&mut write) {
                ended.push(mailbox);
            } else if write.len() > before {
                waiting.push((mailbox, fsm));
            } else if fsm.finish(Ok(())) {
                done.push((mailbox, fsm));
            } else {
                ended.push(mailbox);
            }
        }
        let persisted = if write.is_empty() {
            Ok(())
        } else {
            self.writer.write(write).map_err(|e| e.to_string())
        };
        // 3. Completion.
        for (mailbox, mut fsm) in waiting {
            if fsm.finish(persisted.clone()) {
                done.push((mailbox, fsm));
            } else {
                ended.push(mailbox);
            }
        }
        let running = done;
        for mailbox in ended {
            mailbox.close();
            mailbox.scheduled.store(false, Ordering::Release);
        }
        for (mailbox, fsm) in running {
            mailbox
                .hibernating
                .store(fsm.hibernating(), Ordering::Release);
            *lock(&mailbox.fsm) = Some(fsm);
            mailbox.scheduled.store(false, Ordering::Release);
            // Input that arrived during the poll (its sender saw the flag still set).
            if mailbox.has_input() {
                mailbox.notify();
            }
        }
    }
}

/// A store's pool of pollers and its clock.
pub struct BatchSystem {
    pool: Arc<Pool>,
    apply: Arc<ApplyPool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    clock_stop: Arc<(Mutex<bool>, Condvar)>,
}

impl BatchSystem {
    /// Starts `pollers` poller threads, `appliers` apply workers and a clock ticking every
    /// `tick`.
    pub fn start(
        writer: Arc<dyn RaftWriter>,
        pollers: usize,
        appliers: usize,
        tick: Duration,
        slow_tick_every: u64,
    ) -> BatchSystem {
        let mut system = BatchSystem::manual(Arc::clone(&writer), slow_tick_every);
        system.apply = Arc::new(ApplyPool::start(writer, appliers));
        let mut threads = lock(&system.threads);
        for i in 0..pollers.max(1) {
            let pool = Arc::clone(&system.pool);
            let thread = std::thread::Builder::new()
                .name(format!("raft-poller-{i}"))
                .spawn(move || {
                    POLLER_OF.with(|p| p.set(pool.id));
                    while let Some(batch) = pool.take_batch(true) {
                        pool.poll(batch);
                    }
                })
                .expect("spawn a raft poller thread");
            threads.push(thread);
        }
        let pool = Arc::clone(&system.pool);
        let stop = Arc::clone(&system.clock_stop);
        let clock = std::thread::Builder::new()
            .name("raft-clock".into())
            .spawn(move || {
                let mut next = Instant::now() + tick;
                let mut stopped = lock(&stop.0);
                loop {
                    let wait = next.saturating_duration_since(Instant::now());
                    if !wait.is_zero() {
                        stopped = stop
                            .1
                            .wait_timeout(stopped, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                    if *stopped {
                        return;
                    }
                    if Instant::now() >= next {
                        next += tick;
                        // A clock that fell far behind (a stalled machine) does not replay
                        // every missed period at once.
                        if next + tick * 10 < Instant::now() {
                            next = Instant::now() + tick;
                        }
                        pool.tick();
                    }
                }
            })
            .expect("spawn the raft clock thread");
        threads.push(clock);
        drop(threads);
        system
    }

    /// A pool without threads, driven by the caller (see the module docs).
    pub fn manual(writer: Arc<dyn RaftWriter>, slow_tick_every: u64) -> BatchSystem {
        BatchSystem {
            apply: Arc::new(ApplyPool::manual(Arc::clone(&writer))),
            pool: Arc::new(Pool {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                ready: Mutex::new(VecDeque::new()),
                available: Condvar::new(),
                mailboxes: Mutex::new(Vec::new()),
                stopping: AtomicBool::new(false),
                writer,
                now: AtomicU64::new(0),
                slow_tick_every: slow_tick_every.max(1),
            }),
            threads: Mutex::new(Vec::new()),
            clock_stop: Arc::new((Mutex::new(false), Condvar::new())),
        }
    }

    /// The store's apply workers, for its peers (see `apply`).
    pub fn apply_pool(&self) -> Arc<ApplyPool> {
        Arc::clone(&self.apply)
    }

    /// Parks `fsm` in a new mailbox and schedules its first poll.
    pub fn spawn(&self, region_id: u64, fsm: Box<dyn Fsm>) -> Arc<Mailbox> {
        self.spawn_with(region_id, |_| fsm)
    }

    /// Like [`BatchSystem::spawn`], for a peer that needs its own mailbox (to send itself
    /// messages from other threads): `make` builds it given the mailbox.
    pub fn spawn_with(
        &self,
        region_id: u64,
        make: impl FnOnce(Weak<Mailbox>) -> Box<dyn Fsm>,
    ) -> Arc<Mailbox> {
        let mailbox = Arc::new(Mailbox {
            region_id,
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                closed: false,
            }),
            closed: Condvar::new(),
            scheduled: AtomicBool::new(false),
            ticks: AtomicU32::new(0),
            hibernating: AtomicBool::new(false),
            ended: AtomicBool::new(false),
            fsm: Mutex::new(None),
            pool: Arc::downgrade(&self.pool),
        });
        *lock(&mailbox.fsm) = Some(make(Arc::downgrade(&mailbox)));
        if self.pool.stopping.load(Ordering::Acquire) {
            mailbox.close();
            lock(&mailbox.fsm).take();
            return mailbox;
        }
        lock(&self.pool.mailboxes).push(Arc::clone(&mailbox));
        mailbox.notify();
        mailbox
    }

    /// One virtual clock period (manual driving).
    pub fn tick(&self) {
        self.pool.tick();
    }

    /// Polls on the calling thread until no peer has input left and no apply task is
    /// queued (manual driving).
    pub fn poll_until_idle(&self) {
        loop {
            self.poll_raft_until_idle();
            if !self.apply.run_pending() {
                break;
            }
        }
    }

    /// Polls like [`BatchSystem::poll_until_idle`] but runs no apply task: a test's stalled
    /// apply workers.
    pub fn poll_raft_until_idle(&self) {
        let previous = POLLER_OF.with(|p| p.replace(self.pool.id));
        while let Some(batch) = self.pool.take_batch(false) {
            self.pool.poll(batch);
        }
        POLLER_OF.with(|p| p.set(previous));
    }

    /// Clock periods so far.
    pub fn now(&self) -> u64 {
        self.pool.now.load(Ordering::Acquire)
    }

    /// Stops the clock and the pollers, then ends every peer (persisted state stays; queued
    /// requests fail).
    pub fn shutdown(&self) {
        *lock(&self.clock_stop.0) = true;
        self.clock_stop.1.notify_all();
        {
            let _ready = lock(&self.pool.ready);
            self.pool.stopping.store(true, Ordering::Release);
            self.pool.available.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
        let mailboxes = std::mem::take(&mut *lock(&self.pool.mailboxes));
        for mailbox in mailboxes {
            mailbox.close();
            lock(&mailbox.fsm).take();
        }
        // What the peers handed to the apply workers is written before the store is gone
        // (a store reopened on the same engine must find it there).
        self.apply.shutdown();
    }
}

impl Drop for BatchSystem {
    fn drop(&mut self) {
        self.shutdown();
    }
}
