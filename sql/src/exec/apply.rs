//! Apply: computes the subqueries of an expression for each input row and appends their
//! values to it.
//!
//! A subquery's value is computed only when an expression reads it: the Apply carries the
//! filter and projection over it (the WHERE and the select list that use the subqueries),
//! and evaluates them over a row whose subquery columns are computed on first read
//! ([`crate::expr::Columns`]). So a subquery behind a `CASE` branch, an `OR` or a
//! `COALESCE` that is not taken never runs for that row, and cannot fail it (PostgreSQL too
//! evaluates subplans lazily). Without a projection, the rows that pass carry every value.
//!
//! An uncorrelated subquery runs once and its result is reused; a correlated
//! one runs per row, its outer references replaced by the row's values first (and its plan
//! optimized again with them as constants, so `WHERE t2.k = outer.k` becomes a point get).
//!
//! - Scalar: the single value; NULL without rows; 21000 with more than one row.
//! - EXISTS: whether there is a row (the subquery stops after the first).
//! - `x IN (subquery)`: true if some value equals `x`; otherwise NULL if `x` is NULL (and
//!   the subquery has rows) or a value is NULL; otherwise false. `NOT IN` negates that, so
//!   a NULL among the values makes `NOT IN` never true, as in PostgreSQL.
//!
//! A decorrelated subquery ([`SubqueryDef::outer_keys`]) runs once too: its rows are put in a
//! hash table by their key columns, and each input row's value is computed, as above, from
//! the rows under the row's key (none if the key has a NULL).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use kv::Transaction;

use super::operator::{Operator, Row, build, hash_key};
use super::spill::WorkMem;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{CmpOp, Columns, Expr, compare_values};
use crate::plan::{Plan, SubqueryDef, SubqueryKind};
use crate::types::Value;

/// What an uncorrelated subquery computed, kept for the next rows.
enum Cached {
    Value(Value),
    Values(InValues),
    /// A decorrelated subquery's rows by key: their value column (NULL for EXISTS).
    Keyed(Keyed<Vec<Value>>),
    /// A decorrelated `IN` subquery's values by key.
    KeyedIn(Keyed<InValues>),
}

/// A decorrelated subquery's rows (as `G`) by key, and the rows of a key without any.
struct Keyed<G> {
    groups: HashMap<Vec<u8>, G>,
    missing: G,
}

impl<G> Keyed<G> {
    fn group(&self, key: Option<Vec<u8>>) -> &G {
        key.and_then(|k| self.groups.get(&k))
            .unwrap_or(&self.missing)
    }

    fn map<H>(self, f: impl Fn(G) -> H) -> Keyed<H> {
        Keyed {
            groups: self.groups.into_iter().map(|(k, g)| (k, f(g))).collect(),
            missing: f(self.missing),
        }
    }
}

/// A subquery's values for `IN`.
struct InValues {
    values: Vec<Value>,
    /// Their hash keys (when equality is exact, i.e. not blank-padded).
    keys: Option<HashSet<Vec<u8>>>,
    has_null: bool,
}

pub struct ApplyOp {
    input: Box<dyn Operator>,
    /// Rows pass only if this holds (a WHERE or HAVING over the subqueries).
    predicate: Option<Expr>,
    /// The output row: these expressions (a select list), or the input row followed by
    /// every subquery's value.
    project: Option<Vec<Expr>>,
    values: SubqueryValues,
}

/// The subqueries and what they computed once.
struct SubqueryValues {
    subqueries: Vec<SubqueryDef>,
    cache: Vec<Option<Cached>>,
    work_mem: WorkMem,
}

impl ApplyOp {
    pub fn new(
        input: Box<dyn Operator>,
        subqueries: Vec<SubqueryDef>,
        predicate: Option<Expr>,
        project: Option<Vec<Expr>>,
        work_mem: WorkMem,
    ) -> ApplyOp {
        let cache = subqueries.iter().map(|_| None).collect();
        ApplyOp {
            input,
            predicate,
            project,
            values: SubqueryValues {
                subqueries,
                cache,
                work_mem,
            },
        }
    }
}

/// An input row whose subquery columns are computed when first read.
struct LazyRow<'a> {
    input: &'a [Value],
    computed: RefCell<Vec<Option<Value>>>,
    values: RefCell<&'a mut SubqueryValues>,
    txn: RefCell<&'a mut dyn Transaction>,
}

impl Columns for LazyRow<'_> {
    fn column(&self, index: usize) -> SqlResult<Value> {
        let Some(k) = index.checked_sub(self.input.len()) else {
            return Ok(self.input[index].clone());
        };
        if let Some(value) = &self.computed.borrow()[k] {
            return Ok(value.clone());
        }
        let value = self
            .values
            .borrow_mut()
            .value(k, self.input, &mut **self.txn.borrow_mut())?;
        self.computed.borrow_mut()[k] = Some(value.clone());
        Ok(value)
    }
}

