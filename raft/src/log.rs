//! The Raft log: entries in storage (persisted) followed by unstable entries (not yet handed
//! to the application for persistence), plus the commit and apply indexes.
//!
//! Invariants: `applied <= applying <= committed <= last_index()` (`applying`: the last entry
//! handed to the application, which may apply it asynchronously); unstable entries are contiguous and
//! start right after the last persisted entry that still agrees with them; a pending
//! (unstable) snapshot replaces everything before it.

use crate::storage::{Storage, StorageError, StorageResult};
use crate::types::{Entry, Index, Snapshot, Term};

pub struct RaftLog<S: Storage> {
    pub storage: S,
    /// A snapshot received but not yet persisted by the application.
    pending_snapshot: Option<Snapshot>,
    /// Entries not yet persisted; `unstable[i].index == offset + i`.
    unstable: Vec<Entry>,
    offset: Index,
    pub committed: Index,
    pub applied: Index,
    /// The last committed entry handed out for applying (at least `applied`).
    pub applying: Index,
}

impl<S: Storage> RaftLog<S> {
    pub fn new(storage: S, committed: Index, applied: Index) -> StorageResult<Self> {
        let offset = storage.last_index()? + 1;
        let first = storage.first_index()?;
        // Nothing below the snapshot can be unapplied: the application restored it.
        let applied = applied.max(first - 1);
        Ok(RaftLog {
            storage,
            pending_snapshot: None,
            unstable: Vec::new(),
            offset,
            committed: committed.max(applied),
            applied,
            applying: applied,
        })
    }

    pub fn first_index(&self) -> Index {
        match &self.pending_snapshot {
            Some(s) => s.meta.index + 1,
            None => self.storage.first_index().unwrap_or(1),
        }
    }

    pub fn last_index(&self) -> Index {
        if let Some(last) = self.unstable.last() {
            return last.index;
        }
        match &self.pending_snapshot {
            Some(s) => s.meta.index,
            None => self.storage.last_index().unwrap_or(0),
        }
    }

    /// The term of entry `index`: `Ok(0)` for index 0, an error if compacted or beyond the end.
    pub fn term(&self, index: Index) -> StorageResult<Term> {
        if index == 0 {
            return Ok(0);
        }
        if let Some(s) = &self.pending_snapshot {
            if index == s.meta.index {
                return Ok(s.meta.term);
            }
            if index < s.meta.index {
                return Err(StorageError::Compacted);
            }
        }
        if index >= self.offset && !self.unstable.is_empty() {
            return self
                .unstable
                .get((index - self.offset) as usize)
                .map(|e| e.term)
                .ok_or(StorageError::Unavailable);
        }
        if index > self.last_index() {
            return Err(StorageError::Unavailable);
        }
        self.storage.term(index)
    }

    pub fn last_term(&self) -> Term {
        self.term(self.last_index()).unwrap_or(0)
    }

    pub fn match_term(&self, index: Index, term: Term) -> bool {
        self.term(index).map(|t| t == term).unwrap_or(false)
    }

