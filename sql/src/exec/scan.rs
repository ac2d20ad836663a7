//! Rows for UPDATE and DELETE: read over the access path the optimizer's access rule
//! chooses for the WHERE clause, and locked (see [`lock_rows`]); the keys new rows are
//! stored under.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use kv::{LockPurpose, Transaction};

use super::subquery_values;
use super::table_scan::TableScan;
use crate::catalog::Table;
use crate::encoding::row_key;
use crate::error::SqlResult;
use crate::expr::Expr;
use crate::optimizer::access::access_for;
use crate::plan::{Scan, SubqueryDef};
use crate::types::Value;

/// A row read from a table, with the key it is stored under.
pub struct StoredRow {
    pub key: Vec<u8>,
    pub values: Vec<Value>,
}

/// A scan of the rows of `table` that satisfy `filter`, over the access path the filter
/// allows, page by page.
pub fn scan_matching(table: &Table, filter: Option<&Expr>) -> TableScan {
    let (spans, index) = access_for(table, filter);
    TableScan::new(Scan {
        table: Arc::new(table.clone()),
        qualifier: table.name.clone(),
        filter: filter.cloned(),
        spans,
        index,
        lock: false,
        limit_hint: None,
    })
}

/// Reads the rows of `table` that satisfy `filter`.
pub fn matching_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    filter: Option<&Expr>,
) -> SqlResult<Vec<StoredRow>> {
    let mut scan = scan_matching(table, filter);
    let mut rows = Vec::new();
    while let Some(row) = scan.next_stored(txn)? {
        rows.push(row);
    }
    Ok(rows)
}

/// The rows an UPDATE or DELETE acts on, locked: those matching `filter`. Its uncorrelated
/// subqueries (see [`super::subquery_values`]) are computed once, before the read, so that
/// they can narrow it — unless that fails (a scalar subquery with several rows), in which
/// case, as PostgreSQL, they are computed only for the rows that reach them. Conjuncts with
/// correlated subqueries are checked on each row read, and again on the newest version of
/// the rows locked.
pub fn target_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    filter: Option<Expr>,
    subqueries: &[SubqueryDef],
) -> SqlResult<Vec<StoredRow>> {
    let mut pick: fn(&SubqueryDef) -> bool = subquery_values::correlated;
    let filter = match filter {
        Some(f) => match subquery_values::inline(
            f.clone(),
            subqueries,
            subquery_values::uncorrelated,
            &[],
            txn,
        ) {
            Ok(inlined) => Some(inlined),
            Err(_) => {
                pick = |_| true;
                Some(f)
            }
        },
        None => None,
    };
    let (per_row, plain): (Vec<Expr>, Vec<Expr>) = filter
        .map(Expr::into_conjuncts)
        .unwrap_or_default()
        .into_iter()
        .partition(|c| subquery_values::uses(c, subqueries, pick));
    let plain = Expr::and_all(plain);
    let mut rows = matching_rows(txn, table, plain.as_ref())?;
    let Some(per_row) = Expr::and_all(per_row) else {
        return lock_rows(txn, table, rows, plain.as_ref());
    };
    let holds = |row: &StoredRow, txn: &mut dyn Transaction| -> SqlResult<bool> {
        let condition =
            subquery_values::inline(per_row.clone(), subqueries, pick, &row.values, txn)?;
        condition.is_true(&row.values)
    };
    let mut kept = Vec::with_capacity(rows.len());
    for row in rows.drain(..) {
        if holds(&row, txn)? {
            kept.push(row);
        }
    }
    let before: Vec<Vec<Value>> = kept.iter().map(|r| r.values.clone()).collect();
    let locked = lock_rows(txn, table, kept, plain.as_ref())?;
    let mut out = Vec::with_capacity(locked.len());
    for row in locked {
        // A row changed meanwhile is checked again on its newest version.
        if before.contains(&row.values) || holds(&row, txn)? {
            out.push(row);
        }
    }
    Ok(out)
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
        let values = table.decode_row(&value)?;
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
