//! `UPDATE t SET … FROM other … WHERE …` and `DELETE FROM t USING other … WHERE …`: the
//! target table joined with other tables, by the query engine (the same binder, optimizer
//! and join algorithms as a SELECT over `t, other, …`).
//!
//! Each target row that appears in the join is updated or deleted once, with the first
//! joined row found for it (PostgreSQL, too, uses an unspecified one of several). The rows
//! are then locked; under READ COMMITTED a target row changed meanwhile is checked again —
//! the WHERE re-evaluated and the new values recomputed with its newest version in the joined
//! row (the other tables' rows as the statement read them), as PostgreSQL's EvalPlanQual
//! does — and skipped if it no longer matches or was deleted.
//!
//! Not implemented: a target without a primary key (its hidden row IDs are not columns) and
//! subqueries in these statements (0A000).

use std::collections::HashSet;

use sqlparser::ast;

use kv::{LockPurpose, Transaction};

use super::StatementResult;
use super::operator::collect;
use super::returning::{self, Returning};
use super::spill::WorkMem;
use super::update::{bind_assignments, write_updated};
use crate::bind::Binder;
use crate::catalog::Table;
use crate::encoding::{decode_row, row_key};
use crate::error::{SqlError, SqlResult};
use crate::expr::bind;
use crate::plan::Plan;
use crate::scope::Scope;
use crate::types::Value;

/// The target row of a joined row (its first columns), with the key it is stored under.
struct Target {
    key: Vec<u8>,
    joined: Vec<Value>,
}

/// `UPDATE target SET … FROM from WHERE …`, or (no assignments) `DELETE FROM target USING
/// from WHERE …`: the rows changed, as (key, new values) for an update and (key, old values)
/// for a delete.
pub fn execute(
    txn: &mut dyn Transaction,
    table: &Table,
    target: &ast::TableWithJoins,
    from: &[ast::TableWithJoins],
    assignments: Option<&[ast::Assignment]>,
    selection: Option<&ast::Expr>,
    returning_items: &Option<Vec<ast::SelectItem>>,
) -> SqlResult<StatementResult> {
    if table.primary_key.is_empty() {
        return Err(SqlError::unsupported(
            "UPDATE … FROM and DELETE … USING on a table without a primary key",
        ));
    }
    let width = table.columns.len();
    let mut items = vec![target.clone()];
    items.extend_from_slice(from);
    let (plan, filter, assignments, returning) = {
        let binder = Binder::new(txn);
        let joined = binder.bind_from(&items, None)?;
        let scope = Scope::new(joined.columns, joined.relations, None, Some(&binder));
        let filter = match selection {
            Some(e) => Some(bind(e, &scope)?.into_condition("WHERE")?),
            None => None,
        };
        let assignments = match assignments {
            Some(a) => Some(bind_assignments(table, a, &scope)?),
            None => None,
        };
        let returning = Returning::bind(returning_items, &scope)?;
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported(
                "subqueries in UPDATE … FROM or DELETE … USING",
            ));
        }
        let plan = match &filter {
            Some(predicate) => Plan::Filter {
                input: Box::new(joined.plan),
                predicate: predicate.clone(),
            },
            None => joined.plan,
        };
        (plan, filter, assignments, returning)
    };
    let plan = crate::optimizer::optimize(plan)?;

    // Each target row once, with the first joined row found for it.
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for joined in collect(plan, WorkMem::default(), txn)? {
        let key = row_key(table.id, table.primary_key.iter().map(|&c| &joined[c]));
        if seen.insert(key.clone()) {
            targets.push(Target { key, joined });
        }
    }

    // Lock them; a row changed meanwhile is checked again on its newest version.
    let keys: Vec<Vec<u8>> = targets.iter().map(|t| t.key.clone()).collect();
    let newest = if keys.is_empty() {
        None
    } else {
        txn.lock_for_write(&keys, LockPurpose::Update)?
    };
    let mut kept = Vec::with_capacity(targets.len());
    match newest {
        None => kept = targets,
        Some(newest) => {
            for (mut target, value) in targets.into_iter().zip(newest) {
                let Some(value) = value else { continue };
                let values = decode_row(&value, width)?;
                if values[..] != target.joined[..width] {
                    target.joined.splice(..width, values);
                    if let Some(filter) = &filter
                        && !filter.is_true(&target.joined)?
                    {
                        continue;
                    }
                }
                kept.push(target);
            }
        }
    }

    let Some(assignments) = assignments else {
        for target in &kept {
            txn.delete(target.key.clone());
        }
        return returning::result(
            returning.as_ref(),
            kept.iter().map(|t| t.joined.as_slice()),
            format!("DELETE {}", kept.len()),
        );
    };
    let changes_key = assignments
        .iter()
        .any(|(i, _)| table.primary_key.contains(i));
    let mut updated = Vec::with_capacity(kept.len());
    let mut returned_rows = Vec::with_capacity(kept.len());
    for target in &kept {
        let mut values = target.joined[..width].to_vec();
        for (index, expr) in &assignments {
            values[*index] = expr.eval(&target.joined)?;
        }
        super::insert::check_not_null(table, &values)?;
        let mut returned = values.clone();
        returned.extend_from_slice(&target.joined[width..]);
        returned_rows.push(returned);
        updated.push((target.key.clone(), values));
    }
    write_updated(txn, table, &updated, changes_key)?;
    returning::result(
        returning.as_ref(),
        returned_rows.iter().map(Vec::as_slice),
        format!("UPDATE {}", updated.len()),
    )
}
