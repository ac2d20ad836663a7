//! INSERT … VALUES and INSERT … SELECT.

use std::collections::HashMap;

use sqlparser::ast;

use kv::{LockPurpose, Transaction};

use super::on_conflict::OnConflict;
use super::operator::collect;
use super::returning::{self, Returning};
use super::row_writes::{self, RowChange};
use super::scan::key_for_row;
use super::{StatementResult, WorkMem, dml_scope, table_name};
use crate::bind::Binder;
use crate::catalog::Identity;
use crate::catalog::{self, Index, Table};
use crate::encoding::row_prefix;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, Scope, Typed, bind, ident_name};
use crate::index::entry;
use crate::sequence::{Sequences, sequence_key};
use crate::types::Value;

/// Checks NOT NULL constraints of a complete row.
pub fn check_not_null(table: &Table, values: &[Value]) -> SqlResult<()> {
    for (column, value) in table.columns.iter().zip(values) {
        if !column.nullable && value.is_null() {
            return Err(SqlError::new(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                    column.name, table.name
                ),
            )
            .with_detail(failing_row(table, values)));
        }
    }
    Ok(())
}

/// `Failing row contains (1, x, null).`: the detail of a constraint violation.
pub fn failing_row(table: &Table, values: &[Value]) -> String {
    let shown: Vec<String> = table
        .columns
        .iter()
        .zip(values)
        .map(|(column, value)| value.to_pg_text(column.ty).unwrap_or_else(|| "null".into()))
        .collect();
    format!("Failing row contains ({}).", shown.join(", "))
}

/// The error for a second row with the same primary key.
pub fn duplicate_key(table: &Table, values: &[Value]) -> SqlError {
    unique_violation(table, &table.pkey_name(), &table.primary_key, values)
}

/// The error for a row whose values in `columns` another row of the table has already,
/// against the unique constraint (or index) `constraint`.
pub fn unique_violation(
    table: &Table,
    constraint: &str,
    columns: &[usize],
    values: &[Value],
) -> SqlError {
    SqlError::new(
        sqlstate::UNIQUE_VIOLATION,
        format!("duplicate key value violates unique constraint \"{constraint}\""),
    )
    .with_detail(format!(
        "{} already exists.",
        key_text(table, columns, values)
    ))
}

/// `Key (a, b)=(1, x)`: a row's values in `columns`, as PostgreSQL's details show them.
pub fn key_text(table: &Table, columns: &[usize], values: &[Value]) -> String {
    key_values_text(table, columns.iter().map(|&c| (c, &values[c])))
}

/// `Key (a, b)=(1, x)`: the given columns' values.
pub fn key_values_text<'a>(
    table: &Table,
    key: impl IntoIterator<Item = (usize, &'a Value)>,
) -> String {
    let (names, shown): (Vec<&str>, Vec<String>) = key
        .into_iter()
        .map(|(c, value)| {
            let column = &table.columns[c];
            let text = value.to_pg_text(column.ty).unwrap_or_else(|| "null".into());
            (column.name.as_str(), text)
        })
        .unzip();
    format!("Key ({})=({})", names.join(", "), shown.join(", "))
}

