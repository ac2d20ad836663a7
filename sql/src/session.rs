//! A client session: parses statement strings and runs them with PostgreSQL's transaction
//! semantics.
//!
//! # Transaction states (the ReadyForQuery status)
//!
//! - **Idle** (`I`): each statement runs in its own transaction, committed when it succeeds
//!   and rolled back when it fails (autocommit).
//! - **In block** (`T`): after `BEGIN`/`START TRANSACTION`, statements share one transaction
//!   until `COMMIT` or `ROLLBACK`.
//! - **Failed** (`E`): a statement failed inside a block. The transaction is rolled back at
//!   once; every statement but `COMMIT`/`ROLLBACK` is refused with 25P02 until the client ends
//!   the block (`COMMIT` then reports `ROLLBACK`, as PostgreSQL does).
//!
//! A commit that loses a write-write conflict fails with 40001 and leaves the session idle:
//! nothing of the transaction was applied, and retrying is up to the application.
//!
//! Isolation is snapshot isolation for every transaction. `READ COMMITTED` and
//! `REPEATABLE READ` are accepted (snapshot isolation gives at least their guarantees);
//! `SERIALIZABLE` and `READ ONLY` are refused rather than silently weakened or ignored.
//! A query string with several statements runs them in one implicit transaction, as
//! PostgreSQL does: it commits when the string ends, and an error rolls back all of it. A
//! `BEGIN` in the string turns it into an ordinary block; `COMMIT`/`ROLLBACK` end it early.
//!
//! # After commit
//!
//! Statements may ask for work that must happen only if their transaction commits and is not
//! part of it: today, a region split at each new table's first key (so that every table starts
//! a region of its own). The session keeps these requests with the transaction, drops them when
//! it rolls back or fails, and after a successful commit hands them to the cluster's regions
//! from a short-lived thread: the commit's result never waits for them or depends on them (a
//! failed request is only logged; the table then shares a region until size splits it).

use std::sync::Arc;

use sqlparser::ast;
use tracing::{debug, warn};

use kv::client::RegionAdmin;
use kv::{Transaction, TransactionSource};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::exec::{self, Context, StatementResult};
use crate::parse::{ParsedStatement, parse};

/// The transaction status reported in ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InBlock,
    Failed,
}

enum State {
    Idle,
    InBlock(Box<dyn Transaction>),
    Failed,
    /// The implicit transaction of a multi-statement query string (never visible between
    /// queries: it commits when the string ends).
    Implicit(Box<dyn Transaction>),
}

pub struct Session {
    source: Arc<dyn TransactionSource>,
    /// The cluster's regions; `None` for a store without regions.
    regions: Option<Arc<dyn RegionAdmin>>,
    state: State,
    /// Keys to split at once the current transaction commits (see "After commit").
    splits_after_commit: Vec<Vec<u8>>,
}

fn check_transaction_modes(modes: &[ast::TransactionMode]) -> SqlResult<()> {
    for mode in modes {
        match mode {
            ast::TransactionMode::IsolationLevel(
                ast::TransactionIsolationLevel::ReadCommitted
                | ast::TransactionIsolationLevel::RepeatableRead,
            )
            | ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadWrite) => {}
            other => {
                return Err(SqlError::unsupported(format!(
                    "transaction mode {other} (RegionDB runs every transaction under snapshot isolation)"
                )));
            }
        }
    }
    Ok(())
}

impl Session {
    pub fn new(source: Arc<dyn TransactionSource>) -> Self {
        Self {
            source,
            regions: None,
            state: State::Idle,
            splits_after_commit: Vec::new(),
        }
    }

    /// The same session, seeing the cluster's regions (`SHOW REGIONS`, splits) through
    /// `regions`.
    pub(crate) fn with_regions(mut self, regions: Option<Arc<dyn RegionAdmin>>) -> Self {
        self.regions = regions;
        self
    }

    pub fn transaction_status(&self) -> TransactionStatus {
        match self.state {
            State::Idle => TransactionStatus::Idle,
            State::InBlock(_) => TransactionStatus::InBlock,
            State::Failed => TransactionStatus::Failed,
            State::Implicit(_) => TransactionStatus::Idle,
        }
    }

    /// Runs every statement of a simple-query string; stops at the first error, which is the
    /// last element of the result.
    pub fn execute(&mut self, sql: &str) -> Vec<SqlResult<StatementResult>> {
        let statements = match parse(sql) {
            Ok(statements) => statements,
            Err(e) => {
                self.fail();
                return vec![Err(e)];
            }
        };
        // Like PostgreSQL, the statements of one query string run in one implicit
        // transaction unless they manage transactions themselves.
        let implicit = statements.len() > 1;
        let mut results = Vec::with_capacity(statements.len());
        for statement in &statements {
            let result = self.execute_statement(statement, implicit);
            let failed = result.is_err();
            results.push(result);
            if failed {
                break;
            }
        }
        if matches!(self.state, State::Implicit(_))
            && let State::Implicit(txn) = std::mem::replace(&mut self.state, State::Idle)
            && let Err(e) = self.commit(txn)
        {
            results.push(Err(e));
        }
        results
    }

