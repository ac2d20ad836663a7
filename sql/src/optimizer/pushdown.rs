//! Predicate pushdown: each conjunct of a filter moves to the lowest node where every column
//! it reads is available and where filtering earlier keeps the results the same.
//!
//! - Through a projection (columns replaced by the projected expressions), a sort, DISTINCT,
//!   and an Apply (when it does not read the subquery columns).
//! - Below an aggregation when it reads only grouping keys (it then filters groups whole).
//! - Into a scan's filter, where the access rule can use it.
//! - Joins: a conjunct over one side goes into that side when the join does not produce
//!   NULL-extended rows for it (the left side of an inner or left join, the right side of
//!   an inner or right join); a conjunct over both sides of an inner join becomes part of
//!   its condition. A join's own condition pushes its one-sided conjuncts into the side whose
//!   rows it filters without deciding the other side's NULL extension (for an inner join
//!   both; for a left join the right; for a right join the left).
//! - Never through LIMIT, set operations, or into VALUES.
//!
//! Outer joins are reduced first: a WHERE conjunct that can never be true for a row whose
//! columns from one side are all NULL (`right.x = 5`, but not `right.x IS NULL`) removes the
//! NULL-extended rows of that side, so a LEFT join becomes an inner join (a FULL join a LEFT
//! or RIGHT one), whose conditions may then be pushed into both sides.

use crate::expr::Expr;
use crate::plan::{JoinKind, Plan};

use super::{Side, side_of};

/// Pushes every filter of the plan down.
pub fn push_down(plan: Plan) -> Plan {
    push(plan, Vec::new())
}

/// `plan` filtered by `predicates`, with the predicates placed as low as they may go.
#[recursive::recursive]
fn push(plan: Plan, predicates: Vec<Expr>) -> Plan {
    match plan {
        Plan::Filter { input, predicate } => {
            let mut all = predicate.into_conjuncts();
            all.extend(predicates);
            push(*input, all)
        }
        Plan::Scan(mut scan) => {
            if !predicates.is_empty() {
                let mut conjuncts = scan
                    .filter
                    .take()
                    .map(Expr::into_conjuncts)
                    .unwrap_or_default();
                conjuncts.extend(predicates);
                scan.filter = Expr::and_all(conjuncts);
            }
            Plan::Scan(scan)
        }
        Plan::Project {
            input,
            exprs,
            names,
        } => {
            let substituted: Vec<Expr> = predicates
                .into_iter()
                .map(|p| p.replace_columns(&|i| exprs[i].clone()))
                .collect();
            Plan::Project {
                input: Box::new(push(*input, substituted)),
                exprs,
                names,
            }
        }
        Plan::Sort { input, keys, top } => Plan::Sort {
            input: Box::new(push(*input, predicates)),
            keys,
            top,
        },
        Plan::Distinct { input } => Plan::Distinct {
            input: Box::new(push(*input, predicates)),
        },
        Plan::Apply { input, subqueries } => {
            let width = input.width();
            let (below, above): (Vec<Expr>, Vec<Expr>) = predicates
                .into_iter()
                .partition(|p| p.columns_used().iter().all(|&c| c < width));
            let subqueries = subqueries
                .into_iter()
                .map(|mut s| {
                    s.plan = push_down(s.plan);
                    s
                })
                .collect();
            filtered(
                Plan::Apply {
                    input: Box::new(push(*input, below)),
                    subqueries,
                },
                above,
            )
        }
        Plan::Aggregate {
            input,
            group_by,
            aggregates,
        } => {
            let groups = group_by.len();
            let (below, above): (Vec<Expr>, Vec<Expr>) = predicates.into_iter().partition(|p| {
                let used = p.columns_used();
                !used.is_empty() && used.iter().all(|&c| c < groups)
            });
            let below = below
                .into_iter()
                .map(|p| p.replace_columns(&|i| group_by[i].clone()))
                .collect();
            filtered(
                Plan::Aggregate {
                    input: Box::new(push(*input, below)),
                    group_by,
                    aggregates,
                },
                above,
            )
        }
        Plan::Join {
            left,
            right,
            kind,
            on,
            algorithm,
        } => {
            let left_width = left.width();
            // Outer-join reduction: a WHERE conjunct that is never true when one side's
            // columns are all NULL removes the rows that side's NULL extension would add.
            let rejects = |in_side: &dyn Fn(usize) -> bool| {
                predicates.iter().any(|p| null_rejecting(p, in_side))
            };
            let left_rejected = rejects(&|c| c < left_width);
            let right_rejected = rejects(&|c| c >= left_width);
            let kind = match (kind, left_rejected, right_rejected) {
                (JoinKind::Left, _, true) | (JoinKind::Right, true, _) => JoinKind::Inner,
                (JoinKind::Full, true, true) => JoinKind::Inner,
                (JoinKind::Full, true, false) => JoinKind::Left,
                (JoinKind::Full, false, true) => JoinKind::Right,
                (kind, _, _) => kind,
            };
            let side = |p: &Expr| side_of(p, left_width);
            let (mut to_left, mut to_right, mut condition, mut above) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // From above the join (WHERE).
            for p in predicates {
                match (side(&p), kind) {
                    (Side::Left | Side::Neither, JoinKind::Inner | JoinKind::Left) => {
                        to_left.push(p)
                    }
                    (Side::Right, JoinKind::Inner | JoinKind::Right) => to_right.push(p),
                    (Side::Both, JoinKind::Inner) => condition.push(p),
                    _ => above.push(p),
                }
            }
            // The join's own condition.
            for p in on.map(Expr::into_conjuncts).unwrap_or_default() {
                match (side(&p), kind) {
                    (Side::Left, JoinKind::Inner | JoinKind::Right) => to_left.push(p),
                    (Side::Right, JoinKind::Inner | JoinKind::Left) => to_right.push(p),
                    _ => condition.push(p),
                }
            }
            let to_right = to_right
                .into_iter()
                .map(|p| p.shift_columns(&|c| c - left_width))
                .collect();
            filtered(
                Plan::Join {
                    left: Box::new(push(*left, to_left)),
                    right: Box::new(push(*right, to_right)),
                    kind,
                    on: Expr::and_all(condition),
                    algorithm,
                },
                above,
            )
        }
        Plan::Limit {
            input,
            limit,
            offset,
        } => filtered(
            Plan::Limit {
                input: Box::new(push(*input, Vec::new())),
                limit,
                offset,
            },
            predicates,
        ),
        Plan::SetOp {
            op,
            all,
            left,
            right,
        } => filtered(
            Plan::SetOp {
                op,
                all,
                left: Box::new(push(*left, Vec::new())),
                right: Box::new(push(*right, Vec::new())),
            },
            predicates,
        ),
        leaf @ (Plan::Values { .. } | Plan::Series { .. } | Plan::Empty { .. }) => {
            filtered(leaf, predicates)
        }
    }
}