fn is_default_keyword(expr: &ast::Expr) -> bool {
    matches!(expr, ast::Expr::Identifier(ident)
        if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default"))
}

/// Rows whose keys one existence lookup covers.
const EXISTENCE_BATCH: usize = 1024;

/// One row of VALUES: its key and its record, with defaults, coercions and NOT NULL checked.
/// A new row before the INSERT's values go in: each column's default, and for an identity
/// column the INSERT gives no value (`given[i]` false), the next value of its sequence. A
/// value given to a `GENERATED ALWAYS` column is refused, as in PostgreSQL.
fn new_record(table: &Table, given: &[bool], sequences: &Sequences) -> SqlResult<Vec<Value>> {
    table
        .columns
        .iter()
        .zip(given)
        .map(|(column, &given)| match column.identity {
            Some(Identity::Always) if given => Err(SqlError::new(
                sqlstate::GENERATED_ALWAYS,
                format!(
                    "cannot insert a non-DEFAULT value into column \"{}\"",
                    column.name
                ),
            )),
            Some(_) if !given => {
                let key = sequence_key(table.id, &column.name);
                Ok(Value::Int(sequences.next(&key, column.ty, &column.name)?))
            }
            _ => Ok(column.default.clone()),
        })
        .collect()
}

/// Without a column list (`columns_listed` false), fewer values fill the first columns.
fn build_row(
    table: &Table,
    targets: &[usize],
    columns_listed: bool,
    exprs: &[ast::Expr],
    start_ts: u64,
    sequences: &Sequences,
) -> SqlResult<(Vec<u8>, Vec<Value>)> {
    let targets = if columns_listed {
        targets
    } else {
        &targets[..exprs.len().min(targets.len())]
    };
    if exprs.len() > targets.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "INSERT has more expressions than target columns",
        ));
    }
    if exprs.len() < targets.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "INSERT has more target columns than expressions",
        ));
    }
    let mut given = vec![false; table.columns.len()];
    for (&index, expr) in targets.iter().zip(exprs) {
        given[index] = !is_default_keyword(expr);
    }
    let mut record = new_record(table, &given, sequences)?;
    for (&index, expr) in targets.iter().zip(exprs) {
        if is_default_keyword(expr) {
            continue;
        }
        let column = &table.columns[index];
        let bound = bind(expr, &Scope::empty())?.coerce_for_assignment(column.ty, &column.name)?;
        record[index] = bound.eval(&[])?;
    }
    check_not_null(table, &record)?;
    Ok((key_for_row(table, &record, start_ts), record))
}