    /// Commits `txn`, then asks for the splits its statements wanted.
    fn commit(&mut self, mut txn: Box<dyn Transaction>) -> SqlResult<()> {
        let splits = std::mem::take(&mut self.splits_after_commit);
        txn.commit()?;
        self.request_splits(splits);
        Ok(())
    }

    /// Asks for splits at `keys` without waiting (see "After commit").
    fn request_splits(&self, keys: Vec<Vec<u8>>) {
        let Some(regions) = self.regions.clone() else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("split-request".into())
            .spawn(move || {
                if let Err(e) = regions.split_at(keys, None) {
                    warn!(error = %e, "could not ask for a new table's region");
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "could not start a thread to ask for a new table's region");
        }
    }

    /// Called when the connection ends: an open transaction is rolled back.
    pub fn close(&mut self) {
        self.splits_after_commit.clear();
        if let State::InBlock(mut txn) | State::Implicit(mut txn) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            let _ = txn.rollback();
        }
    }

    /// A failure inside a block aborts the block's transaction.
    fn fail(&mut self) {
        self.splits_after_commit.clear();
        match &mut self.state {
            State::InBlock(txn) => {
                let _ = txn.rollback();
                self.state = State::Failed;
            }
            // A failed implicit transaction just ends: the session is idle again.
            State::Implicit(txn) => {
                let _ = txn.rollback();
                self.state = State::Idle;
            }
            State::Idle | State::Failed => {}
        }
    }

    fn execute_statement(
        &mut self,
        statement: &ParsedStatement,
        implicit: bool,
    ) -> SqlResult<StatementResult> {
        debug!(%statement, "execute");
        let ParsedStatement::Sql(sql) = statement else {
            return self.execute_in_transaction(statement, implicit);
        };
        match sql.as_ref() {
            ast::Statement::StartTransaction {
                modes,
                statements,
                exception,
                ..
            } => {
                if !statements.is_empty() || exception.is_some() {
                    return Err(SqlError::unsupported("BEGIN … END blocks"));
                }
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::Failed => {
                        self.state = State::Failed;
                        Err(in_failed_transaction())
                    }
                    // PostgreSQL warns and carries on.
                    State::InBlock(txn) => {
                        self.state = State::InBlock(txn);
                        Ok(StatementResult::command("BEGIN"))
                    }
                    // BEGIN inside a query string makes its implicit transaction explicit.
                    State::Implicit(txn) => {
                        self.state = State::InBlock(txn);
                        Ok(StatementResult::command("BEGIN"))
                    }
                    State::Idle => {
                        check_transaction_modes(modes)?;
                        self.state = State::InBlock(self.source.begin()?);
                        Ok(StatementResult::command("BEGIN"))
                    }
                }
            }
            ast::Statement::Commit { chain: false, .. } => {
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::InBlock(txn) | State::Implicit(txn) => {
                        self.commit(txn)?;
                        Ok(StatementResult::command("COMMIT"))
                    }
                    State::Failed => Ok(StatementResult::command("ROLLBACK")),
                    State::Idle => Ok(StatementResult::command("COMMIT")),
                }
            }
            ast::Statement::Rollback {
                chain: false,
                savepoint: None,
            } => {
                self.splits_after_commit.clear();
                if let State::InBlock(mut txn) | State::Implicit(mut txn) =
                    std::mem::replace(&mut self.state, State::Idle)
                {
                    txn.rollback()?;
                }
                Ok(StatementResult::command("ROLLBACK"))
            }
            ast::Statement::Commit { .. } | ast::Statement::Rollback { .. } => {
                let error = SqlError::unsupported("savepoints and AND CHAIN");
                self.fail();
                Err(error)
            }
            _ => self.execute_in_transaction(statement, implicit),
        }
    }

    fn execute_in_transaction(
        &mut self,
        statement: &ParsedStatement,
        implicit: bool,
    ) -> SqlResult<StatementResult> {
        if implicit && matches!(self.state, State::Idle) {
            self.state = State::Implicit(self.source.begin()?);
        }
        let context = Context {
            regions: self.regions.as_deref(),
            splits_after_commit: &mut self.splits_after_commit,
        };
        match &mut self.state {
            State::Failed => Err(in_failed_transaction()),
            State::InBlock(txn) | State::Implicit(txn) => {
                let result = exec::execute(txn.as_mut(), statement, context);
                if result.is_err() {
                    self.fail();
                }
                result
            }
            State::Idle => {
                let mut txn = self.source.begin()?;
                match exec::execute(txn.as_mut(), statement, context) {
                    Ok(result) => {
                        self.commit(txn)?;
                        Ok(result)
                    }
                    Err(e) => {
                        self.splits_after_commit.clear();
                        let _ = txn.rollback();
                        Err(e)
                    }
                }
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

fn in_failed_transaction() -> SqlError {
    SqlError::new(
        sqlstate::IN_FAILED_SQL_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    )
}
