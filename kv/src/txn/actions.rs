//! The Percolator actions, as pure functions: each reads one snapshot and returns the write
//! batch that performs it (or an error, in which case nothing is to be written). The caller
//! ([`super::TxnStore`]) holds the keys' latches from snapshot to write.
//!
//! # Pessimistic locks
//!
//! A pessimistic transaction (TiKV's) locks each key it writes while its statement runs
//! ([`acquire_pessimistic_lock`], at a `for_update_ts` newer than every change it read), so
//! that no other writer gets in between; its prewrite then turns those locks into ordinary
//! ones (with values) without looking for write conflicts again, and cannot fail with one.
//! A pessimistic lock stages nothing and blocks no reader. It goes with a rollback
//! (a record stays, as for any rollback), or alone with [`pessimistic_rollback`] (a statement
//! undone: no record, the transaction goes on). A committed transaction's leftover
//! pessimistic lock (a key locked but never written) is simply removed when resolved.

use scheduler_api::Timestamp;

use crate::error::{KvError, KvResult};
use crate::mvcc::key::{encode_user_key, encode_versioned};
use crate::mvcc::{Lock, LockKind, MvccReader, Write, WriteKind};
use crate::storage::{Cf, KvPair, Snapshot, WriteBatch};

/// One buffered change of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    /// Lock the key without changing it (`SELECT … FOR UPDATE`).
    Lock {
        key: Vec<u8>,
    },
}

impl Mutation {
    pub fn key(&self) -> &[u8] {
        match self {
            Mutation::Put { key, .. } | Mutation::Delete { key } | Mutation::Lock { key } => key,
        }
    }
}

/// Why a prewrite could not lock a key. Distinct from [`KvError`] because the client reacts to
/// a foreign lock by resolving it and trying again.
#[derive(Debug)]
pub enum PrewriteError {
    /// Another transaction holds a lock on the key.
    Locked {
        key: Vec<u8>,
        lock: Lock,
    },
    Failed(KvError),
}

impl From<KvError> for PrewriteError {
    fn from(e: KvError) -> Self {
        PrewriteError::Failed(e)
    }
}

fn write_record(batch: &mut WriteBatch, key: &[u8], commit_ts: Timestamp, write: Write) {
    batch.put(Cf::Write, encode_versioned(key, commit_ts), write.encode());
}

/// Prewrite: lock every key for the transaction at `start_ts` and stage its values.
/// `pessimistic[i]` (empty: none) says mutation `i`'s key holds the transaction's pessimistic
/// lock already: that lock becomes the prewrite's, with no conflict check (see the module
/// docs); if it is gone (expired and resolved), the transaction is aborted.
pub fn prewrite(
    snapshot: &impl Snapshot,
    mutations: &[Mutation],
    pessimistic: &[bool],
    primary: &[u8],
    start_ts: Timestamp,
    ttl_ms: u64,
) -> Result<WriteBatch, PrewriteError> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    for (i, mutation) in mutations.iter().enumerate() {
        let key = mutation.key();
        let locked_already = pessimistic.get(i).copied().unwrap_or(false);
        match reader.load_lock(key)? {
            Some(lock) if lock.start_ts == start_ts && lock.kind != LockKind::Pessimistic => {
                continue; // Our own lock: the prewrite already happened (retry).
            }
            Some(lock) if lock.start_ts == start_ts => {
                // Our pessimistic lock: it becomes the prewrite's lock (below).
            }
            Some(lock) if !locked_already => {
                return Err(PrewriteError::Locked {
                    key: key.to_vec(),
                    lock,
                });
            }
            _ if locked_already => {
                // Our pessimistic lock is gone: committed already (a retry), or lost.
                match reader.find_txn_write(key, start_ts)? {
                    Some((_, write)) if write.kind != WriteKind::Rollback => continue,
                    _ => {
                        return Err(KvError::TxnAborted {
                            start_ts,
                            reason: format!("its pessimistic lock on key {key:?} was lost"),
                        }
                        .into());
                    }
                }
            }
            _ => {}
        }
        if locked_already {
            stage(&mut batch, mutation, primary, start_ts, ttl_ms);
            continue;
        }
        // Any record at or after start_ts is a conflict, including our own rollback record
        // (stored at start_ts) and our own commit record (the prewrite is stale).
        if let Some((commit_ts, write)) = reader.seek_write(key, Timestamp::MAX)?
            && commit_ts >= start_ts
        {
            if write.start_ts == start_ts && write.kind != WriteKind::Rollback {
                continue; // Already committed: a retried prewrite changes nothing.
            }
            return Err(KvError::WriteConflict {
                key: key.to_vec(),
                start_ts,
                conflict_commit_ts: commit_ts,
            }
            .into());
        }
        stage(&mut batch, mutation, primary, start_ts, ttl_ms);
    }
    Ok(batch)
}

