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

use std::sync::Arc;

use sqlparser::ast;
use tracing::debug;

use kv::{Transaction, TransactionSource};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::exec::{self, StatementResult};
use crate::parse::parse;

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
    state: State,
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
            state: State::Idle,
        }
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
            && let State::Implicit(mut txn) = std::mem::replace(&mut self.state, State::Idle)
            && let Err(e) = txn.commit()
        {
            results.push(Err(e.into()));
        }
        results
    }

    /// Called when the connection ends: an open transaction is rolled back.
    pub fn close(&mut self) {
        if let State::InBlock(mut txn) | State::Implicit(mut txn) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            let _ = txn.rollback();
        }
    }

    /// A failure inside a block aborts the block's transaction.
    fn fail(&mut self) {
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
        statement: &ast::Statement,
        implicit: bool,
    ) -> SqlResult<StatementResult> {
        debug!(%statement, "execute");
        match statement {
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
                    State::InBlock(mut txn) | State::Implicit(mut txn) => {
                        txn.commit()?;
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
        statement: &ast::Statement,
        implicit: bool,
    ) -> SqlResult<StatementResult> {
        if implicit && matches!(self.state, State::Idle) {
            self.state = State::Implicit(self.source.begin()?);
        }
        match &mut self.state {
            State::Failed => Err(in_failed_transaction()),
            State::InBlock(txn) | State::Implicit(txn) => {
                let result = exec::execute(txn.as_mut(), statement);
                if result.is_err() {
                    self.fail();
                }
                result
            }
            State::Idle => {
                let mut txn = self.source.begin()?;
                match exec::execute(txn.as_mut(), statement) {
                    Ok(result) => {
                        txn.commit()?;
                        Ok(result)
                    }
                    Err(e) => {
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
