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
//! # Isolation
//!
//! Transactions run as the session's settings say (`settings`): by default pessimistic READ
//! COMMITTED, as PostgreSQL runs them — each statement reads a fresh snapshot, and writers lock
//! the rows they change, waiting for other writers instead of failing (see
//! `kv::client::transaction`). `REPEATABLE READ` reads one snapshot and fails with 40001 when
//! it would change a row another transaction changed since. In the optimistic mode
//! (`regiondb_txn_mode`) a commit that loses a write-write conflict fails with 40001. Either
//! way a transaction that fails applies nothing, and retrying is up to the application.
//! `SERIALIZABLE` and `READ ONLY` are refused rather than silently weakened or ignored.
//!
//! A block's key-value transaction begins at its first statement, not at `BEGIN` (PostgreSQL
//! takes the snapshot then too), so `SET TRANSACTION ISOLATION LEVEL` may follow `BEGIN`.
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
use kv::{Isolation, Transaction, TransactionSource, TxnConfig, TxnMode};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::exec::{self, ColumnInfo, Context, ResultSink, StatementResult};
use crate::parse::{ParsedStatement, parse};
use crate::sequence::Sequences;
use crate::settings::{self, SettingStatement, Settings};
use crate::types::SqlType;

/// The transaction status reported in ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionStatus {
    Idle,
    InBlock,
    Failed,
}

/// An open transaction: how it is to run, and its key-value transaction once its first
/// statement began it.
struct Block {
    config: TxnConfig,
    txn: Option<Box<dyn Transaction>>,
}

impl Block {
    fn new(config: TxnConfig) -> Block {
        Block { config, txn: None }
    }

    fn rollback(self) {
        if let Some(mut txn) = self.txn {
            let _ = txn.rollback();
        }
    }
}

enum State {
    Idle,
    InBlock(Block),
    Failed,
    /// The implicit transaction of a multi-statement query string (never visible between
    /// queries: it commits when the string ends).
    Implicit(Block),
}

pub struct Session {
    source: Arc<dyn TransactionSource>,
    /// The cluster's regions; `None` for a store without regions.
    regions: Option<Arc<dyn RegionAdmin>>,
    sequences: Arc<Sequences>,
    state: State,
    /// Keys to split at once the current transaction commits (see "After commit").
    splits_after_commit: Vec<Vec<u8>>,
    /// The settings in force, what `RESET` returns to, and, inside a block that changed
    /// them, what its end restores: at a rollback, the settings at its start; at a commit,
    /// those without its `SET LOCAL`s.
    settings: Settings,
    defaults: Settings,
    settings_at_rollback: Option<Settings>,
    settings_at_commit: Option<Settings>,
}

impl Session {
    pub fn new(source: Arc<dyn TransactionSource>) -> Self {
        Self::with_txn_mode(source, TxnMode::default())
    }

    /// A session whose transactions run in `mode` unless it sets `regiondb_txn_mode`.
    pub fn with_txn_mode(source: Arc<dyn TransactionSource>, mode: TxnMode) -> Self {
        let defaults = Settings::new(mode);
        Self {
            sequences: Arc::new(Sequences::new(Arc::clone(&source))),
            source,
            regions: None,
            state: State::Idle,
            splits_after_commit: Vec::new(),
            settings: defaults.clone(),
            defaults,
            settings_at_rollback: None,
            settings_at_commit: None,
        }
    }

    /// The same session, seeing the cluster's regions (`SHOW REGIONS`, splits) through
    /// `regions`.
    pub(crate) fn with_regions(mut self, regions: Option<Arc<dyn RegionAdmin>>) -> Self {
        self.regions = regions;
        self
    }

    /// The same session, taking identity values from the database's shared batches.
    pub(crate) fn with_sequences(mut self, sequences: Arc<Sequences>) -> Self {
        self.sequences = sequences;
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
        let mut results = Vec::new();
        self.run(sql, None, &mut |result| results.push(result));
        results
    }

