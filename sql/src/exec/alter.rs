//! ALTER TABLE: `ADD [COLUMN] [IF NOT EXISTS]`, `DROP [COLUMN] [IF EXISTS]`, `RENAME
//! [COLUMN] … TO …`, `RENAME TO`, `ALTER [COLUMN] … SET DEFAULT / DROP DEFAULT / SET NOT NULL
//! / DROP NOT NULL`, several in one statement.
//!
//! No change rewrites rows. A stored row holds its values by *slot* (see
//! [`Table::slots`](crate::catalog::Table)): an added column takes a new slot, and rows
//! stored before it read the column's default at the time it was added (PostgreSQL's
//! "missing value"); a dropped column leaves its slot unused. A change to what a writer must
//! write (a column added or dropped, an index dropped with its column, NOT NULL set) raises
//! the table's write version, so a transaction that wrote under the old descriptor fails
//! with 40001 instead of committing rows of the old shape (see [`crate::schema_change`]).
//!
//! `SET NOT NULL`, and `ADD COLUMN … NOT NULL` without a default, must also find that no
//! stored row breaks the constraint, while other sessions may be writing. Outside a
//! transaction block they run in steps, as an index build does: one transaction makes
//! writers enforce the constraint (raising the write version), a second reads the table and,
//! if a row breaks it, a third takes the change back (23502). In a transaction block they
//! are done in the block's transaction only on a table the block created.
//!
//! `ADD CONSTRAINT … CHECK (…) [NOT VALID]` is checked against the stored rows in the same
//! steps (unless `NOT VALID`); `ADD CONSTRAINT … UNIQUE (…)` builds its index online as
//! CREATE UNIQUE INDEX does; `DROP CONSTRAINT` drops a CHECK or a UNIQUE constraint (and its
//! index).
//!
//! Not here: changing a column's type, primary keys and foreign keys (`ADD CONSTRAINT …
//! PRIMARY KEY/FOREIGN KEY`, `ADD COLUMN … UNIQUE/PRIMARY KEY/REFERENCES`), identity columns
//! added to an existing table, dropping a primary-key column.

use sqlparser::ast;

use kv::{Transaction, TransactionSource};

use super::ddl::{check_constraint, column_definition, unique_constraint};
use super::scan::scan_matching;
use super::{StatementResult, table_name};
use crate::catalog::{self, Table};
use crate::check;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Scope, bind, ident_name};
use crate::schema_change::{
    IndexSpec, build_index, build_index_in_block, in_own_transaction, table_created_by,
};
use crate::types::Value;

/// A check of every stored row against a constraint just added.
#[derive(Clone)]
enum Validation {
    /// No NULL in this column.
    NotNull(String),
    /// This CHECK constraint holds.
    Check(String),
}

/// What applying the operations asks for besides storing the descriptor.
#[derive(Default)]
struct Applied {
    /// Writers of the old descriptor must not commit.
    new_write_version: bool,
    /// What the stored rows must be checked for.
    validate: Option<Validation>,
    /// Index entries to delete (indexes dropped with their columns): (index ID).
    dropped_indexes: Vec<u64>,
}

