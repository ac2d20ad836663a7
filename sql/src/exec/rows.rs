//! The row-at-a-time operators: filter, projection, limit, VALUES and `generate_series`.

use kv::Transaction;

use super::operator::{Operator, Row};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::Expr;
use crate::types::Value;

pub struct FilterOp {
    pub input: Box<dyn Operator>,
    pub predicate: Expr,
}

impl Operator for FilterOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        while let Some(row) = self.input.next(txn)? {
            if self.predicate.is_true(&row)? {
                return Ok(Some(row));
            }
        }
        Ok(None)
    }
}

pub struct ProjectOp {
    pub input: Box<dyn Operator>,
    pub exprs: Vec<Expr>,
}

impl Operator for ProjectOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        let Some(row) = self.input.next(txn)? else {
            return Ok(None);
        };
        let out = self
            .exprs
            .iter()
            .map(|e| e.eval(&row))
            .collect::<SqlResult<Row>>()?;
        Ok(Some(out))
    }
}

/// Skips `skip` rows, then passes at most `remaining`, and stops pulling its input then.
pub struct LimitOp {
    pub input: Box<dyn Operator>,
    pub remaining: Option<u64>,
    pub skip: u64,
}

impl Operator for LimitOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if self.remaining == Some(0) {
            return Ok(None);
        }
        while self.skip > 0 {
            if self.input.next(txn)?.is_none() {
                return Ok(None);
            }
            self.skip -= 1;
        }
        let row = self.input.next(txn)?;
        if row.is_some()
            && let Some(n) = &mut self.remaining
        {
            *n -= 1;
        }
        Ok(row)
    }
}

/// Rows of constant expressions (evaluated as they are pulled).
pub struct ValuesOp {
    rows: std::vec::IntoIter<Vec<Expr>>,
}

impl ValuesOp {
    pub fn new(rows: Vec<Vec<Expr>>) -> ValuesOp {
        ValuesOp {
            rows: rows.into_iter(),
        }
    }
}

impl Operator for ValuesOp {
    fn next(&mut self, _txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        match self.rows.next() {
            Some(exprs) => Ok(Some(
                exprs
                    .iter()
                    .map(|e| e.eval(&[]))
                    .collect::<SqlResult<Row>>()?,
            )),
            None => Ok(None),
        }
    }
}

/// `generate_series(start, stop, step)`: start, start + step, … while not past stop.
pub struct SeriesOp {
    exprs: Option<(Expr, Expr, Expr)>,
    next: i64,
    stop: i64,
    step: i64,
    done: bool,
}

impl SeriesOp {
    pub fn new(start: Expr, stop: Expr, step: Expr) -> SeriesOp {
        SeriesOp {
            exprs: Some((start, stop, step)),
            next: 0,
            stop: 0,
            step: 1,
            done: false,
        }
    }
}

impl Operator for SeriesOp {
    fn next(&mut self, _txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if let Some((start, stop, step)) = self.exprs.take() {
            match (start.eval(&[])?, stop.eval(&[])?, step.eval(&[])?) {
                (Value::Int(a), Value::Int(b), Value::Int(s)) => {
                    if s == 0 {
                        return Err(SqlError::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            "step size cannot equal zero",
                        ));
                    }
                    (self.next, self.stop, self.step) = (a, b, s);
                }
                // A NULL argument: no rows.
                _ => self.done = true,
            }
        }
        if self.done
            || (self.step > 0 && self.next > self.stop)
            || (self.step < 0 && self.next < self.stop)
        {
            return Ok(None);
        }
        let value = self.next;
        match self.next.checked_add(self.step) {
            Some(n) => self.next = n,
            None => self.done = true,
        }
        Ok(Some(vec![Value::Int(value)]))
    }
}