    /// Like [`Session::execute`], but each query's rows go to `sink` as they are produced,
    /// and each statement's outcome to [`ResultSink::finish`] in order. The rows of an
    /// autocommitted query are sent before its transaction commits; a commit that then fails
    /// (an optimistic `SELECT … FOR UPDATE`) reports its error after them.
    pub fn execute_streaming(&mut self, sql: &str, sink: &mut (dyn ResultSink + 'static)) {
        let mut results = Vec::new();
        self.run(sql, Some(&mut *sink), &mut |result| results.push(result));
        for result in results {
            sink.finish(result);
        }
    }

    fn run(
        &mut self,
        sql: &str,
        mut sink: Option<&mut (dyn ResultSink + 'static)>,
        deliver: &mut dyn FnMut(SqlResult<StatementResult>),
    ) {
        let statements = match parse(sql) {
            Ok(statements) => statements,
            Err(e) => {
                self.fail();
                return deliver(Err(e));
            }
        };
        // Like PostgreSQL, the statements of one query string run in one implicit
        // transaction unless they manage transactions themselves.
        let implicit = statements.len() > 1;
        for statement in &statements {
            let result = self.execute_statement(statement, implicit, sink.as_deref_mut());
            let failed = result.is_err();
            // A streamed statement's outcome follows its rows at once.
            match sink.as_deref_mut() {
                Some(sink) => sink.finish(result),
                None => deliver(result),
            }
            if failed {
                break;
            }
        }
        if matches!(self.state, State::Implicit(_))
            && let State::Implicit(block) = std::mem::replace(&mut self.state, State::Idle)
            && let Err(e) = self.commit(block)
        {
            deliver(Err(e));
        }
    }

    /// Commits `block`'s transaction, then asks for the splits its statements wanted.
    fn commit(&mut self, block: Block) -> SqlResult<()> {
        let splits = std::mem::take(&mut self.splits_after_commit);
        let committed = match block.txn {
            Some(mut txn) => txn.commit(),
            None => Ok(()),
        };
        match committed {
            Ok(()) => {
                self.end_block_settings(true);
                self.request_splits(splits);
                Ok(())
            }
            Err(e) => {
                self.end_block_settings(false);
                Err(e.into())
            }
        }
    }

    /// A block ended: its settings are kept (committed, less its `SET LOCAL`s) or undone.
    fn end_block_settings(&mut self, committed: bool) {
        let commit = self.settings_at_commit.take();
        let rollback = self.settings_at_rollback.take();
        let restored = if committed { commit } else { rollback };
        if let Some(settings) = restored {
            self.settings = settings;
        }
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
        if let State::InBlock(block) | State::Implicit(block) =
            std::mem::replace(&mut self.state, State::Idle)
        {
            block.rollback();
        }
        self.end_block_settings(false);
    }

    /// A failure inside a block aborts the block's transaction.
    fn fail(&mut self) {
        self.splits_after_commit.clear();
        match std::mem::replace(&mut self.state, State::Idle) {
            State::InBlock(block) => {
                block.rollback();
                self.state = State::Failed;
            }
            // A failed implicit transaction just ends: the session is idle again.
            State::Implicit(block) => {
                block.rollback();
                self.end_block_settings(false);
            }
            other => self.state = other,
        }
    }

    /// A statement of a multi-statement query string, with no block open: opens the string's
    /// implicit transaction.
    fn open_implicit_block(&mut self, implicit: bool) {
        if implicit && matches!(self.state, State::Idle) {
            let config = self.block_config(None);
            self.state = State::Implicit(Block::new(config));
        }
    }

    /// A new block's configuration, from the settings and an isolation level `BEGIN` chose.
    fn block_config(&self, isolation: Option<Isolation>) -> TxnConfig {
        self.settings
            .txn_config(isolation.unwrap_or(self.settings.default_isolation))
    }

    fn execute_statement(
        &mut self,
        statement: &ParsedStatement,
        implicit: bool,
        sink: Option<&mut (dyn ResultSink + 'static)>,
    ) -> SqlResult<StatementResult> {
        debug!(%statement, "execute");
        let ParsedStatement::Sql(sql) = statement else {
            return self.execute_in_transaction(statement, implicit, sink);
        };
        if let Some(setting) = settings::classify(sql) {
            let result = setting.and_then(|s| self.execute_setting(s, implicit));
            if result.is_err() {
                self.fail();
            }
            return result;
        }
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
                    // BEGIN inside a query string makes its implicit transaction explicit.
                    // Either way its modes apply to the block (as SET TRANSACTION would).
                    State::InBlock(block) | State::Implicit(block) => {
                        self.state = State::InBlock(block);
                        let applied = settings::isolation_of(modes).and_then(|isolation| {
                            isolation.map_or(Ok(()), |i| self.set_transaction_isolation(i))
                        });
                        if let Err(e) = applied {
                            self.fail();
                            return Err(e);
                        }
                        Ok(StatementResult::command("BEGIN"))
                    }
                    State::Idle => {
                        let isolation = settings::isolation_of(modes)?;
                        self.state = State::InBlock(Block::new(self.block_config(isolation)));
                        Ok(StatementResult::command("BEGIN"))
                    }
                }
            }
            ast::Statement::Commit { chain: false, .. } => {
                match std::mem::replace(&mut self.state, State::Idle) {
                    State::InBlock(block) | State::Implicit(block) => {
                        self.commit(block)?;
                        Ok(StatementResult::command("COMMIT"))
                    }
                    State::Failed => {
                        self.end_block_settings(false);
                        Ok(StatementResult::command("ROLLBACK"))
                    }
                    State::Idle => Ok(StatementResult::command("COMMIT")),
                }
            }
            ast::Statement::Rollback {
                chain: false,
                savepoint: None,
            } => {
                self.splits_after_commit.clear();
                if let State::InBlock(block) | State::Implicit(block) =
                    std::mem::replace(&mut self.state, State::Idle)
                {
                    block.rollback();
                }
                self.end_block_settings(false);
                Ok(StatementResult::command("ROLLBACK"))
            }
            ast::Statement::Commit { .. } | ast::Statement::Rollback { .. } => {
                let error = SqlError::unsupported("savepoints and AND CHAIN");
                self.fail();
                Err(error)
            }
            _ => self.execute_in_transaction(statement, implicit, sink),
        }
    }

