//! Decorrelation: a correlated subquery that meets its outer row only through equalities
//! (`WHERE inner.k = outer.k AND …`) runs once instead of once per outer row.
//!
//! The equalities are taken out of the subquery's WHERE and its inner sides appended to its
//! output as key columns, so that it no longer refers to the outer row. The Apply then reads
//! it whole once, groups its rows by key in a hash table, and computes each outer row's value
//! from the rows whose keys equal the row's values of the outer sides
//! ([`SubqueryDef::outer_keys`]). A row whose outer key is NULL meets no rows, as `=` would
//! have it. The value is the same as before in every context (also under NOT, OR or CASE):
//!
//! - `EXISTS`: whether the row's key has rows (a hash semi join; NOT EXISTS an anti join);
//! - `x [NOT] IN (…)`: the usual three-valued test against the values of the key's rows;
//! - a scalar subquery: the key's single value, NULL without rows, 21000 with more than one.
//!
//! A subquery whose equalities cover a table's whole primary key stays correlated: each outer
//! row then reads at most one row by a point get, which beats reading the table once when
//! there are few outer rows (there is no cost model to tell the two cases apart).
//!
//! What the subquery may have between its top and those equalities: projections, DISTINCT,
//! a sort (dropped: it cannot change the value), and for EXISTS a LIMIT without OFFSET
//! (dropped: it cannot change whether there is a row). An aggregate or a LIMIT over the
//! correlated WHERE, an outer reference anywhere else, or an equality that compares
//! blank-padded strings leave the subquery correlated (computed per row, as before).

use super::fold::map_children;
use crate::expr::{CmpOp, Expr};
use crate::plan::{Plan, SubqueryDef, SubqueryKind};

/// Decorrelates the subqueries of every Apply in the plan.
#[recursive::recursive]
pub fn decorrelate(plan: Plan) -> Plan {
    match plan {
        Plan::Apply { input, subqueries } => Plan::Apply {
            input: Box::new(decorrelate(*input)),
            subqueries: subqueries
                .into_iter()
                .map(|mut s| {
                    s.plan = decorrelate(s.plan);
                    if s.correlated && s.outer_keys.is_empty() {
                        decorrelate_subquery(s)
                    } else {
                        s
                    }
                })
                .collect(),
        },
        other => map_children(other, decorrelate),
    }
}

/// A subquery plan with its correlating equalities taken out.
struct Lifted {
    plan: Plan,
    /// The inner sides of the equalities, over `plan`'s output.
    keys: Vec<Expr>,
    /// The outer sides, over the outer row.
    outers: Vec<Expr>,
}

fn decorrelate_subquery(subquery: SubqueryDef) -> SubqueryDef {
    let exists = matches!(subquery.kind, SubqueryKind::Exists);
    let Some(lifted) = lift(subquery.plan.clone(), exists) else {
        return subquery;
    };
    if lifted.keys.is_empty() || lifted.plan.refers_to_level(1) {
        return subquery;
    }
    // The subquery's value column (none for EXISTS), then the keys.
    let mut exprs: Vec<Expr> = if exists {
        Vec::new()
    } else {
        vec![Expr::Column(0)]
    };
    let mut names: Vec<String> = if exists {
        Vec::new()
    } else {
        vec![lifted.plan.column_names().swap_remove(0)]
    };
    for (i, key) in lifted.keys.into_iter().enumerate() {
        exprs.push(key);
        names.push(format!("key{}", i + 1));
    }
    SubqueryDef {
        plan: Plan::Project {
            input: Box::new(lifted.plan),
            exprs,
            names,
        },
        kind: subquery.kind,
        correlated: false,
        outer_keys: lifted.outers,
    }
}

