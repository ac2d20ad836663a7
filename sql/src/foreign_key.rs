//! FOREIGN KEY constraints: a row of the referencing (child) table whose key columns are all
//! non-NULL must find a row of the referenced (parent) table with those values in the
//! referenced columns, which are the parent's primary key or one of its UNIQUE constraints.
//! Violations are 23503. `ON DELETE`/`ON UPDATE` `NO ACTION` and `RESTRICT` only (the
//! default); `MATCH SIMPLE` only.
//!
//! # Concurrency
//!
//! A child row's writer *locks the parent row* it references (a pessimistic lock, taking
//! the parent's newest committed version, or in an optimistic transaction a lock mutation
//! its commit conflicts on), and fails if the row is gone. A writer that deletes a parent
//! row (or changes its referenced values) has locked that row first (UPDATE and DELETE lock
//! the rows they change), so it waits for the children's writers and they for it; it then
//! looks for referencing rows in everything committed so far ([`Transaction::scan_newest`]),
//! not its statement's snapshot, which may predate a child that committed while it waited.
//! In optimistic transactions the lock mutations make the two writers conflict at commit.
//! So no child commits without its parent (PostgreSQL's `FOR KEY SHARE` check, with an
//! exclusive lock: writers of children of one parent row wait for each other).
//!
//! The parent keeps the names of the tables that reference it (`referenced_by`), so its
//! writers know where to look; a parent referenced by another table cannot be dropped,
//! truncated or renamed, nor can the columns of either side be dropped.
//!
//! Not here: `CASCADE`/`SET NULL`/`SET DEFAULT` actions, `MATCH FULL`, deferrable
//! constraints, a table referencing itself, `ALTER TABLE … ADD FOREIGN KEY`.

use kv::codec::memcomparable::prefix_end;
use serde::{Deserialize, Serialize};
use sqlparser::ast;

use kv::{LockPurpose, Transaction};

use crate::catalog::{self, Table};
use crate::encoding::{encode_value, index_prefix, row_key, row_prefix, row_prefix_end};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::exec::insert::key_values_text;
use crate::exec::row_writes::RowChange;
use crate::exec::table_name;
use crate::expr::ident_name;
use crate::types::{SqlType, Value};

/// A foreign key, stored in the referencing table's descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForeignKey {
    pub name: String,
    /// The referencing columns (positions in this table).
    pub columns: Vec<usize>,
    /// The referenced table (by name: it cannot be renamed while referenced) and its ID.
    pub parent: String,
    pub parent_id: u64,
    /// The referenced columns (positions in the parent), in the order of `columns`.
    pub parent_columns: Vec<usize>,
}

fn invalid(message: impl Into<String>) -> SqlError {
    SqlError::new(sqlstate::INVALID_FOREIGN_KEY, message)
}

fn same_kind(a: SqlType, b: SqlType) -> bool {
    let text = |t: SqlType| matches!(t, SqlType::Text | SqlType::Varchar(_));
    (a.is_integer() && b.is_integer())
        || (a.is_float() && b.is_float())
        || (text(a) && text(b))
        || a == b
}

