//! Joins. The right input is read whole first (the build side); then the left input streams,
//! each left row meeting the right rows that may match it: those with equal hash keys (a
//! hash join; a NULL key matches nothing) or all of them (a nested loop). The join condition
//! is checked on each pair. A left row without a match is NULL-extended for LEFT and FULL
//! joins; right rows never matched are NULL-extended at the end for RIGHT and FULL joins.
//!
//! A hash join whose build side outgrows `work_mem` becomes a grace hash join: both sides
//! are spread over partition files by the hash of their join key ([`super::spill`]), so that
//! rows that can match share a partition, and the partitions are joined one after another,
//! each with only its own build side in memory (partitioned again if that is still too big).
//! Rows with a NULL key, which match nothing, go to the first partition, where they are
//! NULL-extended as before. A nested loop's build side stays in memory.

use std::collections::{HashMap, VecDeque};

use kv::Transaction;

use super::operator::{Operator, Row, hash_key};
use super::spill::{FANOUT, MAX_LEVEL, Partitions, Source, SpillReader, WorkMem, row_bytes};
use crate::error::SqlResult;
use crate::expr::Expr;
use crate::plan::{JoinAlgorithm, JoinKind};
use crate::types::Value;

/// What is joined, and how.
struct JoinSpec {
    left_width: usize,
    right_width: usize,
    kind: JoinKind,
    on: Option<Expr>,
    /// A hash join's left and right key expressions (`None`: a nested loop).
    keys: Option<(Vec<Expr>, Vec<Expr>)>,
    work_mem: WorkMem,
}

pub struct JoinOp {
    spec: JoinSpec,
    /// The inputs, until the first row is asked for.
    inputs: Option<(Box<dyn Operator>, Box<dyn Operator>)>,
    /// The join running now: of the whole inputs, or of one pair of partitions.
    current: Option<InMemoryJoin>,
    /// Partition pairs (right, left) still to join, with how often they were partitioned.
    pending: Vec<(SpillReader, SpillReader, u32)>,
    spill_files: u64,
}

impl JoinOp {
    pub fn new(
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
        (left_width, right_width): (usize, usize),
        kind: JoinKind,
        on: Option<Expr>,
        algorithm: JoinAlgorithm,
        work_mem: WorkMem,
    ) -> JoinOp {
        let keys = match algorithm {
            JoinAlgorithm::Hash {
                left_keys,
                right_keys,
            } => Some((left_keys, right_keys)),
            JoinAlgorithm::NestedLoop | JoinAlgorithm::Lookup { .. } => None,
        };
        JoinOp {
            spec: JoinSpec {
                left_width,
                right_width,
                kind,
                on,
                keys,
                work_mem,
            },
            inputs: Some((left, right)),
            current: None,
            pending: Vec::new(),
            spill_files: 0,
        }
    }