pub fn alter_table(
    txn: &mut dyn Transaction,
    source: &dyn TransactionSource,
    in_block: bool,
    alter: &ast::AlterTable,
) -> SqlResult<StatementResult> {
    if alter.table_type.is_some() || alter.on_cluster.is_some() || alter.location.is_some() {
        return Err(SqlError::unsupported("this form of ALTER TABLE"));
    }
    let name = table_name(&alter.name)?;
    let Some(table) = catalog::get_table(txn, &name)? else {
        if alter.if_exists {
            return Ok(StatementResult::command("ALTER TABLE"));
        }
        return Err(SqlError::undefined_table(&name));
    };
    if let Some(built) = add_unique_constraint(txn, source, in_block, &table, &alter.operations) {
        return built;
    }
    let mut changed = table.clone();
    let applied = apply(txn, &mut changed, &alter.operations)?;
    let Some(validation) = applied.validate.clone() else {
        store(txn, &table, changed, &applied)?;
        return Ok(StatementResult::command("ALTER TABLE"));
    };
    if in_block {
        if !table_created_by(source, &table)? {
            return Err(SqlError::unsupported(
                "SET NOT NULL (or ADD COLUMN … NOT NULL without a default) inside a \
                 transaction block on a table the transaction did not create (the rows are \
                 checked in transactions of their own: run it outside a block)",
            ));
        }
        let changed = store(txn, &table, changed, &applied)?;
        validate(txn, &changed, &validation)?;
        return Ok(StatementResult::command("ALTER TABLE"));
    }
    // 1. Writers enforce the constraint from now on.
    let ops = &alter.operations;
    let enforced = in_own_transaction(source, |txn| {
        let current = catalog::require_table(txn, &name)?;
        let mut changed = current.clone();
        let applied = apply(txn, &mut changed, ops)?;
        store(txn, &current, changed, &applied)
    })?;
    // 2. No stored row breaks it.
    let checked = in_own_transaction(source, |txn| validate(txn, &enforced, &validation));
    if let Err(e) = checked {
        // 3. Take it back.
        in_own_transaction(source, |txn| {
            let Some(current) = catalog::get_table(txn, &name)? else {
                return Ok(());
            };
            if current.id != table.id {
                return Ok(());
            }
            let mut reverted = current.clone();
            match &validation {
                Validation::NotNull(column) => {
                    match reverted.columns.iter().position(|c| &c.name == column) {
                        // Added by this statement: gone again.
                        Some(i) if table.column_index(column).is_none() => {
                            drop_column(&mut reverted, i);
                        }
                        Some(i) => reverted.columns[i].nullable = true,
                        None => {}
                    }
                }
                Validation::Check(name) => reverted.checks.retain(|c| &c.name != name),
            }
            catalog::put_table_with_new_write_version(txn, reverted).map(|_| ())
        })?;
        return Err(e);
    }
    Ok(StatementResult::command("ALTER TABLE"))
}

/// `ADD CONSTRAINT [name] UNIQUE (…)`, the statement's only operation: a unique index built
/// online (or in the block's transaction, on a table the block created), as CREATE UNIQUE
/// INDEX does, that is the constraint. `None` if the statement is something else.
fn add_unique_constraint(
    txn: &mut dyn Transaction,
    source: &dyn TransactionSource,
    in_block: bool,
    table: &Table,
    operations: &[ast::AlterTableOperation],
) -> Option<SqlResult<StatementResult>> {
    let [
        ast::AlterTableOperation::AddConstraint {
            constraint: ast::TableConstraint::Unique(unique),
            ..
        },
    ] = operations
    else {
        return None;
    };
    let mut build = || -> SqlResult<StatementResult> {
        let (name, columns) = unique_constraint(unique, None)?;
        let spec = IndexSpec {
            table: table.name.clone(),
            name,
            columns,
            unique: true,
            if_not_exists: false,
            constraint: true,
        };
        if in_block {
            if !table_created_by(source, table)? {
                return Err(SqlError::unsupported(
                    "ADD CONSTRAINT … UNIQUE inside a transaction block on a table the \
                     transaction did not create (its index is built online, in transactions of \
                     its own: run it outside a block)",
                ));
            }
            build_index_in_block(txn, source, &spec)?;
        } else {
            build_index(source, &spec)?;
        }
        Ok(StatementResult::command("ALTER TABLE"))
    };
    Some(build())
}

