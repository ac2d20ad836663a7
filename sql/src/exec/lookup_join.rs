//! Lookup joins: for each batch of left rows, the right table's rows with the primary keys
//! the left rows ask for are read by point gets (one `batch_get` per batch), instead of the
//! whole right table. Through an index (the scan's `index`), each distinct key prefix the
//! batch asks for is a range read of the index's entries, and the rows they lead to are
//! read with one `batch_get`. A key value is converted to the key column's type first (an integral
//! `double precision` equals an integer key); a value that no key can equal (NULL, 2.5 for an
//! integer key) finds nothing. Inner and left joins only (a left row without a match is
//! NULL-extended); the join condition is checked on each pair.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kv::Transaction;

use super::operator::{Operator, Row};
use kv::codec::memcomparable::prefix_end;

use crate::catalog::{Index, Table};
use crate::encoding::{encode_value, index_prefix, row_key};
use crate::error::SqlResult;
use crate::expr::Expr;
use crate::index::decode_entry;
use crate::plan::{JoinKind, Scan};
use crate::types::{SqlType, Value};

/// Left rows whose keys one `batch_get` reads.
const BATCH: usize = 256;

pub struct LookupJoinOp {
    left: Box<dyn Operator>,
    table: Arc<Table>,
    filter: Option<Expr>,
    /// Look up through this index instead of by primary key.
    index: Option<Index>,
    kind: JoinKind,
    on: Option<Expr>,
    left_keys: Vec<Expr>,
    pending: VecDeque<Row>,
    left_done: bool,
}

impl LookupJoinOp {
    pub fn new(
        left: Box<dyn Operator>,
        scan: Scan,
        kind: JoinKind,
        on: Option<Expr>,
        left_keys: Vec<Expr>,
    ) -> LookupJoinOp {
        LookupJoinOp {
            left,
            table: scan.table,
            filter: scan.filter,
            index: scan.index.map(|access| access.index),
            kind,
            on,
            left_keys,
            pending: VecDeque::new(),
            left_done: false,
        }
    }

    /// The stored key (or, through an index, the prefix of entry keys) a left row asks for,
    /// if any key can equal its values.
    fn key_for(&self, row: &[Value]) -> SqlResult<Option<Vec<u8>>> {
        let columns = match &self.index {
            Some(index) => &index.columns,
            None => &self.table.primary_key,
        };
        let mut values = Vec::with_capacity(self.left_keys.len());
        for (expr, &column) in self.left_keys.iter().zip(columns) {
            let value = expr.eval(row)?;
            match as_key_value(value, self.table.columns[column].ty) {
                Some(v) => values.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(match &self.index {
            Some(index) => {
                let mut key = index_prefix(self.table.id, index.id);
                for value in &values {
                    encode_value(&mut key, value);
                }
                key
            }
            None => row_key(self.table.id, values.iter()),
        }))
    }

    /// The stored rows under each of `wanted` (sorted, distinct), as (key, row key) pairs
    /// with the rows by row key.
    #[allow(clippy::type_complexity)]
    fn read(
        &self,
        wanted: Vec<Vec<u8>>,
        txn: &mut dyn Transaction,
    ) -> SqlResult<(Vec<(Vec<u8>, Vec<u8>)>, Vec<Option<Vec<u8>>>)> {
        let Some(index) = &self.index else {
            let values = txn.batch_get(&wanted)?;
            let pairs = wanted.iter().map(|k| (k.clone(), k.clone())).collect();
            return Ok((pairs, values));
        };
        let mut pairs = Vec::new();
        for prefix in wanted {
            let end = prefix_end(&prefix).unwrap_or_default();
            for (key, value) in txn.scan(&prefix, Some(&end), usize::MAX)? {
                let entry = decode_entry(&self.table, index, &key, &value)?;
                pairs.push((prefix.clone(), entry.row_key));
            }
        }
        let row_keys: Vec<Vec<u8>> = pairs.iter().map(|(_, row)| row.clone()).collect();
        let values = txn.batch_get(&row_keys)?;
        Ok((pairs, values))
    }

    fn join_batch(&mut self, batch: Vec<Row>, txn: &mut dyn Transaction) -> SqlResult<()> {
        let keys = batch
            .iter()
            .map(|row| self.key_for(row))
            .collect::<SqlResult<Vec<Option<Vec<u8>>>>>()?;
        let mut wanted: Vec<Vec<u8>> = keys.iter().flatten().cloned().collect();
        wanted.sort();
        wanted.dedup();
        let (pairs, values) = self.read(wanted, txn)?;
        let width = self.table.columns.len();
        let mut found: HashMap<Vec<u8>, Vec<Row>> = HashMap::with_capacity(pairs.len());
        for ((key, _), value) in pairs.into_iter().zip(values) {
            let Some(value) = value else { continue };
            let right = self.table.decode_row(&value)?;
            if let Some(filter) = &self.filter
                && !filter.is_true(&right)?
            {
                continue;
            }
            found.entry(key).or_default().push(right);
        }
        for (left, key) in batch.into_iter().zip(keys) {
            let rights = key
                .and_then(|k| found.get(&k))
                .map_or(&[][..], Vec::as_slice);
            let mut matched = false;
            for right in rights {
                let mut row = left.clone();
                row.extend_from_slice(right);
                let keep = match &self.on {
                    Some(on) => on.is_true(&row)?,
                    None => true,
                };
                if keep {
                    matched = true;
                    self.pending.push_back(row);
                }
            }
            if !matched && self.kind == JoinKind::Left {
                let mut row = left;
                row.extend(std::iter::repeat_n(Value::Null, width));
                self.pending.push_back(row);
            }
        }
        Ok(())
    }
}

/// `value` as it is stored in a key column of type `ty`, if such a key can equal it.
fn as_key_value(value: Value, ty: SqlType) -> Option<Value> {
    match value {
        Value::Null => None,
        Value::Float(f) if ty.is_integer() => {
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64)
                .then_some(Value::Int(f as i64))
        }
        Value::Int(i) if ty.is_float() => Some(Value::Float(i as f64)),
        other => Some(other),
    }
}

impl Operator for LookupJoinOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Ok(Some(row));
            }
            if self.left_done {
                return Ok(None);
            }
            let mut batch = Vec::with_capacity(BATCH);
            while batch.len() < BATCH {
                match self.left.next(txn)? {
                    Some(row) => batch.push(row),
                    None => {
                        self.left_done = true;
                        break;
                    }
                }
            }
            self.join_batch(batch, txn)?;
        }
    }
}
