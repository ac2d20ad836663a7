//! What Raft reads from the application's persistent storage, and an in-memory version.
//!
//! Raft never writes storage itself: the application persists what each `Ready` hands it
//! (entries, hard state, snapshots) and then calls `advance`. Raft only reads through this
//! trait: at start (hard state and membership) and when it needs entries or terms that are no
//! longer in its unstable buffer.

use std::fmt;

use crate::types::{ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// The requested index was compacted away (covered by a snapshot).
    Compacted,
    /// The requested index is past the end of the log.
    Unavailable,
    /// The storage itself failed.
    Other(String),
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::Compacted => f.write_str("log index compacted"),
            StorageError::Unavailable => f.write_str("log index unavailable"),
            StorageError::Other(m) => write!(f, "storage error: {m}"),
        }
    }
}

impl std::error::Error for StorageError {}

pub type StorageResult<T> = Result<T, StorageError>;

pub trait Storage {
    /// The persisted hard state and membership.
    fn initial_state(&self) -> StorageResult<(HardState, ConfState)>;

    /// Entries `[low, high)`, at most `max_size` bytes (but at least one entry).
    fn entries(&self, low: Index, high: Index, max_size: u64) -> StorageResult<Vec<Entry>>;

    /// The term of entry `index`; also answers for the snapshot's last index.
    fn term(&self, index: Index) -> StorageResult<Term>;

    /// The first index available in the log (the snapshot's index + 1).
    fn first_index(&self) -> StorageResult<Index>;

    /// The last index in the log (the snapshot's index if the log is empty).
    fn last_index(&self) -> StorageResult<Index>;

    /// The latest snapshot, to send to a follower that needs compacted entries.
    fn snapshot(&self) -> StorageResult<Snapshot>;
}

/// In-memory storage for tests and simulations.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The snapshot the log starts after (index 0: none).
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
}

impl MemStorage {
    /// Storage for a node of a new group with these voters.
    pub fn new_with_conf(conf_state: ConfState) -> MemStorage {
        let mut storage = MemStorage::default();
        storage.snapshot.meta.conf_state = conf_state.clone();
        storage.conf_state = conf_state;
        storage
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    fn offset(&self) -> Index {
        self.snapshot.meta.index
    }

    /// Appends entries, replacing any existing suffix from the first new index on.
    pub fn append(&mut self, entries: &[Entry]) -> StorageResult<()> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        if first.index <= self.offset() {
            // Entries covered by the snapshot are dropped.
            let skip = (self.offset() + 1 - first.index) as usize;
            return self.append(&entries[skip.min(entries.len())..]);
        }
        let last = self.offset() + self.entries.len() as Index;
        if first.index > last + 1 {
            return Err(StorageError::Other(format!(
                "append at {} leaves a gap after {last}",
                first.index
            )));
        }
        self.entries
            .truncate((first.index - self.offset() - 1) as usize);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    /// Replaces everything with a snapshot (a follower installing one).
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) {
        self.conf_state = snapshot.meta.conf_state.clone();
        if self.hard_state.commit < snapshot.meta.index {
            self.hard_state.commit = snapshot.meta.index;
        }
        if self.hard_state.term < snapshot.meta.term {
            self.hard_state.term = snapshot.meta.term;
        }
        self.entries.clear();
        self.snapshot = snapshot;
    }

    /// Makes a snapshot at `index` (which must be applied by the caller) and drops the entries
    /// up to it.
    pub fn compact(
        &mut self,
        index: Index,
        conf_state: ConfState,
        data: Vec<u8>,
    ) -> StorageResult<()> {
        if index <= self.offset() {
            return Err(StorageError::Compacted);
        }
        let term = self.term(index)?;
        let keep = (index - self.offset()) as usize;
        self.entries.drain(..keep);
        self.snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state,
            },
            data,
        };
        Ok(())
    }

    pub fn all_entries(&self) -> &[Entry] {
        &self.entries
    }
}

impl Storage for MemStorage {
    fn initial_state(&self) -> StorageResult<(HardState, ConfState)> {
        Ok((self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: Index, high: Index, max_size: u64) -> StorageResult<Vec<Entry>> {
        if low <= self.offset() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index()? + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = Vec::new();
        let mut size = 0;
        for entry in
            &self.entries[(low - self.offset() - 1) as usize..(high - self.offset() - 1) as usize]
        {
            size += entry.size();
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: Index) -> StorageResult<Term> {
        if index == self.offset() {
            return Ok(self.snapshot.meta.term);
        }
        if index < self.offset() {
            return Err(StorageError::Compacted);
        }
        self.entries
            .get((index - self.offset() - 1) as usize)
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> StorageResult<Index> {
        Ok(self.offset() + 1)
    }

    fn last_index(&self) -> StorageResult<Index> {
        Ok(self.offset() + self.entries.len() as Index)
    }

    fn snapshot(&self) -> StorageResult<Snapshot> {
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term) -> Entry {
        Entry::normal(term, index, vec![])
    }

    #[test]
    fn append_truncates_conflicts_and_compaction_moves_the_start() {
        let mut s = MemStorage::default();
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        s.append(&[entry(3, 2), entry(4, 2)]).unwrap();
        assert_eq!(s.last_index().unwrap(), 4);
        assert_eq!(s.term(3).unwrap(), 2);
        assert!(s.append(&[entry(7, 2)]).is_err());
        s.compact(2, ConfState::default(), b"state".to_vec())
            .unwrap();
        assert_eq!(s.first_index().unwrap(), 3);
        assert_eq!(s.term(2).unwrap(), 1);
        assert_eq!(s.term(1), Err(StorageError::Compacted));
        assert_eq!(s.entries(2, 4, u64::MAX), Err(StorageError::Compacted));
        assert_eq!(s.entries(3, 5, u64::MAX).unwrap().len(), 2);
        assert_eq!(s.entries(3, 5, 1).unwrap().len(), 1);
        assert_eq!(s.term(9), Err(StorageError::Unavailable));
    }
}
