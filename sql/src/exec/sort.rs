//! Sorting: all input rows in memory, ordered by the keys (NULLs first or last per key, as
//! PostgreSQL places them: last ascending and first descending unless told otherwise). The
//! sort is stable, so rows equal on every key keep their input order. Under a LIMIT it is a
//! top-N sort, holding about twice the rows wanted (at least 1,024) instead of its input.

use std::cmp::Ordering;

use kv::Transaction;

use super::operator::{Operator, Row};
use crate::error::SqlResult;
use crate::plan::SortKey;
use crate::types::Value;

pub struct SortOp {
    input: Option<Box<dyn Operator>>,
    keys: Vec<SortKey>,
    /// Only the first rows are wanted (see [`crate::plan::Plan::Sort`]).
    top: Option<usize>,
    sorted: std::vec::IntoIter<Row>,
}

impl SortOp {
    pub fn new(input: Box<dyn Operator>, keys: Vec<SortKey>, top: Option<u64>) -> SortOp {
        SortOp {
            input: Some(input),
            keys,
            top: top.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            sorted: Vec::new().into_iter(),
        }
    }
}

impl Operator for SortOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if let Some(mut input) = self.input.take() {
            let mut rows = Vec::new();
            while let Some(row) = input.next(txn)? {
                rows.push(row);
                // Top-N: whenever twice the rows wanted have come, keep the first half. The
                // sort is stable and the rows kept keep their order, so the result is that of
                // sorting everything.
                if let Some(top) = self.top
                    && rows.len() >= top.saturating_mul(2).max(1024)
                {
                    rows.sort_by(|a, b| compare_rows(a, b, &self.keys));
                    rows.truncate(top);
                }
            }
            rows.sort_by(|a, b| compare_rows(a, b, &self.keys));
            if let Some(top) = self.top {
                rows.truncate(top);
            }
            self.sorted = rows.into_iter();
        }
        Ok(self.sorted.next())
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