/// The subquery's plan for `row`, ready to run.
fn plan_for(subquery: &SubqueryDef, row: &[Value]) -> SqlResult<Plan> {
    let mut plan = subquery.plan.clone();
    if subquery.correlated {
        plan.bind_outer(row, 1);
    }
    crate::optimizer::optimize(plan)
}

/// A decorrelated subquery's rows, by the hash key of their last columns (rows with a NULL
/// key can match nothing and are left out), and its rows for a key without any.
fn keyed_rows(
    subquery: &SubqueryDef,
    work_mem: WorkMem,
    txn: &mut dyn Transaction,
) -> SqlResult<Keyed<Vec<Value>>> {
    let keys = subquery.outer_keys.len();
    let mut op = build(crate::optimizer::optimize(subquery.plan.clone())?, work_mem);
    let mut groups: HashMap<Vec<u8>, Vec<Value>> = HashMap::new();
    while let Some(mut row) = op.next(txn)? {
        let key_values = row.split_off(row.len() - keys);
        if key_values.iter().any(Value::is_null) {
            continue;
        }
        groups
            .entry(hash_key(&key_values))
            .or_default()
            .push(row.into_iter().next().unwrap_or(Value::Null));
    }
    let mut missing = Vec::new();
    if let Some(plan) = &subquery.missing {
        let mut op = build(crate::optimizer::optimize((**plan).clone())?, work_mem);
        while let Some(row) = op.next(txn)? {
            missing.push(row.into_iter().next().unwrap_or(Value::Null));
        }
    }
    Ok(Keyed { groups, missing })
}

fn too_many_rows() -> SqlError {
    SqlError::new(
        sqlstate::CARDINALITY_VIOLATION,
        "more than one row returned by a subquery used as an expression",
    )
}

/// A decorrelated subquery's value for a row whose key values are `key` (`None`: a NULL).
fn keyed_value(
    subquery: &SubqueryDef,
    cached: &Cached,
    key: Option<Vec<u8>>,
    input: &[Value],
) -> SqlResult<Value> {
    Ok(match (&subquery.kind, cached) {
        (SubqueryKind::Exists, Cached::Keyed(keyed)) => Value::Bool(!keyed.group(key).is_empty()),
        (SubqueryKind::Scalar, Cached::Keyed(keyed)) => match keyed.group(key).as_slice() {
            [] => Value::Null,
            [value] => value.clone(),
            _ => return Err(too_many_rows()),
        },
        (SubqueryKind::In { operand, .. }, Cached::KeyedIn(keyed)) => {
            test_in(&operand.eval(input)?, keyed.group(key), &subquery.kind)
        }
        _ => unreachable!("a decorrelated subquery's cache matches its kind"),
    })
}

fn scalar(plan: Plan, work_mem: WorkMem, txn: &mut dyn Transaction) -> SqlResult<Value> {
    let mut op = build(plan, work_mem);
    let Some(mut first) = op.next(txn)? else {
        return Ok(Value::Null);
    };
    if op.next(txn)?.is_some() {
        return Err(too_many_rows());
    }
    Ok(first.swap_remove(0))
}

fn exists(plan: Plan, work_mem: WorkMem, txn: &mut dyn Transaction) -> SqlResult<Value> {
    Ok(Value::Bool(build(plan, work_mem).next(txn)?.is_some()))
}

fn in_values(
    plan: Plan,
    blank_padded: bool,
    work_mem: WorkMem,
    txn: &mut dyn Transaction,
) -> SqlResult<InValues> {
    let mut op = build(plan, work_mem);
    let mut values = Vec::new();
    while let Some(mut row) = op.next(txn)? {
        values.push(row.swap_remove(0));
    }
    Ok(in_set(values, blank_padded))
}

fn in_set(values: Vec<Value>, blank_padded: bool) -> InValues {
    let has_null = values.iter().any(Value::is_null);
    let keys = (!blank_padded).then(|| {
        values
            .iter()
            .filter(|v| !v.is_null())
            .map(|v| hash_key(std::slice::from_ref(v)))
            .collect()
    });
    InValues {
        values,
        keys,
        has_null,
    }
}

