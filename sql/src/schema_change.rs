//! Online schema changes: `CREATE [UNIQUE] INDEX` on a table that other sessions (on any
//! node) keep writing, and `DROP INDEX`.
//!
//! # The protocol
//!
//! F1's states, made safe without leases by a check at commit (as TiDB checks its schema
//! version). A writer writes a row's entries for the indexes its descriptor lists, and its
//! commit re-reads the table's *write version* at the commit timestamp and fails with 40001
//! if it moved (see [`crate::catalog`] and [`crate::exec::row_writes`]). Building an index:
//!
//! 1. **write-only** — one transaction adds the index to the descriptor in state
//!    `WriteOnly` and raises the write version; it commits at `c1`. From then on every
//!    writer that commits maintains the index: one that read the old descriptor and commits
//!    after `c1` sees the version moved and fails.
//! 2. **backfill** — transactions that each start after `c1` read a batch of rows (in key
//!    order) and put their entries. A row committed before `c1` is in every such snapshot
//!    unless a later writer changed it, and that writer, maintaining the index, wrote (or
//!    deleted) the same entry key after the batch's snapshot, so the batch's commit fails
//!    with a write conflict and the batch is read again. A writer that read its descriptor
//!    before `c1` but commits before it: its commit timestamp is below `c1`, so its rows
//!    are in the batches' snapshots (a batch's read waits for its locks to be settled).
//!    A unique index: a batch that finds an entry key taken by another row (or two rows of
//!    its own wanting one key) has found a duplicate; the build fails with 23505.
//! 3. **public** — one transaction marks the index public; queries whose snapshot is after
//!    that use it. The write version does not move: writers do the same in both states.
//!
//! A statement that runs in a transaction of its own (autocommit) and fails at commit only
//! for this check is run again by its session (`Session::autocommit`), so only transactions
//! open across a schema change see the 40001.
//!
//! A failed build removes the index again: its descriptor entry first (raising the write
//! version, so no writer adds entries for it any more), then its entries, in batches.
//! Progress is kept in the key space and shown by `SHOW JOBS`: each backfill batch updates
//! its job record in the same transaction as its entries.
//!
//! Inside a transaction block the steps cannot commit one by one: there, CREATE INDEX is
//! done in the block's transaction, which is safe only when no other transaction can write
//! the table — when the table was created in the same transaction (as an ORM creating its
//! schema does). Otherwise it is refused (0A000).
//!
//! `DROP INDEX` is one transaction: it removes the index from the descriptor, raises the
//! write version and deletes the entries. (A writer that read the old descriptor and
//! commits before the drop may leave an entry the drop did not see: garbage under an index
//! ID never used again, which nothing reads.)
//!
//! Not here: ALTER TABLE's column changes (the same check would cover them), a job that
//! survives the death of the node running it (a build interrupted by a crash leaves a
//! write-only index that writes maintain and queries never use; `DROP INDEX` removes it),
//! expression and partial indexes, `INCLUDE`.

use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlparser::ast;

use kv::codec::memcomparable::prefix_end;
use kv::{Transaction, TransactionSource, TxnConfig};

use crate::catalog::{self, Index, IndexState, Table};
use crate::encoding::{index_prefix, row_prefix, row_prefix_end};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::exec::StatementResult;
use crate::exec::ddl::{column_positions, key_columns};
use crate::exec::insert::key_text;
use crate::exec::table_name;
use crate::index::entry;

/// Rows read (and entries written) per backfill transaction.
pub const BACKFILL_BATCH: usize = 512;
/// Times a backfill batch is tried before the build gives up.
const BATCH_ATTEMPTS: u32 = 50;

/// An index to build: what CREATE INDEX (or ALTER TABLE … ADD CONSTRAINT … UNIQUE) asked
/// for.
pub(crate) struct IndexSpec {
    pub table: String,
    pub name: Option<String>,
    pub columns: Vec<String>,
    pub unique: bool,
    pub if_not_exists: bool,
    /// A `UNIQUE` constraint's index.
    pub constraint: bool,
}

