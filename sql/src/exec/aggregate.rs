//! Hash aggregation: input rows are grouped by their group-key values (NULLs form one group)
//! and each group keeps one accumulator per aggregate call. Without GROUP BY there is exactly
//! one group, also for empty input (`SELECT count(*) FROM empty` is 0, `sum` NULL).
//!
//! Past `work_mem`, the rows of groups not yet in memory are spilled to partition files and
//! aggregated from there afterwards ([`super::spill`]); the groups then come out partition
//! by partition.
//!
//! Aggregates follow PostgreSQL: NULL arguments are skipped (`count(*)` counts rows);
//! `DISTINCT` feeds each distinct argument once; `sum` of integers is exact and fails with
//! 22003 beyond `bigint` (PostgreSQL would widen to `numeric`); `avg` is computed in double
//! precision; `min`/`max` compare as ORDER BY does; `string_agg` joins in input order.

use std::collections::{HashMap, HashSet};

use kv::Transaction;

use super::operator::{Operator, Row, hash_key};
use super::spill::{FANOUT, Partitions, Source, SpillReader, WorkMem, row_bytes};
use crate::error::{SqlError, SqlResult};
use crate::expr::Expr;
use crate::plan::{AggregateCall, AggregateFn};
use crate::types::{SqlType, Value, range_error};

/// The running state of one aggregate call in one group.
#[derive(Clone, Debug)]
enum Accumulator {
    Count(i64),
    SumInt(Option<i128>),
    SumFloat(Option<f64>),
    Avg { sum: f64, count: i64 },
    Extreme { best: Value, max: bool },
    Bool { value: Option<bool>, and: bool },
    StringAgg(Option<String>),
}

impl Accumulator {
    fn new(call: &AggregateCall) -> Accumulator {
        match call.func {
            AggregateFn::CountStar | AggregateFn::Count => Accumulator::Count(0),
            AggregateFn::Sum if call.result_type.is_integer() => Accumulator::SumInt(None),
            AggregateFn::Sum => Accumulator::SumFloat(None),
            AggregateFn::Avg => Accumulator::Avg { sum: 0.0, count: 0 },
            AggregateFn::Min | AggregateFn::Max => Accumulator::Extreme {
                best: Value::Null,
                max: call.func == AggregateFn::Max,
            },
            AggregateFn::BoolAnd | AggregateFn::BoolOr => Accumulator::Bool {
                value: None,
                and: call.func == AggregateFn::BoolAnd,
            },
            AggregateFn::StringAgg => Accumulator::StringAgg(None),
        }
    }

    /// Adds one input (the call's arguments; none for `count(*)`).
    fn add(&mut self, args: &[Value]) {
        let value = args.first().unwrap_or(&Value::Bool(true));
        if value.is_null() {
            return;
        }
        match self {
            Accumulator::Count(n) => *n += 1,
            Accumulator::SumInt(sum) => {
                if let Value::Int(i) = value {
                    *sum = Some(sum.unwrap_or(0) + *i as i128);
                }
            }
            Accumulator::SumFloat(sum) => {
                let v = match value {
                    Value::Int(i) => *i as f64,
                    Value::Float(f) => *f,
                    _ => return,
                };
                *sum = Some(sum.unwrap_or(0.0) + v);
            }
            Accumulator::Avg { sum, count } => {
                match value {
                    Value::Int(i) => *sum += *i as f64,
                    Value::Float(f) => *sum += *f,
                    _ => return,
                }
                *count += 1;
            }
            Accumulator::Extreme { best, max } => {
                let better = best.is_null() || {
                    let o = value.sort_cmp(best);
                    if *max { o.is_gt() } else { o.is_lt() }
                };
                if better {
                    *best = value.clone();
                }
            }
            Accumulator::Bool { value: acc, and } => {
                if let Value::Bool(b) = value {
                    *acc = Some(match acc {
                        None => *b,
                        Some(a) if *and => *a && *b,
                        Some(a) => *a || *b,
                    });
                }
            }
            Accumulator::StringAgg(acc) => {
                let Value::Text(text) = value else { return };
                match acc {
                    None => *acc = Some(text.clone()),
                    Some(s) => {
                        if let Some(Value::Text(delimiter)) = args.get(1) {
                            s.push_str(delimiter);
                        }
                        s.push_str(text);
                    }
                }
            }
        }
    }

    fn finish(&self, ty: SqlType) -> SqlResult<Value> {
        Ok(match self {
            Accumulator::Count(n) => Value::Int(*n),
            Accumulator::SumInt(None) | Accumulator::SumFloat(None) => Value::Null,
            Accumulator::SumInt(Some(sum)) => {
                Value::Int(i64::try_from(*sum).map_err(|_| range_error(SqlType::BigInt))?)
            }
            Accumulator::SumFloat(Some(sum)) => {
                let sum = if ty == SqlType::Real {
                    *sum as f32 as f64
                } else {
                    *sum
                };
                if sum.is_infinite() {
                    return Err(SqlError::out_of_range("value out of range: overflow"));
                }
                Value::Float(sum)
            }
            Accumulator::Avg { count: 0, .. } => Value::Null,
            Accumulator::Avg { sum, count } => Value::Float(sum / *count as f64),
            Accumulator::Extreme { best, .. } => best.clone(),
            Accumulator::Bool { value, .. } => value.map_or(Value::Null, Value::Bool),
            Accumulator::StringAgg(s) => s.clone().map_or(Value::Null, Value::Text),
        })
    }
}

