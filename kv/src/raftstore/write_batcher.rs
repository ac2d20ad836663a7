//! [`WriteBatcher`]: group commit for a store's peers. Every poller of the store's batch system
//! hands the merged Readies of its batch of peers (log entries, hard state, snapshots) here and
//! waits; one writer thread merges whatever is queued at that moment into a single engine
//! write — one RocksDB write and one fsync for the work of many pollers — and then wakes every
//! waiter with the outcome.
//!
//! Atomicity is per merged write, which is at least as strong as each peer's own batch: a
//! crash leaves each whole or none. Order is kept per peer (a peer waits for its batch before
//! it sends messages or writes again), which is all the persistence argument needs.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use crate::error::{KvError, KvResult};
use crate::storage::{Engine, WriteBatch};

/// Where a peer's writes go: straight to the engine, or through a store's [`WriteBatcher`].
pub trait RaftWriter: Send + Sync {
    /// Writes `batch` atomically and durably; returns once it is.
    fn write(&self, batch: WriteBatch) -> KvResult<()>;
    /// Writes `batch` atomically, without waiting for the disk (see
    /// [`Engine::write_unsynced`]): for what can be redone after a crash (applying committed
    /// entries, which the synced log still holds).
    fn write_unsynced(&self, batch: WriteBatch) -> KvResult<()>;
    /// Writes `batch` some time later, unsynced, off the caller's thread (deleting compacted
    /// log entries). Best effort: what a crash or an error loses must be harmless.
    fn write_in_background(&self, batch: WriteBatch);
}

/// Writes straight to the engine (a peer on its own, tests).
pub struct DirectWriter<E: Engine>(pub Arc<E>);

impl<E: Engine> RaftWriter for DirectWriter<E> {
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        Ok(self.0.write(batch)?)
    }

    fn write_unsynced(&self, batch: WriteBatch) -> KvResult<()> {
        Ok(self.0.write_unsynced(batch)?)
    }

    fn write_in_background(&self, batch: WriteBatch) {
        let _ = self.0.write_unsynced(batch);
    }
}

type Request = (WriteBatch, SyncSender<Result<(), String>>);

/// A store's group-commit writer (see the module docs).
pub struct WriteBatcher {
    /// Unsynced writes go straight to the engine.
    direct: Arc<dyn Fn(WriteBatch) -> KvResult<()> + Send + Sync>,
    sender: Option<Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    /// The background writer (compacted log entries).
    background: Option<Sender<WriteBatch>>,
    background_thread: Option<JoinHandle<()>>,
}

impl WriteBatcher {
    pub fn start<E: Engine>(engine: Arc<E>) -> WriteBatcher {
        let (sender, receiver) = mpsc::channel::<Request>();
        let unsynced = Arc::clone(&engine);
        let direct = Arc::new(move |batch| Ok(unsynced.write_unsynced(batch)?));
        let collector = Arc::clone(&engine);
        let thread = std::thread::Builder::new()
            .name("raft-writer".into())
            .spawn(move || write_loop(collector.as_ref(), receiver))
            .expect("spawn the raft writer thread");
        let (background, jobs) = mpsc::channel::<WriteBatch>();
        let background_thread = std::thread::Builder::new()
            .name("raft-log-gc".into())
            .spawn(move || {
                for batch in jobs {
                    if let Err(e) = engine.write_unsynced(batch) {
                        tracing::warn!(error = %e, "deleting compacted raft log entries failed");
                    }
                }
            })
            .expect("spawn the raft log GC thread");
        WriteBatcher {
            direct,
            sender: Some(sender),
            thread: Some(thread),
            background: Some(background),
            background_thread: Some(background_thread),
        }
    }
}

fn write_loop<E: Engine>(engine: &E, requests: Receiver<Request>) {
    while let Ok((mut batch, first)) = requests.recv() {
        let mut waiters = vec![first];
        for (more, waiter) in std::iter::from_fn(|| requests.try_recv().ok()) {
            batch.extend(more);
            waiters.push(waiter);
        }
        let outcome = engine.write(batch).map_err(|e| e.to_string());
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }
}

impl RaftWriter for WriteBatcher {
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        let (answer, outcome) = mpsc::sync_channel(1);
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| KvError::Unavailable("the store is stopping".into()))?;
        sender
            .send((batch, answer))
            .map_err(|_| KvError::Unavailable("the raft writer stopped".into()))?;
        outcome
            .recv()
            .map_err(|_| KvError::Unavailable("the raft writer stopped".into()))?
            .map_err(|e| KvError::Storage(crate::storage::StorageError::Io(e)))
    }

    fn write_unsynced(&self, batch: WriteBatch) -> KvResult<()> {
        (self.direct)(batch)
    }

    fn write_in_background(&self, batch: WriteBatch) {
        if let Some(background) = &self.background {
            let _ = background.send(batch);
        }
    }
}

impl Drop for WriteBatcher {
    fn drop(&mut self) {
        self.sender.take();
        self.background.take();
        for thread in [self.thread.take(), self.background_thread.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Cf, MemoryEngine, Snapshot};

    #[test]
    fn concurrent_writers_are_merged_and_all_land() {
        let engine = Arc::new(MemoryEngine::new());
        let batcher = Arc::new(WriteBatcher::start(Arc::clone(&engine)));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let batcher = Arc::clone(&batcher);
                std::thread::spawn(move || {
                    for i in 0..100 {
                        let mut batch = WriteBatch::new();
                        batch.put(Cf::Raft, format!("{t}-{i:03}").into_bytes(), vec![t]);
                        batcher.write(batch).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let snapshot = engine.snapshot();
        assert_eq!(snapshot.scan(Cf::Raft, b"", None).count(), 800);
    }
}
