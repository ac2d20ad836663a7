//! Spilling: how the operators that must hold their input (sort, hash aggregation, DISTINCT,
//! a hash join's build side) stay within the session's `work_mem`.
//!
//! Each such operator estimates the memory of what it holds ([`row_bytes`]); past its
//! budget it writes rows to temporary files and finishes from them:
//!
//! - **Sort** writes sorted runs and merges them (an external merge sort, stable: equal rows
//!   come out in input order).
//! - **Hash aggregation and DISTINCT** keep the groups they already have in memory; a row of a
//!   group not yet in memory goes to one of [`FANOUT`] partition files by the hash of its
//!   group key. Every row of such a group lands in the same file, so each file is then
//!   aggregated on its own (partitioned again, with a different hash, if it is still too big).
//! - **Hash join** (a grace hash join) partitions both sides by the hash of the join key
//!   and joins partition by partition, each build side alone in memory.
//!
//! Files are anonymous temporary files (`tempfile`: in `$TMPDIR`, removed by the OS when
//! closed, also after a crash); a row is written as its length and the store's value encoding.
//!
//! Deliberately not bounded: a nested-loop join's inner side and INTERSECT/EXCEPT's right side
//! are held in memory; one group whose state alone exceeds the budget (a huge `string_agg`)
//! and a hash-join key shared by more rows than fit stay in memory, since splitting cannot
//! separate them.

use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use kv::Transaction;

use super::operator::{Operator, Row};
use crate::encoding::{decode_row, encode_row};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::types::Value;

/// How many files a partitioning step writes.
pub const FANOUT: usize = 16;

/// Partitioning stops after this many levels (a hash join over one huge key cannot be split).
pub const MAX_LEVEL: u32 = 6;

/// The memory an operator may use before it spills, in bytes (the `work_mem` setting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkMem(pub usize);

impl Default for WorkMem {
    fn default() -> Self {
        WorkMem(crate::settings::DEFAULT_WORK_MEM_KB as usize * 1024)
    }
}

static FILES_CREATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many spill files this process has created (for tests that check that a query spilled).
pub fn files_created() -> u64 {
    FILES_CREATED.load(std::sync::atomic::Ordering::Relaxed)
}

/// An estimate of the memory a row takes: its vector, its values and their text.
pub fn row_bytes(row: &[Value]) -> usize {
    let heap: usize = row
        .iter()
        .map(|v| match v {
            Value::Text(s) => s.capacity(),
            _ => 0,
        })
        .sum();
    std::mem::size_of::<Row>() + std::mem::size_of_val(row) + heap
}

fn io_error(e: std::io::Error) -> SqlError {
    SqlError::new(
        sqlstate::IO_ERROR,
        format!("could not use a temporary file for spilling: {e}"),
    )
}

/// Rows being written to a temporary file.
pub struct SpillWriter {
    file: BufWriter<File>,
    rows: u64,
}

impl SpillWriter {
    pub fn new() -> SqlResult<SpillWriter> {
        let file = tempfile::tempfile().map_err(io_error)?;
        FILES_CREATED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(SpillWriter {
            file: BufWriter::with_capacity(64 * 1024, file),
            rows: 0,
        })
    }

    pub fn write(&mut self, row: &[Value]) -> SqlResult<()> {
        let bytes = encode_row(row);
        let header = [
            u32::try_from(bytes.len()).map_err(|_| row_too_big())?,
            u32::try_from(row.len()).map_err(|_| row_too_big())?,
        ];
        for n in header {
            self.file.write_all(&n.to_le_bytes()).map_err(io_error)?;
        }
        self.file.write_all(&bytes).map_err(io_error)?;
        self.rows += 1;
        Ok(())
    }

    /// The rows written, to read back from the first.
    pub fn finish(self) -> SqlResult<SpillReader> {
        let mut file = self
            .file
            .into_inner()
            .map_err(|e| io_error(e.into_error()))?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        Ok(SpillReader {
            file: BufReader::with_capacity(64 * 1024, file),
            remaining: self.rows,
        })
    }
}

