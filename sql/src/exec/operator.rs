//! The executor's operators: each plan node becomes one operator, pulled a row at a time
//! (the volcano model). A row is produced only when the operator above asks for it, so a
//! LIMIT stops its input early and a scan reads the store page by page. The operators that
//! must see all their input before answering (sort, hash join's build side, aggregation,
//! DISTINCT) hold it in memory up to `work_mem` and spill the rest to temporary files
//! ([`super::spill`]).
//!
//! Every operator gets the statement's transaction at each call instead of holding it, so
//! that a join's two sides (and a subquery's plan) can read through the same transaction.

use kv::Transaction;

use crate::error::SqlResult;
use crate::plan::{JoinAlgorithm, Plan};
use crate::types::Value;

use super::aggregate::AggregateOp;
use super::apply::ApplyOp;
use super::distinct::DistinctOp;
use super::join::JoinOp;
use super::lookup_join::LookupJoinOp;
use super::rows::{FilterOp, LimitOp, ProjectOp, SeriesOp, ValuesOp};
use super::set_op::SetOpOp;
use super::sort::SortOp;
use super::spill::WorkMem;
use super::table_scan::TableScan;

/// A row of values.
pub type Row = Vec<Value>;

/// A pull-based operator.
pub trait Operator {
    /// The next row, or `None` when there are no more.
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>>;
}

/// The operator tree for a plan; each operator that holds rows may hold `work_mem` bytes.
#[recursive::recursive]
pub fn build(plan: Plan, work_mem: WorkMem) -> Box<dyn Operator> {
    match plan {
        Plan::Scan(scan) => Box::new(TableScan::new(scan)),
        Plan::Values { rows, .. } => Box::new(ValuesOp::new(rows)),
        Plan::Series {
            start, stop, step, ..
        } => Box::new(SeriesOp::new(start, stop, step)),
        Plan::Empty { .. } => Box::new(ValuesOp::new(Vec::new())),
        // A filter and projection over an Apply are evaluated by it, so that it computes a
        // subquery only for the rows whose expressions read it.
        Plan::Project { input, exprs, .. } if applies_subqueries(&input) => {
            let (input, predicate) = match *input {
                Plan::Filter { input, predicate } => (input, Some(predicate)),
                apply => (Box::new(apply), None),
            };
            let Plan::Apply { input, subqueries } = *input else {
                unreachable!("checked by applies_subqueries")
            };
            Box::new(ApplyOp::new(
                build(*input, work_mem),
                subqueries,
                predicate,
                Some(exprs),
                work_mem,
            ))
        }
        Plan::Filter { input, predicate } if matches!(*input, Plan::Apply { .. }) => {
            let Plan::Apply { input, subqueries } = *input else {
                unreachable!("matched above")
            };
            Box::new(ApplyOp::new(
                build(*input, work_mem),
                subqueries,
                Some(predicate),
                None,
                work_mem,
            ))
        }
        Plan::Filter { input, predicate } => Box::new(FilterOp {
            input: build(*input, work_mem),
            predicate,
        }),
        Plan::Project { input, exprs, .. } => Box::new(ProjectOp {
            input: build(*input, work_mem),
            exprs,
        }),
        Plan::Join {
            left,
            right,
            kind,
            on,
            algorithm: JoinAlgorithm::Lookup { left_keys },
        } => {
            let Plan::Scan(scan) = *right else {
                unreachable!("the optimizer chooses lookup joins only over a table scan")
            };
            Box::new(LookupJoinOp::new(
                build(*left, work_mem),
                scan,
                kind,
                on,
                left_keys,
            ))
        }
        Plan::Join {
            left,
            right,
            kind,
            on,
            algorithm,
        } => {
            let widths = (left.width(), right.width());
            Box::new(JoinOp::new(
                build(*left, work_mem),
                build(*right, work_mem),
                widths,
                kind,
                on,
                algorithm,
                work_mem,
            ))
        }
        Plan::Aggregate {
            input,
            group_by,
            aggregates,
        } => Box::new(AggregateOp::new(
            build(*input, work_mem),
            group_by,
            aggregates,
            work_mem,
        )),
        Plan::Distinct { input } => Box::new(DistinctOp::new(build(*input, work_mem), work_mem)),
        Plan::Sort { input, keys, top } => {
            Box::new(SortOp::new(build(*input, work_mem), keys, top, work_mem))
        }
        Plan::Limit {
            input,
            limit,
            offset,
        } => Box::new(LimitOp {
            input: build(*input, work_mem),
            remaining: limit,
            skip: offset,
        }),
        Plan::SetOp {
            op,
            all,
            left,
            right,
        } => Box::new(SetOpOp::new(
            op,
            all,
            build(*left, work_mem),
            build(*right, work_mem),
        )),
        Plan::Apply { input, subqueries } => {
            Box::new(ApplyOp::new(build(*input, work_mem), subqueries, None, None, work_mem))
        }
    }
}

/// Whether `plan` is an Apply, or a filter over one.
fn applies_subqueries(plan: &Plan) -> bool {
    match plan {
        Plan::Apply { .. } => true,
        Plan::Filter { input, .. } => matches!(**input, Plan::Apply { .. }),
        _ => false,
    }
}

/// Every row of a plan.
pub fn collect(plan: Plan, work_mem: WorkMem, txn: &mut dyn Transaction) -> SqlResult<Vec<Row>> {
    let mut operator = build(plan, work_mem);
    let mut rows = Vec::new();
    while let Some(row) = operator.next(txn)? {
        rows.push(row);
    }
    Ok(rows)
}

/// A hashable key for values that compare equal exactly when their keys are equal: the
/// store's order-preserving encoding, with integral floating-point numbers written as
/// integers (so that `1 = 1.0` matches in a hash join). NULL is a value here (grouping and
/// DISTINCT put NULLs together); callers that must not match NULLs check first.
pub fn hash_key(values: &[Value]) -> Vec<u8> {
    let mut key = Vec::new();
    for value in values {
        match value {
            Value::Float(f)
                if f.fract() == 0.0
                    && *f >= -9.223_372_036_854_776e18
                    && *f < 9.223_372_036_854_776e18 =>
            {
                crate::encoding::encode_value(&mut key, &Value::Int(*f as i64))
            }
            other => crate::encoding::encode_value(&mut key, other),
        }
    }
    key
}
