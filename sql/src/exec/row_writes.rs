//! Writing rows: every INSERT, UPDATE, DELETE and upsert stores its row changes here, so that
//! each change also changes the row's secondary index entries (see [`crate::index`]) and
//! every writer is checked against concurrent schema changes.
//!
//! For a batch of changes (one statement's):
//! 0. every new row is checked against the table's CHECK constraints (see [`crate::check`])
//!    and foreign keys, and every row removed (or re-keyed) against the foreign keys that
//!    reference it (see [`crate::foreign_key`]);
//! 1. the commit is made to check the table's write version (see [`crate::catalog`]): a
//!    writer that read the descriptor before an index was added, and so writes no entries
//!    for it, cannot commit after the index was;
//! 2. old row versions that move or go are deleted, then the new versions put (so a row may
//!    take a key another row of the batch gives up);
//! 3. per maintained index, entries that change are deleted, then the new ones checked for
//!    uniqueness and put. A unique entry's key is one the row's values alone determine:
//!    it is taken if another row of the batch wants it too, or if it is stored (newest
//!    committed version, after the batch's deletes) for another row — 23505 either way.
//!    In a pessimistic transaction every entry key written is locked first (one request
//!    for the batch), so a concurrent insert of the same unique value waits, as in
//!    PostgreSQL, and then sees the value committed or gone; and an entry key changed by a
//!    transaction that committed while this one waited for the row's lock is not a write
//!    conflict, as the row's is not. An optimistic transaction reads its snapshot and its
//!    commit fails (40001) if another wrote one of the keys since.
//!
//! Primary-key uniqueness is checked by the statements before they get here.

use std::collections::HashSet;

use kv::{LockPurpose, Transaction};

use super::insert::unique_violation;
use crate::catalog::{self, Index, Table};
use crate::check::BoundChecks;
use crate::error::SqlResult;
use crate::foreign_key;
use crate::index::{Entry, entry};
use crate::types::Value;

/// One row's change: the stored version it replaces or deletes, and the one it stores.
pub struct RowChange<'a> {
    pub old: Option<(&'a [u8], &'a [Value])>,
    pub new: Option<(&'a [u8], &'a [Value])>,
}

impl<'a> RowChange<'a> {
    pub fn delete(key: &'a [u8], values: &'a [Value]) -> Self {
        RowChange {
            old: Some((key, values)),
            new: None,
        }
    }
}

/// Applies `changes` to `table` (its rows and index entries) in `txn`.
pub fn apply(txn: &mut dyn Transaction, table: &Table, changes: &[RowChange]) -> SqlResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    if !table.checks.is_empty() {
        let checks = BoundChecks::of(table)?;
        for change in changes {
            if let Some((_, values)) = change.new {
                checks.verify(table, values)?;
            }
        }
    }
    if !table.foreign_keys.is_empty() {
        foreign_key::check_references(txn, table, changes)?;
    }
    if !table.referenced_by.is_empty() {
        foreign_key::check_referenced(txn, table, changes)?;
    }
    catalog::check_writes_at_commit(txn, table);
    for change in changes {
        if let Some((old_key, _)) = change.old
            && change.new.is_none_or(|(new_key, _)| new_key != old_key)
        {
            txn.delete(old_key.to_vec());
        }
    }
    for change in changes {
        if let Some((key, values)) = change.new {
            txn.put(key.to_vec(), table.encode_row(values));
        }
    }
    let indexes: Vec<&Index> = table.maintained_indexes().collect();
    if indexes.is_empty() {
        return Ok(());
    }
    let mut removed: Vec<Vec<u8>> = Vec::new();
    let mut added: Vec<(Entry, &Index, &[Value])> = Vec::new();
    for change in changes {
        for &index in &indexes {
            let old = change
                .old
                .map(|(key, values)| entry(table, index, values, key));
            let new = change
                .new
                .map(|(key, values)| entry(table, index, values, key));
            if old == new {
                continue;
            }
            if let Some(old) = old {
                removed.push(old.key);
            }
            if let (Some(new), Some((_, values))) = (new, change.new) {
                added.push((new, index, values));
            }
        }
    }
    for key in &removed {
        txn.delete(key.clone());
    }
    let mut wanted = HashSet::new();
    for (entry, index, values) in &added {
        if entry.is_unique_key() && !wanted.insert(entry.key.as_slice()) {
            return Err(unique_violation(table, &index.name, &index.columns, values));
        }
    }
    let unique: Vec<usize> = (0..added.len())
        .filter(|&i| added[i].0.is_unique_key())
        .collect();
    let mut keys: Vec<Vec<u8>> = unique.iter().map(|&i| added[i].0.key.clone()).collect();
    let checked = keys.len();
    keys.extend(
        added
            .iter()
            .filter(|(entry, ..)| !entry.is_unique_key())
            .map(|(entry, ..)| entry.key.clone()),
    );
    keys.extend(removed);
    let stored = match txn.lock_for_write(&keys, LockPurpose::Insert)? {
        Some(newest) => newest,
        None => txn.batch_get(&keys[..checked])?,
    };
    for (&i, stored) in unique.iter().zip(stored) {
        let (entry, index, values) = &added[i];
        if stored.is_some_and(|row| row != entry.value) {
            return Err(unique_violation(table, &index.name, &index.columns, values));
        }
    }
    for (entry, ..) in added {
        txn.put(entry.key, entry.value);
    }
    Ok(())
}
