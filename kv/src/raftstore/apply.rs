//! Applying committed writes apart from the Raft loop (TiKV's apply system): a store's
//! [`ApplyPool`] of worker threads writes the data of committed write entries to the engine,
//! while the pollers of the batch system go on stepping messages, ticking and persisting
//! logs, so a slow apply (a large batch, a bulk load) holds up no election or heartbeat.
//!
//! # Protocol
//!
//! - A run of committed writes no bigger than `DriverConfig::apply_inline_max_bytes` (64 KiB)
//!   is applied by the peer itself, in one batch: handing it over (a wake-up of a worker,
//!   the result's trip back) costs more than writing it, and it is not what holds a Raft
//!   loop up. The pool takes the big ones (bulk loads, large transactions).
//! - A peer hands a run of committed *write* entries (or empty ones) to the pool as one
//!   [`ApplyTask`]: the entries, the region they are checked against, the apply state to
//!   write with them, and the proposals they complete. The worker writes all their data and
//!   the new applied index in one atomic batch (unsynced: the synced log can redo it), then
//!   answers the proposals itself — a client's write is acknowledged without one more trip
//!   through the peer — and reports [`Applied`] to the peer, which then moves its applied
//!   index, serves the reads waiting for it, and hands out the next run.
//! - A peer has at most one task in flight. While one is, it hands out nothing more, and it
//!   does nothing else that writes the apply state or the region's data: no log compaction,
//!   no snapshot applied, no destruction. So the worker owns the apply state while it runs,
//!   and the order of a region's batches is the order of its log.
//! - Admin entries (split, merge, membership change) are not handed out: they change the
//!   region the writes are checked against, so a peer applies them itself, and only once the
//!   task before them is done (they wait in the log meanwhile, as a run after them does). A
//!   region frozen for a merge applies everything itself: it only skips writes.
//! - Every replica decides alike whether a write applies: a write whose keys are not all in
//!   the region it applies in, or that reaches a frozen region, is skipped and its proposer
//!   learns EpochNotMatch ([`check_write`]), whether the peer or the pool applies it.
//!
//! [`ApplyPool::manual`] runs no thread: [`ApplyPool::run_pending`] runs the queued tasks on
//! the caller's thread, for the batch system's deterministic driving.
//!
//! Deliberately not here: several tasks of one region in flight at once (TiKV pipelines
//! them); one write per task even when a worker holds tasks of several regions.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use proto::metapb::Region;

use super::Callback;
use super::keys;
use super::record::{self, ApplyState};
use super::write_batcher::RaftWriter;
use crate::error::{KvError, KvResult};
use crate::mvcc::key::encode_user_key;
use crate::storage::{Cf, Modify, WriteBatch};

/// A proposal waiting for its entry to apply.
pub struct Proposal {
    pub index: u64,
    pub term: u64,
    pub callback: Callback,
}

/// Completes the proposals at or below an applied entry: the one at `index` gets its apply
/// outcome if its term matches; the others were overwritten by a later leader.
pub fn complete_proposals(
    proposals: &mut VecDeque<Proposal>,
    region_id: u64,
    index: u64,
    term: u64,
    outcome: KvResult<()>,
) {
    let mut outcome = Some(outcome);
    while proposals.front().is_some_and(|p| p.index <= index) {
        let Some(proposal) = proposals.pop_front() else {
            break;
        };
        if proposal.index == index && proposal.term == term {
            (proposal.callback)(outcome.take().unwrap_or(Ok(())));
        } else {
            (proposal.callback)(Err(KvError::StaleCommand { region_id }));
        }
    }
}

/// Whether a write batch applies in `region`: every key is a data key inside it, and the
/// region is not frozen for a merge. Otherwise the write is skipped (EpochNotMatch).
pub fn check_write(region: &Region, frozen: bool, batch: &WriteBatch) -> KvResult<()> {
    let epoch_not_match = || KvError::EpochNotMatch {
        region_id: region.id,
        current: Some(Box::new(region.clone())),
    };
    if frozen {
        // Proposed before the region froze for a merge: skipped alike everywhere.
        return Err(epoch_not_match());
    }
    if region.start_key.is_empty() && region.end_key.is_empty() {
        return Ok(());
    }
    let start = encode_user_key(&region.start_key);
    let end = (!region.end_key.is_empty()).then(|| encode_user_key(&region.end_key));
    let outside = batch.modifies().iter().any(|modify| {
        let (cf, key) = match modify {
            Modify::Put { cf, key, .. } | Modify::Delete { cf, key } => (*cf, key),
        };
        cf == Cf::Raft
            || key.as_slice() < start.as_slice()
            || end.as_ref().is_some_and(|end| key >= end)
    });
    if outside {
        return Err(epoch_not_match());
    }
    Ok(())
}

/// The bytes a write batch writes (for split checks).
pub fn written_bytes(batch: &WriteBatch) -> u64 {
    batch
        .modifies()
        .iter()
        .map(|m| match m {
            Modify::Put { key, value, .. } => (key.len() + value.len()) as u64,
            Modify::Delete { key, .. } => key.len() as u64,
        })
        .sum()
}

/// Adds to `apply` the data of the writes of `entries` that apply in `region` (see
/// [`check_write`]); returns each entry's outcome (index, term, result) and the data bytes
/// added. The one place that decides what a run of write entries does, whether the peer or
/// the pool applies it.
pub fn stage_writes(
    region: &Region,
    frozen: bool,
    entries: Vec<WriteEntry>,
    apply: &mut WriteBatch,
) -> (Vec<(u64, u64, KvResult<()>)>, u64) {
    let mut written = 0;
    let outcomes = entries
        .into_iter()
        .map(|entry| {
            let outcome = match entry.batch {
                None => Ok(()),
                Some(data) => check_write(region, frozen, &data).map(|()| {
                    written += written_bytes(&data);
                    apply.extend(data);
                }),
            };
            (entry.index, entry.term, outcome)
        })
        .collect();
    (outcomes, written)
}