fn spec(create: &ast::CreateIndex) -> SqlResult<IndexSpec> {
    if create.using.as_ref().is_some_and(|using| {
        !matches!(using, ast::IndexType::BTree) && using.to_string() != "btree"
    }) {
        return Err(SqlError::unsupported(format!(
            "index access method {}",
            create
                .using
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default()
        )));
    }
    if !create.include.is_empty() {
        return Err(SqlError::unsupported("INCLUDE columns"));
    }
    if create.predicate.is_some() {
        return Err(SqlError::unsupported(
            "partial indexes (CREATE INDEX … WHERE)",
        ));
    }
    if create.nulls_distinct == Some(false) {
        return Err(SqlError::unsupported("NULLS NOT DISTINCT"));
    }
    if !create.with.is_empty() || !create.index_options.is_empty() || create.r#async {
        return Err(SqlError::unsupported("index storage options"));
    }
    let name = match &create.name {
        Some(name) => Some(table_name(name)?),
        None => None,
    };
    if create.if_not_exists && name.is_none() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "syntax error: IF NOT EXISTS requires an index name",
        ));
    }
    Ok(IndexSpec {
        table: table_name(&create.table_name)?,
        name,
        columns: key_columns(&create.columns, "index")?,
        unique: create.unique,
        if_not_exists: create.if_not_exists,
        constraint: false,
    })
}

/// The index `spec` describes, added to `table` in `state` (not stored); `None` if it
/// exists and IF NOT EXISTS was given.
fn add_index(
    txn: &mut dyn Transaction,
    table: &mut Table,
    spec: &IndexSpec,
    state: IndexState,
) -> SqlResult<Option<Index>> {
    let columns = column_positions(&table.columns, &spec.columns, "index")?;
    let name = match &spec.name {
        Some(name) => {
            if spec.if_not_exists && catalog::require_free_name(txn, name).is_err() {
                return Ok(None);
            }
            name.clone()
        }
        None => {
            let suffix = if spec.constraint { "key" } else { "idx" };
            catalog::free_index_name(txn, table, &columns, suffix, &[])?
        }
    };
    catalog::register_index(txn, &name, &table.name)?;
    let index = Index {
        id: table.next_index_id,
        name,
        columns,
        unique: spec.unique,
        state,
        constraint: spec.constraint,
    };
    table.next_index_id += 1;
    table.indexes.push(index.clone());
    Ok(Some(index))
}

/// CREATE INDEX in a transaction block (or a multi-statement query), in its transaction
/// `txn`: only on a table this transaction created (see the module doc).
pub fn create_index_in_block(
    txn: &mut dyn Transaction,
    source: &dyn TransactionSource,
    create: &ast::CreateIndex,
) -> SqlResult<StatementResult> {
    build_index_in_block(txn, source, &spec(create)?)?;
    Ok(StatementResult::command("CREATE INDEX"))
}

/// Builds the index in `txn`, which must have created its table.
pub(crate) fn build_index_in_block(
    txn: &mut dyn Transaction,
    source: &dyn TransactionSource,
    spec: &IndexSpec,
) -> SqlResult<()> {
    let mut table = catalog::require_table(txn, &spec.table)?;
    if !table_created_by(source, &table)? {
        return Err(SqlError::unsupported(
            "CREATE INDEX inside a transaction block on a table the transaction did not create \
             (indexes are built online, in transactions of their own: run it outside a block)",
        ));
    }
    let Some(index) = add_index(txn, &mut table, spec, IndexState::Public)? else {
        return Ok(());
    };
    let table = catalog::put_table_with_new_write_version(txn, table)?;
    let mut start = row_prefix(table.id);
    while let (_, Some(next)) = fill_batch(txn, &table, &index, &start)? {
        start = next;
    }
    Ok(())
}