pub fn execute(
    txn: &mut dyn Transaction,
    insert: &ast::Insert,
    work_mem: WorkMem,
    sequences: &Sequences,
) -> SqlResult<StatementResult> {
    if insert.overriding.is_some() {
        return Err(SqlError::unsupported("this form of INSERT"));
    }
    let ast::TableObject::TableName(name) = &insert.table else {
        return Err(SqlError::unsupported("INSERT into a table function"));
    };
    let table = catalog::require_table(txn, &table_name(name)?)?;
    // `INSERT INTO t AS alias`: the name RETURNING and ON CONFLICT use for the table.
    let alias = insert.table_alias.as_ref().map(|a| ident_name(&a.alias));
    let (returning, (on_conflict, arbiters)) = {
        let binder = Binder::new(txn);
        let scope = dml_scope(&table, alias.as_deref(), &binder);
        let returning = Returning::bind(&insert.returning, &scope)?;
        let on_conflict = OnConflict::bind(insert.on.as_ref(), &table, alias.as_deref(), &binder)?;
        (returning, on_conflict)
    };

    // Target columns: the list given, or all columns in order.
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut targets = Vec::new();
        for column in &insert.columns {
            let (index, name) = super::target_column(&table, column)?;
            if targets.contains(&index) {
                return Err(SqlError::new(
                    sqlstate::DUPLICATE_COLUMN,
                    format!("column \"{name}\" specified more than once"),
                ));
            }
            targets.push(index);
        }
        targets
    };

    let Some(source) = &insert.source else {
        return Err(SqlError::unsupported("INSERT without VALUES"));
    };

    // Rows are built and checked in order; their keys are then looked up in batches (one
    // request per region, not one per row). An error in row i stands only if no earlier row
    // is a duplicate, as PostgreSQL, which inserts row by row, would report that first.
    let start_ts = txn.start_ts();
    let mut rows: Vec<(Vec<u8>, Vec<Value>)> = Vec::new();
    let mut row_error = None;
    match source.body.as_ref() {
        ast::SetExpr::Values(values)
            if source.order_by.is_none()
                && source.limit_clause.is_none()
                && source.with.is_none() =>
        {
            if values
                .rows
                .iter()
                .any(|r| r.content.len() != values.rows[0].content.len())
            {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "VALUES lists must all be the same length",
                ));
            }
            for row in &values.rows {
                let columns_listed = !insert.columns.is_empty();
                let built = build_row(
                    &table,
                    &targets,
                    columns_listed,
                    &row.content,
                    start_ts,
                    sequences,
                );
                match built {
                    Ok(built) => rows.push(built),
                    Err(e) => {
                        row_error = Some(e);
                        break;
                    }
                }
            }
        }
        _ => {
            for record in select_rows(
                txn,
                &table,
                &targets,
                !insert.columns.is_empty(),
                source,
                work_mem,
                sequences,
            )? {
                match check_not_null(&table, &record) {
                    Ok(()) => rows.push((key_for_row(&table, &record, start_ts), record)),
                    Err(e) => {
                        row_error = Some(e);
                        break;
                    }
                }
            }
        }
    }
    // The rows to write: new ones, and stored ones updated by ON CONFLICT DO UPDATE.
    let mut writes: Vec<RowWrite> = Vec::with_capacity(rows.len());
    let mut written = std::collections::HashSet::new();
    // Entries of the arbiter indexes that rows this statement writes take, with their keys.
    let mut entries_here: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let arbiter_entries = |record: &[Value], key: &[u8]| -> Vec<Vec<u8>> {
        arbiters
            .indexes
            .iter()
            .map(|index| entry(&table, index, record, key))
            .filter(|e| e.is_unique_key())
            .map(|e| e.key)
            .collect()
    };
    for chunk in rows.chunks(EXISTENCE_BATCH) {
        let keys: Vec<Vec<u8>> = chunk.iter().map(|(key, _)| key.clone()).collect();
        let existing = if table.primary_key.is_empty() {
            // Hidden keys are unique by construction: nothing to look up or lock.
            vec![None; keys.len()]
        } else {
            existing_rows(txn, &keys)?
        };
        let by_index = stored_index_conflicts(txn, &table, &arbiters.indexes, chunk)?;
        for (((key, record), existing), by_index) in chunk.iter().zip(existing).zip(by_index) {
            let entries = arbiter_entries(record, key);
            // The row this one conflicts with on an arbiter: its key, its stored version if
            // read already, and whether this statement wrote it. The primary key first when
            // it arbitrates; a unique index's entry stored for a row this statement wrote
            // since is stale (what the row has now is in `entries_here`).
            let key_taken = existing.is_some() || written.contains(key);
            let by_index = entries
                .iter()
                .find_map(|e| entries_here.get(e))
                .map(|other| (other.clone(), None, true))
                .or_else(|| {
                    by_index
                        .filter(|other| !written.contains(other))
                        .map(|other| (other, None, false))
                });
            let conflict = if key_taken && arbiters.primary_key {
                Some((key.clone(), existing, written.contains(key)))
            } else if by_index.is_some() {
                by_index
            } else if key_taken {
                return Err(duplicate_key(&table, record));
            } else {
                None
            };
            let Some((target, stored, here)) = conflict else {
                written.insert(key.clone());
                for e in entries {
                    entries_here.insert(e, key.clone());
                }
                writes.push(RowWrite {
                    key: key.clone(),
                    values: record.clone(),
                    replaces: None,
                });
                continue;
            };
            match &on_conflict {
                OnConflict::Error => return Err(duplicate_key(&table, record)),
                OnConflict::Nothing => {}
                OnConflict::Update { .. } if here => {
                    return Err(SqlError::new(
                        sqlstate::CARDINALITY_VIOLATION,
                        "ON CONFLICT DO UPDATE command cannot affect row a second time",
                    ));
                }
                OnConflict::Update { .. } => {
                    let stored = match stored {
                        Some(stored) => stored,
                        // Found through an index: the row it leads to, locked.
                        None => existing_rows(txn, std::slice::from_ref(&target))?
                            .pop()
                            .flatten()
                            .ok_or_else(|| {
                                SqlError::new(
                                    sqlstate::DATA_CORRUPTED,
                                    "a unique index entry leads to a row that is not stored",
                                )
                            })?,
                    };
                    let stored = table.decode_row(&stored)?;
                    if let Some(updated) = on_conflict.updated(&stored, record)? {
                        check_not_null(&table, &updated)?;
                        written.insert(target.clone());
                        entries_here.retain(|_, row| *row != target);
                        for e in arbiter_entries(&updated, &target) {
                            entries_here.insert(e, target.clone());
                        }
                        writes.push(RowWrite {
                            key: target,
                            values: updated,
                            replaces: Some(stored),
                        });
                    }
                }
            }
        }
    }
    if let Some(e) = row_error {
        return Err(e);
    }
    let count = writes.len() as u64;
    let changes: Vec<RowChange> = writes
        .iter()
        .map(|write| RowChange {
            old: write
                .replaces
                .as_deref()
                .map(|old| (write.key.as_slice(), old)),
            new: Some((write.key.as_slice(), write.values.as_slice())),
        })
        .collect();
    row_writes::apply(txn, &table, &changes)?;
    returning::result(
        returning.as_ref(),
        writes.iter().map(|write| write.values.as_slice()),
        format!("INSERT 0 {count}"),
    )
}

