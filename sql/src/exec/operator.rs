//! The executor's operators: each plan node becomes one operator, pulled a row at a time
//! (the volcano model). A row is produced only when the operator above asks for it, so a
//! LIMIT stops its input early and a scan reads the store page by page. The operators that
//! must see all their input before answering (sort, hash join's build side, aggregation,
//! DISTINCT) hold it in memory up to `work_mem` and spill the rest to temporary files
//! ([`super::spill`]).
//!
//! Every operator gets the statement's transaction at each call instead of holding it, so
//! that a join's two sides (and a subquery's plan) can read through the same transaction.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

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

    /// How many temporary files it has spilled to so far (past `work_mem`).
    fn spill_files(&self) -> u64 {
        0
    }
}

/// The operator tree for a plan; each operator that holds rows may hold `work_mem` bytes.
pub fn build(plan: Plan, work_mem: WorkMem) -> Box<dyn Operator> {
    Builder {
        work_mem,
        measures: None,
    }
    .build(plan, Vec::new())
}

/// The operator tree for a plan, each operator measured (`EXPLAIN ANALYZE`): the
/// measurements by the path of their plan node (child indexes from the root, as
/// [`Plan::children`] orders them).
pub fn build_measured(plan: Plan, work_mem: WorkMem) -> (Box<dyn Operator>, Measures) {
    let measures = Measures::default();
    let operator = Builder {
        work_mem,
        measures: Some(measures.clone()),
    }
    .build(plan, Vec::new());
    (operator, measures)
}

/// What each measured operator produced, by plan path.
#[derive(Clone, Default)]
pub struct Measures(Rc<RefCell<HashMap<Vec<usize>, MeasureCell>>>);

/// One operator's measure, shared with [`Measures`].
type MeasureCell = Rc<RefCell<Measure>>;

impl Measures {
    pub fn get(&self, path: &[usize]) -> Option<Measure> {
        self.0.borrow().get(path).map(|m| *m.borrow())
    }
}

/// One operator's rows and the time spent in it (its inputs included).
#[derive(Clone, Copy, Debug, Default)]
pub struct Measure {
    pub rows: u64,
    pub elapsed: Duration,
    pub spill_files: u64,
}

/// An operator counting its rows and timing its calls.
struct Measured {
    inner: Box<dyn Operator>,
    measure: MeasureCell,
}

impl Operator for Measured {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        let start = Instant::now();
        let row = self.inner.next(txn)?;
        let mut measure = self.measure.borrow_mut();
        measure.elapsed += start.elapsed();
        measure.rows += u64::from(row.is_some());
        measure.spill_files = self.inner.spill_files();
        Ok(row)
    }
}

struct Builder {
    work_mem: WorkMem,
    measures: Option<Measures>,
}

/// `path` extended by child indexes.
fn child(path: &[usize], indexes: &[usize]) -> Vec<usize> {
    let mut path = path.to_vec();
    path.extend_from_slice(indexes);
    path
}

impl Builder {
    fn build(&self, plan: Plan, path: Vec<usize>) -> Box<dyn Operator> {
        let operator = self.build_node(plan, &path);
        match &self.measures {
            None => operator,
            Some(measures) => {
                let measure = Rc::new(RefCell::new(Measure::default()));
                measures.0.borrow_mut().insert(path, Rc::clone(&measure));
                Box::new(Measured {
                    inner: operator,
                    measure,
                })
            }
        }
    }

    #[recursive::recursive]
    fn build_node(&self, plan: Plan, path: &[usize]) -> Box<dyn Operator> {
        let work_mem = self.work_mem;
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
                let (input, predicate, below) = match *input {
                    Plan::Filter { input, predicate } => {
                        (input, Some(predicate), child(path, &[0, 0, 0]))
                    }
                    apply => (Box::new(apply), None, child(path, &[0, 0])),
                };
                let Plan::Apply { input, subqueries } = *input else {
                    unreachable!("checked by applies_subqueries")
                };
                Box::new(ApplyOp::new(
                    self.build(*input, below),
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
                    self.build(*input, child(path, &[0, 0])),
                    subqueries,
                    Some(predicate),
                    None,
                    work_mem,
                ))
            }
            Plan::Filter { input, predicate } => Box::new(FilterOp {
                input: self.build(*input, child(path, &[0])),
                predicate,
            }),
            Plan::Project { input, exprs, .. } => Box::new(ProjectOp {
                input: self.build(*input, child(path, &[0])),
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
                    self.build(*left, child(path, &[0])),
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
                    self.build(*left, child(path, &[0])),
                    self.build(*right, child(path, &[1])),
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
                self.build(*input, child(path, &[0])),
                group_by,
                aggregates,
                work_mem,
            )),
            Plan::Distinct { input } => Box::new(DistinctOp::new(
                self.build(*input, child(path, &[0])),
                work_mem,
            )),
            Plan::Sort { input, keys, top } => Box::new(SortOp::new(
                self.build(*input, child(path, &[0])),
                keys,
                top,
                work_mem,
            )),
            Plan::Limit {
                input,
                limit,
                offset,
            } => Box::new(LimitOp {
                input: self.build(*input, child(path, &[0])),
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
                self.build(*left, child(path, &[0])),
                self.build(*right, child(path, &[1])),
            )),
            Plan::Apply { input, subqueries } => Box::new(ApplyOp::new(
                self.build(*input, child(path, &[0])),
                subqueries,
                None,
                None,
                work_mem,
            )),
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
