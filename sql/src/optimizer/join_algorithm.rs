//! Join algorithms: a join whose condition contains equalities between an expression of the
//! left side and one of the right side becomes a hash join on those pairs (the whole
//! condition is still checked on each pair the hash table finds); any other join is a
//! nested loop. Comparisons of `character(n)` values (equal up to trailing blanks) are not
//! used as hash keys.

use crate::expr::{CmpOp, Expr};
use crate::plan::{JoinAlgorithm, Plan};

use super::fold::map_children;

#[recursive::recursive]
pub fn choose(plan: Plan) -> Plan {
    let plan = match plan {
        Plan::Apply { input, subqueries } => Plan::Apply {
            input,
            subqueries: subqueries
                .into_iter()
                .map(|mut s| {
                    s.plan = choose(s.plan);
                    s
                })
                .collect(),
        },
        other => other,
    };
    match map_children(plan, choose) {
        Plan::Join {
            left,
            right,
            kind,
            on,
            algorithm: JoinAlgorithm::NestedLoop,
        } => {
            let left_width = left.width();
            let mut left_keys = Vec::new();
            let mut right_keys = Vec::new();
            if let Some(on) = &on {
                for conjunct in on.conjuncts() {
                    if let Some((l, r)) = equi_pair(conjunct, left_width) {
                        left_keys.push(l);
                        right_keys.push(r);
                    }
                }
            }
            let algorithm = if left_keys.is_empty() {
                JoinAlgorithm::NestedLoop
            } else {
                JoinAlgorithm::Hash {
                    left_keys,
                    right_keys,
                }
            };
            Plan::Join {
                left,
                right,
                kind,
                on,
                algorithm,
            }
        }
        other => other,
    }
}

/// `l = r` with `l` over the left side only and `r` over the right side only (either way
/// round): the pair, the right one renumbered over the right row.
fn equi_pair(expr: &Expr, left_width: usize) -> Option<(Expr, Expr)> {
    let Expr::Compare {
        op: CmpOp::Eq,
        left,
        right,
        blank_padded: false,
    } = expr
    else {
        return None;
    };
    let side = |e: &Expr| {
        let used = e.columns_used();
        if e.max_outer_depth() > 0 || used.is_empty() {
            None
        } else if used.iter().all(|&c| c < left_width) {
            Some(true)
        } else if used.iter().all(|&c| c >= left_width) {
            Some(false)
        } else {
            None
        }
    };
    let shift = |e: &Expr| e.clone().shift_columns(&|c| c - left_width);
    match (side(left), side(right)) {
        (Some(true), Some(false)) => Some(((**left).clone(), shift(right))),
        (Some(false), Some(true)) => Some(((**right).clone(), shift(left))),
        _ => None,
    }
}
