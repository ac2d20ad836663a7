//! [`TxnClient`] and its transactions: the Percolator client protocol.
//!
//! A transaction buffers its writes and prewrites them at commit (optimistic). It may also
//! lock keys as it goes ([`KvTransaction::lock_for_update`], pessimistic, see `txn::actions`):
//! it waits for other transactions' locks, holds its own until it ends, and reads the
//! newest committed values of what it locked; its prewrite then cannot meet a write
//! conflict on those keys. The first key it locks is its primary. Meeting another
//! transaction's lock, the store holds the request until the lock goes (`txn::lock_waits`,
//! up to a slice); between slices the client checks the holder's status once (a dead holder
//! is rolled back) and sends again, up to `max_lock_wait`.
//!
//! While a transaction holds pessimistic locks, a heartbeat thread keeps its primary lock's
//! TTL ahead of the time it has been open (every third of `lock_ttl`), so that others wait
//! for it instead of rolling it back; a crashed client's locks expire `lock_ttl` after its
//! last heartbeat.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use scheduler_api::{Timestamp, TimestampSource};
use tracing::warn;

use super::transaction::{
    CHANGED_BEFORE_COMMIT, Isolation, LockPurpose, Transaction, TransactionSource, TxnConfig,
    TxnMode,
};
use crate::error::{KvError, KvResult};
use crate::mvcc::Lock;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::KvPair;
use crate::txn::actions::PrewriteError;
use crate::txn::{LockMode, Mutation, TxnCommands, TxnCommandsExt, TxnStatus};

/// Tunables of the client protocol.
#[derive(Clone, Debug)]
pub struct TxnOptions {
    /// How long a prewrite lock is presumed alive after the prewrite is sent. Readers that meet
    /// an older lock roll its transaction back.
    pub lock_ttl: Duration,
    /// How long a reader or committer waits for a live lock before giving up with a
    /// retryable error.
    pub max_lock_wait: Duration,
}

impl Default for TxnOptions {
    fn default() -> Self {
        Self {
            lock_ttl: Duration::from_secs(3),
            max_lock_wait: Duration::from_secs(10),
        }
    }
}

struct Shared {
    store: Arc<dyn TxnCommands>,
    tso: Arc<dyn TimestampSource>,
    options: TxnOptions,
}

/// Begins transactions against a store's [`TxnCommands`] (local or remote) with timestamps
/// from a [`TimestampSource`] (the oracle in-process, or a scheduler client).
#[derive(Clone)]
pub struct TxnClient {
    shared: Arc<Shared>,
}

impl TxnClient {
    pub fn new(
        store: Arc<dyn TxnCommands>,
        tso: Arc<dyn TimestampSource>,
        options: TxnOptions,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                tso,
                options,
            }),
        }
    }

    /// An optimistic snapshot transaction (explicit locks wait up to `max_lock_wait`).
    pub fn begin_txn(&self) -> KvResult<KvTransaction> {
        self.begin_with(TxnConfig {
            lock_timeout: Some(self.shared.options.max_lock_wait),
            ..TxnConfig::optimistic()
        })
    }

    pub fn begin_with(&self, config: TxnConfig) -> KvResult<KvTransaction> {
        let start_ts = self.shared.tso.get_timestamp()?;
        Ok(KvTransaction {
            shared: Arc::clone(&self.shared),
            config,
            start_ts,
            read_ts: start_ts,
            statements: 0,
            began: Instant::now(),
            buffer: BTreeMap::new(),
            finished: false,
            locked: BTreeSet::new(),
            primary: None,
            heartbeat: None,
            commit_checks: BTreeMap::new(),
        })
    }
}

impl TransactionSource for TxnClient {
    fn begin(&self, config: TxnConfig) -> KvResult<Box<dyn Transaction>> {
        Ok(Box::new(self.begin_with(config)?))
    }
}

/// How pessimistic locks are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LockAt {
    /// At the statement's snapshot, and over any change committed since (the lock then
    /// carries that change's commit_ts), answering the newest values with the lock: READ
    /// COMMITTED, and inserts' existence checks. No fresh timestamp, no second read.
    Newest,
    /// At the transaction's start: a change committed since fails the lock with a write
    /// conflict (REPEATABLE READ).
    Snapshot,
}

