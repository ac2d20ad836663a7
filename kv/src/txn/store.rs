//! [`TxnStore`]: runs Percolator commands against one engine, each under latches and as one
//! atomic write batch. This is what a region leader will run behind the gRPC service; the
//! single-node cluster calls it in-process.

use std::sync::Arc;

use scheduler::Timestamp;

use super::actions::{self, Mutation, PrewriteError, TxnStatus};
use super::latches::Latches;
use crate::error::KvResult;
use crate::mvcc::MvccReader;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::{Engine, KvPair, WriteBatch};

pub struct TxnStore<E: Engine> {
    engine: Arc<E>,
    latches: Latches,
}

impl<E: Engine> TxnStore<E> {
    pub fn new(engine: Arc<E>) -> Self {
        Self {
            engine,
            latches: Latches::default(),
        }
    }

    pub fn engine(&self) -> &Arc<E> {
        &self.engine
    }

    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        if !batch.is_empty() {
            self.engine.write(batch)?;
        }
        Ok(())
    }

    pub fn get(&self, key: &[u8], ts: Timestamp) -> KvResult<ReadOutcome<Option<Vec<u8>>>> {
        let snapshot = self.engine.snapshot();
        MvccReader::new(&snapshot).get(key, ts)
    }

    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        ts: Timestamp,
        limit: usize,
    ) -> KvResult<ReadOutcome<Vec<KvPair>>> {
        let snapshot = self.engine.snapshot();
        MvccReader::new(&snapshot).scan(start, end, ts, limit)
    }

    pub fn prewrite(
        &self,
        mutations: &[Mutation],
        primary: &[u8],
        start_ts: Timestamp,
        ttl_ms: u64,
    ) -> Result<(), PrewriteError> {
        let _guard = self.latches.acquire(mutations.iter().map(Mutation::key));
        let snapshot = self.engine.snapshot();
        let batch = actions::prewrite(&snapshot, mutations, primary, start_ts, ttl_ms)?;
        drop(snapshot);
        self.write(batch)?;
        Ok(())
    }

    pub fn commit(
        &self,
        keys: &[Vec<u8>],
        start_ts: Timestamp,
        commit_ts: Timestamp,
    ) -> KvResult<()> {
        let _guard = self.latches.acquire(keys.iter().map(Vec::as_slice));
        let snapshot = self.engine.snapshot();
        let batch = actions::commit(&snapshot, keys, start_ts, commit_ts)?;
        drop(snapshot);
        self.write(batch)
    }

    pub fn rollback(&self, keys: &[Vec<u8>], start_ts: Timestamp) -> KvResult<()> {
        let _guard = self.latches.acquire(keys.iter().map(Vec::as_slice));
        let snapshot = self.engine.snapshot();
        let batch = actions::rollback(&snapshot, keys, start_ts)?;
        drop(snapshot);
        self.write(batch)
    }

    pub fn check_txn_status(
        &self,
        primary: &[u8],
        lock_ts: Timestamp,
        current_ts: Timestamp,
    ) -> KvResult<TxnStatus> {
        let _guard = self.latches.acquire([primary]);
        let snapshot = self.engine.snapshot();
        let (status, batch) = actions::check_txn_status(&snapshot, primary, lock_ts, current_ts)?;
        drop(snapshot);
        self.write(batch)?;
        Ok(status)
    }
}