    /// Starts joining `left` with `right` (partitioned `level` times before): in memory if
    /// the build side fits, else by partitioning both sides further.
    fn start(
        &mut self,
        mut left: Source,
        mut right: Source,
        level: u32,
        txn: &mut dyn Transaction,
    ) -> SqlResult<()> {
        match build(&self.spec, &mut right, level, txn)? {
            Built::Table(table) => {
                self.current = Some(InMemoryJoin {
                    left,
                    table,
                    pending: VecDeque::new(),
                    left_done: false,
                    unmatched_done: false,
                });
            }
            Built::Spilled(right_parts) => {
                let (left_keys, _) = self.spec.keys.as_ref().expect("only hash joins spill");
                let mut left_parts = Partitions::new(level)?;
                self.spill_files += 2 * FANOUT as u64;
                while let Some(row) = left.next(txn)? {
                    left_parts.write(key_of(left_keys, &row)?.as_deref(), &row)?;
                }
                let pairs = right_parts.finish()?.into_iter().zip(left_parts.finish()?);
                for (right, left) in pairs {
                    let needed = match self.spec.kind {
                        JoinKind::Inner => right.rows() > 0 && left.rows() > 0,
                        JoinKind::Left => left.rows() > 0,
                        JoinKind::Right => right.rows() > 0,
                        JoinKind::Full => right.rows() > 0 || left.rows() > 0,
                    };
                    if needed {
                        self.pending.push((right, left, level + 1));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A build side read into memory, indexed by hash key for a hash join.
struct BuildTable {
    rows: Vec<Row>,
    index: HashMap<Vec<u8>, Vec<usize>>,
    matched: Vec<bool>,
}

enum Built {
    Table(BuildTable),
    /// It did not fit: its rows are in these partitions.
    Spilled(Partitions),
}

/// A rough per-row cost of the index and the match flags, for the memory estimate.
const ENTRY_OVERHEAD: usize = 48;

/// Reads the build side, spilling it into partitions once it outgrows `work_mem` (a hash
/// join only, and only while partitioning can still separate keys).
fn build(
    spec: &JoinSpec,
    right: &mut Source,
    level: u32,
    txn: &mut dyn Transaction,
) -> SqlResult<Built> {
    let mut table = BuildTable {
        rows: Vec::new(),
        index: HashMap::new(),
        matched: Vec::new(),
    };
    let mut bytes = 0usize;
    while let Some(row) = right.next(txn)? {
        if let Some((_, right_keys)) = &spec.keys {
            let key = key_of(right_keys, &row)?;
            bytes += key.as_ref().map_or(0, Vec::len);
            if let Some(key) = key {
                table.index.entry(key).or_default().push(table.rows.len());
            }
            bytes += row_bytes(&row) + ENTRY_OVERHEAD;
            table.rows.push(row);
            if bytes > spec.work_mem.0 && level < MAX_LEVEL {
                return spill_build(right_keys, table.rows, right, level, txn).map(Built::Spilled);
            }
        } else {
            table.rows.push(row);
        }
    }
    table.matched = vec![false; table.rows.len()];
    Ok(Built::Table(table))
}

/// Spreads the build rows read so far and the rest of the build side over partitions.
fn spill_build(
    right_keys: &[Expr],
    rows: Vec<Row>,
    right: &mut Source,
    level: u32,
    txn: &mut dyn Transaction,
) -> SqlResult<Partitions> {
    let mut partitions = Partitions::new(level)?;
    for row in rows {
        partitions.write(key_of(right_keys, &row)?.as_deref(), &row)?;
    }
    while let Some(row) = right.next(txn)? {
        partitions.write(key_of(right_keys, &row)?.as_deref(), &row)?;
    }
    Ok(partitions)
}

/// The hash key of `exprs` over `row`; `None` if any is NULL (it can equal nothing).
/// Integers are keyed as the doubles they compare as against a `double precision` value
/// (PostgreSQL compares `bigint = float8` in float8): integers beyond 2^53 may then share a
/// key, and the join condition, checked on every pair found, tells them apart.
fn key_of(exprs: &[Expr], row: &[Value]) -> SqlResult<Option<Vec<u8>>> {
    let values = exprs
        .iter()
        .map(|e| {
            e.eval(row).map(|v| match v {
                Value::Int(i) => Value::Float(i as f64),
                other => other,
            })
        })
        .collect::<SqlResult<Vec<Value>>>()?;
    if values.iter().any(Value::is_null) {
        return Ok(None);
    }
    Ok(Some(hash_key(&values)))
}

/// A join whose build side is in memory, its left side streaming.
struct InMemoryJoin {
    left: Source,
    table: BuildTable,
    pending: VecDeque<Row>,
    left_done: bool,
    unmatched_done: bool,
}

impl InMemoryJoin {
    fn probe(&mut self, spec: &JoinSpec, left: Row) -> SqlResult<()> {
        let candidates: Vec<usize> = match &spec.keys {
            Some((left_keys, _)) => match key_of(left_keys, &left)? {
                Some(key) => self.table.index.get(&key).cloned().unwrap_or_default(),
                None => Vec::new(),
            },
            None => (0..self.table.rows.len()).collect(),
        };
        let mut any = false;
        for i in candidates {
            let mut row = Vec::with_capacity(left.len() + spec.right_width);
            row.extend_from_slice(&left);
            row.extend_from_slice(&self.table.rows[i]);
            let keep = match &spec.on {
                Some(on) => on.is_true(&row)?,
                None => true,
            };
            if keep {
                any = true;
                self.table.matched[i] = true;
                self.pending.push_back(row);
            }
        }
        if !any && matches!(spec.kind, JoinKind::Left | JoinKind::Full) {
            let mut row = left;
            row.extend(std::iter::repeat_n(Value::Null, spec.right_width));
            self.pending.push_back(row);
        }
        Ok(())
    }

    fn next(&mut self, spec: &JoinSpec, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Ok(Some(row));
            }
            if !self.left_done {
                match self.left.next(txn)? {
                    Some(left) => self.probe(spec, left)?,
                    None => self.left_done = true,
                }
                continue;
            }
            if matches!(spec.kind, JoinKind::Right | JoinKind::Full) && !self.unmatched_done {
                self.unmatched_done = true;
                for (i, row) in self.table.rows.iter().enumerate() {
                    if !self.table.matched[i] {
                        let mut out = vec![Value::Null; spec.left_width];
                        out.extend_from_slice(row);
                        self.pending.push_back(out);
                    }
                }
                continue;
            }
            return Ok(None);
        }
    }
}

impl Operator for JoinOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        loop {
            if let Some(current) = &mut self.current {
                if let Some(row) = current.next(&self.spec, txn)? {
                    return Ok(Some(row));
                }
                self.current = None;
            }
            if let Some((left, right)) = self.inputs.take() {
                self.start(Source::Input(left), Source::Input(right), 0, txn)?;
                continue;
            }
            let Some((right, left, level)) = self.pending.pop() else {
                return Ok(None);
            };
            self.start(Source::Spilled(left), Source::Spilled(right), level, txn)?;
        }
    }

    fn spill_files(&self) -> u64 {
        self.spill_files
    }
}
