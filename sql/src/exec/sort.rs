//! Sorting, ordered by the keys (NULLs first or last per key, as PostgreSQL places them: last
//! ascending and first descending unless told otherwise). The sort is stable, so rows equal
//! on every key keep their input order.
//!
//! Rows are gathered in memory up to `work_mem`; past it, each full batch is sorted and
//! written out as a run, and the runs are merged at the end (an external merge sort; ties
//! between runs go to the earlier run, which keeps the sort stable); more than 64 runs are
//! first merged 64 at a time into longer ones, so that a merge holds few files open). Under a LIMIT it is a
//! top-N sort, holding about twice the rows wanted (at least 1,024) instead of its input,
//! and spilling only if those alone exceed `work_mem`.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use kv::Transaction;

use super::operator::{Operator, Row};
use super::spill::{SpillReader, SpillWriter, WorkMem, row_bytes};
use crate::error::SqlResult;
use crate::plan::SortKey;
use crate::types::Value;

/// How many runs one merge reads at once (each with its own file and read buffer).
const MERGE_FAN_IN: usize = 64;

pub struct SortOp {
    input: Option<Box<dyn Operator>>,
    keys: Vec<SortKey>,
    /// Only the first rows are wanted (see [`crate::plan::Plan::Sort`]).
    top: Option<usize>,
    work_mem: WorkMem,
    output: Output,
    spill_files: u64,
}

/// Where the sorted rows come from once the input is read.
enum Output {
    Memory(std::vec::IntoIter<Row>),
    Merge(Merge),
}

impl SortOp {
    pub fn new(
        input: Box<dyn Operator>,
        keys: Vec<SortKey>,
        top: Option<u64>,
        work_mem: WorkMem,
    ) -> SortOp {
        SortOp {
            input: Some(input),
            keys,
            top: top.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            work_mem,
            output: Output::Memory(Vec::new().into_iter()),
            spill_files: 0,
        }
    }

    fn sort(&self, rows: &mut Vec<Row>) {
        rows.sort_by(|a, b| compare_rows(a, b, &self.keys));
        if let Some(top) = self.top {
            rows.truncate(top);
        }
    }

    /// Sorts `rows` and writes them out as a run.
    fn spill(&self, rows: &mut Vec<Row>, runs: &mut Vec<SpillReader>) -> SqlResult<()> {
        self.sort(rows);
        let mut run = SpillWriter::new()?;
        for row in rows.drain(..) {
            run.write(&row)?;
        }
        runs.push(run.finish()?);
        Ok(())
    }

    fn read_input(
        &self,
        mut input: Box<dyn Operator>,
        txn: &mut dyn Transaction,
    ) -> SqlResult<Output> {
        let mut rows = Vec::new();
        let mut bytes = 0usize;
        let mut runs = Vec::new();
        while let Some(row) = input.next(txn)? {
            bytes += row_bytes(&row);
            rows.push(row);
            // Top-N: whenever twice the rows wanted have come, keep the first half. The
            // sort is stable and the rows kept keep their order, so the result is that of
            // sorting everything.
            if let Some(top) = self.top
                && rows.len() >= top.saturating_mul(2).max(1024)
            {
                self.sort(&mut rows);
                bytes = rows.iter().map(|r| row_bytes(r)).sum();
            }
            if bytes > self.work_mem.0 {
                self.spill(&mut rows, &mut runs)?;
                bytes = 0;
            }
        }
        if runs.is_empty() {
            self.sort(&mut rows);
            return Ok(Output::Memory(rows.into_iter()));
        }
        if !rows.is_empty() {
            self.spill(&mut rows, &mut runs)?;
        }
        // More runs than a merge reads at once: merge them a group at a time into longer
        // runs (in order, so that ties still go to the earlier input) until few remain.
        while runs.len() > MERGE_FAN_IN {
            let mut merged = Vec::with_capacity(runs.len().div_ceil(MERGE_FAN_IN));
            let mut rest = runs.into_iter();
            loop {
                let group: Vec<SpillReader> = rest.by_ref().take(MERGE_FAN_IN).collect();
                if group.is_empty() {
                    break;
                }
                let mut merge = Merge::new(group, self.keys.clone(), self.top)?;
                let mut run = SpillWriter::new()?;
                while let Some(row) = merge.next()? {
                    run.write(&row)?;
                }
                merged.push(run.finish()?);
            }
            runs = merged;
        }
        Merge::new(runs, self.keys.clone(), self.top).map(Output::Merge)
    }
}

