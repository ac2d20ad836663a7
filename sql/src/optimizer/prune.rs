//! Projection pruning: values no operator above will read are not computed or held. Walking
//! down from the result, each node learns which of its columns are needed; a projection
//! stops computing the others (they become NULL constants), and the build side of a hash or
//! nested-loop join, which is held in memory whole, keeps only the columns needed (the
//! others are replaced by NULL on the way in). Column positions never change, so no
//! expression above has to be renumbered. A scan through an index whose entries hold every
//! column needed (and every column its filter reads) becomes index-only.

use crate::expr::Expr;
use crate::plan::{JoinAlgorithm, Plan};
use crate::types::Value;

/// Prunes the plan; every column of its result is needed.
pub fn prune(plan: Plan) -> Plan {
    let width = plan.width();
    prune_node(plan, vec![true; width])
}

fn mark(needed: &mut [bool], expr: &Expr) {
    for c in expr.columns_used() {
        if let Some(n) = needed.get_mut(c) {
            *n = true;
        }
    }
}

/// `plan` with the columns not needed replaced by NULL (nothing if all are needed).
fn narrowed(plan: Plan, needed: &[bool]) -> Plan {
    if needed.iter().all(|n| *n) {
        return plan;
    }
    let names = plan.column_names();
    let exprs = needed
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if *n {
                Expr::Column(i)
            } else {
                Expr::Const(Value::Null)
            }
        })
        .collect();
    Plan::Project {
        input: Box::new(plan),
        exprs,
        names,
    }
}

#[recursive::recursive]
fn prune_node(plan: Plan, needed: Vec<bool>) -> Plan {
    match plan {
        Plan::Project {
            input,
            exprs,
            names,
        } => {
            let exprs: Vec<Expr> = exprs
                .into_iter()
                .zip(&needed)
                .map(|(e, n)| if *n { e } else { Expr::Const(Value::Null) })
                .collect();
            let mut below = vec![false; input.width()];
            for e in &exprs {
                mark(&mut below, e);
            }
            Plan::Project {
                input: Box::new(prune_node(*input, below)),
                exprs,
                names,
            }
        }
        Plan::Filter { input, predicate } => {
            let mut below = needed;
            mark(&mut below, &predicate);
            Plan::Filter {
                input: Box::new(prune_node(*input, below)),
                predicate,
            }
        }
        Plan::Sort { input, keys, top } => {
            let mut below = needed;
            for key in &keys {
                below[key.column] = true;
            }
            // The sort holds its rows: it holds only what is needed.
            let input = prune_node(*input, below.clone());
            Plan::Sort {
                input: Box::new(narrowed(input, &below)),
                keys,
                top,
            }
        }
        Plan::Limit {
            input,
            limit,
            offset,
        } => Plan::Limit {
            input: Box::new(prune_node(*input, needed)),
            limit,
            offset,
        },
        Plan::Join {
            left,
            right,
            kind,
            on,
            algorithm,
        } => {
            let left_width = left.width();
            let mut all = needed;
            if let Some(on) = &on {
                mark(&mut all, on);
            }
            let mut left_needed = all[..left_width].to_vec();
            let mut right_needed = all[left_width..].to_vec();
            match &algorithm {
                JoinAlgorithm::Hash {
                    left_keys,
                    right_keys,
                } => {
                    left_keys.iter().for_each(|k| mark(&mut left_needed, k));
                    right_keys.iter().for_each(|k| mark(&mut right_needed, k));
                }
                JoinAlgorithm::Lookup { left_keys } => {
                    left_keys.iter().for_each(|k| mark(&mut left_needed, k));
                }
                JoinAlgorithm::NestedLoop => {}
            }
            let left = prune_node(*left, left_needed);
            // A lookup join reads its right side itself, by key: it stays a scan.
            let right = match algorithm {
                JoinAlgorithm::Lookup { .. } => *right,
                _ => narrowed(prune_node(*right, right_needed.clone()), &right_needed),
            };
            Plan::Join {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                on,
                algorithm,
            }
        }
        Plan::Aggregate {
            input,
            group_by,
            aggregates,
        } => {
            let mut below = vec![false; input.width()];
            group_by.iter().for_each(|e| mark(&mut below, e));
            for call in &aggregates {
                call.args.iter().for_each(|e| mark(&mut below, e));
                call.filter.iter().for_each(|e| mark(&mut below, e));
            }
            Plan::Aggregate {
                input: Box::new(prune_node(*input, below)),
                group_by,
                aggregates,
            }
        }
        Plan::Apply { input, subqueries } => {
            let width = input.width();
            // A correlated subquery reads the row it runs for: keep it whole.
            let mut below = if subqueries.iter().any(|s| s.correlated) {
                vec![true; width]
            } else {
                needed[..width].to_vec()
            };
            for subquery in &subqueries {
                if let crate::plan::SubqueryKind::In { operand, .. } = &subquery.kind {
                    mark(&mut below, operand);
                }
                for key in &subquery.outer_keys {
                    mark(&mut below, key);
                }
            }
            let subqueries = subqueries
                .into_iter()
                .map(|mut s| {
                    s.plan = prune(s.plan);
                    s
                })
                .collect();
            Plan::Apply {
                input: Box::new(prune_node(*input, below)),
                subqueries,
            }
        }
        // DISTINCT and set operations compare whole rows.
        Plan::Distinct { input } => Plan::Distinct {
            input: Box::new(prune(*input)),
        },
        Plan::SetOp {
            op,
            all,
            left,
            right,
        } => Plan::SetOp {
            op,
            all,
            left: Box::new(prune(*left)),
            right: Box::new(prune(*right)),
        },
        Plan::Scan(mut scan) => {
            // Through an index that holds every column needed: index-only.
            if let Some(access) = &mut scan.index {
                // A float read back from a key is never -0 (keys fold it into 0): floats
                // come from the row.
                let covered = |c: usize| {
                    (access.index.columns.contains(&c) || scan.table.primary_key.contains(&c))
                        && !scan.table.columns[c].ty.is_float()
                };
                let filter_covered = scan
                    .filter
                    .as_ref()
                    .is_none_or(|f| f.columns_used().into_iter().all(covered));
                let needed_covered = needed
                    .iter()
                    .enumerate()
                    .all(|(c, needed)| !needed || covered(c));
                access.only = !scan.lock && filter_covered && needed_covered;
            }
            Plan::Scan(scan)
        }
        leaf @ (Plan::Values { .. } | Plan::Series { .. } | Plan::Empty { .. }) => leaf,
    }
}
