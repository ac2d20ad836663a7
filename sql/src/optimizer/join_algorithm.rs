//! Join algorithms: a join whose condition contains equalities between an expression of the
//! left side and one of the right side becomes a hash join on those pairs (the whole
//! condition is still checked on each pair the hash table finds); any other join is a
//! nested loop. Comparisons of `character(n)` values (equal up to trailing blanks) are not
//! used as hash keys. When the right side is a table whose whole primary key the equalities
//! cover (or a prefix of one of its indexes' columns) and the left side is known to be
//! small, the join is a lookup join instead: point gets (or index lookups) of the right
//! rows each left row needs.

use crate::catalog::Index;
use crate::expr::{CmpOp, Expr};
use crate::plan::{IndexAccess, JoinAlgorithm, JoinKind, Plan, Spans};

use super::fold::map_children;
use super::{Side, side_of};

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
            let mut right = right;
            let algorithm = if let Some((keys, index)) =
                lookup_keys(&left, &right, kind, &left_keys, &right_keys)
            {
                if let Plan::Scan(scan) = right.as_mut() {
                    // The lookups replace the scan's own access path.
                    scan.index = index.map(|index| IndexAccess { index, only: false });
                    scan.spans = Spans::Full;
                }
                JoinAlgorithm::Lookup { left_keys: keys }
            } else if left_keys.is_empty() {
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
    let side = |e: &Expr| match side_of(e, left_width) {
        _ if e.max_outer_depth() > 0 => None,
        Side::Left => Some(true),
        Side::Right => Some(false),
        Side::Both | Side::Neither => None,
    };
    let shift = |e: &Expr| e.clone().shift_columns(&|c| c - left_width);
    match (side(left), side(right)) {
        (Some(true), Some(false)) => Some(((**left).clone(), shift(right))),
        (Some(false), Some(true)) => Some(((**right).clone(), shift(left))),
        _ => None,
    }
}

/// The left keys of a lookup join, in the order of the right table's key (or of the index
/// it looks up, `Some`), when one fits: an inner or left join whose right side is a table
/// scan with every primary-key column — or else the longest prefix of a public index's
/// columns — equated to a left expression, and whose left side is known to be small (point
/// gets by its key, a LIMIT, or literal rows) — without statistics, that is when lookups
/// beat reading the table.
fn lookup_keys(
    left: &Plan,
    right: &Plan,
    kind: JoinKind,
    left_keys: &[Expr],
    right_keys: &[Expr],
) -> Option<(Vec<Expr>, Option<Index>)> {
    let Plan::Scan(scan) = right else {
        return None;
    };
    if scan.lock || !matches!(kind, JoinKind::Inner | JoinKind::Left) || !is_small(left) {
        return None;
    }
    let equated = |column: &usize| {
        right_keys
            .iter()
            .position(|k| *k == Expr::Column(*column))
            .map(|i| left_keys[i].clone())
    };
    if !scan.table.primary_key.is_empty()
        && let Some(keys) = scan.table.primary_key.iter().map(equated).collect()
    {
        return Some((keys, None));
    }
    scan.table
        .public_indexes()
        .map(|index| {
            let keys: Vec<Expr> = index.columns.iter().map_while(equated).collect();
            (keys, index)
        })
        .filter(|(keys, _)| !keys.is_empty())
        // The most columns looked up; of those, the narrowest index (smallest entries).
        .max_by_key(|(keys, index)| (keys.len(), std::cmp::Reverse(index.columns.len())))
        .map(|(keys, index)| (keys, Some(index.clone())))
}

/// Whether a plan is known to produce few rows.
fn is_small(plan: &Plan) -> bool {
    match plan {
        Plan::Scan(scan) => matches!(scan.spans, Spans::Points { .. } | Spans::Nothing),
        Plan::Values { .. } | Plan::Series { .. } | Plan::Empty { .. } => true,
        Plan::Limit { limit, .. } => limit.is_some_and(|n| n <= 10_000),
        Plan::Filter { input, .. }
        | Plan::Project { input, .. }
        | Plan::Sort { input, .. }
        | Plan::Distinct { input } => is_small(input),
        Plan::Join {
            left,
            right,
            algorithm,
            ..
        } => {
            is_small(left) && (is_small(right) || matches!(algorithm, JoinAlgorithm::Lookup { .. }))
        }
        _ => false,
    }
}