/// Whether `table` (as the caller's transaction sees it) is one that transaction created:
/// no committed transaction sees it, so no other can write it.
pub(crate) fn table_created_by(source: &dyn TransactionSource, table: &Table) -> SqlResult<bool> {
    let mut outside = source.begin(TxnConfig::optimistic())?;
    let committed = catalog::get_table(outside.as_mut(), &table.name);
    let _ = outside.rollback();
    Ok(committed?.is_none_or(|t| t.id != table.id))
}

/// Puts the entries of the rows of `table` from `start` on, one batch of
/// [`BACKFILL_BATCH`] rows, in `txn`: how many rows it read, and where the next batch
/// starts (`None`: the table is done). A unique index's entry that another row has (in the
/// batch, or stored) fails the build (23505).
fn fill_batch(
    txn: &mut dyn Transaction,
    table: &Table,
    index: &Index,
    start: &[u8],
) -> SqlResult<(u64, Option<Vec<u8>>)> {
    let pairs = txn.scan(start, Some(&row_prefix_end(table.id)), BACKFILL_BATCH)?;
    let next = (pairs.len() == BACKFILL_BATCH)
        .then(|| pairs.last().map(|(key, _)| after(key)))
        .flatten();
    let mut entries = Vec::with_capacity(pairs.len());
    for (key, value) in &pairs {
        let values = table.decode_row(value)?;
        entries.push((entry(table, index, &values, key), values));
    }
    let keys: Vec<Vec<u8>> = entries.iter().map(|(e, _)| e.key.clone()).collect();
    let stored = txn.batch_get(&keys)?;
    check_unique(table, index, &entries, &stored)?;
    for (e, _) in entries {
        txn.put(e.key, e.value);
    }
    Ok((pairs.len() as u64, next))
}

/// The first key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Fails if an entry of a unique index is wanted by two rows of the batch, or is stored
/// (`stored`, in order) for another row.
fn check_unique(
    table: &Table,
    index: &Index,
    entries: &[(crate::index::Entry, Vec<crate::types::Value>)],
    stored: &[Option<Vec<u8>>],
) -> SqlResult<()> {
    if !index.unique {
        return Ok(());
    }
    let mut wanted = std::collections::HashSet::new();
    for ((e, values), stored) in entries.iter().zip(stored) {
        if !e.is_unique_key() {
            continue;
        }
        let taken = stored.as_ref().is_some_and(|row| *row != e.value);
        if taken || !wanted.insert(e.key.as_slice()) {
            return Err(duplicated(table, index, values));
        }
    }
    Ok(())
}

fn duplicated(table: &Table, index: &Index, values: &[crate::types::Value]) -> SqlError {
    SqlError::new(
        sqlstate::UNIQUE_VIOLATION,
        format!("could not create unique index \"{}\"", index.name),
    )
    .with_detail(format!(
        "{} is duplicated.",
        key_text(table, &index.columns, values)
    ))
}

/// Runs `step` in a transaction of its own, committed; retried while it fails with a
/// serialization failure (a write conflict with a concurrent writer), up to
/// [`BATCH_ATTEMPTS`] times.
pub(crate) fn in_own_transaction<T>(
    source: &dyn TransactionSource,
    mut step: impl FnMut(&mut dyn Transaction) -> SqlResult<T>,
) -> SqlResult<T> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut txn = source.begin(TxnConfig::optimistic())?;
        let result = step(txn.as_mut()).and_then(|value| {
            txn.commit()?;
            Ok(value)
        });
        match result {
            Ok(value) => return Ok(value),
            Err(e) if e.code == sqlstate::SERIALIZATION_FAILURE && attempt < BATCH_ATTEMPTS => {
                let _ = txn.rollback();
                thread::sleep(Duration::from_millis(2 * u64::from(attempt.min(25))));
            }
            Err(e) => {
                let _ = txn.rollback();
                return Err(e);
            }
        }
    }
}

