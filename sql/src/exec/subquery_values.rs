//! Subqueries in UPDATE and DELETE: computed and put into the expression as constants. An
//! uncorrelated subquery runs once, before any row is read, so that its value can narrow the
//! read (`DELETE FROM t WHERE id IN (SELECT …)` reads by point gets); a correlated one runs
//! for each row, with the row's values for its outer references.
//!
//! `x [NOT] IN (subquery)` becomes `x [NOT] IN (v1, v2, …)` over the subquery's values,
//! which has the same three-valued result (a NULL among the values makes a miss NULL; an
//! empty list is false).

use kv::Transaction;

use super::operator::collect;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::Expr;
use crate::plan::{SubqueryDef, SubqueryKind};
use crate::types::Value;

/// Whether the expression uses a subquery for which `pick` holds.
pub fn uses(expr: &Expr, subqueries: &[SubqueryDef], pick: fn(&SubqueryDef) -> bool) -> bool {
    expr.any(&|e| matches!(e, Expr::SubqueryRef(k) if pick(&subqueries[*k])))
}

/// Replaces the references to subqueries for which `pick` holds by their values for `row`.
pub fn inline(
    expr: Expr,
    subqueries: &[SubqueryDef],
    pick: fn(&SubqueryDef) -> bool,
    row: &[Value],
    txn: &mut dyn Transaction,
) -> SqlResult<Expr> {
    expr.transform_up(&mut |e| match e {
        Expr::SubqueryRef(k) if pick(&subqueries[k]) => value_of(&subqueries[k], row, txn),
        other => Ok(other),
    })
}

fn value_of(subquery: &SubqueryDef, row: &[Value], txn: &mut dyn Transaction) -> SqlResult<Expr> {
    let mut plan = subquery.plan.clone();
    if subquery.correlated {
        plan.bind_outer(row, 1);
    }
    let plan = crate::optimizer::optimize(plan)?;
    // UPDATE and DELETE do not carry the session's settings down here: the default budget.
    let rows = collect(plan, super::spill::WorkMem::default(), txn)?;
    Ok(match &subquery.kind {
        SubqueryKind::Scalar => {
            if rows.len() > 1 {
                return Err(SqlError::new(
                    sqlstate::CARDINALITY_VIOLATION,
                    "more than one row returned by a subquery used as an expression",
                ));
            }
            Expr::Const(
                rows.into_iter()
                    .next()
                    .map_or(Value::Null, |mut r| r.swap_remove(0)),
            )
        }
        SubqueryKind::Exists => Expr::Const(Value::Bool(!rows.is_empty())),
        SubqueryKind::In {
            operand,
            op,
            all,
            negated,
            blank_padded,
        } => {
            let any = Expr::CompareEach {
                operand: Box::new(operand.clone()),
                tests: rows
                    .into_iter()
                    .map(|mut r| (*op, Expr::Const(r.swap_remove(0)), *blank_padded))
                    .collect(),
                all: *all,
            };
            if *negated {
                Expr::Not(Box::new(any))
            } else {
                any
            }
        }
    })
}

pub fn correlated(s: &SubqueryDef) -> bool {
    s.correlated
}

pub fn uncorrelated(s: &SubqueryDef) -> bool {
    !s.correlated
}