fn row_too_big() -> SqlError {
    SqlError::new(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        "row too big to spill to a temporary file",
    )
}

/// Rows read back from a temporary file, in the order written.
pub struct SpillReader {
    file: BufReader<File>,
    remaining: u64,
}

impl SpillReader {
    pub fn rows(&self) -> u64 {
        self.remaining
    }

    pub fn next_row(&mut self) -> SqlResult<Option<Row>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut header = [0u8; 8];
        self.file.read_exact(&mut header).map_err(io_error)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let width = u32::from_le_bytes(header[4..].try_into().expect("4 bytes")) as usize;
        let mut bytes = vec![0u8; len];
        self.file.read_exact(&mut bytes).map_err(io_error)?;
        self.remaining -= 1;
        decode_row(&bytes, width).map(Some)
    }
}

/// Where an operator's rows come from: its input operator, or a file it spilled.
pub enum Source {
    Input(Box<dyn Operator>),
    Spilled(SpillReader),
}

impl Source {
    pub fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        match self {
            Source::Input(op) => op.next(txn),
            Source::Spilled(reader) => reader.next_row(),
        }
    }
}

/// [`FANOUT`] files that rows are spread over by the hash of a key.
pub struct Partitions {
    files: Vec<SpillWriter>,
    level: u32,
}

impl Partitions {
    /// Partitions for data already partitioned `level` times (each level hashes differently).
    pub fn new(level: u32) -> SqlResult<Partitions> {
        Ok(Partitions {
            files: (0..FANOUT)
                .map(|_| SpillWriter::new())
                .collect::<SqlResult<_>>()?,
            level,
        })
    }

    /// The partition of `key` at this level (a key is a [`super::operator::hash_key`];
    /// `None`, a key that matches nothing, goes to the first).
    pub fn partition_of(&self, key: Option<&[u8]>) -> usize {
        let Some(key) = key else { return 0 };
        let mut hasher =
            std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().build_hasher();
        hasher.write_u32(self.level);
        hasher.write(key);
        (hasher.finish() % FANOUT as u64) as usize
    }

    pub fn write(&mut self, key: Option<&[u8]>, row: &[Value]) -> SqlResult<()> {
        let i = self.partition_of(key);
        self.files[i].write(row)
    }

    /// The files, to read back (empty ones included, so that partition `i` of two
    /// partitionings at the same level hold the same keys).
    pub fn finish(self) -> SqlResult<Vec<SpillReader>> {
        self.files.into_iter().map(SpillWriter::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_as_written() {
        let rows = vec![
            vec![Value::Int(1), Value::Null, Value::Text("a".into())],
            vec![],
            vec![
                Value::Float(-0.5),
                Value::Bool(true),
                Value::Text(String::new()),
            ],
        ];
        let mut writer = SpillWriter::new().unwrap();
        for row in &rows {
            writer.write(row).unwrap();
        }
        let mut reader = writer.finish().unwrap();
        assert_eq!(reader.rows(), 3);
        let mut back = Vec::new();
        while let Some(row) = reader.next_row().unwrap() {
            back.push(row);
        }
        assert_eq!(back, rows);
    }

    #[test]
    fn levels_partition_differently() {
        let level0 = Partitions::new(0).unwrap();
        let level1 = Partitions::new(1).unwrap();
        let keys: Vec<Vec<u8>> = (0..200u32).map(|i| i.to_be_bytes().to_vec()).collect();
        // Keys of one level-0 partition spread over several level-1 partitions.
        let first: Vec<&Vec<u8>> = keys
            .iter()
            .filter(|k| level0.partition_of(Some(k)) == 0)
            .collect();
        let spread: std::collections::HashSet<usize> =
            first.iter().map(|k| level1.partition_of(Some(k))).collect();
        assert!(spread.len() > 1, "{spread:?}");
    }
}