/// Adds a prewrite's lock of `mutation`'s key, and its value, to `batch`.
fn stage(
    batch: &mut WriteBatch,
    mutation: &Mutation,
    primary: &[u8],
    start_ts: Timestamp,
    ttl_ms: u64,
) {
    let key = mutation.key();
    let kind = match mutation {
        Mutation::Put { value, .. } => {
            batch.put(Cf::Default, encode_versioned(key, start_ts), value.clone());
            LockKind::Put
        }
        Mutation::Delete { .. } => LockKind::Delete,
        Mutation::Lock { .. } => LockKind::Lock,
    };
    let lock = Lock {
        kind,
        primary: primary.to_vec(),
        start_ts,
        ttl_ms,
        for_update_ts: Timestamp(0),
    };
    batch.put(Cf::Lock, encode_user_key(key), lock.encode());
}

/// How [`acquire_pessimistic_lock`] treats a change committed after `for_update_ts`, and
/// what it answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockMode {
    /// Lock anyway, at that change's commit_ts (READ COMMITTED: the statement goes on with
    /// the newest version; TiKV's "lock with conflict"), instead of a write conflict.
    pub lock_if_changed: bool,
    /// Answer each key's newest committed value (the keys that have one), read with the
    /// lock: no read after it.
    pub return_values: bool,
}

/// Takes the pessimistic lock of the transaction `start_ts` on every key of `keys`, at
/// `for_update_ts` (see the module docs), all or nothing:
/// - another transaction's lock: [`PrewriteError::Locked`] (the caller waits or resolves it);
/// - the transaction was rolled back here: aborted;
/// - a change committed after `for_update_ts`: a write conflict (the statement must read the
///   key again at a newer `for_update_ts`), or, `mode.lock_if_changed`, the lock at that
///   change's commit_ts;
/// - its own lock already: kept (a pessimistic one moves up to the newer `for_update_ts`).
pub fn acquire_pessimistic_lock(
    snapshot: &impl Snapshot,
    keys: &[Vec<u8>],
    primary: &[u8],
    start_ts: Timestamp,
    for_update_ts: Timestamp,
    ttl_ms: u64,
    mode: LockMode,
) -> Result<(WriteBatch, Vec<KvPair>), PrewriteError> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    let mut values = Vec::new();
    for key in keys {
        if mode.return_values
            && let Some(value) = reader.committed_value(key, Timestamp::MAX)?
        {
            values.push((key.clone(), value));
        }
        let mut lock = Lock {
            kind: LockKind::Pessimistic,
            primary: primary.to_vec(),
            start_ts,
            ttl_ms,
            for_update_ts,
        };
        match reader.load_lock(key)? {
            Some(own) if own.start_ts == start_ts => {
                if own.kind != LockKind::Pessimistic || own.for_update_ts >= for_update_ts {
                    continue;
                }
                lock.ttl_ms = lock.ttl_ms.max(own.ttl_ms);
            }
            Some(other) => {
                return Err(PrewriteError::Locked {
                    key: key.clone(),
                    lock: other,
                });
            }
            None => {
                if let Some((_, write)) = reader.find_txn_write(key, start_ts)? {
                    let reason = match write.kind {
                        WriteKind::Rollback => "it was rolled back",
                        _ => "it committed already",
                    };
                    return Err(KvError::TxnAborted {
                        start_ts,
                        reason: format!("{reason} (locking key {key:?})"),
                    }
                    .into());
                }
                if let Some(commit_ts) = reader.newest_change(key)?
                    && commit_ts > for_update_ts
                {
                    if !mode.lock_if_changed {
                        return Err(KvError::WriteConflict {
                            key: key.clone(),
                            start_ts,
                            conflict_commit_ts: commit_ts,
                        }
                        .into());
                    }
                    lock.for_update_ts = commit_ts;
                }
            }
        }
        batch.put(Cf::Lock, encode_user_key(key), lock.encode());
    }
    Ok((batch, values))
}