    /// Whether a log ending at (`last_index`, `last_term`) is at least as up to date as ours
    /// (§5.4.1).
    pub fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// Appends entries after the leader's check (§5.3): returns the index of the last entry of
    /// the message if `prev_index`/`prev_term` match, and commits up to
    /// `min(leader_commit, that index)`. Entries already present with the same term are not
    /// appended again; a conflicting suffix is replaced.
    pub fn maybe_append(
        &mut self,
        prev_index: Index,
        prev_term: Term,
        leader_commit: Index,
        entries: &[Entry],
    ) -> Option<Index> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + entries.len() as Index;
        if let Some(conflict) = entries.iter().find(|e| !self.match_term(e.index, e.term)) {
            if conflict.index <= self.committed {
                // A committed entry can never be overwritten (Log Matching + Leader
                // Completeness); a leader asking for it is broken.
                panic!(
                    "entry {} conflicts with the committed log (commit {})",
                    conflict.index, self.committed
                );
            }
            let from = (conflict.index - entries[0].index) as usize;
            self.append(&entries[from..]);
        }
        self.commit_to(leader_commit.min(last_new));
        Some(last_new)
    }

    /// Appends entries (replacing any suffix they overlap); returns the new last index.
    pub fn append(&mut self, entries: &[Entry]) -> Index {
        let Some(first) = entries.first() else {
            return self.last_index();
        };
        let after = first.index - 1;
        if after + 1 == self.offset + self.unstable.len() as Index {
            // Directly after the unstable entries (or the persisted log when they are empty).
        } else if after < self.offset {
            // Replaces part of the persisted log: the unstable part restarts there.
            self.offset = after + 1;
            self.unstable.clear();
        } else {
            self.unstable.truncate((after + 1 - self.offset) as usize);
        }
        if self.unstable.is_empty() {
            self.offset = first.index;
        }
        self.unstable.extend_from_slice(entries);
        self.last_index()
    }

    /// The largest index `<= index` whose term is `<= term`, with that term: where a follower
    /// rejecting an append can tell the leader to probe next.
    pub fn find_conflict_by_term(&self, index: Index, term: Term) -> (Index, Term) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Ok(t) if t > term && i > 0 => i -= 1,
                Ok(t) => return (i, t),
                Err(_) => return (i, 0),
            }
        }
    }

    /// Entries `[low, last]`, at most `max_size` bytes (at least one).
    pub fn entries(&self, low: Index, max_size: u64) -> StorageResult<Vec<Entry>> {
        self.slice(low, self.last_index() + 1, max_size)
    }

    /// Entries `[low, high)`, at most `max_size` bytes (at least one).
    pub fn slice(&self, low: Index, high: Index, max_size: u64) -> StorageResult<Vec<Entry>> {
        if low >= high {
            return Ok(Vec::new());
        }
        if low < self.first_index() {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index() + 1 {
            return Err(StorageError::Unavailable);
        }
        let mut out = if low < self.offset {
            let stored_high = high.min(self.offset);
            let stored = self.storage.entries(low, stored_high, max_size)?;
            if (stored.len() as Index) < stored_high - low {
                return Ok(stored); // Size limit reached within the persisted part.
            }
            stored
        } else {
            Vec::new()
        };
        let mut size: u64 = out.iter().map(Entry::size).sum();
        if high > self.offset {
            let from = (low.max(self.offset) - self.offset) as usize;
            let to = (high - self.offset) as usize;
            for entry in &self.unstable[from..to] {
                size += entry.size();
                if !out.is_empty() && size > max_size {
                    break;
                }
                out.push(entry.clone());
            }
        }
        Ok(out)
    }

    pub fn commit_to(&mut self, index: Index) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Commits up to `index` if that entry is from `term` (§5.4.2: a leader only counts
    /// replicas for entries of its own term; earlier entries commit with them).
    pub fn maybe_commit(&mut self, index: Index, term: Term) -> bool {
        if index > self.committed && self.term(index).is_ok_and(|t| t == term) {
            self.committed = index;
            return true;
        }
        false
    }

    /// Committed entries not yet handed out for applying.
    pub fn next_committed_entries(&self, max_size: u64) -> Vec<Entry> {
        let low = (self.applying + 1).max(self.first_index());
        if self.committed < low {
            return Vec::new();
        }
        self.slice(low, self.committed + 1, max_size)
            .unwrap_or_default()
    }

    pub fn applied_to(&mut self, index: Index) {
        if index > self.applied {
            self.applied = index.min(self.committed);
        }
        self.applying = self.applying.max(self.applied);
    }

    /// Committed entries up to `index` were handed out to be applied (asynchronously).
    pub fn applying_to(&mut self, index: Index) {
        self.applying = self.applying.max(index.min(self.committed));
    }

    pub fn unstable_entries(&self) -> &[Entry] {
        &self.unstable
    }

    pub fn pending_snapshot(&self) -> Option<&Snapshot> {
        self.pending_snapshot.as_ref()
    }

    /// The application persisted the unstable entries up to `index` (with `term`).
    pub fn stable_to(&mut self, index: Index, term: Term) {
        if index < self.offset {
            return;
        }
        let Some(entry) = self.unstable.get((index - self.offset) as usize) else {
            return;
        };
        if entry.term != term {
            return; // Replaced meanwhile: the newer entries are not persisted yet.
        }
        let persisted = (index - self.offset + 1) as usize;
        self.unstable.drain(..persisted);
        self.offset = index + 1;
    }

    /// The application persisted the pending snapshot.
    pub fn stable_snapshot(&mut self, index: Index) {
        if self
            .pending_snapshot
            .as_ref()
            .is_some_and(|s| s.meta.index == index)
        {
            self.pending_snapshot = None;
        }
    }

    /// Replaces the log with a snapshot received from the leader.
    pub fn restore(&mut self, snapshot: Snapshot) {
        self.committed = snapshot.meta.index;
        self.applied = self.applied.min(self.committed);
        self.applying = self.applying.min(self.committed);
        self.unstable.clear();
        self.offset = snapshot.meta.index + 1;
        self.pending_snapshot = Some(snapshot);
    }

    /// The snapshot to send to a follower that needs compacted entries.
    pub fn snapshot(&self) -> StorageResult<Snapshot> {
        match &self.pending_snapshot {
            Some(s) => Ok(s.clone()),
            None => self.storage.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn log_with_terms(terms: &[Term]) -> RaftLog<MemStorage> {
        let mut log = RaftLog::new(MemStorage::default(), 0, 0).unwrap();
        let entries: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| Entry::normal(t, i as Index + 1, vec![]))
            .collect();
        log.append(&entries);
        log
    }

    #[test]
    fn only_entries_of_the_leaders_term_commit_by_counting_replicas() {
        // Figure 8: index 2 (term 2) is on a majority, but the leader is in term 4. Committing
        // it by counting would be unsafe; it commits together with an entry of term 4.
        let mut log = log_with_terms(&[1, 2]);
        assert!(!log.maybe_commit(2, 4));
        assert_eq!(log.committed, 0);
        log.append(&[Entry::normal(4, 3, vec![])]);
        assert!(log.maybe_commit(3, 4));
        assert_eq!(log.committed, 3);
    }

    #[test]
    fn maybe_append_keeps_matching_entries_and_replaces_conflicts() {
        let mut log = log_with_terms(&[1, 1, 2]);
        // The same entries again: nothing changes, commit follows the leader up to them.
        let same: Vec<Entry> = vec![Entry::normal(1, 2, vec![]), Entry::normal(2, 3, vec![])];
        assert_eq!(log.maybe_append(1, 1, 2, &same), Some(3));
        assert_eq!((log.last_index(), log.committed), (3, 2));
        // A conflicting entry at 3 replaces the suffix.
        assert_eq!(
            log.maybe_append(2, 1, 3, &[Entry::normal(3, 3, vec![])]),
            Some(3)
        );
        assert_eq!(log.term(3).unwrap(), 3);
        // A mismatching previous entry is refused.
        assert_eq!(log.maybe_append(3, 9, 3, &[]), None);
        // The leader's commit beyond what the message covers is not taken.
        assert_eq!(log.maybe_append(1, 1, 10, &[]), Some(1));
        assert_eq!(log.committed, 3);
        // Conflict hints: the largest index at or below 3 whose term is at most 2.
        assert_eq!(log.find_conflict_by_term(3, 2), (2, 1));
    }
}