impl Operator for SortOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if let Some(input) = self.input.take() {
            self.output = self.read_input(input, txn)?;
            if let Output::Merge(merge) = &self.output {
                self.spill_files = merge.runs.len() as u64;
            }
        }
        match &mut self.output {
            Output::Memory(rows) => Ok(rows.next()),
            Output::Merge(merge) => merge.next(),
        }
    }

    fn spill_files(&self) -> u64 {
        self.spill_files
    }
}

/// The k-way merge of sorted runs.
struct Merge {
    runs: Vec<SpillReader>,
    heap: BinaryHeap<Head>,
    keys: std::rc::Rc<Vec<SortKey>>,
    remaining: Option<usize>,
}

/// The next row of one run, ordered for the heap: the smallest row (then the earliest run)
/// on top.
struct Head {
    row: Row,
    run: usize,
    keys: std::rc::Rc<Vec<SortKey>>,
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        compare_rows(&other.row, &self.row, &self.keys).then(other.run.cmp(&self.run))
    }
}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl Merge {
    fn new(mut runs: Vec<SpillReader>, keys: Vec<SortKey>, top: Option<usize>) -> SqlResult<Merge> {
        let keys = std::rc::Rc::new(keys);
        let mut heap = BinaryHeap::with_capacity(runs.len());
        for (run, reader) in runs.iter_mut().enumerate() {
            if let Some(row) = reader.next_row()? {
                heap.push(Head {
                    row,
                    run,
                    keys: keys.clone(),
                });
            }
        }
        Ok(Merge {
            runs,
            heap,
            keys,
            remaining: top,
        })
    }

    fn next(&mut self) -> SqlResult<Option<Row>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        let Some(Head { row, run, .. }) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(next) = self.runs[run].next_row()? {
            self.heap.push(Head {
                row: next,
                run,
                keys: self.keys.clone(),
            });
        }
        if let Some(remaining) = &mut self.remaining {
            *remaining -= 1;
        }
        Ok(Some(row))
    }
}

/// Orders two rows by `keys`.
pub fn compare_rows(a: &[Value], b: &[Value], keys: &[SortKey]) -> Ordering {
    for key in keys {
        let (x, y) = (&a[key.column], &b[key.column]);
        let ordering = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if key.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if key.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let o = x.sort_cmp(y);
                if key.descending { o.reverse() } else { o }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows handed out from a vector.
    struct Rows(std::vec::IntoIter<Row>);

    impl Operator for Rows {
        fn next(&mut self, _txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
            Ok(self.0.next())
        }
    }

    #[test]
    fn many_runs_merge_in_passes_and_stay_stable() {
        let input: Vec<Row> = (0..5000)
            .map(|i| vec![Value::Int(i % 7), Value::Int(i)])
            .collect();
        let keys = vec![SortKey {
            column: 0,
            descending: false,
            nulls_first: false,
        }];
        // A budget of a few rows: hundreds of runs, so more than one merge pass.
        let mut sort = SortOp::new(
            Box::new(Rows(input.clone().into_iter())),
            keys.clone(),
            None,
            WorkMem(2_000),
        );
        let mut txn = kv::in_memory_source()
            .begin(kv::TxnConfig::default())
            .expect("a transaction");
        let mut sorted = Vec::new();
        while let Some(row) = sort.next(txn.as_mut()).expect("a row") {
            sorted.push(row);
        }
        assert!(sort.spill_files() > 1, "it spilled");
        let mut expected = input;
        expected.sort_by(|a, b| compare_rows(a, b, &keys));
        assert_eq!(sorted, expected);
    }
}