/// The foreign key a CREATE TABLE clause declares for `child` (its columns known; `column`:
/// the column of a column constraint).
pub fn define(
    txn: &mut dyn Transaction,
    child: &Table,
    fk: &ast::ForeignKeyConstraint,
    column: Option<&str>,
    taken: &[String],
) -> SqlResult<ForeignKey> {
    for action in [&fk.on_delete, &fk.on_update].into_iter().flatten() {
        if !matches!(
            action,
            ast::ReferentialAction::NoAction | ast::ReferentialAction::Restrict
        ) {
            return Err(SqlError::unsupported(format!(
                "foreign key action {action}"
            )));
        }
    }
    if fk.characteristics.is_some() {
        return Err(SqlError::unsupported("deferrable foreign keys"));
    }
    if fk
        .match_kind
        .as_ref()
        .is_some_and(|m| !matches!(m, ast::ConstraintReferenceMatchKind::Simple))
    {
        return Err(SqlError::unsupported("MATCH FULL / MATCH PARTIAL"));
    }
    let parent_name = table_name(&fk.foreign_table)?;
    if parent_name == child.name {
        return Err(SqlError::unsupported(
            "a foreign key referencing its own table",
        ));
    }
    let parent = catalog::require_table(txn, &parent_name)?;
    let names: Vec<String> = match column {
        Some(column) => vec![column.to_string()],
        None => fk.columns.iter().map(ident_name).collect(),
    };
    let columns = names
        .iter()
        .map(|n| {
            child
                .column_index(n)
                .ok_or_else(|| SqlError::undefined_column(n))
        })
        .collect::<SqlResult<Vec<usize>>>()?;
    let parent_columns: Vec<usize> = if fk.referred_columns.is_empty() {
        if parent.primary_key.is_empty() {
            return Err(invalid(format!(
                "there is no primary key for referenced table \"{parent_name}\""
            )));
        }
        parent.primary_key.clone()
    } else {
        fk.referred_columns
            .iter()
            .map(|i| {
                let n = ident_name(i);
                parent
                    .column_index(&n)
                    .ok_or_else(|| SqlError::undefined_column(&n))
            })
            .collect::<SqlResult<Vec<usize>>>()?
    };
    if columns.len() != parent_columns.len() {
        return Err(invalid(
            "number of referencing and referenced columns for foreign key disagree",
        ));
    }
    if referenced_key(&parent, &parent_columns).is_none() {
        return Err(invalid(format!(
            "there is no unique constraint matching given keys for referenced table \"{parent_name}\""
        )));
    }
    let name = match &fk.name {
        Some(name) => ident_name(name),
        None => {
            let mut base = child.name.clone();
            for &c in &columns {
                base.push('_');
                base.push_str(&child.columns[c].name);
            }
            base.push_str("_fkey");
            catalog::numbered_name(&base, |name| Ok(taken.iter().any(|t| t == name)))?
        }
    };
    for (&c, &p) in columns.iter().zip(&parent_columns) {
        let (ct, pt) = (child.columns[c].ty, parent.columns[p].ty);
        if !same_kind(ct, pt) {
            return Err(SqlError::mismatch(format!(
                "foreign key constraint \"{name}\" cannot be implemented"
            ))
            .with_detail(format!(
                "Key columns \"{}\" and \"{}\" are of incompatible types: {} and {}.",
                child.columns[c].name,
                parent.columns[p].name,
                ct.pg_name(),
                pt.pg_name()
            )));
        }
    }
    Ok(ForeignKey {
        name,
        columns,
        parent: parent_name,
        parent_id: parent.id,
        parent_columns,
    })
}

/// How the parent's rows are found by the referenced columns: by primary key (`None`) or
/// through a unique index (its ID); `None` overall if neither has exactly those columns.
fn referenced_key(parent: &Table, columns: &[usize]) -> Option<Option<u64>> {
    let sorted = |c: &[usize]| {
        let mut c = c.to_vec();
        c.sort_unstable();
        c
    };
    let wanted = sorted(columns);
    if !parent.primary_key.is_empty() && sorted(&parent.primary_key) == wanted {
        return Some(None);
    }
    parent
        .public_indexes()
        .find(|index| index.unique && sorted(&index.columns) == wanted)
        .map(|index| Some(index.id))
}

/// The key of the parent row with `values` in the referenced columns (all non-NULL).
fn parent_key(parent: &Table, fk: &ForeignKey, values: &[Value]) -> SqlResult<Vec<u8>> {
    let mut row = vec![Value::Null; parent.columns.len()];
    for (&p, v) in fk.parent_columns.iter().zip(values) {
        row[p] = v.clone();
    }
    match referenced_key(parent, &fk.parent_columns) {
        Some(None) => Ok(row_key(
            parent.id,
            parent.primary_key.iter().map(|&c| &row[c]),
        )),
        Some(Some(index_id)) => {
            let index = parent
                .indexes
                .iter()
                .find(|i| i.id == index_id)
                .expect("referenced_key found it");
            let mut key = index_prefix(parent.id, index.id);
            for &c in &index.columns {
                encode_value(&mut key, &row[c]);
            }
            Ok(key)
        }
        None => Err(invalid(format!(
            "the key foreign key \"{}\" references is gone from table \"{}\"",
            fk.name, parent.name
        ))),
    }
}

