//! UPDATE … SET … WHERE.

use sqlparser::ast;

use kv::Transaction;

use super::insert::{check_not_null, duplicate_key, existing_rows};
use super::returning::{self, Returning};
use super::row_writes::{self, RowChange};
use super::scan::{StoredRow, key_for_row, target_rows};
use super::{StatementResult, WorkMem, dml_scope, single_table, subquery_values};
use crate::bind::Binder;
use crate::catalog;
use crate::catalog::Table;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, bind};
use crate::scope::Scope;
use crate::types::Value;

pub fn execute(
    txn: &mut dyn Transaction,
    update: &ast::Update,
    work_mem: WorkMem,
) -> SqlResult<StatementResult> {
    if update.limit.is_some() || !update.order_by.is_empty() {
        return Err(SqlError::unsupported("this form of UPDATE"));
    }
    let (name, alias) = single_table(&update.table)?;
    let table = catalog::require_table(txn, &name)?;
    if let Some(
        ast::UpdateTableFromKind::AfterSet(from) | ast::UpdateTableFromKind::BeforeSet(from),
    ) = &update.from
    {
        let statement = super::join_dml::JoinedDml {
            target: &update.table,
            from,
            assignments: Some(&update.assignments),
            selection: update.selection.as_ref(),
            returning: &update.returning,
        };
        return super::join_dml::execute(txn, &table, statement, work_mem);
    }
    let binder = Binder::new(txn);
    let scope = dml_scope(&table, alias.as_deref(), &binder);

    let assignments = bind_assignments(&table, &update.assignments, &scope)?;
    let filter = match &update.selection {
        Some(expr) => Some(bind(expr, &scope)?.into_condition("WHERE")?),
        None => None,
    };
    let subqueries = scope.take_subqueries();
    let returning = Returning::bind(&update.returning, &scope)?;
    drop(scope);
    drop(binder);

    let rows = target_rows(txn, &table, filter, &subqueries)?;
    // Uncorrelated subqueries of the new values run once (if there is a row to update, as
    // PostgreSQL runs them only when needed); correlated ones per row.
    let mut assignments = if rows.is_empty() {
        assignments
    } else {
        assignments
            .into_iter()
            .map(|(i, e)| {
                let e = subquery_values::inline(
                    e,
                    &subqueries,
                    subquery_values::uncorrelated,
                    &[],
                    txn,
                )?;
                Ok((i, e))
            })
            .collect::<SqlResult<Vec<(usize, Expr)>>>()?
    };
    let per_row = assignments
        .iter()
        .any(|(_, e)| subquery_values::uses(e, &subqueries, subquery_values::correlated));
    let count = rows.len();
    let changes_key = assignments
        .iter()
        .any(|(i, _)| table.primary_key.contains(i));
    // Compute every new row from the old ones first: a row moved to a new key must not be
    // seen again, and a key conflict must fail the statement before anything is written.
    let mut updated = Vec::with_capacity(rows.len());
    for row in rows {
        let mut values = row.values.clone();
        for (index, expr) in &mut assignments {
            let value = if per_row {
                let expr = subquery_values::inline(
                    expr.clone(),
                    &subqueries,
                    subquery_values::correlated,
                    &row.values,
                    txn,
                )?;
                expr.eval(&row.values)?
            } else {
                expr.eval(&row.values)?
            };
            values[*index] = value;
        }
        check_not_null(&table, &values)?;
        updated.push((row, values));
    }
    write_updated(txn, &table, &updated, changes_key)?;
    returning::result(
        returning.as_ref(),
        updated.iter().map(|(_, values)| values.as_slice()),
        format!("UPDATE {count}"),
    )
}

/// `SET column = value, …` (UPDATE, and INSERT's ON CONFLICT DO UPDATE): each target column's
/// position and its new value over `scope` (`DEFAULT` is the column's default).
pub fn bind_assignments(
    table: &Table,
    assignments: &[ast::Assignment],
    scope: &Scope,
) -> SqlResult<Vec<(usize, Expr)>> {
    let mut bound: Vec<(usize, Expr)> = Vec::new();
    for assignment in assignments {
        let ast::AssignmentTarget::ColumnName(column) = &assignment.target else {
            return Err(SqlError::unsupported("assigning to a tuple of columns"));
        };
        let (index, column_name) = super::target_column(table, column)?;
        if bound.iter().any(|(i, _)| *i == index) {
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                format!("multiple assignments to same column \"{column_name}\""),
            ));
        }
        let column = &table.columns[index];
        let is_default = matches!(&assignment.value, ast::Expr::Identifier(i)
            if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"));
        match column.identity {
            Some(_) if is_default => {
                return Err(SqlError::unsupported(
                    "setting an identity column to DEFAULT in UPDATE",
                ));
            }
            Some(crate::catalog::Identity::Always) => {
                return Err(SqlError::new(
                    sqlstate::GENERATED_ALWAYS,
                    format!("column \"{column_name}\" can only be updated to DEFAULT"),
                ));
            }
            _ => {}
        }
        let value = if is_default {
            Expr::Const(column.default.clone())
        } else {
            bind(&assignment.value, scope)?.coerce_for_assignment(column.ty, &column.name)?
        };
        bound.push((index, value));
    }
    Ok(bound)
}

/// Stores the new versions of updated rows (`(old row, new values)`); `changes_key`: some
/// assignment sets a primary-key column, so rows may move to new keys (all old keys are
/// deleted first, so a row may take another's old key; a key taken twice is 23505).
pub fn write_updated(
    txn: &mut dyn Transaction,
    table: &Table,
    updated: &[(StoredRow, Vec<Value>)],
    changes_key: bool,
) -> SqlResult<()> {
    let new_keys: Vec<Vec<u8>> = if changes_key {
        for (old, _) in updated {
            txn.delete(old.key.clone());
        }
        let new_keys: Vec<Vec<u8>> = updated
            .iter()
            .map(|(_, values)| key_for_row(table, values, txn.start_ts()))
            .collect();
        // The old keys read as deleted now: a row may keep its key or take another's.
        let existing = existing_rows(txn, &new_keys)?;
        let mut taken = std::collections::HashSet::new();
        for ((key, (_, values)), existing) in new_keys.iter().zip(updated).zip(existing) {
            if existing.is_some() || !taken.insert(key.clone()) {
                return Err(duplicate_key(table, values));
            }
        }
        new_keys
    } else {
        updated.iter().map(|(old, _)| old.key.clone()).collect()
    };
    let changes: Vec<RowChange> = updated
        .iter()
        .zip(&new_keys)
        .map(|((old, values), new_key)| RowChange {
            old: Some((old.key.as_slice(), old.values.as_slice())),
            new: Some((new_key.as_slice(), values.as_slice())),
        })
        .collect();
    row_writes::apply(txn, table, &changes)
}
