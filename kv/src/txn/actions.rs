//! The Percolator actions, as pure functions: each reads one snapshot and returns the write
//! batch that performs it (or an error, in which case nothing is to be written). The caller
//! ([`super::TxnStore`]) holds the keys' latches from snapshot to write.

use scheduler_api::Timestamp;

use crate::error::{KvError, KvResult};
use crate::mvcc::key::{encode_user_key, encode_versioned};
use crate::mvcc::{Lock, LockKind, MvccReader, Write, WriteKind};
use crate::storage::{Cf, Snapshot, WriteBatch};

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
pub fn prewrite(
    snapshot: &impl Snapshot,
    mutations: &[Mutation],
    primary: &[u8],
    start_ts: Timestamp,
    ttl_ms: u64,
) -> Result<WriteBatch, PrewriteError> {
    let reader = MvccReader::new(snapshot);
    let mut batch = WriteBatch::new();
    for mutation in mutations {
        let key = mutation.key();
        if let Some(lock) = reader.load_lock(key)? {
            if lock.start_ts == start_ts {
                continue; // Our own lock: the prewrite already happened (retry).
            }
            return Err(PrewriteError::Locked {
                key: key.to_vec(),
                lock,
            });
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
        };
        batch.put(Cf::Lock, encode_user_key(key), lock.encode());
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
    for key in locked {
        if let Some(lock) = reader.load_lock(key)?
            && lock.start_ts == start_ts
        {
            ours.push(key.clone());
        }
    }
    let batch = match commit_ts {
        Some(commit_ts) => commit(snapshot, &ours, start_ts, commit_ts)?,
        None => rollback(snapshot, &ours, start_ts)?,
    };
    Ok((ours.len(), batch))
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