/// Releases the pessimistic locks the transaction `start_ts` took on `keys` at or before
/// `for_update_ts` (a statement undone): no rollback record, the transaction goes on.
/// Prewritten locks and other transactions' locks stay.
pub fn pessimistic_rollback(
    snapshot: &impl Snapshot,
    keys: &[Vec<u8>],
    start_ts: Timestamp,
    for_update_ts: Timestamp,
) -> KvResult<WriteBatch> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    for key in keys {
        if let Some(lock) = reader.load_lock(key)?
            && lock.start_ts == start_ts
            && lock.kind == LockKind::Pessimistic
            && lock.for_update_ts <= for_update_ts
        {
            batch.delete(Cf::Lock, encode_user_key(key));
        }
    }
    Ok(batch)
}

/// Commit: turn the transaction's locks on `keys` into write records at `commit_ts`.
pub fn commit(
    snapshot: &impl Snapshot,
    keys: &[Vec<u8>],
    start_ts: Timestamp,
    commit_ts: Timestamp,
) -> KvResult<WriteBatch> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    for key in keys {
        match reader.load_lock(key)? {
            Some(lock) if lock.start_ts == start_ts => {
                let kind = match lock.kind {
                    LockKind::Put => WriteKind::Put,
                    LockKind::Delete => WriteKind::Delete,
                    LockKind::Lock => WriteKind::Lock,
                    LockKind::Pessimistic => {
                        return Err(KvError::TxnAborted {
                            start_ts,
                            reason: format!("key {key:?} was locked but never prewritten"),
                        });
                    }
                };
                write_record(&mut batch, key, commit_ts, Write { kind, start_ts });
                batch.delete(Cf::Lock, encode_user_key(key));
            }
            _ => match reader.find_txn_write(key, start_ts)? {
                Some((_, write)) if write.kind != WriteKind::Rollback => {} // Committed already.
                Some(_) => {
                    return Err(KvError::TxnAborted {
                        start_ts,
                        reason: format!("it was rolled back before commit (key {key:?})"),
                    });
                }
                None => {
                    return Err(KvError::TxnAborted {
                        start_ts,
                        reason: format!("its lock on key {key:?} was not found"),
                    });
                }
            },
        }
    }
    Ok(batch)
}

/// Roll back the transaction's effects on `keys`: remove its locks and staged values and leave
/// rollback records. Refuses if the transaction already committed any of the keys.
pub fn rollback(
    snapshot: &impl Snapshot,
    keys: &[Vec<u8>],
    start_ts: Timestamp,
) -> KvResult<WriteBatch> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    for key in keys {
        match reader.find_txn_write(key, start_ts)? {
            Some((commit_ts, write)) if write.kind != WriteKind::Rollback => {
                return Err(KvError::Corrupt(format!(
                    "refusing to roll back key {key:?} of transaction {start_ts}: it committed \
                     at {commit_ts}"
                )));
            }
            Some(_) => continue, // Rolled back already.
            None => {}
        }
        if let Some(lock) = reader.load_lock(key)?
            && lock.start_ts == start_ts
        {
            batch.delete(Cf::Lock, encode_user_key(key));
            if lock.kind == LockKind::Put {
                batch.delete(Cf::Default, encode_versioned(key, start_ts));
            }
        }
        let record = Write {
            kind: WriteKind::Rollback,
            start_ts,
        };
        write_record(&mut batch, key, start_ts, record);
    }
    Ok(batch)
}