/// A row an INSERT stores: a new one, or a stored one an upsert updates.
struct RowWrite {
    key: Vec<u8>,
    values: Vec<Value>,
    /// The stored version it replaces.
    replaces: Option<Vec<Value>>,
}

/// `INSERT … SELECT` (or VALUES with ORDER BY/LIMIT): the query's rows, read whole before
/// anything is written, as complete records (defaults for the columns not targeted).
fn select_rows(
    txn: &mut dyn Transaction,
    table: &Table,
    targets: &[usize],
    columns_listed: bool,
    source: &ast::Query,
    work_mem: WorkMem,
    sequences: &Sequences,
) -> SqlResult<Vec<Vec<Value>>> {
    let bound = Binder::new(txn).bind_query(source, None)?;
    // Without a column list, a query with fewer columns fills the first ones (the others
    // take their defaults), as in PostgreSQL.
    let targets = if columns_listed {
        targets
    } else {
        &targets[..bound.columns.len().min(targets.len())]
    };
    if bound.columns.len() > targets.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "INSERT has more expressions than target columns",
        ));
    }
    if bound.columns.len() < targets.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "INSERT has more target columns than expressions",
        ));
    }
    let exprs = bound
        .columns
        .iter()
        .zip(targets)
        .enumerate()
        .map(|(i, ((_, ty), &target))| {
            let column = &table.columns[target];
            if bound.untyped[i] {
                // An untyped literal is read as the column's type.
                return Ok(Expr::Cast {
                    expr: Box::new(Expr::Column(i)),
                    from: *ty,
                    to: column.ty,
                    explicit: true,
                });
            }
            Typed::known(Expr::Column(i), *ty).coerce_for_assignment(column.ty, &column.name)
        })
        .collect::<SqlResult<Vec<Expr>>>()?;
    let plan = crate::optimizer::optimize(bound.plan)?;
    let mut records = Vec::new();
    let mut given = vec![false; table.columns.len()];
    for &target in targets {
        given[target] = true;
    }
    for row in collect(plan, work_mem, txn)? {
        let mut record = new_record(table, &given, sequences)?;
        for (expr, &target) in exprs.iter().zip(targets) {
            record[target] = expr.eval(&row)?;
        }
        records.push(record);
    }
    Ok(records)
}

/// For each new row (key, values), the key of a stored row it conflicts with on one of the
/// unique `indexes`, if any (their entry keys locked first, as [`existing_rows`] does).
fn stored_index_conflicts(
    txn: &mut dyn Transaction,
    table: &Table,
    indexes: &[Index],
    rows: &[(Vec<u8>, Vec<Value>)],
) -> SqlResult<Vec<Option<Vec<u8>>>> {
    if indexes.is_empty() {
        return Ok(vec![None; rows.len()]);
    }
    let mut wanted = Vec::new();
    for (i, (key, record)) in rows.iter().enumerate() {
        for index in indexes {
            let e = entry(table, index, record, key);
            if e.is_unique_key() {
                wanted.push((i, e));
            }
        }
    }
    let keys: Vec<Vec<u8>> = wanted.iter().map(|(_, e)| e.key.clone()).collect();
    let stored = existing_rows(txn, &keys)?;
    let mut conflicts = vec![None; rows.len()];
    for ((i, _), stored) in wanted.into_iter().zip(stored) {
        // An entry leading to the key this row would take is a conflict too: that stored
        // row has the value.
        if let Some(row) = stored
            && conflicts[i].is_none()
        {
            let mut row_key = row_prefix(table.id);
            row_key.extend_from_slice(&row);
            conflicts[i] = Some(row_key);
        }
    }
    Ok(conflicts)
}

/// The rows stored under `keys` that new rows would collide with. A pessimistic transaction
/// locks the keys first and sees their newest committed versions (waiting for a concurrent
/// insert to commit or roll back, as PostgreSQL's unique check does); an optimistic one reads
/// its snapshot, and its commit fails if another transaction wrote one of the keys since.
pub fn existing_rows(
    txn: &mut dyn Transaction,
    keys: &[Vec<u8>],
) -> SqlResult<Vec<Option<Vec<u8>>>> {
    match txn.lock_for_write(keys, LockPurpose::Insert)? {
        Some(newest) => Ok(newest),
        None => Ok(txn.batch_get(keys)?),
    }
}
