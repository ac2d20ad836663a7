//! Access paths: which part of a table's key range a statement must read.
//!
//! From the WHERE clause's conjuncts of the form `pk_column op constant`, the planner takes
//! equalities on a prefix of the primary key columns and, on the next key column, at most one
//! lower and one upper bound. All key columns fixed by equalities → a point get; otherwise a
//! range scan over that prefix and bounds; nothing usable → a full scan of the table. The
//! whole WHERE clause is still evaluated on every row read, so the access path only narrows
//! what is read and never decides what matches.

use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use kv::codec::memcomparable::prefix_end;
use kv::{LockPurpose, Transaction};

use crate::catalog::Table;
use crate::encoding::{decode_row, encode_value, row_key, row_prefix, row_prefix_end};
use crate::error::SqlResult;
use crate::expr::{CmpOp, Expr};
use crate::types::{SqlType, Value};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    Point(Vec<u8>),
    Range { start: Vec<u8>, end: Vec<u8> },
}

/// A row read from a table, with the key it is stored under.
pub struct StoredRow {
    pub key: Vec<u8>,
    pub values: Vec<Value>,
}

/// `column op constant`, normalised so the column is on the left.
fn key_constraint(expr: &Expr) -> Option<(usize, CmpOp, &Value)> {
    let Expr::Compare {
        op,
        left,
        right,
        blank_padded: false,
    } = expr
    else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column(c), Expr::Const(v)) => Some((*c, *op, v)),
        (Expr::Const(v), Expr::Column(c)) => Some((*c, op.flip(), v)),
        _ => None,
    }
}

/// Whether a constant is stored the same way as values of the column, so that its encoding
/// can bound the column's keys.
fn encodes_like(ty: SqlType, value: &Value) -> bool {
    match value {
        Value::Int(_) => ty.is_integer(),
        Value::Float(_) => ty.is_float(),
        Value::Text(_) => matches!(ty, SqlType::Text | SqlType::Varchar(_)),
        Value::Bool(_) => ty == SqlType::Bool,
        Value::Null => false,
    }
}

pub fn plan_access(table: &Table, filter: Option<&Expr>) -> Access {
    let constraints: Vec<(usize, CmpOp, &Value)> = filter
        .map(|f| {
            f.conjuncts()
                .into_iter()
                .filter_map(key_constraint)
                .collect()
        })
        .unwrap_or_default();
    let usable = |column: usize, ops: &[CmpOp]| {
        constraints.iter().find(|(c, op, v)| {
            *c == column && ops.contains(op) && encodes_like(table.columns[column].ty, v)
        })
    };

    let mut prefix = row_prefix(table.id);
    let mut fixed = 0;
    for &column in &table.primary_key {
        match usable(column, &[CmpOp::Eq]) {
            Some((_, _, value)) => {
                encode_value(&mut prefix, value);
                fixed += 1;
            }
            None => break,
        }
    }
    if fixed == table.primary_key.len() && fixed > 0 {
        return Access::Point(prefix);
    }
    let range_end = |prefix: &[u8]| {
        if fixed == 0 {
            row_prefix_end(table.id)
        } else {
            prefix_end(prefix).unwrap_or_default()
        }
    };
    let (mut start, mut end) = (prefix.clone(), range_end(&prefix));
    if let Some(&column) = table.primary_key.get(fixed) {
        let bounded = |value: &Value| {
            let mut key = prefix.clone();
            encode_value(&mut key, value);
            key
        };
        match usable(column, &[CmpOp::Gt, CmpOp::GtEq]) {
            Some((_, CmpOp::Gt, v)) => start = prefix_end(&bounded(v)).unwrap_or_default(),
            Some((_, _, v)) => start = bounded(v),
            None => {}
        }
        match usable(column, &[CmpOp::Lt, CmpOp::LtEq]) {
            Some((_, CmpOp::Lt, v)) => end = bounded(v),
            Some((_, _, v)) => end = prefix_end(&bounded(v)).unwrap_or_default(),
            None => {}
        }
    }
    Access::Range { start, end }
}

/// Reads the rows of `table` on the access path (not yet filtered).
pub fn read_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    access: &Access,
) -> SqlResult<Vec<StoredRow>> {
    let width = table.columns.len();
    let pairs = match access {
        Access::Point(key) => match txn.get(key)? {
            Some(value) => vec![(key.clone(), value)],
            None => vec![],
        },
        Access::Range { start, end } if start >= end => vec![],
        Access::Range { start, end } => txn.scan(start, Some(end), usize::MAX)?,
    };
    pairs
        .into_iter()
        .map(|(key, value)| {
            Ok(StoredRow {
                key,
                values: decode_row(&value, width)?,
            })
        })
        .collect()
}

/// Reads the rows of `table` that satisfy `filter`.
pub fn matching_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    filter: Option<&Expr>,
) -> SqlResult<Vec<StoredRow>> {
    let access = plan_access(table, filter);
    let mut rows = read_rows(txn, table, &access)?;
    if let Some(filter) = filter {
        let mut kept = Vec::with_capacity(rows.len());
        for row in rows {
            if filter.is_true(&row.values)? {
                kept.push(row);
            }
        }
        rows = kept;
    }
    Ok(rows)
}