/// Resolves every lock of the transaction `start_ts` among `locked` (keys whose locks the
/// caller found): commits them at `commit_ts`, or rolls them back if `commit_ts` is `None`.
/// Keys no longer locked by the transaction are skipped (resolving is idempotent). Returns
/// how many keys are resolved, and the batch that does it.
pub fn resolve_locks(
    snapshot: &impl Snapshot,
    locked: &[Vec<u8>],
    start_ts: Timestamp,
    commit_ts: Option<Timestamp>,
) -> KvResult<(usize, WriteBatch)> {
    let reader = MvccReader::new(snapshot);
    let mut ours = Vec::new();
    let mut leftovers = Vec::new();
    for key in locked {
        match reader.load_lock(key)? {
            // A committed transaction's pessimistic lock on a key it never wrote.
            Some(lock)
                if lock.start_ts == start_ts
                    && lock.kind == LockKind::Pessimistic
                    && commit_ts.is_some() =>
            {
                leftovers.push(key.clone())
            }
            Some(lock) if lock.start_ts == start_ts => ours.push(key.clone()),
            _ => {}
        }
    }
    let mut batch = match commit_ts {
        Some(commit_ts) => commit(snapshot, &ours, start_ts, commit_ts)?,
        None => rollback(snapshot, &ours, start_ts)?,
    };
    for key in &leftovers {
        batch.delete(Cf::Lock, encode_user_key(key));
    }
    Ok((ours.len() + leftovers.len(), batch))
}

/// Extends the TTL of a live transaction's primary lock to `ttl_ms` (never shortens it).
/// Returns the TTL now in force; fails if the lock is gone (committed or rolled back).
pub fn txn_heartbeat(
    snapshot: &impl Snapshot,
    primary: &[u8],
    start_ts: Timestamp,
    ttl_ms: u64,
) -> KvResult<(u64, WriteBatch)> {
    let reader = MvccReader::new(snapshot);
    match reader.load_lock(primary)? {
        Some(mut lock) if lock.start_ts == start_ts => {
            let mut batch = WriteBatch::new();
            if ttl_ms > lock.ttl_ms {
                lock.ttl_ms = ttl_ms;
                batch.put(Cf::Lock, encode_user_key(primary), lock.encode());
            }
            Ok((lock.ttl_ms, batch))
        }
        _ => Err(KvError::TxnAborted {
            start_ts,
            reason: format!("its primary lock on {primary:?} is gone"),
        }),
    }
}

/// The fate of a transaction, as told by its primary key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnStatus {
    Committed {
        commit_ts: Timestamp,
    },
    RolledBack,
    /// The primary lock is still there and its TTL has not run out.
    Alive {
        ttl_ms: u64,
    },
}