/// One group: its key values, accumulators, and the DISTINCT arguments seen per call.
struct Group {
    keys: Row,
    accumulators: Vec<Accumulator>,
    seen: Vec<HashSet<Vec<u8>>>,
}

pub struct AggregateOp {
    input: Option<Box<dyn Operator>>,
    group_by: Vec<Expr>,
    calls: Vec<AggregateCall>,
    work_mem: WorkMem,
    output: std::vec::IntoIter<Row>,
    /// Spilled input still to aggregate, with how many times it was partitioned.
    pending: Vec<(SpillReader, u32)>,
    spill_files: u64,
}

impl AggregateOp {
    pub fn new(
        input: Box<dyn Operator>,
        group_by: Vec<Expr>,
        calls: Vec<AggregateCall>,
        work_mem: WorkMem,
    ) -> Self {
        AggregateOp {
            input: Some(input),
            group_by,
            calls,
            work_mem,
            output: Vec::new().into_iter(),
            pending: Vec::new(),
            spill_files: 0,
        }
    }

    fn new_group(&self, keys: Row) -> Group {
        Group {
            keys,
            accumulators: self.calls.iter().map(Accumulator::new).collect(),
            seen: vec![HashSet::new(); self.calls.len()],
        }
    }

    /// Aggregates the rows of `input` (partitioned `level` times before): the groups that
    /// fit in `work_mem`, and the rows of the other groups spilled into partitions.
    fn run(
        &self,
        mut input: Source,
        level: u32,
        txn: &mut dyn Transaction,
    ) -> SqlResult<(Vec<Row>, Option<Partitions>)> {
        let mut index: HashMap<Vec<u8>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        let mut bytes = 0usize;
        let mut spilled: Option<Partitions> = None;
        if self.group_by.is_empty() {
            groups.push(self.new_group(Vec::new()));
            index.insert(Vec::new(), 0);
        }
        while let Some(row) = input.next(txn)? {
            let keys = self
                .group_by
                .iter()
                .map(|e| e.eval(&row))
                .collect::<SqlResult<Row>>()?;
            let key = hash_key(&keys);
            let g = match index.get(&key) {
                Some(&g) => g,
                None if bytes > self.work_mem.0 => {
                    if spilled.is_none() {
                        spilled = Some(Partitions::new(level)?);
                    }
                    let partitions = spilled.as_mut().expect("created above");
                    partitions.write(Some(&key), &row)?;
                    continue;
                }
                None => {
                    bytes += row_bytes(&keys)
                        + key.len()
                        + GROUP_OVERHEAD
                        + self.calls.len() * std::mem::size_of::<Accumulator>();
                    groups.push(self.new_group(keys));
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            let group = &mut groups[g];
            for (i, call) in self.calls.iter().enumerate() {
                if let Some(filter) = &call.filter
                    && !filter.is_true(&row)?
                {
                    continue;
                }
                let args = call
                    .args
                    .iter()
                    .map(|e| e.eval(&row))
                    .collect::<SqlResult<Row>>()?;
                if call.distinct {
                    let arg_key = hash_key(&args);
                    let arg_bytes = arg_key.len() + GROUP_OVERHEAD;
                    if !group.seen[i].insert(arg_key) {
                        continue;
                    }
                    bytes += arg_bytes;
                }
                if call.func == AggregateFn::StringAgg {
                    bytes += row_bytes(&args);
                }
                group.accumulators[i].add(&args);
            }
        }
        let rows = groups
            .into_iter()
            .map(|group| {
                let mut row = group.keys;
                for (accumulator, call) in group.accumulators.iter().zip(&self.calls) {
                    row.push(accumulator.finish(call.result_type)?);
                }
                Ok(row)
            })
            .collect::<SqlResult<Vec<Row>>>()?;
        Ok((rows, spilled))
    }

    /// Aggregates `input`, queueing what it spilled.
    fn aggregate(&mut self, input: Source, level: u32, txn: &mut dyn Transaction) -> SqlResult<()> {
        let (rows, spilled) = self.run(input, level, txn)?;
        self.output = rows.into_iter();
        if let Some(partitions) = spilled {
            self.spill_files += FANOUT as u64;
            for reader in partitions.finish()? {
                if reader.rows() > 0 {
                    self.pending.push((reader, level + 1));
                }
            }
        }
        Ok(())
    }
}

/// A rough per-entry cost of a hash table and a vector slot, for the memory estimate.
const GROUP_OVERHEAD: usize = 64;

impl Operator for AggregateOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if let Some(input) = self.input.take() {
            self.aggregate(Source::Input(input), 0, txn)?;
        }
        loop {
            if let Some(row) = self.output.next() {
                return Ok(Some(row));
            }
            let Some((reader, level)) = self.pending.pop() else {
                return Ok(None);
            };
            self.aggregate(Source::Spilled(reader), level, txn)?;
        }
    }

    fn spill_files(&self) -> u64 {
        self.spill_files
    }
}
