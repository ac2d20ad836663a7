//! [`TxnStore`]: runs Percolator commands ([`TxnCommands`]) against one engine, each under
//! latches and as one atomic write batch: what a region replica runs (through Raft, see
//! [`Replication`]), and what a plain single store runs in-process or behind the gRPC service.
//! Every command is handled in one place, [`TxnStore::execute`](TxnCommands::execute), by
//! the Percolator action of the same name ([`super::actions`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler_api::Timestamp;
use tracing::warn;

use super::actions::{self, LockMode, Mutation, PrewriteError, TxnStatus};
use super::commands::TxnCommands;
use super::deadlock::WaitFor;
use super::detector::{DETECT_AFTER, Detector};
use super::latches::Latches;
use super::lock_waits::{LockWaits, Waiter};
use super::request::{TxnRequest, TxnResponse};
use crate::error::{KvError, KvResult};
use crate::mvcc::key::{decode_user_key, encode_user_key};
use crate::mvcc::reader::ReadOutcome;
use crate::mvcc::{Lock, MvccReader};
use crate::storage::{Cf, Engine, Snapshot, WriteBatch};

/// How a store's commands make their effects durable, and when its engine may be read.
pub trait Replication: Send + Sync {
    /// Returns once the local engine reflects every write committed before the call (a
    /// replicated region: a ReadIndex round, then waiting for apply), with the fence a write
    /// computed from what is read now must carry.
    fn read_barrier(&self) -> KvResult<ReadFence>;
    /// Makes `batch` durable — for a replicated region, committed through Raft — and returns
    /// once it is applied to the local engine. Refused (StaleCommand) if the replica is no
    /// longer where `fence` was taken: a leader that lost and regained its leadership in
    /// between may have missed another leader's writes, so what it computed may be stale.
    fn write(&self, batch: WriteBatch, fence: ReadFence) -> KvResult<()>;
    /// Called after taking the engine snapshot that followed a read barrier: fails if the
    /// replica's data may have been deleted meanwhile (it was removed and destroyed).
    fn check_snapshot(&self) -> KvResult<()> {
        Ok(())
    }
    /// The user keys `[start, end)` this replica holds now (an empty end: unbounded), where
    /// `resolve_lock` looks for locks. A region's range changes when it splits.
    fn key_range(&self) -> (Vec<u8>, Vec<u8>) {
        (Vec::new(), Vec::new())
    }
}

/// Where a read barrier was passed: the Raft term of the leader that confirmed it (0: a
/// store without replication, where every write is current).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadFence {
    pub term: u64,
}

/// A single store: writes go straight to the engine, which is always current.
struct Local<E: Engine>(Arc<E>);

impl<E: Engine> Replication for Local<E> {
    fn read_barrier(&self) -> KvResult<ReadFence> {
        Ok(ReadFence::default())
    }

    fn write(&self, batch: WriteBatch, _fence: ReadFence) -> KvResult<()> {
        Ok(self.0.write(batch)?)
    }
}

/// The longest a command waits for a lock in one go: well below the clients' request and
/// routing timeouts, so that a wait never looks like an unanswered request (the client sends
/// again, to whichever replica leads by then).
pub const MAX_LOCK_WAIT_SLICE: Duration = Duration::from_secs(2);

/// What the commands of all the regions of one store share to order themselves: the key
/// latches, the lock-wait queues and the wait-for graph. Shared rather than per region, so
/// that a release wakes a waiter whose region split or was rebuilt meanwhile.
#[derive(Default)]
pub struct SharedLocking {
    latches: Latches,
    waits: LockWaits,
    /// Where this store's lock waits are reported, and, if this store runs the cluster's
    /// deadlock detector, its graph.
    detector: Detector,
}

impl SharedLocking {
    pub fn detector(&self) -> &Detector {
        &self.detector
    }
}

pub struct TxnStore<E: Engine> {
    engine: Arc<E>,
    replication: Arc<dyn Replication>,
    locking: Arc<SharedLocking>,
}

impl<E: Engine> TxnStore<E> {
    /// A store whose commands write straight to `engine`.
    pub fn new(engine: Arc<E>) -> Self {
        let replication = Arc::new(Local(Arc::clone(&engine)));
        Self::with_replication(engine, replication, Arc::default())
    }

