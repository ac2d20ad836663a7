//! The wire form of the transactional commands: conversions between the domain types
//! (`Mutation`, `Lock`, `KvError`, …) and the `regiondb.kvrpc` protobuf messages, shared by
//! the gRPC service and the remote client so that both sides agree by construction.

use proto::kvrpc as pb;
use scheduler::Timestamp;

use crate::error::KvError;
use crate::mvcc::{Lock, LockKind};
use crate::txn::Mutation;
use crate::txn::actions::PrewriteError;

pub fn mutation_to_pb(m: &Mutation) -> pb::Mutation {
    let (op, key, value) = match m {
        Mutation::Put { key, value } => (pb::mutation::Op::Put, key.clone(), value.clone()),
        Mutation::Delete { key } => (pb::mutation::Op::Delete, key.clone(), Vec::new()),
        Mutation::Lock { key } => (pb::mutation::Op::Lock, key.clone(), Vec::new()),
    };
    pb::Mutation {
        op: op as i32,
        key,
        value,
    }
}

pub fn mutation_from_pb(m: pb::Mutation) -> Result<Mutation, String> {
    Ok(match pb::mutation::Op::try_from(m.op) {
        Ok(pb::mutation::Op::Put) => Mutation::Put {
            key: m.key,
            value: m.value,
        },
        Ok(pb::mutation::Op::Delete) => Mutation::Delete { key: m.key },
        Ok(pb::mutation::Op::Lock) => Mutation::Lock { key: m.key },
        Err(_) => return Err(format!("unknown mutation op {}", m.op)),
    })
}

pub fn lock_to_pb(key: &[u8], lock: &Lock) -> pb::LockInfo {
    let kind = match lock.kind {
        LockKind::Put => pb::LockKind::Put,
        LockKind::Delete => pb::LockKind::Delete,
        LockKind::Lock => pb::LockKind::Lock,
    };
    pb::LockInfo {
        key: key.to_vec(),
        primary: lock.primary.clone(),
        start_ts: lock.start_ts.0,
        ttl_ms: lock.ttl_ms,
        kind: kind as i32,
    }
}

pub fn lock_from_pb(info: pb::LockInfo) -> (Vec<u8>, Lock) {
    let kind = match pb::LockKind::try_from(info.kind) {
        Ok(pb::LockKind::Delete) => LockKind::Delete,
        Ok(pb::LockKind::Lock) => LockKind::Lock,
        _ => LockKind::Put,
    };
    let lock = Lock {
        kind,
        primary: info.primary,
        start_ts: Timestamp(info.start_ts),
        ttl_ms: info.ttl_ms,
    };
    (info.key, lock)
}

pub fn error_to_pb(e: &KvError) -> pb::KeyError {
    let mut out = pb::KeyError::default();
    match e {
        KvError::WriteConflict {
            key,
            start_ts,
            conflict_commit_ts,
        } => {
            out.conflict = Some(pb::WriteConflict {
                key: key.clone(),
                start_ts: start_ts.0,
                conflict_commit_ts: conflict_commit_ts.0,
            });
        }
        KvError::TxnAborted { reason, .. } => out.aborted = reason.clone(),
        KvError::Corrupt(m) => out.corrupt = m.clone(),
        KvError::Storage(crate::storage::StorageError::Corrupt(m)) => out.corrupt = m.clone(),
        other => out.server = other.to_string(),
    }
    out
}

pub fn prewrite_error_to_pb(e: &PrewriteError) -> pb::KeyError {
    match e {
        PrewriteError::Locked { key, lock } => pb::KeyError {
            locked: Some(lock_to_pb(key, lock)),
            ..Default::default()
        },
        PrewriteError::Failed(e) => error_to_pb(e),
    }
}

/// The error a response carries, if any. `start_ts` is the transaction the command was for.
pub fn error_from_pb(e: pb::KeyError, start_ts: Timestamp) -> KvError {
    if let Some(c) = e.conflict {
        return KvError::WriteConflict {
            key: c.key,
            start_ts: Timestamp(c.start_ts),
            conflict_commit_ts: Timestamp(c.conflict_commit_ts),
        };
    }
    if let Some(locked) = e.locked {
        // A lock reported where the command has no way to handle it: the server broke the
        // protocol (reads and prewrites handle locks before calling this).
        return KvError::Server(format!("unexpected lock on key {:?}", locked.key));
    }
    if !e.aborted.is_empty() {
        return KvError::TxnAborted {
            start_ts,
            reason: e.aborted,
        };
    }
    if !e.corrupt.is_empty() {
        return KvError::Corrupt(e.corrupt);
    }
    KvError::Server(e.server)
}

pub fn prewrite_error_from_pb(e: pb::KeyError, start_ts: Timestamp) -> PrewriteError {
    match e.locked {
        Some(info) => {
            let (key, lock) = lock_from_pb(info);
            PrewriteError::Locked { key, lock }
        }
        None => PrewriteError::Failed(error_from_pb(e, start_ts)),
    }
}