/// Takes the correlating equalities out of `plan`, if everything between its top and them
/// allows it (see the module documentation).
#[recursive::recursive]
fn lift(plan: Plan, exists: bool) -> Option<Lifted> {
    match plan {
        Plan::Filter { input, predicate } => {
            let mut lifted = if input.refers_to_level(1) {
                lift(*input, exists)?
            } else {
                Lifted {
                    plan: *input,
                    keys: Vec::new(),
                    outers: Vec::new(),
                }
            };
            let mut rest = Vec::new();
            for conjunct in predicate.into_conjuncts() {
                if let Some((inner, outer)) = correlation(&conjunct) {
                    lifted.keys.push(inner);
                    lifted.outers.push(outer);
                } else if refers_to_level1(&conjunct) {
                    return None;
                } else {
                    rest.push(conjunct);
                }
            }
            if let Plan::Scan(scan) = &lifted.plan
                && covers_primary_key(&scan.table.primary_key, &lifted.keys)
            {
                // Each outer row would read one row by a point get: cheaper per row than
                // reading the whole table once, when there are few outer rows.
                return None;
            }
            if let Some(predicate) = Expr::and_all(rest) {
                lifted.plan = Plan::Filter {
                    input: Box::new(lifted.plan),
                    predicate,
                };
            }
            Some(lifted)
        }
        Plan::Project {
            input,
            mut exprs,
            mut names,
        } => {
            if exprs.iter().any(refers_to_level1) {
                return None;
            }
            let lifted = lift(*input, exists)?;
            let base = exprs.len();
            let keys = (0..lifted.keys.len())
                .map(|i| Expr::Column(base + i))
                .collect();
            for (i, key) in lifted.keys.into_iter().enumerate() {
                exprs.push(key);
                names.push(format!("key{}", i + 1));
            }
            Some(Lifted {
                plan: Plan::Project {
                    input: Box::new(lifted.plan),
                    exprs,
                    names,
                },
                keys,
                outers: lifted.outers,
            })
        }
        Plan::Distinct { input } => {
            let lifted = lift(*input, exists)?;
            Some(Lifted {
                plan: Plan::Distinct {
                    input: Box::new(lifted.plan),
                },
                ..lifted
            })
        }
        Plan::Sort {
            input, top: None, ..
        } => lift(*input, exists),
        Plan::Limit {
            input,
            limit,
            offset: 0,
        } if exists && limit != Some(0) => lift(*input, exists),
        other => (!other.refers_to_level(1)).then_some(Lifted {
            plan: other,
            keys: Vec::new(),
            outers: Vec::new(),
        }),
    }
}

/// `inner = outer`, where `inner` reads only the subquery's row and `outer` only the outer
/// row (at least one column of it): the inner side, and the outer side over the outer row.
fn correlation(conjunct: &Expr) -> Option<(Expr, Expr)> {
    let Expr::Compare {
        op: CmpOp::Eq,
        left,
        right,
        blank_padded: false,
    } = conjunct
    else {
        return None;
    };
    let is_inner = |e: &Expr| !e.any(&|x| matches!(x, Expr::Outer { .. }));
    let is_outer = |e: &Expr| {
        e.columns_used().is_empty()
            && refers_to_level1(e)
            && !e.any(&|x| matches!(x, Expr::Outer { depth, .. } if *depth != 1))
            && !e.any(&|x| matches!(x, Expr::SubqueryRef(_) | Expr::AggregateRef(_)))
    };
    let (inner, outer) = if is_inner(left) && is_outer(right) {
        (left, right)
    } else if is_inner(right) && is_outer(left) {
        (right, left)
    } else {
        return None;
    };
    let outer = (**outer)
        .clone()
        .transform_up(&mut |e| {
            Ok(match e {
                Expr::Outer { depth: 1, index } => Expr::Column(index),
                other => other,
            })
        })
        .expect("infallible");
    Some(((**inner).clone(), outer))
}

/// Whether the keys include every primary-key column of a table scan.
fn covers_primary_key(primary_key: &[usize], keys: &[Expr]) -> bool {
    primary_key
        .iter()
        .all(|c| keys.iter().any(|k| matches!(k, Expr::Column(k) if k == c)))
}

fn refers_to_level1(expr: &Expr) -> bool {
    expr.any(&|e| matches!(e, Expr::Outer { depth: 1, .. }))
}