    /// `SET`, `RESET`, `SHOW` and `SET TRANSACTION` (see `settings`).
    fn execute_setting(
        &mut self,
        statement: SettingStatement,
        implicit: bool,
    ) -> SqlResult<StatementResult> {
        if matches!(self.state, State::Failed) {
            return Err(in_failed_transaction());
        }
        self.open_implicit_block(implicit);
        let in_block = !matches!(self.state, State::Idle);
        match statement {
            SettingStatement::Show(name) => {
                let value = match name.as_str() {
                    "transaction_isolation" => {
                        let isolation = match &self.state {
                            State::InBlock(block) | State::Implicit(block) => {
                                block.config.isolation
                            }
                            _ => self.settings.default_isolation,
                        };
                        settings::isolation_name(isolation).to_string()
                    }
                    name => self.settings.show(name)?,
                };
                Ok(StatementResult::Rows {
                    columns: vec![ColumnInfo::new(name, SqlType::Text)],
                    rows: vec![vec![Some(value)]],
                    tag: "SHOW".into(),
                })
            }
            SettingStatement::SetTransaction {
                isolation,
                session: true,
            } => {
                if let Some(isolation) = isolation {
                    let value = settings::isolation_name(isolation);
                    self.change_setting("default_transaction_isolation", Some(value), false)?;
                }
                Ok(StatementResult::command("SET"))
            }
            SettingStatement::SetTransaction {
                isolation,
                session: false,
            } => {
                if let Some(isolation) = isolation {
                    self.set_transaction_isolation(isolation)?;
                }
                Ok(StatementResult::command("SET"))
            }
            SettingStatement::Set { name, value, .. } if name == "transaction_isolation" => {
                let isolation = match value {
                    Some(value) => settings::parse_isolation(&name, &value)?,
                    None => self.settings.default_isolation,
                };
                self.set_transaction_isolation(isolation)?;
                Ok(StatementResult::command("SET"))
            }
            // The level stays what the transaction began with (as in PostgreSQL).
            SettingStatement::Reset(Some(name)) if name == "transaction_isolation" => {
                Ok(StatementResult::command("RESET"))
            }
            SettingStatement::Set { name, value, local } => {
                // Outside a block SET LOCAL has no effect (PostgreSQL warns).
                if !local || in_block {
                    self.change_setting(&name, value.as_deref(), local)?;
                }
                Ok(StatementResult::command("SET"))
            }
            SettingStatement::Reset(Some(name)) => {
                self.change_setting(&name, None, false)?;
                Ok(StatementResult::command("RESET"))
            }
            SettingStatement::Reset(None) => {
                self.remember_settings_for_block(false);
                self.settings = self.defaults.clone();
                if let Some(at_commit) = &mut self.settings_at_commit {
                    *at_commit = self.defaults.clone();
                }
                Ok(StatementResult::command("RESET"))
            }
        }
    }

    /// Sets a parameter for the session (kept if the block commits) or, `local`, until the
    /// block ends.
    fn change_setting(&mut self, name: &str, value: Option<&str>, local: bool) -> SqlResult<()> {
        // Checked first, so that a bad value changes nothing.
        let mut changed = self.settings.clone();
        changed.set(name, value, &self.defaults)?;
        self.remember_settings_for_block(local);
        self.settings = changed;
        if !local && let Some(at_commit) = &mut self.settings_at_commit {
            at_commit.set(name, value, &self.defaults)?;
        }
        Ok(())
    }

