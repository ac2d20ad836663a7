//! Test support: a transaction source that counts open transactions.
//!
//! Writes are buffered until commit, so an open transaction that is never rolled back is
//! invisible through SQL. Counting transactions that began but have not committed or rolled back
//! makes "closing the connection rolled back its transaction" observable.
//!
//! Shared by the unit tests (`mod testing` under `cfg(test)`) and the integration tests (included
//! with `#[path]`), so it depends on nothing but `kv`.

use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

use kv::{KvResult, LockPurpose, Transaction, TransactionSource, TxnConfig};

/// Wraps a source; [`CountingSource::open`] is the number of transactions begun and not yet
/// committed or rolled back (a transaction dropped without either stays counted: a leak).
pub struct CountingSource {
    inner: Arc<dyn TransactionSource>,
    open: Arc<AtomicIsize>,
}

impl CountingSource {
    pub fn new(inner: Arc<dyn TransactionSource>) -> Self {
        Self {
            inner,
            open: Arc::new(AtomicIsize::new(0)),
        }
    }

    /// A handle on the counter that outlives moving the source into a database.
    pub fn counter(&self) -> OpenTransactions {
        OpenTransactions(Arc::clone(&self.open))
    }
}

#[derive(Clone)]
pub struct OpenTransactions(Arc<AtomicIsize>);

impl OpenTransactions {
    pub fn get(&self) -> isize {
        self.0.load(Ordering::SeqCst)
    }

    /// Waits (up to `timeout`) for the count to reach `expected`; returns the last value seen.
    pub async fn wait_for(&self, expected: isize, timeout: std::time::Duration) -> isize {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.get();
            if now == expected || tokio::time::Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

impl TransactionSource for CountingSource {
    fn begin(&self, config: TxnConfig) -> KvResult<Box<dyn Transaction>> {
        let inner = self.inner.begin(config)?;
        self.open.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(CountedTransaction {
            inner,
            open: Arc::clone(&self.open),
            finished: false,
        }))
    }
}

struct CountedTransaction {
    inner: Box<dyn Transaction>,
    open: Arc<AtomicIsize>,
    finished: bool,
}

impl CountedTransaction {
    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Transaction for CountedTransaction {
    fn begin_statement(&mut self, lock_timeout: Option<std::time::Duration>) -> KvResult<()> {
        self.inner.begin_statement(lock_timeout)
    }

    fn get(&mut self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }

    fn batch_get(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        self.inner.batch_get(keys)
    }

    fn lock_for_write(
        &mut self,
        keys: &[Vec<u8>],
        purpose: LockPurpose,
    ) -> KvResult<Option<Vec<Option<Vec<u8>>>>> {
        self.inner.lock_for_write(keys, purpose)
    }

    fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<kv::storage::KvPair>> {
        self.inner.scan(start, end, limit)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.inner.put(key, value)
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.inner.delete(key)
    }

    fn lock(&mut self, key: Vec<u8>) {
        self.inner.lock(key)
    }

    fn scan_newest(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_newest(start, end, limit)
    }

    fn check_at_commit(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>) {
        self.inner.check_at_commit(key, expected)
    }

    fn commit(&mut self) -> KvResult<()> {
        // A failed commit applies nothing and ends the transaction all the same.
        let result = self.inner.commit();
        self.finish();
        result
    }

    fn rollback(&mut self) -> KvResult<()> {
        let result = self.inner.rollback();
        self.finish();
        result
    }

    fn start_ts(&self) -> u64 {
        self.inner.start_ts()
    }
}