/// Decides the fate of the transaction `lock_ts` from its primary key. If the primary lock has
/// expired at `current_ts`, or the transaction left no trace at all, the transaction is rolled
/// back here (the returned batch writes the rollback record), so that it can never commit later.
pub fn check_txn_status(
    snapshot: &impl Snapshot,
    primary: &[u8],
    lock_ts: Timestamp,
    current_ts: Timestamp,
) -> KvResult<(TxnStatus, WriteBatch)> {
    let reader = MvccReader::new(snapshot);
    if let Some(lock) = reader.load_lock(primary)?
        && lock.start_ts == lock_ts
    {
        if !lock.is_expired(current_ts) {
            return Ok((
                TxnStatus::Alive {
                    ttl_ms: lock.ttl_ms,
                },
                WriteBatch::new(),
            ));
        }
        let batch = rollback(snapshot, &[primary.to_vec()], lock_ts)?;
        return Ok((TxnStatus::RolledBack, batch));
    }
    match reader.find_txn_write(primary, lock_ts)? {
        Some((_, write)) if write.kind == WriteKind::Rollback => {
            Ok((TxnStatus::RolledBack, WriteBatch::new()))
        }
        Some((commit_ts, _)) => Ok((TxnStatus::Committed { commit_ts }, WriteBatch::new())),
        None => {
            let batch = rollback(snapshot, &[primary.to_vec()], lock_ts)?;
            Ok((TxnStatus::RolledBack, batch))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::reader::ReadOutcome;
    use crate::storage::{Engine, MemoryEngine};

    fn ts(ms: u64) -> Timestamp {
        Timestamp::compose(ms, 0)
    }

    fn key(k: &str) -> Vec<u8> {
        k.as_bytes().to_vec()
    }

    fn put(k: &str, v: &str) -> Mutation {
        Mutation::Put {
            key: key(k),
            value: v.as_bytes().to_vec(),
        }
    }

    /// Writes what an action returned (or panics with its error).
    fn run<E: std::fmt::Debug>(engine: &MemoryEngine, batch: Result<WriteBatch, E>) {
        engine.write(batch.expect("the action succeeds")).unwrap();
    }

    /// A committed put of `k` by a transaction from `start` to `commit`.
    fn committed(engine: &MemoryEngine, k: &str, v: &str, start: u64, commit: u64) {
        let prewrite = prewrite(&engine.snapshot(), &[put(k, v)], &[], b"p", ts(start), 3000);
        run(engine, prewrite);
        run(
            engine,
            super::commit(&engine.snapshot(), &[key(k)], ts(start), ts(commit)),
        );
    }

    fn lock_of(engine: &MemoryEngine, k: &str) -> Option<Lock> {
        MvccReader::new(&engine.snapshot())
            .load_lock(k.as_bytes())
            .unwrap()
    }

    fn read(engine: &MemoryEngine, k: &str, at: u64) -> Option<Vec<u8>> {
        match MvccReader::new(&engine.snapshot())
            .get(k.as_bytes(), ts(at))
            .unwrap()
        {
            ReadOutcome::Value(v) => v,
            ReadOutcome::Locked { .. } => panic!("a read blocked"),
        }
    }

    fn acquire(
        engine: &MemoryEngine,
        k: &str,
        start: u64,
        for_update: u64,
    ) -> Result<WriteBatch, PrewriteError> {
        acquire_pessimistic_lock(
            &engine.snapshot(),
            &[key(k)],
            b"k",
            ts(start),
            ts(for_update),
            3000,
            LockMode::default(),
        )
        .map(|(batch, _)| batch)
    }

    /// READ COMMITTED's lock: a change committed after `for_update_ts` is locked over (at its
    /// commit_ts) instead of failing, and the newest values come back with the lock.
    #[test]
    fn a_lock_over_a_newer_change_takes_its_commit_ts_and_answers_the_newest_values() {
        let engine = MemoryEngine::new();
        committed(&engine, "k", "newest", 40, 50);
        let mode = LockMode {
            lock_if_changed: true,
            return_values: true,
        };
        let keys = [key("k"), key("absent")];
        let (batch, values) =
            acquire_pessimistic_lock(&engine.snapshot(), &keys, b"k", ts(30), ts(45), 3000, mode)
                .expect("locked over the change");
        assert_eq!(values, vec![(key("k"), b"newest".to_vec())]);
        run(&engine, Ok::<_, PrewriteError>(batch));
        let lock = lock_of(&engine, "k").unwrap();
        assert_eq!(lock.kind, LockKind::Pessimistic);
        assert_eq!(lock.for_update_ts, ts(50));
        assert_eq!(lock_of(&engine, "absent").unwrap().for_update_ts, ts(45));
    }

    #[test]
    fn a_pessimistic_lock_keeps_writers_out_but_not_readers() {
        let engine = MemoryEngine::new();
        committed(&engine, "k", "old", 10, 20);
        run(&engine, acquire(&engine, "k", 30, 31));
        let lock = lock_of(&engine, "k").unwrap();
        assert_eq!(
            (lock.kind, lock.for_update_ts),
            (LockKind::Pessimistic, ts(31))
        );
        // A reader at any timestamp sees past it.
        assert_eq!(read(&engine, "k", 40), Some(b"old".to_vec()));
        // Another transaction can neither lock nor prewrite the key.
        assert!(matches!(
            acquire(&engine, "k", 35, 36),
            Err(PrewriteError::Locked { .. })
        ));
        let other = prewrite(
            &engine.snapshot(),
            &[put("k", "x")],
            &[],
            b"k",
            ts(35),
            3000,
        );
        assert!(matches!(other, Err(PrewriteError::Locked { .. })));
        // Locking again at a newer for_update_ts moves the lock up; an older one keeps it.
        run(&engine, acquire(&engine, "k", 30, 50));
        run(&engine, acquire(&engine, "k", 30, 40));
        assert_eq!(lock_of(&engine, "k").unwrap().for_update_ts, ts(50));
    }

    #[test]
    fn a_change_committed_after_for_update_ts_is_a_conflict_but_not_one_before() {
        let engine = MemoryEngine::new();
        // Committed after the transaction started (30) but before its statement's
        // for_update_ts (45): a pessimistic transaction locks it (the statement read it).
        committed(&engine, "k", "v1", 35, 40);
        run(&engine, acquire(&engine, "k", 30, 45));
        run(
            &engine,
            pessimistic_rollback(&engine.snapshot(), &[key("k")], ts(30), ts(45)),
        );
        committed(&engine, "k", "v2", 50, 60);
        match acquire(&engine, "k", 30, 55) {
            Err(PrewriteError::Failed(KvError::WriteConflict {
                conflict_commit_ts, ..
            })) => assert_eq!(conflict_commit_ts, ts(60)),
            other => panic!("expected a write conflict, got {other:?}"),
        }
        // Lock-only and rollback records are no changes.
        let lock_only = prewrite(
            &engine.snapshot(),
            &[Mutation::Lock { key: key("k") }],
            &[],
            b"k",
            ts(70),
            3000,
        );
        run(&engine, lock_only);
        run(
            &engine,
            super::commit(&engine.snapshot(), &[key("k")], ts(70), ts(80)),
        );
        run(&engine, rollback(&engine.snapshot(), &[key("k")], ts(90)));
        run(&engine, acquire(&engine, "k", 100, 65));
    }

    #[test]
    fn a_prewrite_over_its_pessimistic_locks_never_conflicts_and_commits() {
        let engine = MemoryEngine::new();
        committed(&engine, "k", "v1", 35, 40);
        run(&engine, acquire(&engine, "k", 30, 45));
        // start_ts 30 is older than the commit at 40: an optimistic prewrite would conflict.
        let optimistic = prewrite(
            &engine.snapshot(),
            &[put("j", "x"), put("k", "v2")],
            &[],
            b"k",
            ts(30),
            3000,
        );
        assert!(matches!(
            optimistic,
            Err(PrewriteError::Locked { .. })
                | Err(PrewriteError::Failed(KvError::WriteConflict { .. }))
        ));
        let pessimistic = prewrite(
            &engine.snapshot(),
            &[put("k", "v2")],
            &[true],
            b"k",
            ts(30),
            3000,
        );
        run(&engine, pessimistic);
        assert_eq!(lock_of(&engine, "k").unwrap().kind, LockKind::Put);
        // A retried prewrite changes nothing; the commit makes the value visible.
        let again = prewrite(
            &engine.snapshot(),
            &[put("k", "v2")],
            &[true],
            b"k",
            ts(30),
            3000,
        );
        assert!(again.unwrap().is_empty());
        run(
            &engine,
            super::commit(&engine.snapshot(), &[key("k")], ts(30), ts(50)),
        );
        assert_eq!(read(&engine, "k", 55), Some(b"v2".to_vec()));
        // Retried once more after the commit: still nothing to do.
        let late = prewrite(
            &engine.snapshot(),
            &[put("k", "v2")],
            &[true],
            b"k",
            ts(30),
            3000,
        );
        assert!(late.unwrap().is_empty());
    }

    #[test]
    fn a_lost_pessimistic_lock_aborts_the_prewrite() {
        let engine = MemoryEngine::new();
        run(&engine, acquire(&engine, "k", 30, 30));
        // Expired and rolled back by someone who met it.
        let (status, batch) =
            check_txn_status(&engine.snapshot(), b"k", ts(30), ts(60_000)).unwrap();
        assert_eq!(status, TxnStatus::RolledBack);
        engine.write(batch).unwrap();
        let prewrite = prewrite(
            &engine.snapshot(),
            &[put("k", "v")],
            &[true],
            b"k",
            ts(30),
            3000,
        );
        assert!(matches!(
            prewrite,
            Err(PrewriteError::Failed(KvError::TxnAborted { .. }))
        ));
        // Nor can it lock the key again.
        assert!(matches!(
            acquire(&engine, "k", 30, 70),
            Err(PrewriteError::Failed(KvError::TxnAborted { .. }))
        ));
    }

    #[test]
    fn a_statement_rollback_releases_only_its_own_pessimistic_locks() {
        let engine = MemoryEngine::new();
        run(&engine, acquire(&engine, "a", 30, 31));
        let written = prewrite(
            &engine.snapshot(),
            &[put("b", "v")],
            &[],
            b"a",
            ts(30),
            3000,
        );
        run(&engine, written);
        run(&engine, acquire(&engine, "c", 30, 40));
        run(&engine, acquire(&engine, "d", 33, 34));
        let keys = [key("a"), key("b"), key("c"), key("d")];
        run(
            &engine,
            pessimistic_rollback(&engine.snapshot(), &keys, ts(30), ts(35)),
        );
        assert!(lock_of(&engine, "a").is_none(), "released");
        assert_eq!(
            lock_of(&engine, "b").unwrap().kind,
            LockKind::Put,
            "prewritten: kept"
        );
        assert!(lock_of(&engine, "c").is_some(), "a later statement's: kept");
        assert_eq!(
            lock_of(&engine, "d").unwrap().start_ts,
            ts(33),
            "another's: kept"
        );
        // No rollback record: the transaction may lock the key again.
        run(&engine, acquire(&engine, "a", 30, 50));
    }

    #[test]
    fn resolving_removes_a_committed_transactions_unused_pessimistic_lock() {
        let engine = MemoryEngine::new();
        run(&engine, acquire(&engine, "k", 30, 30));
        run(&engine, acquire(&engine, "unused", 30, 30));
        let written = prewrite(
            &engine.snapshot(),
            &[put("k", "v")],
            &[true],
            b"k",
            ts(30),
            3000,
        );
        run(&engine, written);
        // Committing a key that was only locked, never prewritten, is refused.
        let commit_unused = super::commit(&engine.snapshot(), &[key("unused")], ts(30), ts(40));
        assert!(matches!(commit_unused, Err(KvError::TxnAborted { .. })));
        run(
            &engine,
            super::commit(&engine.snapshot(), &[key("k")], ts(30), ts(40)),
        );
        let (resolved, batch) =
            resolve_locks(&engine.snapshot(), &[key("unused")], ts(30), Some(ts(40))).unwrap();
        engine.write(batch).unwrap();
        assert_eq!(resolved, 1);
        assert!(lock_of(&engine, "unused").is_none());
        let reader_snapshot = engine.snapshot();
        let reader = MvccReader::new(&reader_snapshot);
        assert_eq!(
            reader.seek_write(b"unused", Timestamp::MAX).unwrap(),
            None,
            "no record"
        );
    }
}