    /// A store over one replica of a replicated region: commands read `engine` after
    /// `replication`'s barrier and write through it, ordered by `locking` (shared by the
    /// store's regions).
    pub fn with_replication(
        engine: Arc<E>,
        replication: Arc<dyn Replication>,
        locking: Arc<SharedLocking>,
    ) -> Self {
        Self {
            engine,
            replication,
            locking,
        }
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    fn write(&self, batch: WriteBatch, fence: ReadFence) -> KvResult<()> {
        if !batch.is_empty() {
            self.replication.write(batch, fence)?;
        }
        Ok(())
    }

    /// A snapshot of the engine that reflects every write committed before the call, and the
    /// fence for writes computed from it.
    fn current(&self) -> KvResult<(ReadFence, E::Snapshot<'_>)> {
        let fence = self.replication.read_barrier()?;
        let snapshot = self.engine.snapshot();
        self.replication.check_snapshot()?;
        Ok((fence, snapshot))
    }
}

impl<E: Engine> TxnStore<E> {
    /// Every lock of transaction `start_ts` in this store's key range, committed at
    /// `commit_ts` (`Some`) or rolled back (`None`). Returns how many keys were resolved.
    fn resolve_locks(&self, start_ts: Timestamp, commit_ts: Option<Timestamp>) -> KvResult<usize> {
        let locked = {
            let (_, snapshot) = self.current()?;
            let mut keys = Vec::new();
            let (start, end) = self.replication.key_range();
            let from = encode_user_key(&start);
            let to = (!end.is_empty()).then(|| encode_user_key(&end));
            for item in snapshot.scan(Cf::Lock, &from, to.as_deref()) {
                let (encoded, value) = item?;
                if Lock::decode(&value)?.start_ts == start_ts {
                    keys.push(decode_user_key(&encoded)?);
                }
            }
            keys
        };
        if locked.is_empty() {
            return Ok(0);
        }
        let _guard = self
            .locking
            .latches
            .acquire(locked.iter().map(Vec::as_slice));
        let (fence, snapshot) = self.current()?;
        let (resolved, batch) = actions::resolve_locks(&snapshot, &locked, start_ts, commit_ts)?;
        drop(snapshot);
        self.write(batch, fence)?;
        self.locking.waits.release(locked.iter().map(Vec::as_slice));
        Ok(resolved)
    }

    /// Takes pessimistic locks (see [`TxnRequest::AcquirePessimisticLock`]); meeting another
    /// transaction's lock, waits until `wait_ms` (at most [`MAX_LOCK_WAIT_SLICE`]) for a
    /// release to wake it (`lock_waits`), then tries again, first in line.
    fn acquire_pessimistic_lock(
        &self,
        keys: &[Vec<u8>],
        primary: &[u8],
        (start_ts, for_update_ts): (Timestamp, Timestamp),
        ttl_ms: u64,
        (wait_ms, mode): (u64, LockMode),
    ) -> KvResult<TxnResponse> {
        // The key whose turn this command was given and has not used yet.
        let mut turn: Option<Vec<u8>> = None;
        let result = self.acquire_waiting(
            (keys, primary),
            (start_ts, for_update_ts),
            ttl_ms,
            (wait_ms, mode),
            &mut turn,
        );
        // However the command ended, a turn it did not use goes to the key's next waiter.
        if let Some(key) = turn {
            self.locking.waits.pass_on(&key);
        }
        result
    }

