//! Join order: a tree of inner joins is flattened into its relations (in written order) and
//! its conditions, then rebuilt left-deep, greedily: after the first relation, the next is
//! the first (in written order) that a condition connects to those already joined; only
//! when none is connected does the next written relation join as a cross product. A written
//! order in which every relation connects to the ones before it is kept exactly, so the
//! result is never worse than the written left-deep order, and a FROM list written in an
//! order that would cross-join (`FROM a, b, c WHERE a.x = c.x AND c.y = b.y`) is not.
//!
//! Each condition is placed on the lowest join where all the relations it reads are present.
//! A projection on top restores the written column order. Outer joins are barriers: they
//! keep their place and are reordered inside only.

use crate::expr::Expr;
use crate::plan::{JoinAlgorithm, JoinKind, Plan};

use super::fold::map_children_and_subqueries;

/// Reorders every inner-join tree of the plan.
#[recursive::recursive]
pub fn reorder(plan: Plan) -> Plan {
    match plan {
        join @ Plan::Join {
            kind: JoinKind::Inner,
            ..
        } => {
            let mut leaves = Vec::new();
            let mut conditions = Vec::new();
            flatten(join, 0, &mut leaves, &mut conditions);
            let leaves: Vec<Plan> = leaves.into_iter().map(reorder).collect();
            rebuild(leaves, conditions)
        }
        other => map_children_and_subqueries(other, reorder),
    }
}

/// Collects the relations under a tree of inner joins and its conditions, with columns
/// numbered in the flattened row (which is the join's own row).
fn flatten(plan: Plan, offset: usize, leaves: &mut Vec<Plan>, conditions: &mut Vec<Expr>) {
    match plan {
        Plan::Join {
            left,
            right,
            kind: JoinKind::Inner,
            on,
            ..
        } => {
            let left_width = left.width();
            if let Some(on) = on {
                conditions.extend(
                    on.into_conjuncts()
                        .into_iter()
                        .map(|c| c.shift_columns(&|i| i + offset)),
                );
            }
            flatten(*left, offset, leaves, conditions);
            flatten(*right, offset + left_width, leaves, conditions);
        }
        other => leaves.push(other),
    }
}

fn rebuild(leaves: Vec<Plan>, conditions: Vec<Expr>) -> Plan {
    let widths: Vec<usize> = leaves.iter().map(Plan::width).collect();
    let offsets: Vec<usize> = widths
        .iter()
        .scan(0, |acc, w| {
            let o = *acc;
            *acc += w;
            Some(o)
        })
        .collect();
    let total: usize = widths.iter().sum();
    let relation_of = |column: usize| offsets.iter().rposition(|&o| o <= column).unwrap_or(0);
    let reads: Vec<Vec<usize>> = conditions
        .iter()
        .map(|c| {
            let mut relations: Vec<usize> = c.columns_used().into_iter().map(relation_of).collect();
            relations.dedup();
            relations.sort_unstable();
            relations.dedup();
            relations
        })
        .collect();

    // The greedy order.
    let n = leaves.len();
    let mut order = vec![0];
    let mut joined = vec![false; n];
    joined[0] = true;
    while order.len() < n {
        let connected = (0..n).find(|&j| {
            !joined[j]
                && reads.iter().any(|r| {
                    r.contains(&j)
                        && r.iter().any(|&x| joined[x])
                        && r.iter().all(|&x| x == j || joined[x])
                })
        });
        let next = connected.unwrap_or_else(|| (0..n).find(|&j| !joined[j]).expect("one left"));
        joined[next] = true;
        order.push(next);
    }

    // Where each written column ends up.
    let mut position = vec![0; total];
    let mut at = 0;
    for &r in &order {
        for c in 0..widths[r] {
            position[offsets[r] + c] = at + c;
        }
        at += widths[r];
    }
    let mut leaves: Vec<Option<Plan>> = leaves.into_iter().map(Some).collect();
    let mut placed = vec![false; conditions.len()];
    let mut present = vec![false; n];
    present[order[0]] = true;
    let mut plan = leaves[order[0]].take().expect("each leaf once");
    for &r in &order[1..] {
        present[r] = true;
        let mut on = Vec::new();
        for (i, condition) in conditions.iter().enumerate() {
            if !placed[i] && reads[i].iter().all(|&x| present[x]) {
                placed[i] = true;
                on.push(condition.clone().shift_columns(&|c| position[c]));
            }
        }
        plan = Plan::Join {
            left: Box::new(plan),
            right: Box::new(leaves[r].take().expect("each leaf once")),
            kind: JoinKind::Inner,
            on: Expr::and_all(on),
            algorithm: JoinAlgorithm::NestedLoop,
        };
    }
    // Conditions over no relation at all (outer references, constants) go on top.
    let rest: Vec<Expr> = conditions
        .iter()
        .zip(&placed)
        .filter(|(_, placed)| !**placed)
        .map(|(c, _)| c.clone().shift_columns(&|c| position[c]))
        .collect();
    if let Some(predicate) = Expr::and_all(rest) {
        plan = Plan::Filter {
            input: Box::new(plan),
            predicate,
        };
    }
    if order.iter().enumerate().all(|(i, &r)| i == r) {
        return plan;
    }
    let names = {
        let names = plan.column_names();
        (0..total).map(|c| names[position[c]].clone()).collect()
    };
    Plan::Project {
        input: Box::new(plan),
        exprs: (0..total).map(|c| Expr::Column(position[c])).collect(),
        names,
    }
}
