//! Joins. The right input is read whole first (the build side); then the left input streams,
//! each left row meeting the right rows that may match it: those with equal hash keys (a
//! hash join; a NULL key matches nothing) or all of them (a nested loop). The join condition
//! is checked on each pair. A left row without a match is NULL-extended for LEFT and FULL
//! joins; right rows never matched are NULL-extended at the end for RIGHT and FULL joins.

use std::collections::{HashMap, VecDeque};

use kv::Transaction;

use super::operator::{Operator, Row, hash_key};
use crate::error::SqlResult;
use crate::expr::Expr;
use crate::plan::{JoinAlgorithm, JoinKind};
use crate::types::Value;

pub struct JoinOp {
    left: Box<dyn Operator>,
    right: Option<Box<dyn Operator>>,
    left_width: usize,
    right_width: usize,
    kind: JoinKind,
    on: Option<Expr>,
    keys: Option<(Vec<Expr>, Vec<Expr>)>,
    right_rows: Vec<Row>,
    index: HashMap<Vec<u8>, Vec<usize>>,
    matched: Vec<bool>,
    pending: VecDeque<Row>,
    left_done: bool,
    unmatched_done: bool,
}

impl JoinOp {
    pub fn new(
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
        (left_width, right_width): (usize, usize),
        kind: JoinKind,
        on: Option<Expr>,
        algorithm: JoinAlgorithm,
    ) -> JoinOp {
        let keys = match algorithm {
            JoinAlgorithm::Hash {
                left_keys,
                right_keys,
            } => Some((left_keys, right_keys)),
            JoinAlgorithm::NestedLoop | JoinAlgorithm::Lookup { .. } => None,
        };
        JoinOp {
            left,
            right: Some(right),
            left_width,
            right_width,
            kind,
            on,
            keys,
            right_rows: Vec::new(),
            index: HashMap::new(),
            matched: Vec::new(),
            pending: VecDeque::new(),
            left_done: false,
            unmatched_done: false,
        }
    }

    fn build(&mut self, mut right: Box<dyn Operator>, txn: &mut dyn Transaction) -> SqlResult<()> {
        while let Some(row) = right.next(txn)? {
            if let Some((_, right_keys)) = &self.keys {
                let key = key_of(right_keys, &row)?;
                if let Some(key) = key {
                    self.index
                        .entry(key)
                        .or_default()
                        .push(self.right_rows.len());
                }
            }
            self.right_rows.push(row);
        }
        self.matched = vec![false; self.right_rows.len()];
        Ok(())
    }

    fn probe(&mut self, left: Row) -> SqlResult<()> {
        let candidates: Vec<usize> = match &self.keys {
            Some((left_keys, _)) => match key_of(left_keys, &left)? {
                Some(key) => self.index.get(&key).cloned().unwrap_or_default(),
                None => Vec::new(),
            },
            None => (0..self.right_rows.len()).collect(),
        };
        let mut any = false;
        for i in candidates {
            let mut row = Vec::with_capacity(left.len() + self.right_width);
            row.extend_from_slice(&left);
            row.extend_from_slice(&self.right_rows[i]);
            let keep = match &self.on {
                Some(on) => on.is_true(&row)?,
                None => true,
            };
            if keep {
                any = true;
                self.matched[i] = true;
                self.pending.push_back(row);
            }
        }
        if !any && matches!(self.kind, JoinKind::Left | JoinKind::Full) {
            let mut row = left;
            row.extend(std::iter::repeat_n(Value::Null, self.right_width));
            self.pending.push_back(row);
        }
        Ok(())
    }
}

/// The hash key of `exprs` over `row`; `None` if any is NULL (it can equal nothing).
fn key_of(exprs: &[Expr], row: &[Value]) -> SqlResult<Option<Vec<u8>>> {
    let values = exprs
        .iter()
        .map(|e| e.eval(row))
        .collect::<SqlResult<Vec<Value>>>()?;
    if values.iter().any(Value::is_null) {
        return Ok(None);
    }
    Ok(Some(hash_key(&values)))
}

impl Operator for JoinOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if let Some(right) = self.right.take() {
            self.build(right, txn)?;
        }
        loop {
            if let Some(row) = self.pending.pop_front() {
                return Ok(Some(row));
            }
            if !self.left_done {
                match self.left.next(txn)? {
                    Some(left) => self.probe(left)?,
                    None => self.left_done = true,
                }
                continue;
            }
            if matches!(self.kind, JoinKind::Right | JoinKind::Full) && !self.unmatched_done {
                self.unmatched_done = true;
                let left_width = self.left_width;
                for (i, row) in self.right_rows.iter().enumerate() {
                    if !self.matched[i] {
                        let mut out = vec![Value::Null; left_width];
                        out.extend_from_slice(row);
                        self.pending.push_back(out);
                    }
                }
                continue;
            }
            return Ok(None);
        }
    }
}
