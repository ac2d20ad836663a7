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
//! An aggregate over the correlated WHERE is grouped by the keys instead. A key without rows
//! then has no group, but the per-row subquery would have aggregated no rows into one row
//! (`count(*)` 0, `sum` NULL; the "count bug" of naive decorrelation): that row is computed
//! once from the subquery with the aggregate's input emptied ([`SubqueryDef::missing`]),
//! and stands for every key without rows.
//!
//! A subquery whose equalities cover a table's whole primary key stays correlated: each outer
//! row then reads at most one row by a point get, which beats reading the table once when
//! there are few outer rows (there is no cost model to tell the two cases apart).
//!
//! Run once for all inner rows, the subquery evaluates its select list, aggregate arguments
//! and other WHERE conditions also for rows no outer row meets: where one of them could
//! raise an error (`10 / t.d`), it stays correlated, so that it fails only where PostgreSQL
//! would. So does a subquery that also refers to a query further out.
//!
//! What the subquery may have between its top and those equalities: projections, DISTINCT,
//! a sort (kept: an aggregate above may depend on the order), and for EXISTS a LIMIT without OFFSET
//! (dropped: it cannot change whether there is a row), and one aggregate. A LIMIT over the
//! correlated WHERE, an equality above the aggregate, an outer reference anywhere else, or an equality that compares
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
    /// Whether keys were lifted through an aggregate (now grouped by them).
    aggregated: bool,
}

impl Lifted {
    fn unchanged(plan: Plan) -> Lifted {
        Lifted {
            plan,
            keys: Vec::new(),
            outers: Vec::new(),
            aggregated: false,
        }
    }
}

fn decorrelate_subquery(subquery: SubqueryDef) -> SubqueryDef {
    let exists = matches!(subquery.kind, SubqueryKind::Exists);
    // A subquery that also refers further out runs per row of the query it is in anyway;
    // left as it is.
    if subquery.plan.refers_outside(2) {
        return subquery;
    }
    let Some(lifted) = lift(subquery.plan.clone(), exists) else {
        return subquery;
    };
    if lifted.keys.is_empty() || lifted.plan.refers_to_level(1) {
        return subquery;
    }
    let missing = lifted.aggregated.then(|| {
        Box::new(value_columns(
            empty_below_aggregate(subquery.plan),
            exists,
            Vec::new(),
        ))
    });
    SubqueryDef {
        plan: value_columns(lifted.plan, exists, lifted.keys),
        kind: subquery.kind,
        correlated: false,
        outer_keys: lifted.outers,
        missing,
    }
}

/// The subquery's value column (none for EXISTS), then `keys`.
fn value_columns(plan: Plan, exists: bool, keys: Vec<Expr>) -> Plan {
    let (mut exprs, mut names) = if exists {
        (Vec::new(), Vec::new())
    } else {
        (
            vec![Expr::Column(0)],
            vec![plan.column_names().swap_remove(0)],
        )
    };
    for (i, key) in keys.into_iter().enumerate() {
        exprs.push(key);
        names.push(format!("key{}", i + 1));
    }
    Plan::Project {
        input: Box::new(plan),
        exprs,
        names,
    }
}