/// Checks the rows `changes` store in `table` against its foreign keys, locking the parent
/// rows they reference (see the module doc).
pub fn check_references(
    txn: &mut dyn Transaction,
    table: &Table,
    changes: &[RowChange],
) -> SqlResult<()> {
    for fk in &table.foreign_keys {
        let mut wanted: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
        let parent = catalog::get_table(txn, &fk.parent)?
            .filter(|p| p.id == fk.parent_id)
            .ok_or_else(|| SqlError::undefined_table(&fk.parent))?;
        for change in changes {
            let Some((_, new)) = change.new else { continue };
            let values: Vec<Value> = fk.columns.iter().map(|&c| new[c].clone()).collect();
            if values.iter().any(Value::is_null) {
                continue;
            }
            if let Some((_, old)) = change.old
                && fk.columns.iter().all(|&c| old[c] == new[c])
            {
                continue;
            }
            let key = parent_key(&parent, fk, &values)?;
            if !wanted.iter().any(|(k, _)| *k == key) {
                wanted.push((key, values));
            }
        }
        if wanted.is_empty() {
            continue;
        }
        let keys: Vec<Vec<u8>> = wanted.iter().map(|(k, _)| k.clone()).collect();
        let found = match txn.lock_for_write(&keys, LockPurpose::Insert)? {
            Some(newest) => newest,
            None => {
                let found = txn.batch_get(&keys)?;
                for key in &keys {
                    txn.lock(key.clone());
                }
                found
            }
        };
        for ((_, values), found) in wanted.iter().zip(found) {
            if found.is_none() {
                return Err(SqlError::new(
                    sqlstate::FOREIGN_KEY_VIOLATION,
                    format!(
                        "insert or update on table \"{}\" violates foreign key constraint \"{}\"",
                        table.name, fk.name
                    ),
                )
                .with_detail(format!(
                    "{} is not present in table \"{}\".",
                    key_values_text(table, fk.columns.iter().copied().zip(values)),
                    parent.name
                )));
            }
        }
    }
    Ok(())
}

/// Checks that no row references a row `changes` delete from `table` (or whose referenced
/// values they change), looking at everything committed (see the module doc).
pub fn check_referenced(
    txn: &mut dyn Transaction,
    table: &Table,
    changes: &[RowChange],
) -> SqlResult<()> {
    for child_name in &table.referenced_by {
        let Some(child) = catalog::get_table(txn, child_name)? else {
            continue;
        };
        for fk in child
            .foreign_keys
            .iter()
            .filter(|fk| fk.parent_id == table.id)
        {
            for change in changes {
                let Some((_, old)) = change.old else { continue };
                let values: Vec<Value> =
                    fk.parent_columns.iter().map(|&c| old[c].clone()).collect();
                if values.iter().any(Value::is_null) {
                    continue;
                }
                if let Some((_, new)) = change.new
                    && fk.parent_columns.iter().all(|&c| old[c] == new[c])
                {
                    continue;
                }
                if referenced(txn, &child, fk, &values)? {
                    return Err(SqlError::new(
                        sqlstate::FOREIGN_KEY_VIOLATION,
                        format!(
                            "update or delete on table \"{}\" violates foreign key constraint \"{}\" on table \"{}\"",
                            table.name, fk.name, child.name
                        ),
                    )
                    .with_detail(format!(
                        "{} is still referenced from table \"{}\".",
                        key_values_text(table, fk.parent_columns.iter().copied().zip(&values)),
                        child.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether a committed row of `child` (or one this transaction wrote) has `values` in the
/// foreign key's columns: through an index that starts with them, else by reading the table.
fn referenced(
    txn: &mut dyn Transaction,
    child: &Table,
    fk: &ForeignKey,
    values: &[Value],
) -> SqlResult<bool> {
    let n = fk.columns.len();
    let index = child.public_indexes().find(|index| {
        index.columns.len() >= n && {
            let mut lead = index.columns[..n].to_vec();
            let mut cols = fk.columns.clone();
            lead.sort_unstable();
            cols.sort_unstable();
            lead == cols
        }
    });
    if let Some(index) = index {
        let mut prefix = index_prefix(child.id, index.id);
        for c in &index.columns[..n] {
            let at = fk
                .columns
                .iter()
                .position(|f| f == c)
                .expect("a key column");
            encode_value(&mut prefix, &values[at]);
        }
        let end = prefix_end(&prefix).unwrap_or_default();
        return Ok(!txn.scan_newest(&prefix, Some(&end), 1)?.is_empty());
    }
    let end = row_prefix_end(child.id);
    let mut start = row_prefix(child.id);
    loop {
        let pairs = txn.scan_newest(&start, Some(&end), 1024)?;
        for (_, value) in &pairs {
            let row = child.decode_row(value)?;
            if fk.columns.iter().zip(values).all(|(&c, v)| row[c] == *v) {
                return Ok(true);
            }
        }
        match pairs.last() {
            Some((last, _)) if pairs.len() == 1024 => {
                start = last.clone();
                start.push(0);
            }
            _ => return Ok(false),
        }
    }
}