    /// The loop of [`Self::acquire_pessimistic_lock`]; `turn` is the key whose turn it holds.
    fn acquire_waiting(
        &self,
        (keys, primary): (&[Vec<u8>], &[u8]),
        (start_ts, for_update_ts): (Timestamp, Timestamp),
        ttl_ms: u64,
        (wait_ms, mode): (u64, LockMode),
        turn: &mut Option<Vec<u8>>,
    ) -> KvResult<TxnResponse> {
        let deadline = Instant::now() + Duration::from_millis(wait_ms).min(MAX_LOCK_WAIT_SLICE);
        loop {
            let guard = self.locking.latches.acquire(keys.iter().map(Vec::as_slice));
            let (fence, snapshot) = self.current()?;
            let acquired = actions::acquire_pessimistic_lock(
                &snapshot,
                keys,
                primary,
                start_ts,
                for_update_ts,
                ttl_ms,
                mode,
            );
            let waiting = Instant::now() < deadline && wait_ms > 0;
            // The key and the transaction this command would wait for; `lock` when it is
            // that transaction's lock (not a reservation).
            let (key, holder, lock) = match acquired {
                Ok((batch, values)) => {
                    // A key released to a woken waiter of another transaction is its to take
                    // first: queue behind it (see `lock_waits`).
                    let reserved = match waiting {
                        true => self.locking.waits.reserved_for_other(keys, start_ts),
                        false => None,
                    };
                    let Some((key, holder)) = reserved else {
                        drop(snapshot);
                        self.write(batch, fence)?;
                        self.locking.waits.taken(keys, start_ts);
                        *turn = None; // Used: the key is ours.
                        return Ok(TxnResponse::AcquirePessimisticLock {
                            locked: None,
                            values,
                        });
                    };
                    (key, holder, None)
                }
                Err(PrewriteError::Locked { key, lock }) => (key, lock.start_ts, Some(lock)),
                Err(PrewriteError::Failed(e)) => return Err(e),
            };
            if !waiting {
                if let Some(lock) = lock {
                    return Ok(TxnResponse::AcquirePessimisticLock {
                        locked: Some((key, lock)),
                        values: Vec::new(),
                    });
                }
                continue; // Out of time behind a reservation: the next try ignores it.
            }
            // Registered under the latch: a release of this key (which takes it too) comes
            // after, and finds the waiter. Woken for this very key and beaten to it, the
            // command keeps the head of its queue; a turn on another key passes on.
            let waiter = match turn.take() {
                Some(woken) if woken == key => self.locking.waits.enqueue_first(&key, start_ts),
                Some(other) => {
                    self.locking.waits.pass_on(&other);
                    self.locking.waits.enqueue(&key, start_ts)
                }
                None => self.locking.waits.enqueue(&key, start_ts),
            };
            drop(snapshot);
            drop(guard);
            let wait = WaitFor {
                txn: start_ts,
                wait_for: holder,
                key,
            };
            if !self.wait_for_release(&waiter, &wait, deadline)? {
                match lock {
                    Some(lock) => {
                        return Ok(TxnResponse::AcquirePessimisticLock {
                            locked: Some((wait.key, lock)),
                            values: Vec::new(),
                        });
                    }
                    None => continue,
                }
            }
            *turn = Some(wait.key);
        }
    }

    /// Sleeps until `waiter` (queued for `wait.key`) is woken, or `deadline`: whether it was
    /// woken (otherwise it left the queue). A wait that lasts [`DETECT_AFTER`] is reported to
    /// the deadlock detector, and withdrawn when it ends; one that would close a cycle of
    /// waits ends at once with a deadlock error.
    fn wait_for_release(
        &self,
        waiter: &Arc<Waiter>,
        wait: &WaitFor,
        deadline: Instant,
    ) -> KvResult<bool> {
        let waits = &self.locking.waits;
        if waits.sleep(waiter, (Instant::now() + DETECT_AFTER).min(deadline)) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(!waits.leave(&wait.key, waiter));
        }
        let detector = &self.locking.detector;
        match detector.report_wait(wait) {
            Ok(false) => {}
            Ok(true) => {
                // Woken meanwhile: the holder is gone, and with it the cycle.
                if !waits.leave(&wait.key, waiter) {
                    return Ok(true);
                }
                return Err(KvError::Deadlock {
                    key: wait.key.clone(),
                    start_ts: wait.txn,
                    lock_ts: wait.wait_for,
                });
            }
            // Waits go on; the next slice reports again.
            Err(e) => warn!(error = %e, "the deadlock detector could not be reached"),
        }
        let woken = waits.wait(&wait.key, waiter, deadline);
        detector.report_wait_end(wait.txn, wait.wait_for);
        Ok(woken)
    }
}

