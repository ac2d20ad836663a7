//! DISTINCT: passes each distinct row once, the first time it is seen (NULLs are equal here).
//!
//! The rows seen are remembered in memory up to `work_mem`. Past it, a row not seen yet is
//! not passed but spilled to a partition file by its hash ([`super::spill`]); every copy of
//! it lands in the same file, so once the input ends each file is made distinct on its own.

use std::collections::HashSet;

use kv::Transaction;

use super::operator::{Operator, Row, hash_key};
use super::spill::{FANOUT, Partitions, Source, SpillReader, WorkMem};
use crate::error::SqlResult;

pub struct DistinctOp {
    source: Source,
    /// How many times the rows of `source` were partitioned.
    level: u32,
    seen: HashSet<Vec<u8>>,
    bytes: usize,
    spilled: Option<Partitions>,
    pending: Vec<(SpillReader, u32)>,
    work_mem: WorkMem,
    spill_files: u64,
}

/// A rough per-entry cost of the hash set, for the memory estimate.
const ENTRY_OVERHEAD: usize = 48;

impl DistinctOp {
    pub fn new(input: Box<dyn Operator>, work_mem: WorkMem) -> DistinctOp {
        DistinctOp {
            source: Source::Input(input),
            level: 0,
            seen: HashSet::new(),
            bytes: 0,
            spilled: None,
            pending: Vec::new(),
            work_mem,
            spill_files: 0,
        }
    }
}

impl Operator for DistinctOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        loop {
            while let Some(row) = self.source.next(txn)? {
                let key = hash_key(&row);
                if self.seen.contains(&key) {
                    continue;
                }
                if self.bytes > self.work_mem.0 {
                    if self.spilled.is_none() {
                        self.spilled = Some(Partitions::new(self.level)?);
                        self.spill_files += FANOUT as u64;
                    }
                    let partitions = self.spilled.as_mut().expect("created above");
                    partitions.write(Some(&key), &row)?;
                    continue;
                }
                self.bytes += key.len() + ENTRY_OVERHEAD;
                self.seen.insert(key);
                return Ok(Some(row));
            }
            // This source is done: on to the partitions it spilled, if any.
            if let Some(partitions) = self.spilled.take() {
                for reader in partitions.finish()? {
                    if reader.rows() > 0 {
                        self.pending.push((reader, self.level + 1));
                    }
                }
            }
            let Some((reader, level)) = self.pending.pop() else {
                return Ok(None);
            };
            self.source = Source::Spilled(reader);
            self.level = level;
            self.seen = HashSet::new();
            self.bytes = 0;
        }
    }

    fn spill_files(&self) -> u64 {
        self.spill_files
    }
}