/// A committed entry handed to the pool: a write batch, or nothing (an empty entry).
pub struct WriteEntry {
    pub index: u64,
    pub term: u64,
    pub batch: Option<WriteBatch>,
}

/// What a worker reports to the peer once a task is written.
#[derive(Debug)]
pub struct Applied {
    /// The last entry of the task, now applied (when `result` is Ok).
    pub index: u64,
    /// Data bytes written.
    pub written: u64,
    /// Whether the batch was written; on a storage failure the peer stops.
    pub result: KvResult<()>,
}

/// A run of one region's committed write entries (see the module docs).
pub struct ApplyTask {
    /// The region as of these entries (no admin entry among them).
    pub region: Region,
    /// The apply state before them (its truncation point is kept; `applied` is set to the
    /// last entry).
    pub state: ApplyState,
    pub entries: Vec<WriteEntry>,
    /// The proposals of these entries, in log order.
    pub proposals: VecDeque<Proposal>,
    /// Hands the result back to the peer (through its mailbox).
    pub done: Box<dyn FnOnce(Applied) + Send>,
}

impl ApplyTask {
    /// Writes the task's entries and applied index in one batch, answers its proposals and
    /// reports to the peer.
    pub fn run(self, writer: &dyn RaftWriter) {
        let ApplyTask {
            region,
            mut state,
            entries,
            mut proposals,
            done,
        } = self;
        let Some(last) = entries.last().map(|e| e.index) else {
            done(Applied {
                index: state.applied,
                written: 0,
                result: Ok(()),
            });
            return;
        };
        let mut batch = WriteBatch::new();
        let (outcomes, written) = stage_writes(&region, false, entries, &mut batch);
        state.applied = last;
        batch.put(
            Cf::Raft,
            keys::apply_state(region.id),
            record::encode_apply_state(&state),
        );
        let result = writer.write_unsynced(batch);
        match &result {
            Ok(()) => {
                for (index, term, outcome) in outcomes {
                    complete_proposals(&mut proposals, region.id, index, term, outcome);
                }
            }
            Err(e) => {
                for proposal in proposals {
                    (proposal.callback)(Err(KvError::Server(format!(
                        "region {}: applying failed: {e}",
                        region.id
                    ))));
                }
            }
        }
        done(Applied {
            index: last,
            written,
            result,
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Queue {
    tasks: Mutex<VecDeque<ApplyTask>>,
    available: Condvar,
    stopping: AtomicBool,
}

/// A store's apply workers (see the module docs).
pub struct ApplyPool {
    queue: Arc<Queue>,
    writer: Arc<dyn RaftWriter>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl ApplyPool {
    /// Starts `workers` apply threads.
    pub fn start(writer: Arc<dyn RaftWriter>, workers: usize) -> ApplyPool {
        let pool = ApplyPool::manual(writer);
        let mut threads = lock(&pool.threads);
        for i in 0..workers.max(1) {
            let queue = Arc::clone(&pool.queue);
            let writer = Arc::clone(&pool.writer);
            let thread = std::thread::Builder::new()
                .name(format!("apply-{i}"))
                .spawn(move || {
                    while let Some(task) = queue.next() {
                        task.run(writer.as_ref());
                    }
                })
                .expect("spawn an apply thread");
            threads.push(thread);
        }
        drop(threads);
        pool
    }

    /// A pool without threads: [`ApplyPool::run_pending`] runs its tasks.
    pub fn manual(writer: Arc<dyn RaftWriter>) -> ApplyPool {
        ApplyPool {
            queue: Arc::new(Queue {
                tasks: Mutex::new(VecDeque::new()),
                available: Condvar::new(),
                stopping: AtomicBool::new(false),
            }),
            writer,
            threads: Mutex::new(Vec::new()),
        }
    }

    pub fn submit(&self, task: ApplyTask) {
        lock(&self.queue.tasks).push_back(task);
        self.queue.available.notify_one();
    }

    /// Runs the queued tasks on the calling thread (manual driving); whether there were any.
    pub fn run_pending(&self) -> bool {
        let mut ran = false;
        loop {
            let task = lock(&self.queue.tasks).pop_front();
            let Some(task) = task else {
                return ran;
            };
            task.run(self.writer.as_ref());
            ran = true;
        }
    }

    /// Stops the workers once every queued task is written (their results go to peers that
    /// may have ended; the data is persisted either way, so a peer reopened on the same
    /// engine afterwards reads the apply state they wrote).
    pub fn shutdown(&self) {
        {
            let _tasks = lock(&self.queue.tasks);
            self.queue.stopping.store(true, Ordering::Release);
            self.queue.available.notify_all();
        }
        let threads = std::mem::take(&mut *lock(&self.threads));
        for thread in threads {
            let _ = thread.join();
        }
        self.run_pending();
    }
}

impl Queue {
    /// The next task; None once the pool stops and nothing is queued.
    fn next(&self) -> Option<ApplyTask> {
        let mut tasks = lock(&self.tasks);
        loop {
            if let Some(task) = tasks.pop_front() {
                return Some(task);
            }
            if self.stopping.load(Ordering::Acquire) {
                return None;
            }
            tasks = self
                .available
                .wait(tasks)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Drop for ApplyPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}
