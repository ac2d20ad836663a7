//! The values of the `lock` and `write` families, with their binary encodings.

use scheduler_api::Timestamp;

use crate::codec::memcomparable::{self, DecodeError};

/// What a transaction intends to do to a locked key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Put,
    Delete,
    /// Lock-only (`SELECT … FOR UPDATE`): no value; commits to a `Lock` write record.
    Lock,
    /// A pessimistic transaction's lock, taken while a statement runs (before the commit):
    /// it keeps other writers out but stages nothing and blocks no reader; the prewrite turns
    /// it into one of the kinds above.
    Pessimistic,
}

/// A Percolator lock: written by prewrite, removed by commit or rollback.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lock {
    pub kind: LockKind,
    /// The transaction's primary key: its commit record decides the fate of this lock.
    pub primary: Vec<u8>,
    pub start_ts: Timestamp,
    /// Milliseconds after `start_ts`'s physical time during which the lock is presumed alive.
    pub ttl_ms: u64,
    /// For a pessimistic lock: the timestamp the statement locked at (newer than every commit
    /// of the key it saw). Zero for a prewrite's lock.
    pub for_update_ts: Timestamp,
}

/// What a commit record says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    Put,
    Delete,
    /// The transaction was rolled back; stored at `commit_ts = start_ts` so that a late
    /// prewrite of the same transaction finds it and fails.
    Rollback,
    /// A lock-only mutation committed; reads skip it.
    Lock,
}

/// A record in the `write` family, stored under `key + commit_ts`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub kind: WriteKind,
    pub start_ts: Timestamp,
}

fn malformed(what: &str, bytes: &[u8]) -> DecodeError {
    DecodeError(format!("malformed {what} record: {bytes:?}"))
}

impl Lock {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.primary.len() + 20);
        out.push(match self.kind {
            LockKind::Put => b'P',
            LockKind::Delete => b'D',
            LockKind::Lock => b'L',
            LockKind::Pessimistic => b'S',
        });
        memcomparable::encode_u64(&mut out, self.start_ts.0);
        memcomparable::encode_u64(&mut out, self.ttl_ms);
        if self.kind == LockKind::Pessimistic {
            // Only the pessimistic kind carries it: the other encodings are as they were.
            memcomparable::encode_u64(&mut out, self.for_update_ts.0);
        }
        out.extend_from_slice(&self.primary);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Lock, DecodeError> {
        let (&tag, rest) = bytes
            .split_first()
            .ok_or_else(|| malformed("lock", bytes))?;
        let kind = match tag {
            b'P' => LockKind::Put,
            b'D' => LockKind::Delete,
            b'L' => LockKind::Lock,
            b'S' => LockKind::Pessimistic,
            _ => return Err(malformed("lock", bytes)),
        };
        let (start_ts, rest) = memcomparable::decode_u64(rest)?;
        let (ttl_ms, mut primary) = memcomparable::decode_u64(rest)?;
        let mut for_update_ts = 0;
        if kind == LockKind::Pessimistic {
            (for_update_ts, primary) = memcomparable::decode_u64(primary)?;
        }
        Ok(Lock {
            kind,
            primary: primary.to_vec(),
            start_ts: Timestamp(start_ts),
            ttl_ms,
            for_update_ts: Timestamp(for_update_ts),
        })
    }

    /// Whether the lock's TTL has run out as seen at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now.physical_ms() >= self.start_ts.physical_ms().saturating_add(self.ttl_ms)
    }
}

impl Write {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9);
        out.push(match self.kind {
            WriteKind::Put => b'P',
            WriteKind::Delete => b'D',
            WriteKind::Rollback => b'R',
            WriteKind::Lock => b'L',
        });
        memcomparable::encode_u64(&mut out, self.start_ts.0);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Write, DecodeError> {
        let (&tag, rest) = bytes
            .split_first()
            .ok_or_else(|| malformed("write", bytes))?;
        let kind = match tag {
            b'P' => WriteKind::Put,
            b'D' => WriteKind::Delete,
            b'R' => WriteKind::Rollback,
            b'L' => WriteKind::Lock,
            _ => return Err(malformed("write", bytes)),
        };
        let (start_ts, rest) = memcomparable::decode_u64(rest)?;
        if !rest.is_empty() {
            return Err(malformed("write", bytes));
        }
        Ok(Write {
            kind,
            start_ts: Timestamp(start_ts),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        for kind in [
            LockKind::Put,
            LockKind::Delete,
            LockKind::Lock,
            LockKind::Pessimistic,
        ] {
            let for_update_ts = match kind {
                LockKind::Pessimistic => Timestamp(81),
                _ => Timestamp(0),
            };
            let lock = Lock {
                kind,
                primary: b"p\0k".to_vec(),
                start_ts: Timestamp(77),
                ttl_ms: 3000,
                for_update_ts,
            };
            assert_eq!(Lock::decode(&lock.encode()).unwrap(), lock);
        }
        // A prewrite lock is encoded as before pessimistic locks existed (no migration).
        let mut old = vec![b'D'];
        memcomparable::encode_u64(&mut old, 77);
        memcomparable::encode_u64(&mut old, 3000);
        old.extend_from_slice(b"pk");
        let lock = Lock::decode(&old).unwrap();
        assert_eq!(lock.kind, LockKind::Delete);
        assert_eq!(
            (lock.primary.as_slice(), lock.for_update_ts),
            (&b"pk"[..], Timestamp(0))
        );
        assert_eq!(lock.encode(), old);
        for kind in [
            WriteKind::Put,
            WriteKind::Delete,
            WriteKind::Rollback,
            WriteKind::Lock,
        ] {
            let write = Write {
                kind,
                start_ts: Timestamp(u64::MAX - 3),
            };
            assert_eq!(Write::decode(&write.encode()).unwrap(), write);
        }
        assert!(Lock::decode(b"").is_err());
        assert!(Lock::decode(b"X12345678").is_err());
        assert!(Write::decode(b"P123").is_err());
    }

    #[test]
    fn lock_expiry_uses_physical_time() {
        let start = Timestamp::compose(1_000, 3);
        let lock = Lock {
            kind: LockKind::Put,
            primary: vec![],
            start_ts: start,
            ttl_ms: 100,
            for_update_ts: Timestamp(0),
        };
        assert!(!lock.is_expired(Timestamp::compose(1_099, 0)));
        assert!(lock.is_expired(Timestamp::compose(1_100, 0)));
    }
}
