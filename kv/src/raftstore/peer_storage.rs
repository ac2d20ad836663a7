//! [`PeerStorage`]: one peer's persistent Raft state, kept in the store's engine.
//!
//! # Persistence order and crash recovery
//!
//! Every change goes into a [`WriteBatch`] the caller writes atomically, together with the
//! data it describes: entries and hard state of a Ready in one batch; applied data and the
//! applied index in one batch; a snapshot's data, the log truncation and the new apply state
//! in one batch. After a crash the engine therefore holds a prefix of those batches, each
//! whole, and the peer reopens from exactly what was persisted: it never re-applies an entry
//! whose effects are already in the data, and never believes it applied one whose effects are
//! not. The in-memory caches are updated when a change is added to a batch; the caller must
//! write that batch before using the storage again (if the write fails, drop the peer and
//! reopen it).

use std::sync::Arc;

use raft::{
    ConfState, Entry, HardState, Index, Snapshot, SnapshotMeta, Storage, StorageError, Term,
};

use proto::metapb::Region;

use super::keys;
use super::record::{self, ApplyState};
use super::region::{self, MergeState, RegionLocalState};
use crate::error::{KvError, KvResult};
use crate::mvcc::key::encode_user_key;
use crate::storage::{Cf, Engine, Snapshot as EngineSnapshot, WriteBatch};

/// Where the log of a region created by a split starts: every replica of the new region
/// begins with this index and term applied (TiKV's RAFT_INIT_LOG_INDEX/TERM), so that a
/// replica created empty by a message (index 0) is behind all of them and gets a snapshot.
pub const SPLIT_INIT_INDEX: Index = 5;
pub const SPLIT_INIT_TERM: Term = 5;

/// The data column families a region's snapshot carries.
const DATA_CFS: [Cf; 3] = [Cf::Default, Cf::Lock, Cf::Write];

pub struct PeerStorage<E: Engine> {
    engine: Arc<E>,
    region_id: u64,
    /// The region as of the applied index: range, epoch and peers.
    region: Region,
    /// The merge this (source) region applied the PrepareMerge of, if any.
    merging: Option<MergeState>,
    hard_state: HardState,
    conf_state: ConfState,
    apply: ApplyState,
    last_index: Index,
    /// Approximate bytes of the log kept (entries after the truncation point), for log GC by
    /// size: counted on append, reset on compaction, recounted on open.
    log_bytes: u64,
}

fn storage_error(e: KvError) -> StorageError {
    StorageError::Other(e.to_string())
}