/// Reads run on a snapshot after the read barrier; writes take their keys' latches, compute
/// one write batch from a snapshot and write it with the snapshot's fence.
impl<E: Engine> TxnCommands for TxnStore<E> {
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        Ok(match request {
            TxnRequest::Get { key, ts } => {
                let (_, snapshot) = self.current()?;
                TxnResponse::Get(MvccReader::new(&snapshot).get(key, *ts)?)
            }
            TxnRequest::BatchGet { keys, ts } => {
                let (_, snapshot) = self.current()?;
                let reader = MvccReader::new(&snapshot);
                let mut pairs = Vec::new();
                for key in keys {
                    match reader.get(key, *ts)? {
                        ReadOutcome::Value(Some(value)) => pairs.push((key.clone(), value)),
                        ReadOutcome::Value(None) => {}
                        ReadOutcome::Locked { key, lock } => {
                            return Ok(TxnResponse::BatchGet(ReadOutcome::Locked { key, lock }));
                        }
                    }
                }
                TxnResponse::BatchGet(ReadOutcome::Value(pairs))
            }
            TxnRequest::Scan {
                start,
                end,
                ts,
                limit,
            } => {
                let (_, snapshot) = self.current()?;
                let pairs = MvccReader::new(&snapshot).scan(start, end.as_deref(), *ts, *limit)?;
                TxnResponse::Scan(pairs)
            }
            TxnRequest::AcquirePessimisticLock {
                keys,
                primary,
                start_ts,
                for_update_ts,
                ttl_ms,
                wait_ms,
                mode,
            } => self.acquire_pessimistic_lock(
                keys,
                primary,
                (*start_ts, *for_update_ts),
                *ttl_ms,
                (*wait_ms, *mode),
            )?,
            TxnRequest::PessimisticRollback {
                keys,
                start_ts,
                for_update_ts,
            } => {
                let _guard = self.locking.latches.acquire(keys.iter().map(Vec::as_slice));
                let (fence, snapshot) = self.current()?;
                let batch =
                    actions::pessimistic_rollback(&snapshot, keys, *start_ts, *for_update_ts)?;
                drop(snapshot);
                self.write(batch, fence)?;
                self.locking.waits.release(keys.iter().map(Vec::as_slice));
                TxnResponse::PessimisticRollback
            }
            TxnRequest::Prewrite {
                mutations,
                pessimistic,
                primary,
                start_ts,
                ttl_ms,
            } => {
                let _guard = self
                    .locking
                    .latches
                    .acquire(mutations.iter().map(Mutation::key));
                let (fence, snapshot) = self.current()?;
                let prewritten = actions::prewrite(
                    &snapshot,
                    mutations,
                    pessimistic,
                    primary,
                    *start_ts,
                    *ttl_ms,
                );
                match prewritten {
                    Ok(batch) => {
                        drop(snapshot);
                        self.write(batch, fence)?;
                        TxnResponse::Prewrite { locked: None }
                    }
                    Err(PrewriteError::Locked { key, lock }) => TxnResponse::Prewrite {
                        locked: Some((key, lock)),
                    },
                    Err(PrewriteError::Failed(e)) => return Err(e),
                }
            }
            TxnRequest::Commit {
                keys,
                start_ts,
                commit_ts,
            } => {
                let _guard = self.locking.latches.acquire(keys.iter().map(Vec::as_slice));
                let (fence, snapshot) = self.current()?;
                let batch = actions::commit(&snapshot, keys, *start_ts, *commit_ts)?;
                drop(snapshot);
                self.write(batch, fence)?;
                self.locking.waits.release(keys.iter().map(Vec::as_slice));
                TxnResponse::Commit
            }
            TxnRequest::Rollback { keys, start_ts } => {
                let _guard = self.locking.latches.acquire(keys.iter().map(Vec::as_slice));
                let (fence, snapshot) = self.current()?;
                let batch = actions::rollback(&snapshot, keys, *start_ts)?;
                drop(snapshot);
                self.write(batch, fence)?;
                self.locking.waits.release(keys.iter().map(Vec::as_slice));
                TxnResponse::Rollback
            }
            TxnRequest::CheckTxnStatus {
                primary,
                lock_ts,
                current_ts,
            } => {
                let _guard = self.locking.latches.acquire([primary.as_slice()]);
                let (fence, snapshot) = self.current()?;
                let (status, batch) =
                    actions::check_txn_status(&snapshot, primary, *lock_ts, *current_ts)?;
                drop(snapshot);
                self.write(batch, fence)?;
                if status == TxnStatus::RolledBack {
                    self.locking.waits.release([primary.as_slice()]);
                }
                TxnResponse::CheckTxnStatus(status)
            }
            // Every lock of the transaction on this store (in this replica's range), not only
            // the one at `key`.
            TxnRequest::ResolveLock {
                start_ts,
                commit_ts,
                ..
            } => TxnResponse::ResolveLock(self.resolve_locks(*start_ts, *commit_ts)?),
            TxnRequest::DetectDeadlock {
                txn,
                wait_for,
                key,
                clean_up,
            } => {
                // A report is answered only by a replica that still leads (see `detector`).
                let term = match clean_up {
                    true => None,
                    false => Some(self.replication.read_barrier()?.term),
                };
                let wait = WaitFor {
                    txn: *txn,
                    wait_for: *wait_for,
                    key: key.clone(),
                };
                TxnResponse::DetectDeadlock {
                    deadlock: self.locking.detector.handle(term, &wait, *clean_up),
                }
            }
            TxnRequest::TxnHeartbeat {
                primary,
                start_ts,
                ttl_ms,
            } => {
                let _guard = self.locking.latches.acquire([primary.as_slice()]);
                let (fence, snapshot) = self.current()?;
                let (ttl, batch) = actions::txn_heartbeat(&snapshot, primary, *start_ts, *ttl_ms)?;
                drop(snapshot);
                self.write(batch, fence)?;
                TxnResponse::TxnHeartbeat(ttl)
            }
        })
    }
}
