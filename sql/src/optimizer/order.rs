//! Sorts the rows already satisfy are dropped. A scan returns rows in the order of its key
//! space — the primary key, or an index's columns followed by the primary key — so an
//! `ORDER BY` of a prefix of those columns (reached through projections and filters, and
//! skipping columns the filter fixes to one value with `=`) needs no sort.
//!
//! Index and row keys put NULL first, so an ascending key with `NULLS LAST` (PostgreSQL's
//! default) is satisfied only by a column that cannot be NULL (or is fixed by `=`); a
//! descending key never is (scans do not run backwards).
//!
//! Under a `LIMIT`, a sort over a scan that reads the whole table may instead switch the scan
//! to an index that gives the order: the first rows of the index are all that is read
//! (PostgreSQL's index scan for `ORDER BY … LIMIT`).

use std::collections::HashSet;

use crate::catalog::Table;
use crate::expr::{CmpOp, Expr};
use crate::plan::{IndexAccess, Plan, Scan, SortKey, Spans};

use super::fold::map_children_and_subqueries;

#[recursive::recursive]
pub fn elide(plan: Plan) -> Plan {
    match plan {
        Plan::Limit {
            input,
            limit,
            offset,
        } if matches!(*input, Plan::Sort { .. }) => Plan::Limit {
            input: Box::new(without_needless_sort(*input, true)),
            limit,
            offset,
        },
        sort @ Plan::Sort { .. } => without_needless_sort(sort, false),
        other => map_children_and_subqueries(other, elide),
    }
}

/// `sort`'s input if it is ordered already (see [`ordered`]), else `sort`; the rule applied
/// below.
fn without_needless_sort(sort: Plan, may_switch: bool) -> Plan {
    let Plan::Sort { input, keys, top } = sort else {
        return elide(sort);
    };
    let mut input = *input;
    if ordered(&mut input, &keys, may_switch) {
        elide(input)
    } else {
        Plan::Sort {
            input: Box::new(elide(input)),
            keys,
            top,
        }
    }
}

/// Whether the rows of `plan` come in the order of `keys` (after switching its scan to an
/// index that gives it, when `may_switch`).
fn ordered(plan: &mut Plan, keys: &[SortKey], may_switch: bool) -> bool {
    let Some(columns) = scan_columns(plan, keys) else {
        return false;
    };
    let Some(scan) = scan_mut(plan) else {
        return false;
    };
    let fixed = fixed_columns(scan.filter.as_ref());
    let table = &scan.table;
    let order: Vec<usize> = match &scan.index {
        Some(access) => key_order(table, &access.index.columns),
        None => table.primary_key.clone(),
    };
    if satisfies(table, &order, &columns, &fixed) {
        return true;
    }
    if !may_switch || scan.index.is_some() || scan.spans != Spans::Full {
        return false;
    }
    let index = table
        .public_indexes()
        .find(|index| satisfies(table, &key_order(table, &index.columns), &columns, &fixed))
        .cloned();
    match index {
        Some(index) => {
            scan.index = Some(IndexAccess { index, only: false });
            true
        }
        None => false,
    }
}

/// An index's key order: its columns, then the primary key's.
fn key_order(table: &Table, index_columns: &[usize]) -> Vec<usize> {
    let mut order = index_columns.to_vec();
    order.extend(&table.primary_key);
    order
}

/// The scan's columns the sort keys are (through projections of plain columns and
/// filters), with the keys.
fn scan_columns(plan: &Plan, keys: &[SortKey]) -> Option<Vec<(usize, SortKey)>> {
    match plan {
        Plan::Scan(_) => Some(keys.iter().map(|k| (k.column, k.clone())).collect()),
        Plan::Filter { input, .. } => scan_columns(input, keys),
        Plan::Project { input, exprs, .. } => {
            let mapped: Option<Vec<SortKey>> = keys
                .iter()
                .map(|k| match exprs.get(k.column) {
                    Some(Expr::Column(c)) => Some(SortKey {
                        column: *c,
                        ..k.clone()
                    }),
                    _ => None,
                })
                .collect();
            scan_columns(input, &mapped?)
        }
        _ => None,
    }
}

fn scan_mut(plan: &mut Plan) -> Option<&mut Scan> {
    match plan {
        Plan::Scan(scan) => Some(scan),
        Plan::Filter { input, .. } | Plan::Project { input, .. } => scan_mut(input),
        _ => None,
    }
}

/// Columns the filter fixes to one constant (`column = constant` conjuncts).
fn fixed_columns(filter: Option<&Expr>) -> HashSet<usize> {
    let mut fixed = HashSet::new();
    for conjunct in filter.map(Expr::conjuncts).unwrap_or_default() {
        if let Expr::Compare {
            op: CmpOp::Eq,
            left,
            right,
            blank_padded: false,
        } = conjunct
        {
            match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), Expr::Const(v)) | (Expr::Const(v), Expr::Column(c))
                    if !v.is_null() =>
                {
                    fixed.insert(*c);
                }
                _ => {}
            }
        }
    }
    fixed
}

/// Whether rows in key order `order` are in the order of the sort keys (scan columns).
fn satisfies(
    table: &Table,
    order: &[usize],
    keys: &[(usize, SortKey)],
    fixed: &HashSet<usize>,
) -> bool {
    let mut next = 0;
    for (column, key) in keys {
        if fixed.contains(column) {
            continue; // One value: any order is this key's order.
        }
        if key.descending || (!key.nulls_first && table.columns[*column].nullable) {
            return false;
        }
        while next < order.len() && order[next] != *column && fixed.contains(&order[next]) {
            next += 1;
        }
        if next < order.len() && order[next] == *column {
            next += 1;
        } else {
            return false;
        }
    }
    true
}