/// `operand op ANY|ALL (values)` under NOT if `negated` (`kind` is the subquery's `In`).
fn test_in(operand: &Value, set: &InValues, kind: &SubqueryKind) -> Value {
    let SubqueryKind::In {
        op,
        all,
        negated,
        blank_padded,
        ..
    } = kind
    else {
        unreachable!("an IN, ANY or ALL subquery")
    };
    let (op, all, negated, blank_padded) = (*op, *all, *negated, *blank_padded);
    if op != CmpOp::Eq || all {
        return match quantified(operand, &set.values, op, all, blank_padded) {
            Some(result) => Value::Bool(result != negated),
            None => Value::Null,
        };
    }
    if set.values.is_empty() {
        return Value::Bool(negated);
    }
    let found = if operand.is_null() {
        None
    } else {
        let hit = match &set.keys {
            Some(keys) => keys.contains(&hash_key(std::slice::from_ref(operand))),
            None => set.values.iter().any(|v| {
                compare_values(operand, v, blank_padded) == Some(std::cmp::Ordering::Equal)
            }),
        };
        if hit {
            Some(true)
        } else if set.has_null {
            None
        } else {
            Some(false)
        }
    };
    match found {
        Some(found) => Value::Bool(found != negated),
        None => Value::Null,
    }
}

/// `operand op ANY (values)` (`all`: `ALL`): true (false for ALL) as soon as one comparison
/// says so; else unknown if one was; else false (true for ALL), also without values.
fn quantified(
    operand: &Value,
    values: &[Value],
    op: CmpOp,
    all: bool,
    blank_padded: bool,
) -> Option<bool> {
    let mut unknown = false;
    for value in values {
        match compare_values(operand, value, blank_padded).map(|o| op.holds(o)) {
            Some(holds) if holds != all => return Some(holds),
            Some(_) => {}
            None => unknown = true,
        }
    }
    if unknown { None } else { Some(all) }
}

impl SubqueryValues {
    /// Subquery `i`'s value for the input row `input`.
    fn value(&mut self, i: usize, input: &[Value], txn: &mut dyn Transaction) -> SqlResult<Value> {
        let subquery = &self.subqueries[i];
        if !subquery.outer_keys.is_empty() {
            if self.cache[i].is_none() {
                let keyed = keyed_rows(subquery, self.work_mem, txn)?;
                self.cache[i] = Some(match &subquery.kind {
                    SubqueryKind::In { blank_padded, .. } => {
                        Cached::KeyedIn(keyed.map(|values| in_set(values, *blank_padded)))
                    }
                    _ => Cached::Keyed(keyed),
                });
            }
            let cached = self.cache[i].as_ref().expect("filled above");
            let key_values = subquery
                .outer_keys
                .iter()
                .map(|e| e.eval(input))
                .collect::<SqlResult<Vec<Value>>>()?;
            let key = (!key_values.iter().any(Value::is_null)).then(|| hash_key(&key_values));
            return keyed_value(subquery, cached, key, input);
        }
        Ok(match (&subquery.kind, &self.cache[i]) {
            (SubqueryKind::Scalar | SubqueryKind::Exists, Some(Cached::Value(v))) => v.clone(),
            (SubqueryKind::Scalar, _) => {
                let v = scalar(plan_for(subquery, input)?, self.work_mem, txn)?;
                if !subquery.correlated {
                    self.cache[i] = Some(Cached::Value(v.clone()));
                }
                v
            }
            (SubqueryKind::Exists, _) => {
                let v = exists(plan_for(subquery, input)?, self.work_mem, txn)?;
                if !subquery.correlated {
                    self.cache[i] = Some(Cached::Value(v.clone()));
                }
                v
            }
            (
                SubqueryKind::In {
                    operand,
                    blank_padded,
                    ..
                },
                cached,
            ) => {
                let operand = operand.eval(input)?;
                match cached {
                    Some(Cached::Values(set)) => test_in(&operand, set, &subquery.kind),
                    _ => {
                        let set = in_values(
                            plan_for(subquery, input)?,
                            *blank_padded,
                            self.work_mem,
                            txn,
                        )?;
                        let v = test_in(&operand, &set, &subquery.kind);
                        if !subquery.correlated {
                            self.cache[i] = Some(Cached::Values(set));
                        }
                        v
                    }
                }
            }
        })
    }
}

impl Operator for ApplyOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        loop {
            let Some(mut row) = self.input.next(txn)? else {
                return Ok(None);
            };
            let count = self.values.subqueries.len();
            let lazy = LazyRow {
                input: &row,
                computed: RefCell::new(vec![None; count]),
                values: RefCell::new(&mut self.values),
                txn: RefCell::new(&mut *txn),
            };
            if let Some(predicate) = &self.predicate
                && !predicate.is_true_in(&lazy)?
            {
                continue;
            }
            if let Some(exprs) = &self.project {
                return exprs
                    .iter()
                    .map(|e| e.eval_in(&lazy))
                    .collect::<SqlResult<Row>>()
                    .map(Some);
            }
            let width = row.len();
            let values = (width..width + count)
                .map(|c| lazy.column(c))
                .collect::<SqlResult<Vec<Value>>>()?;
            drop(lazy);
            row.extend(values);
            return Ok(Some(row));
        }
    }
}
