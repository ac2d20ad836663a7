//! `UPDATE t SET … FROM other … WHERE …` and `DELETE FROM t USING other … WHERE …`: the
//! target table joined with other tables, by the query engine (the same binder, optimizer
//! and join algorithms as a SELECT over `t, other, …`).
//!
//! Each target row that appears in the join is updated or deleted once, with the first
//! joined row found for it (PostgreSQL, too, uses an unspecified one of several). The rows
//! are then locked; under READ COMMITTED a target row changed meanwhile is checked again —
//! the WHERE re-evaluated with its newest version in each of its joined rows in turn (the
//! other tables' rows as the statement read them), the first that still matches giving the
//! new values, as PostgreSQL's EvalPlanQual does — and skipped if none does or it was
//! deleted. The joined rows are held in memory.
//!
//! Not implemented: a target without a primary key (its hidden row IDs are not columns) and
//! subqueries in these statements (0A000).

use std::collections::HashMap;

use sqlparser::ast;

use kv::{LockPurpose, Transaction};

use super::StatementResult;
use super::operator::collect;
use super::returning::{self, Returning};
use super::row_writes::{self, RowChange};
use super::scan::StoredRow;
use super::spill::WorkMem;
use super::update::{bind_assignments, write_updated};
use crate::bind::Binder;
use crate::catalog::Table;
use crate::encoding::row_key;
use crate::error::{SqlError, SqlResult};
use crate::expr::bind;
use crate::plan::Plan;
use crate::scope::Scope;
use crate::types::Value;

/// A target row (the first columns of its joined rows), with the key it is stored under and
/// every joined row it appeared in (the first is used; the others stand by for a re-check).
struct Target {
    key: Vec<u8>,
    joined: Vec<Vec<Value>>,
}

/// The parts of an `UPDATE … FROM` or `DELETE … USING` this module runs.
pub struct JoinedDml<'a> {
    pub target: &'a ast::TableWithJoins,
    pub from: &'a [ast::TableWithJoins],
    /// `SET …` (`None`: a DELETE).
    pub assignments: Option<&'a [ast::Assignment]>,
    pub selection: Option<&'a ast::Expr>,
    pub returning: &'a Option<Vec<ast::SelectItem>>,
}

/// Runs `UPDATE target SET … FROM from WHERE …`, or (no assignments) `DELETE FROM target
/// USING from WHERE …`, on `table` (the target's table).
pub fn execute(
    txn: &mut dyn Transaction,
    table: &Table,
    statement: JoinedDml,
    work_mem: WorkMem,
) -> SqlResult<StatementResult> {
    if table.primary_key.is_empty() {
        return Err(SqlError::unsupported(
            "UPDATE … FROM and DELETE … USING on a table without a primary key",
        ));
    }
    let width = table.columns.len();
    let JoinedDml {
        target,
        from,
        assignments,
        selection,
        returning: returning_items,
    } = statement;
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

    // Each target row once, with the joined rows found for it.
    let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut targets: Vec<Target> = Vec::new();
    for joined in collect(plan, work_mem, txn)? {
        let key = row_key(table.id, table.primary_key.iter().map(|&c| &joined[c]));
        match index.get(&key) {
            Some(&i) => targets[i].joined.push(joined),
            None => {
                index.insert(key.clone(), targets.len());
                targets.push(Target {
                    key,
                    joined: vec![joined],
                });
            }
        }
    }

    // Lock them; a row changed meanwhile is checked again on its newest version.
    let keys: Vec<Vec<u8>> = targets.iter().map(|t| t.key.clone()).collect();
    let newest = if keys.is_empty() {
        None
    } else {
        txn.lock_for_write(&keys, LockPurpose::Update)?
    };
    // The joined row each target row is changed with.
    let mut kept: Vec<(Vec<u8>, Vec<Value>)> = Vec::with_capacity(targets.len());
    match newest {
        None => {
            for mut target in targets {
                kept.push((target.key, target.joined.swap_remove(0)));
            }
        }
        Some(newest) => {
            for (target, value) in targets.into_iter().zip(newest) {
                let Some(value) = value else { continue };
                let values = table.decode_row(&value)?;
                if values[..] == target.joined[0][..width] {
                    let mut joined = target.joined;
                    kept.push((target.key, joined.swap_remove(0)));
                    continue;
                }
                // Changed meanwhile: the first joined row that still matches with the
                // newest version, if any.
                for mut joined in target.joined {
                    joined.splice(..width, values.iter().cloned());
                    let holds = match &filter {
                        Some(filter) => filter.is_true(&joined)?,
                        None => true,
                    };
                    if holds {
                        kept.push((target.key, joined));
                        break;
                    }
                }
            }
        }
    }

    let Some(assignments) = assignments else {
        let changes: Vec<RowChange> = kept
            .iter()
            .map(|(key, joined)| RowChange::delete(key, &joined[..width]))
            .collect();
        row_writes::apply(txn, table, &changes)?;
        return returning::result(
            returning.as_ref(),
            kept.iter().map(|(_, joined)| joined.as_slice()),
            format!("DELETE {}", kept.len()),
        );
    };
    let changes_key = assignments
        .iter()
        .any(|(i, _)| table.primary_key.contains(i));
    let mut updated = Vec::with_capacity(kept.len());
    let mut returned_rows = Vec::with_capacity(kept.len());
    for (key, joined) in &kept {
        let mut values = joined[..width].to_vec();
        for (index, expr) in &assignments {
            values[*index] = expr.eval(joined)?;
        }
        super::insert::check_not_null(table, &values)?;
        let mut returned = values.clone();
        returned.extend_from_slice(&joined[width..]);
        returned_rows.push(returned);
        let old = StoredRow {
            key: key.clone(),
            values: joined[..width].to_vec(),
        };
        updated.push((old, values));
    }
    write_updated(txn, table, &updated, changes_key)?;
    returning::result(
        returning.as_ref(),
        returned_rows.iter().map(Vec::as_slice),
        format!("UPDATE {}", updated.len()),
    )
}