/// CREATE INDEX outside a transaction block: the three steps of the module doc, each in
/// transactions of its own.
pub fn create_index(
    source: &dyn TransactionSource,
    create: &ast::CreateIndex,
) -> SqlResult<StatementResult> {
    build_index(source, &spec(create)?)?;
    Ok(StatementResult::command("CREATE INDEX"))
}

/// Builds an index in the steps of the module doc, each in transactions of its own.
pub(crate) fn build_index(source: &dyn TransactionSource, spec: &IndexSpec) -> SqlResult<()> {
    // 1. write-only.
    let added = in_own_transaction(source, |txn| {
        let mut table = catalog::require_table(txn, &spec.table)?;
        let Some(index) = add_index(txn, &mut table, spec, IndexState::WriteOnly)? else {
            return Ok(None);
        };
        let table = catalog::put_table_with_new_write_version(txn, table)?;
        Job::started(&table, &index).store(txn)?;
        Ok(Some((table, index)))
    })?;
    let Some((table, index)) = added else {
        return Ok(());
    };
    // 2. backfill.
    if let Err(e) = backfill(source, &table, &index) {
        let _ = remove_failed(source, &table, &index);
        let _ = finish_job(source, &table, &index, &format!("failed: {}", e.message));
        return Err(e);
    }
    // 3. public.
    let added_to = table.id;
    let published = in_own_transaction(source, |txn| {
        let mut table = catalog::require_table(txn, &spec.table)?;
        let built = table.id == added_to;
        let Some(found) = table.indexes.iter_mut().find(|i| built && i.id == index.id) else {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "index \"{}\" was dropped while it was being built",
                    index.name
                ),
            ));
        };
        found.state = IndexState::Public;
        catalog::put_table(txn, &table)?;
        Ok(())
    });
    let state = match &published {
        Ok(()) => "succeeded".to_string(),
        Err(e) => format!("failed: {}", e.message),
    };
    let _ = finish_job(source, &table, &index, &state);
    published
}

/// Step 2: entries for every row, batch by batch.
fn backfill(source: &dyn TransactionSource, table: &Table, index: &Index) -> SqlResult<()> {
    let mut start = row_prefix(table.id);
    loop {
        let next = in_own_transaction(source, |txn| {
            let (rows, next) = fill_batch(txn, table, index, &start)?;
            let mut job =
                Job::load(txn, table.id, index.id)?.unwrap_or_else(|| Job::started(table, index));
            job.rows_done += rows;
            job.store(txn)?;
            Ok(next)
        })?;
        match next {
            Some(next) => start = next,
            None => return Ok(()),
        }
    }
}

/// Records how a build ended in its job.
fn finish_job(
    source: &dyn TransactionSource,
    table: &Table,
    index: &Index,
    state: &str,
) -> SqlResult<()> {
    in_own_transaction(source, |txn| {
        let mut job =
            Job::load(txn, table.id, index.id)?.unwrap_or_else(|| Job::started(table, index));
        job.state = state.to_string();
        job.store(txn)
    })
}

/// Takes a failed build's index out of the descriptor, then deletes its entries.
fn remove_failed(source: &dyn TransactionSource, table: &Table, index: &Index) -> SqlResult<()> {
    in_own_transaction(source, |txn| {
        let Some(mut current) = catalog::get_table(txn, &table.name)? else {
            return Ok(());
        };
        if current.id != table.id {
            return Ok(());
        }
        current.indexes.retain(|i| i.id != index.id);
        catalog::unregister_index(txn, &index.name);
        catalog::put_table_with_new_write_version(txn, current)?;
        Ok(())
    })?;
    delete_entries(source, table.id, index.id)
}

/// Deletes every entry of an index that no descriptor lists any more, batch by batch.
fn delete_entries(source: &dyn TransactionSource, table_id: u64, index_id: u64) -> SqlResult<()> {
    let start = index_prefix(table_id, index_id);
    let end = prefix_end(&start).unwrap_or_default();
    loop {
        let more = in_own_transaction(source, |txn| {
            let pairs = txn.scan(&start, Some(&end), BACKFILL_BATCH)?;
            let more = pairs.len() == BACKFILL_BATCH;
            for (key, _) in pairs {
                txn.delete(key);
            }
            Ok(more)
        })?;
        if !more {
            return Ok(());
        }
    }
}

