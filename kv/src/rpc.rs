//! The wire form of the transactional commands: conversions between the domain types
//! (`Mutation`, `Lock`, `KvError`, …) and the `regiondb.kvrpc` protobuf messages, shared by
//! the gRPC service and the remote client so that both sides agree by construction.

use proto::kvrpc as pb;
use scheduler_api::Timestamp;

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
        region_error if region_error.is_region_error() => {
            out.region = Some(region_error_to_pb(region_error));
        }
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
    if let Some(region) = e.region {
        return region_error_from_pb(region);
    }
    KvError::Server(e.server)
}

fn region_error_to_pb(e: &KvError) -> pb::RegionError {
    let mut out = pb::RegionError::default();
    match e {
        KvError::NotLeader { region_id, leader } => {
            out.not_leader = Some(pb::NotLeader {
                region_id: *region_id,
                leader: leader.unwrap_or(0),
            });
        }
        KvError::StaleCommand { region_id } => out.stale_command = *region_id,
        KvError::RegionNotFound { region_id } => out.region_not_found = *region_id,
        KvError::EpochNotMatch { region_id, current } => {
            out.epoch_not_match = Some(pb::EpochNotMatch {
                region_id: *region_id,
                current: current.as_deref().cloned(),
            });
        }
        KvError::KeyNotInRegion { key, region_id } => {
            out.key_not_in_region = Some(pb::KeyNotInRegion {
                key: key.clone(),
                region_id: *region_id,
            });
        }
        KvError::ServerIsBusy(reason) => out.server_is_busy = reason.clone(),
        other => out.server_is_busy = other.to_string(),
    }
    out
}

fn region_error_from_pb(e: pb::RegionError) -> KvError {
    if let Some(n) = e.not_leader {
        return KvError::NotLeader {
            region_id: n.region_id,
            leader: (n.leader != 0).then_some(n.leader),
        };
    }
    if e.stale_command != 0 {
        return KvError::StaleCommand {
            region_id: e.stale_command,
        };
    }
    if e.region_not_found != 0 {
        return KvError::RegionNotFound {
            region_id: e.region_not_found,
        };
    }
    if let Some(m) = e.epoch_not_match {
        return KvError::EpochNotMatch {
            region_id: m.region_id,
            current: m.current.map(Box::new),
        };
    }
    if let Some(k) = e.key_not_in_region {
        return KvError::KeyNotInRegion {
            key: k.key,
            region_id: k.region_id,
        };
    }
    KvError::ServerIsBusy(e.server_is_busy)
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