    /// Inside a block, keeps what its end restores before its first change of settings.
    fn remember_settings_for_block(&mut self, local: bool) {
        if matches!(self.state, State::Idle) {
            return;
        }
        if self.settings_at_rollback.is_none() {
            self.settings_at_rollback = Some(self.settings.clone());
        }
        if local && self.settings_at_commit.is_none() {
            self.settings_at_commit = Some(self.settings.clone());
        }
    }

    /// `SET TRANSACTION ISOLATION LEVEL`: for the open block, before its first query.
    fn set_transaction_isolation(&mut self, isolation: Isolation) -> SqlResult<()> {
        match &mut self.state {
            State::InBlock(block) | State::Implicit(block) => {
                if block.txn.is_some() && block.config.isolation != isolation {
                    return Err(SqlError::new(
                        sqlstate::ACTIVE_SQL_TRANSACTION,
                        "SET TRANSACTION ISOLATION LEVEL must be called before any query",
                    ));
                }
                block.config.isolation = isolation;
                Ok(())
            }
            // Outside a block it has no effect (PostgreSQL warns).
            _ => Ok(()),
        }
    }

    fn execute_in_transaction(
        &mut self,
        statement: &ParsedStatement,
        implicit: bool,
        sink: Option<&mut (dyn ResultSink + 'static)>,
    ) -> SqlResult<StatementResult> {
        self.open_implicit_block(implicit);
        if matches!(self.state, State::Idle) {
            return self.autocommit(statement, sink);
        }
        let lock_timeout = self.settings.lock_timeout();
        let context = Context {
            regions: self.regions.as_deref(),
            splits_after_commit: &mut self.splits_after_commit,
            sink,
            work_mem: self.settings.work_mem(),
            sequences: &self.sequences,
            source: self.source.as_ref(),
            in_block: true,
        };
        match &mut self.state {
            State::InBlock(block) | State::Implicit(block) => {
                let result = begin_if_needed(block, self.source.as_ref()).and_then(|txn| {
                    txn.begin_statement(lock_timeout)?;
                    exec::execute(txn, statement, context)
                });
                if result.is_err() {
                    self.fail();
                }
                result
            }
            State::Failed | State::Idle => Err(in_failed_transaction()),
        }
    }

    /// A statement in a transaction of its own. A commit that failed only because a schema
    /// change committed while the statement ran (its writes would have missed what the new
    /// schema wants: see `crate::schema_change`) is run again from the start, as the client
    /// would, up to [`SCHEMA_CHANGE_RETRIES`] times: nothing of it was applied, and nothing
    /// was sent (a query streaming its rows writes nothing, so never fails so).
    fn autocommit(
        &mut self,
        statement: &ParsedStatement,
        mut sink: Option<&mut (dyn ResultSink + 'static)>,
    ) -> SqlResult<StatementResult> {
        let lock_timeout = self.settings.lock_timeout();
        let config = self.block_config(None);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let context = Context {
                regions: self.regions.as_deref(),
                splits_after_commit: &mut self.splits_after_commit,
                sink: sink.as_deref_mut(),
                work_mem: self.settings.work_mem(),
                sequences: &self.sequences,
                source: self.source.as_ref(),
                in_block: false,
            };
            let mut txn = self.source.begin(config)?;
            let result = txn
                .begin_statement(lock_timeout)
                .map_err(SqlError::from)
                .and_then(|()| exec::execute(txn.as_mut(), statement, context));
            match result {
                Ok(result) => {
                    let committed = self.commit(Block {
                        config,
                        txn: Some(txn),
                    });
                    match committed {
                        Ok(()) => return Ok(result),
                        Err(e)
                            if attempt < SCHEMA_CHANGE_RETRIES
                                && e.code == sqlstate::SERIALIZATION_FAILURE
                                && e.message.contains(kv::CHANGED_BEFORE_COMMIT) =>
                        {
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => {
                    self.splits_after_commit.clear();
                    let _ = txn.rollback();
                    return Err(e);
                }
            }
        }
    }
}

/// Times an autocommit statement is run when schema changes keep failing its commit.
const SCHEMA_CHANGE_RETRIES: u32 = 3;

/// The block's transaction, begun now if this is its first statement.
fn begin_if_needed<'a>(
    block: &'a mut Block,
    source: &dyn TransactionSource,
) -> SqlResult<&'a mut dyn Transaction> {
    if block.txn.is_none() {
        block.txn = Some(source.begin(block.config)?);
    }
    Ok(block
        .txn
        .as_mut()
        .expect("the transaction was just begun")
        .as_mut())
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