/// `DROP INDEX [IF EXISTS] name [, …]`, in the statement's transaction.
pub fn drop_indexes(
    txn: &mut dyn Transaction,
    if_exists: bool,
    names: &[ast::ObjectName],
) -> SqlResult<StatementResult> {
    let mut found = Vec::new();
    for name in names {
        let name = table_name(name)?;
        match catalog::index_owner(txn, &name)? {
            Some(table) => found.push((name, table)),
            None if catalog::get_table(txn, &name)?.is_some() => {
                return Err(SqlError::new(
                    sqlstate::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not an index"),
                ));
            }
            None if if_exists => {}
            None => {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("index \"{name}\" does not exist"),
                ));
            }
        }
    }
    for (name, _) in &found {
        // Re-read: two indexes of one table dropped together.
        let mut table = catalog::index_owner(txn, name)?.ok_or_else(|| {
            SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("index \"{name}\" does not exist"),
            )
        })?;
        let position = table.indexes.iter().position(|i| &i.name == name);
        let Some(position) = position.filter(|&p| !table.indexes[p].constraint) else {
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop index {name} because constraint {name} on table {} requires it",
                    table.name
                ),
            ));
        };
        let index = table.indexes.remove(position);
        catalog::unregister_index(txn, name);
        catalog::put_table_with_new_write_version(txn, table.clone())?;
        let start = index_prefix(table.id, index.id);
        let end = prefix_end(&start).unwrap_or_default();
        for (key, _) in txn.scan(&start, Some(&end), usize::MAX)? {
            txn.delete(key);
        }
    }
    Ok(StatementResult::command("DROP INDEX"))
}

/// The record of an index build, under `m` `job/` table ID, index ID (see `SHOW JOBS`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub table_id: u64,
    pub index_id: u64,
    pub table: String,
    pub index: String,
    #[serde(default)]
    pub unique: bool,
    /// `running`, `succeeded`, or `failed: …`.
    pub state: String,
    pub rows_done: u64,
}

const JOB_KEY_PREFIX: &[u8] = b"mjob/";

fn job_key(table_id: u64, index_id: u64) -> Vec<u8> {
    let mut key = JOB_KEY_PREFIX.to_vec();
    key.extend_from_slice(&table_id.to_be_bytes());
    key.extend_from_slice(&index_id.to_be_bytes());
    key
}

impl Job {
    fn started(table: &Table, index: &Index) -> Job {
        Job {
            table_id: table.id,
            index_id: index.id,
            table: table.name.clone(),
            index: index.name.clone(),
            unique: index.unique,
            state: "running".into(),
            rows_done: 0,
        }
    }

    fn load(txn: &mut dyn Transaction, table_id: u64, index_id: u64) -> SqlResult<Option<Job>> {
        match txn.get(&job_key(table_id, index_id))? {
            Some(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            None => Ok(None),
        }
    }

    fn store(&self, txn: &mut dyn Transaction) -> SqlResult<()> {
        let key = job_key(self.table_id, self.index_id);
        let json = serde_json::to_vec(self)
            .map_err(|e| SqlError::new(sqlstate::INTERNAL_ERROR, e.to_string()))?;
        txn.put(key, json);
        Ok(())
    }
}

/// Every index build recorded, oldest table first.
pub fn jobs(txn: &mut dyn Transaction) -> SqlResult<Vec<Job>> {
    let end = prefix_end(JOB_KEY_PREFIX).unwrap_or_default();
    Ok(txn
        .scan(JOB_KEY_PREFIX, Some(&end), usize::MAX)?
        .into_iter()
        .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
        .collect())
}