/// The subquery with the input of its aggregate replaced by no rows.
#[recursive::recursive]
fn empty_below_aggregate(plan: Plan) -> Plan {
    match plan {
        Plan::Aggregate {
            input,
            group_by,
            aggregates,
        } => Plan::Aggregate {
            input: Box::new(Plan::Empty {
                width: input.width(),
            }),
            group_by,
            aggregates,
        },
        other => super::fold::map_children(other, empty_below_aggregate),
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
                Lifted::unchanged(*input)
            };
            let mut rest = Vec::new();
            for conjunct in predicate.into_conjuncts() {
                if let Some((inner, outer)) = correlation(&conjunct) {
                    if lifted.aggregated {
                        // An equality over aggregated rows: grouping cannot answer it.
                        return None;
                    }
                    lifted.keys.push(inner);
                    lifted.outers.push(outer);
                } else if refers_to_level1(&conjunct) || may_fail(&conjunct) {
                    // Run once for all rows, it would be evaluated for rows no outer row
                    // meets, where the per-row subquery never evaluates it.
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
            // (An EXISTS never computes its select list.)
            if exprs.iter().any(refers_to_level1) || (!exists && exprs.iter().any(may_fail)) {
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
                ..lifted
            })
        }
        Plan::Aggregate {
            input,
            mut group_by,
            aggregates,
        } if input.refers_to_level(1) => {
            let call_exprs = aggregates
                .iter()
                .flat_map(|a| a.args.iter().chain(a.filter.iter()));
            if group_by
                .iter()
                .chain(call_exprs)
                .any(|e| refers_to_level1(e) || may_fail(e))
            {
                return None;
            }
            let lifted = lift(*input, exists)?;
            if lifted.aggregated {
                return None;
            }
            // Grouped by the keys too; the aggregate's row is its groups, its keys, its
            // aggregates: reordered so that the keys come last.
            let (groups, keys, calls) = (group_by.len(), lifted.keys.len(), aggregates.len());
            group_by.extend(lifted.keys);
            let aggregate = Plan::Aggregate {
                input: Box::new(lifted.plan),
                group_by,
                aggregates,
            };
            let mut names = aggregate.column_names();
            let order: Vec<usize> = (0..groups)
                .chain(groups + keys..groups + keys + calls)
                .chain(groups..groups + keys)
                .collect();
            let exprs = order.iter().map(|&c| Expr::Column(c)).collect();
            names = order.iter().map(|&c| names[c].clone()).collect();
            Some(Lifted {
                plan: Plan::Project {
                    input: Box::new(aggregate),
                    exprs,
                    names,
                },
                keys: (groups + calls..groups + calls + keys)
                    .map(Expr::Column)
                    .collect(),
                outers: lifted.outers,
                aggregated: true,
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
        // Kept: an aggregate above may depend on the order (`string_agg`).
        Plan::Sort {
            input,
            keys,
            top: None,
        } => {
            let lifted = lift(*input, exists)?;
            Some(Lifted {
                plan: Plan::Sort {
                    input: Box::new(lifted.plan),
                    keys,
                    top: None,
                },
                ..lifted
            })
        }
        Plan::Limit {
            input,
            limit,
            offset: 0,
        } if exists && limit != Some(0) => lift(*input, exists),
        other => (!other.refers_to_level(1)).then(|| Lifted::unchanged(other)),
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
    // A table without a primary key (hidden row IDs) has no point gets to offer.
    !primary_key.is_empty()
        && primary_key
            .iter()
            .all(|c| keys.iter().any(|k| matches!(k, Expr::Column(k) if k == c)))
}

/// Whether evaluating `expr` may raise an error (division, overflow, a failing cast or
/// function): conservatively, anything but columns, constants, comparisons, boolean logic,
/// NULL tests, COALESCE, GREATEST/LEAST and CASE over such expressions.
fn may_fail(expr: &Expr) -> bool {
    expr.any(&|e| {
        !matches!(
            e,
            Expr::Const(_)
                | Expr::Column(_)
                | Expr::Outer { .. }
                | Expr::Compare { .. }
                | Expr::CompareEach { .. }
                | Expr::Not(_)
                | Expr::And(..)
                | Expr::Or(..)
                | Expr::IsNull { .. }
                | Expr::IsBool { .. }
                | Expr::DistinctFrom { .. }
                | Expr::Coalesce(_)
                | Expr::Extreme { .. }
                | Expr::Case { .. }
        )
    })
}

fn refers_to_level1(expr: &Expr) -> bool {
    expr.any(&|e| matches!(e, Expr::Outer { depth: 1, .. }))
}