/// Whether `expr` is never true when every column for which `in_side` holds is NULL.
fn null_rejecting(expr: &Expr, in_side: &dyn Fn(usize) -> bool) -> bool {
    match expr {
        Expr::And(a, b) => null_rejecting(a, in_side) || null_rejecting(b, in_side),
        Expr::Or(a, b) => null_rejecting(a, in_side) && null_rejecting(b, in_side),
        other => strict(other, in_side),
    }
}

/// Whether `expr` is NULL whenever every column for which `in_side` holds is NULL (it
/// propagates NULL from such a column).
fn strict(expr: &Expr, in_side: &dyn Fn(usize) -> bool) -> bool {
    match expr {
        Expr::Column(c) => in_side(*c),
        Expr::Compare { left, right, .. }
        | Expr::Arith { left, right, .. }
        | Expr::Concat { left, right, .. } => strict(left, in_side) || strict(right, in_side),
        Expr::Neg { expr, .. }
        | Expr::Not(expr)
        | Expr::Cast { expr, .. }
        | Expr::Abs { expr, .. }
        | Expr::Math { expr, .. } => strict(expr, in_side),
        Expr::Like { expr, pattern, .. } => strict(expr, in_side) || strict(pattern, in_side),
        Expr::Text { args, .. } => args.iter().any(|a| strict(a, in_side)),
        Expr::CompareEach { operand, tests, .. } => !tests.is_empty() && strict(operand, in_side),
        _ => false,
    }
}

fn filtered(plan: Plan, predicates: Vec<Expr>) -> Plan {
    match Expr::and_all(predicates) {
        Some(predicate) => Plan::Filter {
            input: Box::new(plan),
            predicate,
        },
        None => plan,
    }
}