/// Locks the rows a statement is about to change or lock (`UPDATE`, `DELETE`,
/// `SELECT … FOR UPDATE`) and returns the versions it is to act on (see
/// [`Transaction::lock_for_write`]). Under READ COMMITTED a row that a transaction which
/// committed after the statement's snapshot changed comes back at its newest version; the
/// statement's `filter` is checked on that again, and the row is dropped if it no longer
/// matches or was deleted (PostgreSQL's EvalPlanQual). Rows that match only in their newest
/// version are not found: the statement's snapshot decides which rows it looks at, as in
/// PostgreSQL.
pub fn lock_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    rows: Vec<StoredRow>,
    filter: Option<&Expr>,
) -> SqlResult<Vec<StoredRow>> {
    if rows.is_empty() {
        return Ok(rows);
    }
    let keys: Vec<Vec<u8>> = rows.iter().map(|row| row.key.clone()).collect();
    let Some(newest) = txn.lock_for_write(&keys, LockPurpose::Update)? else {
        return Ok(rows);
    };
    // A row dropped here stays locked until the transaction ends, as PostgreSQL keeps the
    // row lock its re-check took.
    let mut kept = Vec::with_capacity(rows.len());
    for (row, value) in rows.into_iter().zip(newest) {
        let Some(value) = value else {
            continue; // Deleted meanwhile.
        };
        let values = decode_row(&value, table.columns.len())?;
        if values != row.values
            && let Some(filter) = filter
            && !filter.is_true(&values)?
        {
            continue;
        }
        kept.push(StoredRow {
            key: row.key,
            values,
        });
    }
    Ok(kept)
}

/// Sequence numbers for hidden row IDs, unique within this process.
static HIDDEN_ROW_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The key a new row of `table` with these values is stored under. Tables without a primary
/// key get a hidden one: the inserting transaction's start timestamp (no two transactions share
/// one, across processes and restarts) and a sequence number (unique within the process).
pub fn key_for_row(table: &Table, values: &[Value], start_ts: u64) -> Vec<u8> {
    if table.primary_key.is_empty() {
        let seq = HIDDEN_ROW_SEQUENCE.fetch_add(1, AtomicOrdering::Relaxed);
        return row_key(
            table.id,
            [&Value::Int(start_ts as i64), &Value::Int(seq as i64)],
        );
    }
    row_key(table.id, table.primary_key.iter().map(|&i| &values[i]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;

    fn table() -> Table {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: false,
            default: Value::Null,
        };
        Table {
            id: 100,
            name: "t".into(),
            columns: vec![
                column("a", SqlType::Int),
                column("b", SqlType::Text),
                column("c", SqlType::Int),
            ],
            primary_key: vec![0, 1],
        }
    }

    fn cmp(op: CmpOp, column: usize, value: Value) -> Expr {
        Expr::Compare {
            op,
            left: Box::new(Expr::Column(column)),
            right: Box::new(Expr::Const(value)),
            blank_padded: false,
        }
    }

    fn and(a: Expr, b: Expr) -> Expr {
        Expr::And(Box::new(a), Box::new(b))
    }

    #[test]
    fn full_key_equality_is_a_point_get() {
        let t = table();
        let filter = and(
            cmp(CmpOp::Eq, 1, Value::Text("x".into())),
            cmp(CmpOp::Eq, 0, Value::Int(5)),
        );
        assert_eq!(
            plan_access(&t, Some(&filter)),
            Access::Point(row_key(100, [&Value::Int(5), &Value::Text("x".into())]))
        );
    }

    #[test]
    fn prefix_and_bounds_make_a_range() {
        let t = table();
        let filter = and(
            cmp(CmpOp::Gt, 0, Value::Int(5)),
            cmp(CmpOp::LtEq, 0, Value::Int(9)),
        );
        let Access::Range { start, end } = plan_access(&t, Some(&filter)) else {
            panic!()
        };
        let key = |a: i64, b: &str| row_key(100, [&Value::Int(a), &Value::Text(b.into())]);
        assert!(start > key(5, "\u{10ffff}"));
        assert!(start <= key(6, ""));
        assert!(end > key(9, "\u{10ffff}"));
        assert!(end <= key(10, ""));
    }

    #[test]
    fn unusable_conditions_scan_the_whole_table() {
        let t = table();
        let full = Access::Range {
            start: row_prefix(100),
            end: row_prefix_end(100),
        };
        // A non-key column, a float constant against an integer key, and OR.
        assert_eq!(
            plan_access(&t, Some(&cmp(CmpOp::Eq, 2, Value::Int(1)))),
            full
        );
        assert_eq!(
            plan_access(&t, Some(&cmp(CmpOp::Eq, 0, Value::Float(1.5)))),
            full
        );
        let or = Expr::Or(
            Box::new(cmp(CmpOp::Eq, 0, Value::Int(1))),
            Box::new(cmp(CmpOp::Eq, 0, Value::Int(2))),
        );
        assert_eq!(plan_access(&t, Some(&or)), full);
        assert_eq!(plan_access(&t, None), full);
    }
}
