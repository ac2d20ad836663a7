//! Reads of MVCC data at a timestamp, over one storage snapshot.

use scheduler_api::Timestamp;

use super::key::{encode_user_key, encode_versioned, split_versioned};
use super::record::{Lock, LockKind, Write, WriteKind};
use crate::codec::memcomparable;
use crate::error::KvResult;
use crate::storage::{Cf, KvPair, Snapshot};

/// Outcome of a read that may run into a lock.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome<T> {
    Value(T),
    /// A lock (with the user key it protects) that may hide a version visible at the read
    /// timestamp: resolve it and read again.
    Locked {
        key: Vec<u8>,
        lock: Lock,
    },
}

pub struct MvccReader<'a, S: Snapshot> {
    snapshot: &'a S,
}

/// Whether `lock` may hide a version that a reader at `ts` should see.
fn blocks_read(lock: &Lock, ts: Timestamp) -> bool {
    // A lock-only or pessimistic lock stages no value: reads see past it.
    !matches!(lock.kind, LockKind::Lock | LockKind::Pessimistic) && lock.start_ts <= ts
}

impl<'a, S: Snapshot> MvccReader<'a, S> {
    pub fn new(snapshot: &'a S) -> Self {
        Self { snapshot }
    }

    pub fn load_lock(&self, key: &[u8]) -> KvResult<Option<Lock>> {
        match self.snapshot.get(Cf::Lock, &encode_user_key(key))? {
            Some(bytes) => Ok(Some(Lock::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// The newest write record of `key` with `commit_ts <= ts`, with its commit_ts.
    pub fn seek_write(&self, key: &[u8], ts: Timestamp) -> KvResult<Option<(Timestamp, Write)>> {
        let prefix = encode_user_key(key);
        let start = encode_versioned(key, ts);
        let end = memcomparable::prefix_end(&prefix);
        if let Some(item) = self.snapshot.scan(Cf::Write, &start, end.as_deref()).next() {
            let (versioned, value) = item?;
            let (_, commit_ts) = split_versioned(&versioned)?;
            return Ok(Some((commit_ts, Write::decode(&value)?)));
        }
        Ok(None)
    }

    /// The commit_ts of the newest change of `key` (a committed put or delete; rollback and
    /// lock-only records change nothing), if any.
    pub fn newest_change(&self, key: &[u8]) -> KvResult<Option<Timestamp>> {
        let mut ts = Timestamp::MAX;
        while let Some((commit_ts, write)) = self.seek_write(key, ts)? {
            if matches!(write.kind, WriteKind::Put | WriteKind::Delete) {
                return Ok(Some(commit_ts));
            }
            if commit_ts.0 == 0 {
                break;
            }
            ts = Timestamp(commit_ts.0 - 1);
        }
        Ok(None)
    }

    /// The write record left by the transaction that started at `start_ts`, if any, with its
    /// commit_ts. Scans the versions newer than `start_ts` (a commit record's commit_ts is never
    /// below its start_ts).
    pub fn find_txn_write(
        &self,
        key: &[u8],
        start_ts: Timestamp,
    ) -> KvResult<Option<(Timestamp, Write)>> {
        let start = encode_versioned(key, Timestamp::MAX);
        let end = {
            let mut end = encode_versioned(key, start_ts);
            end.push(0); // make the version at exactly start_ts part of the range
            end
        };
        for item in self.snapshot.scan(Cf::Write, &start, Some(&end)) {
            let (versioned, value) = item?;
            let (_, commit_ts) = split_versioned(&versioned)?;
            let write = Write::decode(&value)?;
            if write.start_ts == start_ts {
                return Ok(Some((commit_ts, write)));
            }
        }
        Ok(None)
    }

    /// The value of `key` visible at `ts` after the write record says what happened.
    fn value_of(&self, key: &[u8], write: &Write) -> KvResult<Vec<u8>> {
        self.snapshot
            .get(Cf::Default, &encode_versioned(key, write.start_ts))?
            .ok_or_else(|| {
                crate::error::KvError::Corrupt(format!(
                    "write record of {key:?} at start_ts {} has no value",
                    write.start_ts
                ))
            })
    }

    /// The value of `key` visible at `ts`.
    pub fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        if let Some(lock) = self.load_lock(key)?
            && blocks_read(&lock, ts)
        {
            return Ok(ReadOutcome::Locked {
                key: key.to_vec(),
                lock,
            });
        }
        self.committed_value(key, ts).map(ReadOutcome::Value)
    }

    /// The newest committed value of `key` at `ts`, whatever locks there are (for a caller
    /// that knows no lock can hide a newer commit: one holding the key's lock).
    pub fn committed_value(&self, key: &[u8], ts: Timestamp) -> KvResult<Option<Vec<u8>>> {
        let prefix = encode_user_key(key);
        let start = encode_versioned(key, ts);
        let end = memcomparable::prefix_end(&prefix);
        for item in self.snapshot.scan(Cf::Write, &start, end.as_deref()) {
            let (_, value) = item?;
            let write = Write::decode(&value)?;
            match write.kind {
                WriteKind::Put => return Ok(Some(self.value_of(key, &write)?)),
                WriteKind::Delete => return Ok(None),
                WriteKind::Rollback | WriteKind::Lock => continue,
            }
        }
        Ok(None)
    }

    /// Keys in `[start, end)` (`end = None`: unbounded) with their values visible at `ts`, in
    /// key order, at most `limit` of them.
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let encoded_start = encode_user_key(start);
        let encoded_end = end.map(encode_user_key);
        for item in self
            .snapshot
            .scan(Cf::Lock, &encoded_start, encoded_end.as_deref())
        {
            let (encoded_key, value) = item?;
            let lock = Lock::decode(&value)?;
            if blocks_read(&lock, ts) {
                let key = super::key::decode_user_key(&encoded_key)?;
                return Ok(ReadOutcome::Locked { key, lock });
            }
        }
        let mut out = Vec::new();
        // The encoded user key whose visible version has been decided already.
        let mut decided: Option<Vec<u8>> = None;
        for item in self
            .snapshot
            .scan(Cf::Write, &encoded_start, encoded_end.as_deref())
        {
            if out.len() >= limit {
                break;
            }
            let (versioned, value) = item?;
            let (encoded_key, commit_ts) = split_versioned(&versioned)?;
            if commit_ts > ts || decided.as_deref() == Some(encoded_key) {
                continue;
            }
            let write = Write::decode(&value)?;
            match write.kind {
                WriteKind::Rollback | WriteKind::Lock => continue,
                WriteKind::Delete => {}
                WriteKind::Put => {
                    let key = super::key::decode_user_key(encoded_key)?;
                    let value = self.value_of(&key, &write)?;
                    out.push((key, value));
                }
            }
            decided = Some(encoded_key.to_vec());
        }
        Ok(ReadOutcome::Value(out))
    }
}