/// Stores the changed descriptor of `table` (under its new name if it was renamed), with a
/// new write version if asked, and deletes the entries of dropped indexes.
fn store(
    txn: &mut dyn Transaction,
    table: &Table,
    changed: Table,
    applied: &Applied,
) -> SqlResult<Table> {
    if changed.name != table.name {
        catalog::rename_table(txn, table, &changed.name)?;
    }
    let changed = if applied.new_write_version {
        catalog::put_table_with_new_write_version(txn, changed)?
    } else {
        catalog::put_table(txn, &changed)?;
        changed
    };
    for &index_id in &applied.dropped_indexes {
        let start = crate::encoding::index_prefix(table.id, index_id);
        let end = kv::codec::memcomparable::prefix_end(&start).unwrap_or_default();
        for (key, _) in txn.scan(&start, Some(&end), usize::MAX)? {
            txn.delete(key);
        }
    }
    Ok(changed)
}

/// The error a stored row breaking a constraint is reported with, if it breaks it.
type RowTest = Box<dyn Fn(&[Value]) -> SqlResult<Option<SqlError>>>;

/// Fails if a stored row breaks the constraint: 23502 for a NULL in a NOT NULL column,
/// 23514 for a CHECK.
fn validate(txn: &mut dyn Transaction, table: &Table, validation: &Validation) -> SqlResult<()> {
    let mut only = table.clone();
    let breaks: RowTest = match validation {
        Validation::NotNull(column) => {
            let index = table
                .column_index(column)
                .ok_or_else(|| SqlError::undefined_column(column))?;
            let error = SqlError::new(
                sqlstate::NOT_NULL_VIOLATION,
                format!(
                    "column \"{column}\" of relation \"{}\" contains null values",
                    table.name
                ),
            );
            Box::new(move |row| Ok(row[index].is_null().then(|| error.clone())))
        }
        Validation::Check(name) => {
            only.checks.retain(|c| &c.name == name);
            let checks = check::BoundChecks::of(&only)?;
            let error = SqlError::new(
                sqlstate::CHECK_VIOLATION,
                format!(
                    "check constraint \"{name}\" of relation \"{}\" is violated by some row",
                    table.name
                ),
            );
            Box::new(move |row| match checks.verify(&only, row) {
                Ok(()) => Ok(None),
                Err(e) if e.code == sqlstate::CHECK_VIOLATION => Ok(Some(error.clone())),
                Err(e) => Err(e),
            })
        }
    };
    let mut rows = scan_matching(table, None);
    while let Some(row) = rows.next_stored(txn)? {
        if let Some(error) = breaks(&row.values)? {
            return Err(error);
        }
    }
    Ok(())
}

fn column_exists(table: &Table, name: &str) -> SqlError {
    SqlError::new(
        sqlstate::DUPLICATE_COLUMN,
        format!(
            "column \"{name}\" of relation \"{}\" already exists",
            table.name
        ),
    )
}

fn column_position(table: &Table, name: &str) -> SqlResult<usize> {
    table.column_index(name).ok_or_else(|| {
        SqlError::new(
            sqlstate::UNDEFINED_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                table.name
            ),
        )
    })
}

/// Removes column `i` from the descriptor: its slot stays taken, positions after it move
/// down in the primary key and the indexes.
fn drop_column(table: &mut Table, i: usize) {
    if table.slots.is_empty() {
        table.slots = (0..table.columns.len()).collect();
    }
    table.slot_count = table.slot_count.max(table.columns.len());
    table.columns.remove(i);
    table.slots.remove(i);
    let shift = |c: &mut usize| {
        if *c > i {
            *c -= 1;
        }
    };
    table.primary_key.iter_mut().for_each(shift);
    for index in &mut table.indexes {
        index.columns.iter_mut().for_each(shift);
    }
}

