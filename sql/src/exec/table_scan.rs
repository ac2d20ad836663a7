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
use kv::codec::memcomparable::prefix_end;

use crate::encoding::{index_prefix, row_prefix, row_prefix_end};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::Expr;
use crate::index::{decode_entry, primary_key_values};
use crate::plan::{IndexAccess, Scan, Spans};
use crate::types::Value;

/// The largest page read at once.
pub const PAGE: usize = 1024;

pub struct TableScan {
    table: Arc<Table>,
    filter: Option<Expr>,
    /// The spans are over this index's entries, which lead to the rows.
    index: Option<IndexAccess>,
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
        let full = match &scan.index {
            Some(access) => {
                let prefix = index_prefix(scan.table.id, access.index.id);
                let end = prefix_end(&prefix).unwrap_or_default();
                (prefix, end)
            }
            None => (row_prefix(scan.table.id), row_prefix_end(scan.table.id)),
        };
        let (points, ranges) = match scan.spans {
            Spans::Full => (VecDeque::new(), VecDeque::from([full])),
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
            index: scan.index,
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
        let page = match &self.index {
            None => page
                .into_iter()
                .map(|(key, value)| Ok((key, self.table.decode_row(&value)?)))
                .collect::<SqlResult<Vec<_>>>()?,
            Some(access) => {
                let rows = self.rows_of_entries(txn, access, page)?;
                self.pairs_read += rows.len() as u64 * u64::from(!access.only);
                rows
            }
        };
        let mut rows = Vec::with_capacity(page.len());
        for (key, values) in page {
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

    /// The rows index entries lead to (key and values, in entry order): read by their keys,
    /// or, index-only, made of the entries' values (the other columns NULL: nothing reads
    /// them).
    fn rows_of_entries(
        &self,
        txn: &mut dyn Transaction,
        access: &IndexAccess,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> SqlResult<Vec<(Vec<u8>, Vec<Value>)>> {
        let table = &self.table;
        let width = table.columns.len();
        let mut decoded = Vec::with_capacity(entries.len());
        for (key, value) in &entries {
            decoded.push(decode_entry(table, &access.index, key, value)?);
        }
        if access.only {
            return decoded
                .into_iter()
                .map(|entry| {
                    let mut values = vec![Value::Null; width];
                    for (&column, value) in access.index.columns.iter().zip(entry.values) {
                        values[column] = value;
                    }
                    let key_values = primary_key_values(table, &entry.row_key)?;
                    for (&column, value) in table.primary_key.iter().zip(key_values) {
                        values[column] = value;
                    }
                    Ok((entry.row_key, values))
                })
                .collect();
        }
        let keys: Vec<Vec<u8>> = decoded.into_iter().map(|e| e.row_key).collect();
        let found = txn.batch_get(&keys)?;
        keys.into_iter()
            .zip(found)
            .map(|(key, value)| {
                let value = value.ok_or_else(|| {
                    SqlError::new(
                        sqlstate::DATA_CORRUPTED,
                        format!(
                            "index \"{}\" has an entry for a row that is not stored",
                            access.index.name
                        ),
                    )
                })?;
                Ok((key, table.decode_row(&value)?))
            })
            .collect()
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
