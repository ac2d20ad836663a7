//! UNION, INTERSECT and EXCEPT, with or without ALL, as PostgreSQL defines them: NULLs are
//! equal to each other here; `UNION` keeps each distinct row once; with `ALL`, a row that
//! appears m times on the left and n times on the right appears m + n (UNION), min(m, n)
//! (INTERSECT) or max(m − n, 0) (EXCEPT) times. The right side is read whole for INTERSECT
//! and EXCEPT; the left side streams.

use std::collections::{HashMap, HashSet};

use kv::Transaction;

use super::operator::{Operator, Row, hash_key};
use crate::error::SqlResult;
use crate::plan::SetOpKind;

pub struct SetOpOp {
    op: SetOpKind,
    all: bool,
    left: Box<dyn Operator>,
    right: Option<Box<dyn Operator>>,
    /// INTERSECT/EXCEPT: how many times each row appears on the right (still unmatched).
    right_counts: HashMap<Vec<u8>, usize>,
    /// Rows already passed (without ALL).
    seen: HashSet<Vec<u8>>,
    left_done: bool,
}

impl SetOpOp {
    pub fn new(
        op: SetOpKind,
        all: bool,
        left: Box<dyn Operator>,
        right: Box<dyn Operator>,
    ) -> SetOpOp {
        SetOpOp {
            op,
            all,
            left,
            right: Some(right),
            right_counts: HashMap::new(),
            seen: HashSet::new(),
            left_done: false,
        }
    }

    /// Whether the row is new (always with ALL).
    fn first_time(&mut self, key: &[u8]) -> bool {
        self.all || self.seen.insert(key.to_vec())
    }
}

impl Operator for SetOpOp {
    fn next(&mut self, txn: &mut dyn Transaction) -> SqlResult<Option<Row>> {
        if self.op != SetOpKind::Union
            && let Some(mut right) = self.right.take()
        {
            while let Some(row) = right.next(txn)? {
                *self.right_counts.entry(hash_key(&row)).or_default() += 1;
            }
        }
        loop {
            let row = if !self.left_done {
                match self.left.next(txn)? {
                    Some(row) => row,
                    None => {
                        self.left_done = true;
                        continue;
                    }
                }
            } else if self.op == SetOpKind::Union
                && let Some(right) = &mut self.right
            {
                match right.next(txn)? {
                    Some(row) => row,
                    None => return Ok(None),
                }
            } else {
                return Ok(None);
            };
            let key = hash_key(&row);
            let keep = match self.op {
                SetOpKind::Union => self.first_time(&key),
                SetOpKind::Intersect => match self.right_counts.get_mut(&key) {
                    Some(n) if *n > 0 => {
                        if self.all {
                            *n -= 1;
                        }
                        self.first_time(&key)
                    }
                    _ => false,
                },
                SetOpKind::Except => match self.right_counts.get_mut(&key) {
                    Some(n) if *n > 0 => {
                        if self.all {
                            *n -= 1;
                        }
                        false
                    }
                    _ => self.first_time(&key),
                },
            };
            if keep {
                return Ok(Some(row));
            }
        }
    }
}