fn apply(
    txn: &mut dyn Transaction,
    table: &mut Table,
    operations: &[ast::AlterTableOperation],
) -> SqlResult<Applied> {
    let mut applied = Applied::default();
    let needs_check = |applied: &Applied| applied.validate.is_some();
    for operation in operations {
        if needs_check(&applied) {
            return Err(SqlError::unsupported(
                "SET NOT NULL (or ADD COLUMN … NOT NULL without a default) combined with \
                 other changes in one ALTER TABLE",
            ));
        }
        match operation {
            ast::AlterTableOperation::AddColumn {
                if_not_exists,
                column_def,
                column_position: None,
                ..
            } => {
                let name = ident_name(&column_def.name);
                if table.column_index(&name).is_some() {
                    if *if_not_exists {
                        continue;
                    }
                    return Err(column_exists(table, &name));
                }
                let definition = column_definition(column_def, &table.name)?;
                if definition.primary_key
                    || !definition.unique.is_empty()
                    || !definition.checks.is_empty()
                {
                    return Err(SqlError::unsupported(
                        "ADD COLUMN with PRIMARY KEY, UNIQUE or CHECK",
                    ));
                }
                let mut column = definition.column;
                if column.identity.is_some() {
                    return Err(SqlError::unsupported(
                        "adding an identity (SERIAL) column to an existing table",
                    ));
                }
                column.missing = column.default.clone();
                if !column.nullable && column.missing.is_null() {
                    applied.validate = Some(Validation::NotNull(name));
                }
                if table.slots.is_empty() {
                    table.slots = (0..table.columns.len()).collect();
                }
                let slot = table.slot_count.max(table.columns.len());
                table.slots.push(slot);
                table.slot_count = slot + 1;
                table.columns.push(column);
                applied.new_write_version = true;
            }
            ast::AlterTableOperation::DropColumn {
                column_names,
                if_exists,
                drop_behavior,
                ..
            } => {
                if matches!(drop_behavior, Some(ast::DropBehavior::Cascade)) {
                    return Err(SqlError::unsupported("DROP COLUMN … CASCADE"));
                }
                for ident in column_names {
                    let name = ident_name(ident);
                    let Some(i) = table.column_index(&name) else {
                        if *if_exists {
                            continue;
                        }
                        return Err(column_position(table, &name).unwrap_err());
                    };
                    if table.primary_key.contains(&i) {
                        return Err(SqlError::unsupported("dropping a primary-key column"));
                    }
                    if table.foreign_keys.iter().any(|fk| fk.columns.contains(&i))
                        || !table.referenced_by.is_empty()
                    {
                        return Err(SqlError::unsupported(
                            "dropping a column of a table with foreign keys or referenced by one",
                        ));
                    }
                    if table.columns.len() == 1 {
                        return Err(SqlError::unsupported("dropping a table's last column"));
                    }
                    // Indexes over the column go with it, as in PostgreSQL.
                    let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut table.indexes)
                        .into_iter()
                        .partition(|index| index.columns.contains(&i));
                    table.indexes = kept;
                    for index in gone {
                        catalog::unregister_index(txn, &index.name);
                        applied.dropped_indexes.push(index.id);
                    }
                    // So do CHECK constraints that read it.
                    let mut kept = Vec::new();
                    for check in std::mem::take(&mut table.checks) {
                        if !check::columns_used(table, &check)?.contains(&i) {
                            kept.push(check);
                        }
                    }
                    table.checks = kept;
                    drop_column(table, i);
                    applied.new_write_version = true;
                }
            }
            ast::AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let i = column_position(table, &ident_name(old_column_name))?;
                for c in &table.checks {
                    if check::columns_used(table, c)?.contains(&i) {
                        return Err(SqlError::unsupported(format!(
                            "renaming a column that CHECK constraint \"{}\" uses",
                            c.name
                        )));
                    }
                }
                let new = ident_name(new_column_name);
                if table.column_index(&new).is_some() {
                    return Err(column_exists(table, &new));
                }
                table.columns[i].name = new;
            }
            ast::AlterTableOperation::RenameTable {
                table_name: ast::RenameTableNameKind::To(new) | ast::RenameTableNameKind::As(new),
            } => {
                if operations.len() > 1 {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "RENAME TO cannot be combined with other ALTER TABLE operations",
                    ));
                }
                if !table.foreign_keys.is_empty() || !table.referenced_by.is_empty() {
                    return Err(SqlError::unsupported(
                        "renaming a table with foreign keys or referenced by one",
                    ));
                }
                if !table.primary_key.is_empty() {
                    table.pkey = Some(table.pkey_name());
                }
                table.name = table_name(new)?;
            }
            ast::AlterTableOperation::AlterColumn { column_name, op } => {
                let i = column_position(table, &ident_name(column_name))?;
                match op {
                    ast::AlterColumnOperation::SetDefault { value } => {
                        if table.columns[i].identity.is_some() {
                            return Err(SqlError::unsupported("a default on an identity column"));
                        }
                        let column = &table.columns[i];
                        let default = bind(value, &Scope::empty())?
                            .coerce_for_assignment(column.ty, &column.name)?
                            .eval(&[])?;
                        table.columns[i].default = default;
                    }
                    ast::AlterColumnOperation::DropDefault => {
                        table.columns[i].default = Value::Null;
                    }
                    ast::AlterColumnOperation::DropNotNull => {
                        if table.primary_key.contains(&i) {
                            return Err(SqlError::new(
                                sqlstate::INVALID_TABLE_DEFINITION,
                                format!("column \"{}\" is in a primary key", table.columns[i].name),
                            ));
                        }
                        table.columns[i].nullable = true;
                    }
                    ast::AlterColumnOperation::SetNotNull => {
                        if table.columns[i].nullable {
                            table.columns[i].nullable = false;
                            applied.validate =
                                Some(Validation::NotNull(table.columns[i].name.clone()));
                            applied.new_write_version = true;
                        }
                    }
                    other => {
                        return Err(SqlError::unsupported(format!("ALTER COLUMN … {other}")));
                    }
                }
            }
            ast::AlterTableOperation::AddConstraint {
                constraint: ast::TableConstraint::Check(check),
                not_valid,
            } => {
                let (name, expr) = check_constraint(check)?;
                let name = check::add(table, name, &expr)?;
                applied.new_write_version = true;
                if !not_valid {
                    applied.validate = Some(Validation::Check(name));
                }
            }
            ast::AlterTableOperation::AddConstraint {
                constraint: ast::TableConstraint::Unique(_),
                ..
            } => {
                // Built by `add_unique_constraint`, alone.
                return Err(SqlError::unsupported(
                    "ADD CONSTRAINT … UNIQUE combined with other changes in one ALTER TABLE",
                ));
            }
            ast::AlterTableOperation::DropConstraint {
                if_exists,
                name,
                drop_behavior,
            } => {
                if matches!(drop_behavior, Some(ast::DropBehavior::Cascade)) {
                    return Err(SqlError::unsupported("DROP CONSTRAINT … CASCADE"));
                }
                let name = ident_name(name);
                if let Some(i) = table.checks.iter().position(|c| c.name == name) {
                    table.checks.remove(i);
                } else if let Some(i) = table
                    .indexes
                    .iter()
                    .position(|index| index.constraint && index.name == name)
                {
                    let index = table.indexes.remove(i);
                    catalog::unregister_index(txn, &index.name);
                    applied.dropped_indexes.push(index.id);
                    applied.new_write_version = true;
                } else if !table.primary_key.is_empty() && table.pkey_name() == name {
                    return Err(SqlError::unsupported("dropping a primary key"));
                } else if !*if_exists {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!(
                            "constraint \"{name}\" of relation \"{}\" does not exist",
                            table.name
                        ),
                    ));
                }
            }
            other => {
                return Err(SqlError::unsupported(format!("ALTER TABLE … {other}")));
            }
        }
    }
    if needs_check(&applied) && operations.len() > 1 {
        return Err(SqlError::unsupported(
            "SET NOT NULL (or ADD COLUMN … NOT NULL without a default) combined with other \
             changes in one ALTER TABLE",
        ));
    }
    Ok(applied)
}