impl<E: Engine> PeerStorage<E> {
    /// Opens this store's peer of `region`. A peer with nothing persisted starts from
    /// `region` as given: its peers are the bootstrap membership, or none for a peer created
    /// to join an existing region, which the leader's snapshot then initialises.
    pub fn open(engine: Arc<E>, region: &Region) -> KvResult<Self> {
        let region_id = region.id;
        let snapshot = engine.snapshot();
        let persisted = match snapshot.get(Cf::Raft, &keys::region_state(region_id))? {
            Some(bytes) => Some(RegionLocalState::decode(&bytes)?).filter(|s| !s.tombstone),
            None => None,
        };
        let (region, merging) = match persisted {
            Some(state) => (state.region, state.merging),
            None => {
                // A replica of a new region records it at once, so a restart finds it; one
                // created to join a region is recorded by the snapshot that initialises it.
                if !region.peers.is_empty() {
                    let state = RegionLocalState::new(region.clone());
                    let mut batch = WriteBatch::new();
                    batch.put(Cf::Raft, keys::region_state(region_id), state.encode());
                    engine.write(batch)?;
                }
                (region.clone(), None)
            }
        };
        let initial_conf = region::conf_state(&region);
        let hard_state = match snapshot.get(Cf::Raft, &keys::hard_state(region_id))? {
            Some(bytes) => record::decode_hard_state(&bytes)?,
            None => HardState::default(),
        };
        let apply = match snapshot.get(Cf::Raft, &keys::apply_state(region_id))? {
            Some(bytes) => record::decode_apply_state(&bytes)?,
            None => ApplyState::default(),
        };
        let conf_state = match snapshot.get(Cf::Raft, &keys::conf_state(region_id))? {
            Some(bytes) => record::decode_conf_state(&bytes)?,
            None => initial_conf,
        };
        // The last entry: the highest index under this peer's entry prefix.
        // Compacted entries whose background deletion a crash interrupted.
        let mut leftovers = WriteBatch::new();
        let (from, to) = (
            keys::entry(region_id, 0),
            keys::entry(region_id, apply.truncated_index + 1),
        );
        for item in snapshot.scan(Cf::Raft, &from, Some(&to)) {
            let (key, _) = item?;
            leftovers.delete(Cf::Raft, key);
        }
        if !leftovers.is_empty() {
            engine.write(leftovers)?;
        }
        let mut log_bytes = 0;
        let mut last_index = apply.truncated_index;
        let (from, to) = (
            keys::entry(region_id, apply.truncated_index + 1),
            keys::entry(region_id, Index::MAX),
        );
        for item in snapshot.scan(Cf::Raft, &from, Some(&to)) {
            let (_, value) = item?;
            let entry = record::decode_entry(&value)?;
            last_index = entry.index;
            log_bytes += entry.size();
        }
        drop(snapshot);
        Ok(PeerStorage {
            engine,
            region_id,
            region,
            merging,
            hard_state,
            conf_state,
            apply,
            last_index,
            log_bytes,
        })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    /// The merge this region is frozen for (its PrepareMerge applied), if any.
    pub fn merging(&self) -> Option<&MergeState> {
        self.merging.as_ref()
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    /// Adds to `batch` the initial state of `right`, a region created by a split applied in
    /// the same batch: its region state, and a log that starts at [`SPLIT_INIT_INDEX`] (apply
    /// state, hard state and membership as if a snapshot at that index had been applied), which
    /// every replica of the new region shares. Its data is already in the engine: it is the
    /// parent's, in the right part of the range.
    ///
    /// If this store already has a state for the new region, it is left alone: a live one
    /// was initialised by the new region's own leader (a snapshot) and is newer than this
    /// split; a tombstone means this store's replica of it was created and removed since, so
    /// the right part's data here belongs to no replica and is deleted.
    pub fn write_split_region(engine: &E, batch: &mut WriteBatch, right: &Region) -> KvResult<()> {
        let snapshot = engine.snapshot();
        if let Some(bytes) = snapshot.get(Cf::Raft, &keys::region_state(right.id))? {
            if RegionLocalState::decode(&bytes)?.tombstone {
                let (start, end) = data_range(right);
                for cf in DATA_CFS {
                    for item in snapshot.scan(cf, &start, end.as_deref()) {
                        let (key, _) = item?;
                        batch.delete(cf, key);
                    }
                }
            }
            return Ok(());
        }
        let state = RegionLocalState::new(right.clone());
        batch.put(Cf::Raft, keys::region_state(right.id), state.encode());
        let apply = ApplyState {
            applied: SPLIT_INIT_INDEX,
            truncated_index: SPLIT_INIT_INDEX,
            truncated_term: SPLIT_INIT_TERM,
        };
        batch.put(
            Cf::Raft,
            keys::apply_state(right.id),
            record::encode_apply_state(&apply),
        );
        let hard_state = HardState {
            term: SPLIT_INIT_TERM,
            vote: None,
            commit: SPLIT_INIT_INDEX,
        };
        batch.put(
            Cf::Raft,
            keys::hard_state(right.id),
            record::encode_hard_state(&hard_state),
        );
        batch.put(
            Cf::Raft,
            keys::conf_state(right.id),
            record::encode_conf_state(&region::conf_state(right)),
        );
        Ok(())
    }

    /// Records the region after an applied change (write it with the applied index).
    pub fn set_region(&mut self, batch: &mut WriteBatch, region: Region) {
        self.put_region_state(batch, region, self.merging.clone(), false);
    }

    /// Records the region frozen by an applied PrepareMerge, and the merge (write it with the
    /// applied index).
    pub fn set_merging(&mut self, batch: &mut WriteBatch, region: Region, merge: MergeState) {
        self.put_region_state(batch, region, Some(merge), false);
    }

    fn put_region_state(
        &mut self,
        batch: &mut WriteBatch,
        region: Region,
        merging: Option<MergeState>,
        tombstone: bool,
    ) {
        let state = RegionLocalState {
            region,
            tombstone,
            merging,
        };
        batch.put(Cf::Raft, keys::region_state(self.region_id), state.encode());
        self.region = state.region;
        self.merging = state.merging;
    }

    /// Ends this (source) replica once its target took it over: deletes its Raft state and
    /// log but not its data, which the target's replica on this store now serves, and leaves
    /// a tombstone that records the merge (which the target's CommitMerge waits for).
    pub fn destroy_merged(&mut self, batch: &mut WriteBatch) -> KvResult<()> {
        if self.merging.is_none() {
            return Err(KvError::Corrupt(format!(
                "region {} is not merging",
                self.region_id
            )));
        }
        self.destroy_keeping_data(batch)
    }

    /// Ends this replica but not its data: its Raft state and log go, a tombstone stays. For
    /// a merged source ([`PeerStorage::destroy_merged`]), and for a replica whose range a
    /// snapshot of a region that took it over is about to replace (a merge this replica
    /// never finished).
    pub fn destroy_keeping_data(&mut self, batch: &mut WriteBatch) -> KvResult<()> {
        self.delete_raft_state(batch)?;
        self.put_region_state(batch, self.region.clone(), self.merging.clone(), true);
        Ok(())
    }

    fn delete_raft_state(&self, batch: &mut WriteBatch) -> KvResult<()> {
        let current = self.engine.snapshot();
        let from = keys::entry(self.region_id, 0);
        let to = keys::entry(self.region_id, Index::MAX);
        for item in current.scan(Cf::Raft, &from, Some(&to)) {
            let (key, _) = item?;
            batch.delete(Cf::Raft, key);
        }
        batch.delete(Cf::Raft, keys::hard_state(self.region_id));
        batch.delete(Cf::Raft, keys::apply_state(self.region_id));
        batch.delete(Cf::Raft, keys::conf_state(self.region_id));
        Ok(())
    }

    /// Destroys this replica (it was removed from the region): deletes its data and its Raft
    /// state, and leaves a tombstone with the region as of the removal, so that stale messages
    /// from the old membership do not recreate it.
    pub fn destroy(&mut self, batch: &mut WriteBatch) -> KvResult<()> {
        let (start, end) = data_range(&self.region);
        self.delete_data_and_log(batch, &start, end.as_deref())?;
        self.delete_raft_state(batch)?;
        self.put_region_state(batch, self.region.clone(), None, true);
        Ok(())
    }

    pub fn applied(&self) -> Index {
        self.apply.applied
    }

    /// The apply state as persisted last (applied index and truncation point).
    pub fn apply_state(&self) -> ApplyState {
        self.apply
    }

    /// Entries up to `applied` were applied, with their apply state, by the apply pool
    /// (`apply`): only the cache moves.
    pub fn applied_elsewhere(&mut self, applied: Index) {
        self.apply.applied = self.apply.applied.max(applied);
    }

    pub fn truncated(&self) -> (Index, Term) {
        (self.apply.truncated_index, self.apply.truncated_term)
    }

    /// Persists entries (from a Ready), replacing any suffix they overlap.
    pub fn append(&mut self, batch: &mut WriteBatch, entries: &[Entry]) {
        let Some(last) = entries.last() else { return };
        for entry in entries {
            batch.put(
                Cf::Raft,
                keys::entry(self.region_id, entry.index),
                record::encode_entry(entry),
            );
        }
        for stale in last.index + 1..=self.last_index {
            batch.delete(Cf::Raft, keys::entry(self.region_id, stale));
        }
        self.last_index = last.index;
        self.log_bytes += entries.iter().map(Entry::size).sum::<u64>();
    }

    /// Approximate bytes of log entries kept (see `log_bytes`).
    pub fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    pub fn set_hard_state(&mut self, batch: &mut WriteBatch, hard_state: HardState) {
        batch.put(
            Cf::Raft,
            keys::hard_state(self.region_id),
            record::encode_hard_state(&hard_state),
        );
        self.hard_state = hard_state;
    }

    /// Records that entries up to `applied` are applied (write it with their data).
    pub fn set_applied(&mut self, batch: &mut WriteBatch, applied: Index) {
        self.apply.applied = applied;
        self.put_apply_state(batch);
    }

    /// Records the membership after applying a conf change (write it with the applied index).
    pub fn set_conf_state(&mut self, batch: &mut WriteBatch, conf_state: ConfState) {
        batch.put(
            Cf::Raft,
            keys::conf_state(self.region_id),
            record::encode_conf_state(&conf_state),
        );
        self.conf_state = conf_state;
    }

    fn put_apply_state(&self, batch: &mut WriteBatch) {
        batch.put(
            Cf::Raft,
            keys::apply_state(self.region_id),
            record::encode_apply_state(&self.apply),
        );
    }

    /// Drops the log up to `index` (which must be applied): raft log GC.
    ///
    /// `batch` gets the new truncation point (write it durably); `deletes` gets the deletes of
    /// the compacted entries, which no reader looks at once the truncation point is persisted,
    /// so they may be written later, in the background (entries a crash left behind are
    /// deleted when the peer is opened again).
    pub fn compact(
        &mut self,
        batch: &mut WriteBatch,
        deletes: &mut WriteBatch,
        index: Index,
    ) -> KvResult<()> {
        if index <= self.apply.truncated_index {
            return Ok(());
        }
        if index > self.apply.applied {
            return Err(KvError::Corrupt(format!(
                "cannot compact region {} to {index}: only {} is applied",
                self.region_id, self.apply.applied
            )));
        }
        let term = self
            .term(index)
            .map_err(|e| KvError::Corrupt(e.to_string()))?;
        for stale in self.apply.truncated_index + 1..=index {
            deletes.delete(Cf::Raft, keys::entry(self.region_id, stale));
        }
        self.apply.truncated_index = index;
        self.apply.truncated_term = term;
        // What remains after `index` is at most the unapplied tail: count it as nothing.
        self.log_bytes = 0;
        self.put_apply_state(batch);
        Ok(())
    }

    /// Adds deletes of every data pair in the engine-key range `[start, end)` and of this
    /// peer's whole raft log.
    fn delete_data_and_log(
        &self,
        batch: &mut WriteBatch,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> KvResult<()> {
        let current = self.engine.snapshot();
        for cf in DATA_CFS {
            for item in current.scan(cf, start, end) {
                let (key, _) = item?;
                batch.delete(cf, key);
            }
        }
        let from = keys::entry(self.region_id, 0);
        let to = keys::entry(self.region_id, Index::MAX);
        for item in current.scan(Cf::Raft, &from, Some(&to)) {
            let (key, _) = item?;
            batch.delete(Cf::Raft, key);
        }
        Ok(())
    }

    /// Replaces the region's data and log with a snapshot received from the leader: deletes the
    /// data in the region's range (including keys deleted since the snapshot's state), writes
    /// the snapshot's pairs, drops the whole log, and moves the apply state to the snapshot.
    pub fn apply_snapshot(&mut self, batch: &mut WriteBatch, snapshot: &Snapshot) -> KvResult<()> {
        let (state, pairs) = decode_snapshot_data(&snapshot.data)?;
        let region = state.region;
        if region.id != self.region_id {
            return Err(KvError::Corrupt(format!(
                "snapshot of region {} sent to region {}",
                region.id, self.region_id
            )));
        }
        // Whatever this replica had in its range, and in the snapshot's (the same unless the
        // replica was created from a message with an older view of the region).
        let (old, new) = (data_range(&self.region), data_range(&region));
        self.delete_data_and_log(batch, &old.0, old.1.as_deref())?;
        if new != old {
            self.delete_data_and_log(batch, &new.0, new.1.as_deref())?;
        }
        for (cf, key, value) in pairs {
            batch.put(cf, key, value);
        }
        // A snapshot of a region frozen for a merge freezes this replica too.
        self.put_region_state(batch, region, state.merging, false);
        let meta = &snapshot.meta;
        self.apply = ApplyState {
            applied: meta.index,
            truncated_index: meta.index,
            truncated_term: meta.term,
        };
        self.put_apply_state(batch);
        self.set_conf_state(batch, meta.conf_state.clone());
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(meta.index);
        hard_state.term = hard_state.term.max(meta.term);
        self.set_hard_state(batch, hard_state);
        self.last_index = meta.index;
        Ok(())
    }

    fn read_entries(&self, low: Index, high: Index, max_size: u64) -> KvResult<Vec<Entry>> {
        let snapshot = self.engine.snapshot();
        let (from, to) = (
            keys::entry(self.region_id, low),
            keys::entry(self.region_id, high),
        );
        let mut out = Vec::new();
        let mut size = 0;
        for item in snapshot.scan(Cf::Raft, &from, Some(&to)) {
            let (_, value) = item?;
            let entry = record::decode_entry(&value)?;
            if entry.index != low + out.len() as Index {
                return Err(KvError::Corrupt(format!(
                    "raft log of region {} has a gap at {}",
                    self.region_id, entry.index
                )));
            }
            size += entry.size();
            if !out.is_empty() && size > max_size {
                break;
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// The region's state at the applied index, from one engine snapshot (applied data and the
    /// apply state are written together, so they agree).
    fn generate_snapshot(&self) -> KvResult<Snapshot> {
        let snapshot = self.engine.snapshot();
        let apply = match snapshot.get(Cf::Raft, &keys::apply_state(self.region_id))? {
            Some(bytes) => record::decode_apply_state(&bytes)?,
            None => ApplyState::default(),
        };
        let term = if apply.applied == apply.truncated_index {
            apply.truncated_term
        } else {
            match snapshot.get(Cf::Raft, &keys::entry(self.region_id, apply.applied))? {
                Some(bytes) => record::decode_entry(&bytes)?.term,
                None => {
                    return Err(KvError::Corrupt(format!(
                        "applied entry {} is missing",
                        apply.applied
                    )));
                }
            }
        };
        let conf_state = match snapshot.get(Cf::Raft, &keys::conf_state(self.region_id))? {
            Some(bytes) => record::decode_conf_state(&bytes)?,
            None => self.conf_state.clone(),
        };
        let state = match snapshot.get(Cf::Raft, &keys::region_state(self.region_id))? {
            Some(bytes) => RegionLocalState::decode(&bytes)?,
            None => RegionLocalState {
                region: self.region.clone(),
                tombstone: false,
                merging: self.merging.clone(),
            },
        };
        let state_bytes = state.encode();
        let region = state.region;
        let mut data = Vec::new();
        data.extend_from_slice(&(state_bytes.len() as u32).to_be_bytes());
        data.extend_from_slice(&state_bytes);
        // The data of the region as of the same engine snapshot.
        let (start, end) = data_range(&region);
        for cf in DATA_CFS {
            for item in snapshot.scan(cf, &start, end.as_deref()) {
                let (key, value) = item?;
                encode_pair(&mut data, cf, &key, &value);
            }
        }
        Ok(Snapshot {
            meta: SnapshotMeta {
                index: apply.applied,
                term,
                conf_state,
            },
            data,
        })
    }
}

/// The engine-key range of a region's user keys.
fn data_range(region: &Region) -> (Vec<u8>, Option<Vec<u8>>) {
    let end = (!region.end_key.is_empty()).then(|| encode_user_key(&region.end_key));
    (encode_user_key(&region.start_key), end)
}

fn cf_tag(cf: Cf) -> u8 {
    match cf {
        Cf::Default => 0,
        Cf::Lock => 1,
        Cf::Write => 2,
        Cf::Raft => 3,
    }
}

fn encode_pair(out: &mut Vec<u8>, cf: Cf, key: &[u8], value: &[u8]) {
    out.push(cf_tag(cf));
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// One key-value pair of a snapshot, with its column family.
type SnapshotPair = (Cf, Vec<u8>, Vec<u8>);

/// The region a snapshot's data describes (its first part; see [`decode_snapshot_data`]).
pub fn snapshot_region(mut data: &[u8]) -> KvResult<Region> {
    Ok(RegionLocalState::decode(take_field(&mut data)?)?.region)
}

fn malformed_snapshot() -> KvError {
    KvError::Corrupt("malformed snapshot data".into())
}

/// The next length-prefixed field of snapshot data (the input moves past it).
fn take_field<'a>(input: &mut &'a [u8]) -> KvResult<&'a [u8]> {
    let Some((len, rest)) = input.split_first_chunk::<4>() else {
        return Err(malformed_snapshot());
    };
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(malformed_snapshot());
    }
    let (field, rest) = rest.split_at(len);
    *input = rest;
    Ok(field)
}

/// A snapshot's data: the region's state (length-prefixed [`RegionLocalState`]), then the
/// pairs.
fn decode_snapshot_data(mut input: &[u8]) -> KvResult<(RegionLocalState, Vec<SnapshotPair>)> {
    let state = RegionLocalState::decode(take_field(&mut input)?)?;
    if state.tombstone {
        return Err(malformed_snapshot());
    }
    let mut pairs = Vec::new();
    while let Some((&tag, rest)) = input.split_first() {
        input = rest;
        let cf = match tag {
            0 => Cf::Default,
            1 => Cf::Lock,
            2 => Cf::Write,
            _ => return Err(malformed_snapshot()),
        };
        let key = take_field(&mut input)?.to_vec();
        let value = take_field(&mut input)?.to_vec();
        pairs.push((cf, key, value));
    }
    Ok((state, pairs))
}

impl<E: Engine> Storage for PeerStorage<E> {
    fn initial_state(&self) -> Result<(HardState, ConfState), StorageError> {
        Ok((self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(&self, low: Index, high: Index, max_size: u64) -> Result<Vec<Entry>, StorageError> {
        if low <= self.apply.truncated_index {
            return Err(StorageError::Compacted);
        }
        if high > self.last_index + 1 {
            return Err(StorageError::Unavailable);
        }
        self.read_entries(low, high, max_size)
            .map_err(storage_error)
    }

    fn term(&self, index: Index) -> Result<Term, StorageError> {
        if index == self.apply.truncated_index {
            return Ok(self.apply.truncated_term);
        }
        if index < self.apply.truncated_index {
            return Err(StorageError::Compacted);
        }
        if index > self.last_index {
            return Err(StorageError::Unavailable);
        }
        let entries = self
            .read_entries(index, index + 1, u64::MAX)
            .map_err(storage_error)?;
        entries
            .first()
            .map(|e| e.term)
            .ok_or(StorageError::Unavailable)
    }

    fn first_index(&self) -> Result<Index, StorageError> {
        Ok(self.apply.truncated_index + 1)
    }

    fn last_index(&self) -> Result<Index, StorageError> {
        Ok(self.last_index)
    }

    fn snapshot(&self) -> Result<Snapshot, StorageError> {
        self.generate_snapshot().map_err(storage_error)
    }
}
