//! Constant folding: a subexpression without columns is evaluated once, at plan time (if
//! that fails, it is left for execution, so an error is raised only if a row reaches it);
//! `AND`/`OR` with a constant side simplify. A filter that is always true goes away; one
//! that is never true (false or NULL) makes its input `Empty`, and emptiness propagates up
//! through operators that produce no rows from no rows.

use crate::expr::Expr;
use crate::plan::{JoinKind, Plan};
use crate::types::Value;

/// Folds one expression.
pub fn fold_expr(expr: Expr) -> Expr {
    expr.transform_up(&mut |e| Ok(fold_node(e)))
        .expect("folding is infallible")
}

fn fold_node(expr: Expr) -> Expr {
    match expr {
        Expr::And(l, r) => match (*l, *r) {
            (Expr::Const(Value::Bool(false)), _) | (_, Expr::Const(Value::Bool(false))) => {
                Expr::Const(Value::Bool(false))
            }
            (Expr::Const(Value::Bool(true)), other) | (other, Expr::Const(Value::Bool(true))) => {
                other
            }
            (l, r) => evaluate(Expr::And(Box::new(l), Box::new(r))),
        },
        Expr::Or(l, r) => match (*l, *r) {
            (Expr::Const(Value::Bool(true)), _) | (_, Expr::Const(Value::Bool(true))) => {
                Expr::Const(Value::Bool(true))
            }
            (Expr::Const(Value::Bool(false)), other) | (other, Expr::Const(Value::Bool(false))) => {
                other
            }
            (l, r) => evaluate(Expr::Or(Box::new(l), Box::new(r))),
        },
        // A comparison with NULL is NULL whatever the other side is.
        Expr::Compare { left, right, .. }
            if matches!(*left, Expr::Const(Value::Null))
                || matches!(*right, Expr::Const(Value::Null)) =>
        {
            Expr::Const(Value::Null)
        }
        other => evaluate(other),
    }
}

/// Evaluates a node whose children are all constants.
fn evaluate(expr: Expr) -> Expr {
    let leaf = matches!(
        expr,
        Expr::Const(_)
            | Expr::Column(_)
            | Expr::Outer { .. }
            | Expr::AggregateRef(_)
            | Expr::SubqueryRef(_)
    );
    if leaf || !expr.children().iter().all(|c| matches!(c, Expr::Const(_))) {
        return expr;
    }
    match expr.eval(&[]) {
        Ok(value) => Expr::Const(value),
        Err(_) => expr,
    }
}

fn never_true(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Const(Value::Bool(false)) | Expr::Const(Value::Null)
    )
}

/// Folds every expression of the plan and removes filters decided at plan time.
#[recursive::recursive]
pub fn fold(mut plan: Plan) -> Plan {
    for expr in plan.exprs_mut() {
        let taken = std::mem::replace(expr, Expr::Const(Value::Null));
        *expr = fold_expr(taken);
    }
    if let Plan::Apply { subqueries, .. } = &mut plan {
        for subquery in subqueries {
            let taken = std::mem::replace(&mut subquery.plan, Plan::Empty { width: 0 });
            subquery.plan = fold(taken);
        }
    }
    let plan = map_children(plan, fold);
    simplify(plan)
}

/// Applies `f` to each child.
pub fn map_children(mut plan: Plan, f: fn(Plan) -> Plan) -> Plan {
    for child in plan.children_mut() {
        let taken = std::mem::replace(child, Plan::Empty { width: 0 });
        *child = f(taken);
    }
    plan
}

/// Applies `f` to each child and, for an Apply, to each subquery's plan.
pub fn map_children_and_subqueries(mut plan: Plan, f: fn(Plan) -> Plan) -> Plan {
    if let Plan::Apply { subqueries, .. } = &mut plan {
        for subquery in subqueries {
            let taken = std::mem::replace(&mut subquery.plan, Plan::Empty { width: 0 });
            subquery.plan = f(taken);
        }
    }
    map_children(plan, f)
}

fn is_empty(plan: &Plan) -> bool {
    matches!(plan, Plan::Empty { .. })
}

fn simplify(plan: Plan) -> Plan {
    let width = plan.width();
    let empty = Plan::Empty { width };
    match plan {
        Plan::Filter { input, predicate } => {
            if predicate == Expr::Const(Value::Bool(true)) {
                *input
            } else if never_true(&predicate) || is_empty(&input) {
                empty
            } else {
                Plan::Filter { input, predicate }
            }
        }
        // A projection of a projection computes its expressions from the inner one's input.
        Plan::Project {
            input,
            exprs,
            names,
        } if matches!(*input, Plan::Project { .. }) => {
            let Plan::Project {
                input: inner,
                exprs: inner_exprs,
                ..
            } = *input
            else {
                unreachable!("checked above")
            };
            Plan::Project {
                input: inner,
                exprs: exprs
                    .into_iter()
                    .map(|e| e.replace_columns(&|i| inner_exprs[i].clone()))
                    .collect(),
                names,
            }
        }
        Plan::Scan(scan) if scan.filter.as_ref().is_some_and(never_true) => empty,
        Plan::Scan(mut scan) if scan.filter == Some(Expr::Const(Value::Bool(true))) => {
            scan.filter = None;
            Plan::Scan(scan)
        }
        Plan::Limit { limit: Some(0), .. } => empty,
        Plan::Project { ref input, .. }
        | Plan::Distinct { ref input }
        | Plan::Sort { ref input, .. }
        | Plan::Limit { ref input, .. }
        | Plan::Apply { ref input, .. }
            if is_empty(input) =>
        {
            empty
        }
        Plan::Aggregate {
            ref input,
            ref group_by,
            ..
        } if is_empty(input) && !group_by.is_empty() => empty,
        Plan::Join {
            ref left,
            ref right,
            kind,
            ..
        } if (is_empty(left) && matches!(kind, JoinKind::Inner | JoinKind::Left))
            || (is_empty(right) && matches!(kind, JoinKind::Inner | JoinKind::Right))
            || (is_empty(left) && is_empty(right)) =>
        {
            empty
        }
        other => other,
    }
}