/// A buffered write.
#[derive(Clone, Debug)]
enum Buffered {
    Put(Vec<u8>),
    Delete,
    Lock,
}

/// A Percolator transaction. See the `txn` module for the protocol.
pub struct KvTransaction {
    shared: Arc<Shared>,
    config: TxnConfig,
    start_ts: Timestamp,
    /// What reads see: `start_ts`, or under pessimistic READ COMMITTED the current
    /// statement's snapshot.
    read_ts: Timestamp,
    /// Statements begun so far (the first one reads at `start_ts`).
    statements: u64,
    /// When `start_ts` was taken, by the local clock.
    began: Instant,
    buffer: BTreeMap<Vec<u8>, Buffered>,
    finished: bool,
    /// Keys this transaction holds pessimistic locks on, and the first of them it locked (its
    /// primary).
    locked: BTreeSet<Vec<u8>>,
    primary: Option<Vec<u8>>,
    /// Keeps the primary lock alive while the transaction holds pessimistic locks.
    heartbeat: Option<Heartbeat>,
    /// Keys to read again at the commit timestamp, with the values they must still have
    /// (see [`Transaction::check_at_commit`]).
    commit_checks: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// A thread extending a transaction's primary lock's TTL until it is dropped.
struct Heartbeat {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Heartbeat {
    fn start(shared: Arc<Shared>, primary: Vec<u8>, start_ts: Timestamp, began: Instant) -> Self {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stopped = Arc::clone(&stop);
        let every = (shared.options.lock_ttl / 3).max(Duration::from_millis(10));
        let thread = std::thread::Builder::new()
            .name("txn-heartbeat".into())
            .spawn(move || {
                let (lock, wake) = &*stopped;
                let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    // Stopped before this thread first waited: the wake-up is not lost.
                    if *done {
                        return;
                    }
                    done = wake
                        .wait_timeout(done, every)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    if *done {
                        return;
                    }
                    let ttl = began.elapsed() + shared.options.lock_ttl;
                    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                    if let Err(e) = shared.store.txn_heartbeat(&primary, start_ts, ttl_ms) {
                        // The primary lock is gone (rolled back by someone): nothing to keep.
                        warn!(start_ts = %start_ts, error = %e, "transaction heartbeat failed");
                        return;
                    }
                }
            })
            .ok();
        Heartbeat { stop, thread }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Shared {
    /// Settles the fate of `lock` (found on `key`) so that reads and prewrites can proceed:
    /// roll it forward if its primary committed, back if the primary rolled back or expired;
    /// wait while it is alive, up to `max_lock_wait`.
    fn resolve_lock(&self, key: &[u8], lock: &Lock, waited_since: Instant) -> KvResult<()> {
        let mut backoff = Duration::from_millis(1);
        while !self.settle_lock(key, lock)? {
            if waited_since.elapsed() >= self.options.max_lock_wait {
                return Err(KvError::LockWaitTimeout {
                    key: key.to_vec(),
                    lock_ts: lock.start_ts,
                });
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
        Ok(())
    }

    /// One look at the fate of `lock` (found on `key`): resolves it if its transaction is
    /// over (or dead: rolled back here) and answers true; false while it is alive.
    fn settle_lock(&self, key: &[u8], lock: &Lock) -> KvResult<bool> {
        let now = self.tso.get_timestamp()?;
        match self
            .store
            .check_txn_status(&lock.primary, lock.start_ts, now)?
        {
            // Settle every lock the transaction left on the store at once: a scan that met
            // one of them is likely to meet the others.
            TxnStatus::Committed { commit_ts } => self
                .store
                .resolve_lock(key, lock.start_ts, Some(commit_ts))
                .map(|_| true),
            TxnStatus::RolledBack => self
                .store
                .resolve_lock(key, lock.start_ts, None)
                .map(|_| true),
            TxnStatus::Alive { .. } => Ok(false),
        }
    }

    /// Runs `read` until it returns a value, resolving the locks it reports.
    fn read_resolving<T>(&self, mut read: impl FnMut() -> KvResult<ReadOutcome<T>>) -> KvResult<T> {
        let since = Instant::now();
        loop {
            match read()? {
                ReadOutcome::Value(v) => return Ok(v),
                ReadOutcome::Locked { key, lock } => self.resolve_lock(&key, &lock, since)?,
            }
        }
    }
}

impl KvTransaction {
    fn check_open(&self) -> KvResult<()> {
        if self.finished {
            return Err(KvError::TxnAborted {
                start_ts: self.start_ts,
                reason: "the transaction has already finished".into(),
            });
        }
        Ok(())
    }

    fn mutations(&self) -> Vec<Mutation> {
        self.buffer
            .iter()
            .map(|(key, op)| match op {
                Buffered::Put(value) => Mutation::Put {
                    key: key.clone(),
                    value: value.clone(),
                },
                Buffered::Delete => Mutation::Delete { key: key.clone() },
                Buffered::Lock => Mutation::Lock { key: key.clone() },
            })
            .collect()
    }

    /// The TTL to put on our locks: long enough to cover the time since start_ts (locks'
    /// expiry is measured from start_ts) plus the configured TTL.
    fn lock_ttl_ms(&self) -> u64 {
        // Measured locally: no timestamp round trip. The oracle's clock never runs faster than
        // the local one, so this never understates the time since start_ts.
        let elapsed = self.began.elapsed() + self.shared.options.lock_ttl;
        u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
    }

    /// Pessimistic: locks `keys` for this transaction until it ends, waiting for other
    /// transactions' locks (resolving those of dead ones), and returns the newest committed
    /// value of each (this transaction's own writes over them). Nobody else can change the
    /// keys afterwards, so the values stay the newest until this transaction commits, and its
    /// prewrite of them cannot conflict.
    pub fn lock_for_update(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        self.check_open()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let found = self.acquire_locks(keys, LockAt::Newest)?;
        Ok(self.overlay(keys, found))
    }

    /// Takes pessimistic locks on `keys` (see [`LockAt`]; keys it holds already are kept),
    /// waiting for other transactions' locks up to the configured `lock_timeout`. Answers
    /// the newest values for [`LockAt::Newest`].
    fn acquire_locks(&mut self, keys: &[Vec<u8>], at: LockAt) -> KvResult<Vec<KvPair>> {
        // The primary is locked alone, before any other key: the parts of a request over
        // several regions run separately, and a secondary locked while its primary is not
        // would let another transaction, checking the primary, roll this one back.
        if self.primary.is_none() && keys.len() > 1 {
            let mut values = self.acquire_locks(&keys[..1], at)?;
            values.extend(self.acquire_locks(&keys[1..], at)?);
            return Ok(values);
        }
        let primary = self.primary.clone().unwrap_or_else(|| keys[0].clone());
        // Counted as held before the request goes: some regions' parts may lock their keys
        // even if the request fails, and a rollback must release them.
        if self.primary.is_some() {
            self.hold(keys);
        }
        let deadline = self.config.lock_timeout.map(|t| Instant::now() + t);
        let (for_update_ts, mode) = match at {
            LockAt::Newest => (
                self.read_ts,
                LockMode {
                    lock_if_changed: true,
                    return_values: true,
                },
            ),
            LockAt::Snapshot => (self.start_ts, LockMode::default()),
        };
        loop {
            let ttl = self.lock_ttl_ms();
            let wait_ms = match deadline {
                None => u64::MAX,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
                }
            };
            let acquired = self.shared.store.acquire_pessimistic_lock(
                keys,
                &primary,
                self.start_ts,
                for_update_ts,
                ttl,
                wait_ms,
                mode,
            );
            match acquired {
                Ok(values) => {
                    self.hold(keys);
                    self.primary.get_or_insert_with(|| primary.clone());
                    if self.heartbeat.is_none() {
                        self.heartbeat = Some(Heartbeat::start(
                            Arc::clone(&self.shared),
                            primary.clone(),
                            self.start_ts,
                            self.began,
                        ));
                    }
                    return Ok(values);
                }
                // The store held the request as long as it would. A dead holder is settled
                // here; a live one is waited for again, unless the time is up.
                Err(PrewriteError::Locked { key, lock }) => {
                    let settled = self.shared.settle_lock(&key, &lock)?;
                    if !settled && deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(KvError::LockTimeout {
                            key,
                            lock_ts: lock.start_ts,
                        });
                    }
                }
                Err(PrewriteError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Counts `keys` as locked by this transaction.
    fn hold(&mut self, keys: &[Vec<u8>]) {
        self.locked.extend(keys.iter().cloned());
    }

    /// The values of `keys`: this transaction's buffered writes over the committed pairs
    /// `found`.
    fn overlay(&self, keys: &[Vec<u8>], found: Vec<KvPair>) -> Vec<Option<Vec<u8>>> {
        let found: std::collections::HashMap<Vec<u8>, Vec<u8>> = found.into_iter().collect();
        keys.iter()
            .map(|key| match self.buffer.get(key) {
                Some(Buffered::Put(value)) => Some(value.clone()),
                Some(Buffered::Delete) => None,
                Some(Buffered::Lock) | None => found.get(key).cloned(),
            })
            .collect()
    }

    /// What the commit prewrites: the buffered writes and, as lock-only mutations, the keys
    /// locked but not written; the primary first. With the flags of the pessimistic ones.
    fn commit_mutations(&self) -> (Vec<Mutation>, Vec<bool>) {
        let mut mutations = self.mutations();
        for key in &self.locked {
            if !self.buffer.contains_key(key) {
                mutations.push(Mutation::Lock { key: key.clone() });
            }
        }
        if let Some(primary) = &self.primary
            && let Some(at) = mutations.iter().position(|m| m.key() == primary.as_slice())
        {
            let first = mutations.remove(at);
            mutations.insert(0, first);
        }
        let pessimistic = if self.locked.is_empty() {
            Vec::new()
        } else {
            mutations
                .iter()
                .map(|m| self.locked.contains(m.key()))
                .collect()
        };
        (mutations, pessimistic)
    }

    /// Prewrites every mutation; on failure takes back (best effort) whatever locks it may
    /// have left: the parts of a prewrite over several regions run separately, so some
    /// regions' keys may be locked when another's part fails, and an answer lost in transit
    /// may hide a prewrite that was applied. Locks left over would otherwise stop readers
    /// until they expire.
    fn prewrite(
        &self,
        mutations: &[Mutation],
        pessimistic: &[bool],
        primary: &[u8],
    ) -> KvResult<()> {
        let since = Instant::now();
        let result = loop {
            let ttl = self.lock_ttl_ms();
            match self.shared.store.prewrite_pessimistic(
                mutations,
                pessimistic,
                primary,
                self.start_ts,
                ttl,
            ) {
                Ok(()) => return Ok(()),
                Err(PrewriteError::Failed(e)) => break Err(e),
                Err(PrewriteError::Locked { key, lock }) => {
                    if let Err(e) = self.shared.resolve_lock(&key, &lock, since) {
                        break Err(e);
                    }
                }
            }
        };
        let keys: Vec<Vec<u8>> = mutations.iter().map(|m| m.key().to_vec()).collect();
        self.rollback_keys(&keys);
        result
    }

    fn two_phase_commit(&mut self) -> KvResult<()> {
        let (mutations, pessimistic) = self.commit_mutations();
        let Some(first) = mutations.first() else {
            return Ok(()); // Read-only: nothing to write, nothing to wait for.
        };
        let primary = first.key().to_vec();
        // A failed prewrite rolled back every key it locked, and the pessimistic locks with
        // them (each is a mutation).
        if let Err(e) = self.prewrite(&mutations, &pessimistic, &primary) {
            self.locked.clear();
            self.primary = None;
            return Err(e);
        }
        let keys: Vec<Vec<u8>> = mutations.iter().map(|m| m.key().to_vec()).collect();
        let commit_ts = match self.shared.tso.get_timestamp() {
            Ok(ts) => ts,
            Err(e) => {
                self.rollback_keys(&keys);
                return Err(e.into());
            }
        };
        if let Err(e) = self.validate_at(commit_ts) {
            self.rollback_keys(&keys);
            return Err(e);
        }
        match self
            .shared
            .store
            .commit(&keys[..1], self.start_ts, commit_ts)
        {
            Ok(()) => {}
            Err(KvError::Unavailable(reason)) => {
                // The commit may have been applied with its answer lost. A rollback of the
                // primary settles it: it succeeds only if the primary did not commit (and then
                // it never will). Only then may the secondaries be rolled back: rolling them
                // back alongside a primary that did commit would tear the transaction.
                return match self.shared.store.rollback(&keys[..1], self.start_ts) {
                    Ok(()) => {
                        self.rollback_keys(&keys[1..]);
                        Err(KvError::TxnAborted {
                            start_ts: self.start_ts,
                            reason,
                        })
                    }
                    Err(_) => Err(KvError::CommitUnknown {
                        start_ts: self.start_ts,
                        reason,
                    }),
                };
            }
            Err(e) => {
                self.rollback_keys(&keys);
                return Err(e);
            }
        }
        // Committed. Secondaries left locked here are rolled forward by readers.
        let secondaries = &keys[1..];
        if !secondaries.is_empty()
            && let Err(e) = self
                .shared
                .store
                .commit(secondaries, self.start_ts, commit_ts)
        {
            warn!(start_ts = %self.start_ts, error = %e, "committing secondary keys failed; readers will resolve them");
        }
        Ok(())
    }

    /// Reads the keys of [`Transaction::check_at_commit`] at `commit_ts` (after the
    /// prewrite, before the commit point): a change committed before `commit_ts` is seen
    /// (a read at `commit_ts` waits for a lock of an earlier transaction to be settled), and
    /// one committed after it comes after this transaction in every snapshot too.
    fn validate_at(&self, commit_ts: Timestamp) -> KvResult<()> {
        for (key, expected) in &self.commit_checks {
            if self.buffer.contains_key(key) {
                continue;
            }
            let store = &self.shared.store;
            let now = self.shared.read_resolving(|| store.get(key, commit_ts))?;
            if now != *expected {
                return Err(KvError::TxnAborted {
                    start_ts: self.start_ts,
                    reason: format!(
                        "key {} {CHANGED_BEFORE_COMMIT} (a concurrent schema change)",
                        key.escape_ascii()
                    ),
                });
            }
        }
        Ok(())
    }

    /// A scan at `ts`, with this transaction's buffered writes over it.
    fn scan_at(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        ts: Timestamp,
    ) -> KvResult<Vec<KvPair>> {
        self.check_open()?;
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec()));
        let buffered: Vec<(&Vec<u8>, &Buffered)> = self
            .buffer
            .range((Bound::Included(start.to_vec()), upper))
            .collect();
        // Buffered deletes can hide at most this many committed rows.
        let deletes = buffered
            .iter()
            .filter(|(_, op)| matches!(op, Buffered::Delete))
            .count();
        let store = &self.shared.store;
        let committed = self
            .shared
            .read_resolving(|| store.scan(start, end, ts, limit.saturating_add(deletes)))?;
        let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed.into_iter().collect();
        for (key, op) in buffered {
            match op {
                Buffered::Put(value) => {
                    merged.insert(key.clone(), value.clone());
                }
                Buffered::Delete => {
                    merged.remove(key);
                }
                Buffered::Lock => {}
            }
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Releases the pessimistic locks this transaction holds (best effort: left over, they
    /// expire and get resolved).
    fn release_locks(&mut self) {
        let locked: Vec<Vec<u8>> = std::mem::take(&mut self.locked).into_iter().collect();
        self.primary = None;
        if locked.is_empty() {
            return;
        }
        if let Err(e) =
            self.shared
                .store
                .pessimistic_rollback(&locked, self.start_ts, Timestamp::MAX)
        {
            warn!(start_ts = %self.start_ts, error = %e, "releasing pessimistic locks failed");
        }
    }

    /// Best-effort cleanup after a failed commit; leftover locks expire and get resolved.
    fn rollback_keys(&self, keys: &[Vec<u8>]) {
        if keys.is_empty() {
            return;
        }
        if let Err(e) = self.shared.store.rollback(keys, self.start_ts) {
            warn!(start_ts = %self.start_ts, error = %e, "rolling back after a failed commit failed");
        }
    }
}

impl Transaction for KvTransaction {
    fn begin_statement(&mut self, lock_timeout: Option<Duration>) -> KvResult<()> {
        self.check_open()?;
        self.config.lock_timeout = lock_timeout;
        self.statements += 1;
        // The first statement reads at the start: no need for another timestamp.
        if self.statements > 1
            && self.config.mode == TxnMode::Pessimistic
            && self.config.isolation == Isolation::ReadCommitted
        {
            self.read_ts = self.shared.tso.get_timestamp()?;
        }
        Ok(())
    }

    fn lock_for_write(
        &mut self,
        keys: &[Vec<u8>],
        purpose: LockPurpose,
    ) -> KvResult<Option<Vec<Option<Vec<u8>>>>> {
        self.check_open()?;
        if self.config.mode == TxnMode::Optimistic || keys.is_empty() {
            return Ok(None);
        }
        if self.config.isolation == Isolation::RepeatableRead && purpose == LockPurpose::Update {
            let unlocked: Vec<Vec<u8>> = keys
                .iter()
                .filter(|key| !self.locked.contains(*key))
                .cloned()
                .collect();
            if !unlocked.is_empty() {
                self.acquire_locks(&unlocked, LockAt::Snapshot)?;
            }
            return Ok(None);
        }
        // Keys held already are sent too: their values come back with the others'.
        let found = self.acquire_locks(keys, LockAt::Newest)?;
        Ok(Some(self.overlay(keys, found)))
    }

    fn get(&mut self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.check_open()?;
        match self.buffer.get(key) {
            Some(Buffered::Put(value)) => return Ok(Some(value.clone())),
            Some(Buffered::Delete) => return Ok(None),
            Some(Buffered::Lock) | None => {}
        }
        let (store, ts) = (&self.shared.store, self.read_ts);
        self.shared.read_resolving(|| store.get(key, ts))
    }

    fn batch_get(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        self.check_open()?;
        let unbuffered: Vec<Vec<u8>> = keys
            .iter()
            .filter(|key| matches!(self.buffer.get(*key), Some(Buffered::Lock) | None))
            .cloned()
            .collect();
        let found = if unbuffered.is_empty() {
            Vec::new()
        } else {
            let (store, ts) = (&self.shared.store, self.read_ts);
            self.shared
                .read_resolving(|| store.batch_get(&unbuffered, ts))?
        };
        Ok(self.overlay(keys, found))
    }

    fn scan(&mut self, start: &[u8], end: Option<&[u8]>, limit: usize) -> KvResult<Vec<KvPair>> {
        let ts = self.read_ts;
        self.scan_at(start, end, limit, ts)
    }

    fn scan_newest(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<KvPair>> {
        let ts = self.shared.tso.get_timestamp()?;
        self.scan_at(start, end, limit, ts)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.buffer.insert(key, Buffered::Put(value));
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.buffer.insert(key, Buffered::Delete);
    }

    fn lock(&mut self, key: Vec<u8>) {
        self.buffer.entry(key).or_insert(Buffered::Lock);
    }

    fn check_at_commit(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>) {
        self.commit_checks.entry(key).or_insert(expected);
    }

    fn commit(&mut self) -> KvResult<()> {
        self.check_open()?;
        self.finished = true;
        let result = self.two_phase_commit();
        self.heartbeat = None;
        result
    }

    fn rollback(&mut self) -> KvResult<()> {
        self.finished = true;
        self.buffer.clear();
        self.heartbeat = None;
        self.release_locks();
        Ok(())
    }

    fn start_ts(&self) -> u64 {
        self.start_ts.0
    }
}
