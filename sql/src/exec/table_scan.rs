//! Table scans: rows of a table read over the spans the optimizer chose, page by page, and
//! filtered. A page is a point batch (`batch_get`) or a range read (`scan` with a limit); the
//! first page is no larger than the scan's limit hint, and pages grow (doubling) up to
//! [`PAGE`] rows, so `LIMIT 5` reads five rows and a full scan holds a page at a time.
//!
//! A locking scan (`SELECT … FOR UPDATE`) locks each page's matching rows before passing
//! them on, or, under a LIMIT, each row as it is pulled (see [`lock_rows`]: under READ
//! COMMITTED, a row changed meanwhile comes back at its newest version and the filter is
//! checked again). Locking happens in the scan, below any sort: `ORDER BY … LIMIT n FOR
//! UPDATE` locks every row it sorts, where PostgreSQL locks only the n it returns.

use std::collections::VecDeque;
use std::sync::Arc;

use kv::Transaction;

use super::operator::{Operator, Row};
use super::scan::{StoredRow, lock_rows};
use crate::catalog::Table;
use crate::encoding::{decode_row, row_prefix, row_prefix_end};
use crate::error::SqlResult;
use crate::expr::Expr;
use crate::plan::{Scan, Spans};

/// The largest page read at once.
pub const PAGE: usize = 1024;

pub struct TableScan {
    table: Arc<Table>,
    filter: Option<Expr>,
    lock: bool,
    /// Lock row by row as they are pulled (under a LIMIT), instead of page by page.
    lock_each: bool,
    points: VecDeque<Vec<u8>>,
    ranges: VecDeque<(Vec<u8>, Vec<u8>)>,
    page: usize,
    buffer: VecDeque<StoredRow>,
    /// Key-value pairs read from the store so far.
    pub pairs_read: u64,
}

impl TableScan {
    pub fn new(scan: Scan) -> TableScan {
        let (points, ranges) = match scan.spans {
            Spans::Full => (
                VecDeque::new(),
                VecDeque::from([(row_prefix(scan.table.id), row_prefix_end(scan.table.id))]),
            ),
            Spans::Points { keys, .. } => (keys.into(), VecDeque::new()),
            Spans::Ranges { ranges, .. } => (VecDeque::new(), ranges.into()),
            Spans::Nothing => (VecDeque::new(), VecDeque::new()),
        };
        let page = scan
            .limit_hint
            .map_or(PAGE, |hint| (hint as usize).clamp(1, PAGE));
        TableScan {
            table: scan.table,
            filter: scan.filter,
            lock: scan.lock,
            lock_each: scan.lock && scan.limit_hint.is_some(),
            points,
            ranges,
            page,
            buffer: VecDeque::new(),
            pairs_read: 0,
        }
    }

    /// Reads the next page into the buffer; false when the spans are exhausted.
    fn fill(&mut self, txn: &mut dyn Transaction) -> SqlResult<bool> {
        let width = self.table.columns.len();
        let mut page = Vec::new();
        if !self.points.is_empty() {
            let n = self.page.min(self.points.len());
            let keys: Vec<Vec<u8>> = self.points.drain(..n).collect();
            let values = txn.batch_get(&keys)?;
            for (key, value) in keys.into_iter().zip(values) {
                if let Some(value) = value {
                    page.push((key, value));
                }
            }
        } else if let Some((start, end)) = self.ranges.front_mut() {
            let pairs = txn.scan(start, Some(end), self.page)?;
            if pairs.len() < self.page {
                self.ranges.pop_front();
            } else if let Some((last, _)) = pairs.last() {
                // Resume just after the last key read.
                let mut next = last.clone();
                next.push(0);
                *start = next;
            }
            page = pairs;
        } else {
            return Ok(false);
        }
        self.pairs_read += page.len() as u64;
        self.page = (self.page * 2).min(PAGE);
        let mut rows = Vec::with_capacity(page.len());
        for (key, value) in page {
            let values = decode_row(&value, width)?;
            if let Some(filter) = &self.filter
                && !filter.is_true(&values)?
            {
                continue;
            }
            rows.push(StoredRow { key, values });
        }
        if self.lock && !self.lock_each {
            rows = self.lock(txn, rows)?;
        }
        self.buffer.extend(rows);
        Ok(true)
    }

    fn lock(&self, txn: &mut dyn Transaction, rows: Vec<StoredRow>) -> SqlResult<Vec<StoredRow>> {
        if rows.is_empty() {
            return Ok(rows);
        }
        let rows = lock_rows(txn, &self.table, rows, self.filter.as_ref())?;
        for row in &rows {
            txn.lock(row.key.clone());
        }
        Ok(rows)
    }

    /// The next matching row with its key.
    pub fn next_stored(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<StoredRow>> {
        loop {
            if let Some(row) = self.buffer.pop_front() {
                if self.lock_each {
                    // Locked as it is passed on, so a LIMIT above locks no more rows than it
                    // returns; a row the re-check drops is skipped.
                    match self.lock(txn, vec![row])?.pop() {
                        Some(row) => return Ok(Some(row)),
                        None => continue,
                    }
                }
                return Ok(Some(row));
            }
            if !self.fill(txn)? {
                return Ok(None);
            }
        }
    }
}

impl Operator for TableScan {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        Ok(self.next_stored(txn)?.map(|row| row.values))
    }
}
