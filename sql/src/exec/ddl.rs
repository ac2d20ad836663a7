//! CREATE TABLE, DROP TABLE and TRUNCATE.
//!
//! Dropping a table deletes its rows but leaves its regions: regions never merge yet.

use sqlparser::ast;

use kv::Transaction;

use super::{StatementResult, table_name};
use crate::catalog::{self, Column, Identity, Index, IndexState, Table};
use crate::check;
use crate::encoding::{index_span, row_prefix, row_prefix_end};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Scope, bind, bind_type, ident_name};
use crate::foreign_key;
use crate::sequence::table_sequences;
use crate::types::{SqlType, Value};

/// The column names of a key or index (`ASC`/`DESC` and `NULLS …` are accepted; entries
/// are stored ascending, see [`crate::index`]).
pub fn key_columns(columns: &[ast::IndexColumn], what: &str) -> SqlResult<Vec<String>> {
    columns
        .iter()
        .map(|c| match &c.column.expr {
            ast::Expr::Identifier(ident) if c.operator_class.is_none() => Ok(ident_name(ident)),
            other => Err(SqlError::unsupported(format!(
                "{what} on expression {other}"
            ))),
        })
        .collect()
}

/// Positions of the named columns in `columns` (each once).
pub fn column_positions(columns: &[Column], names: &[String], what: &str) -> SqlResult<Vec<usize>> {
    let mut positions = Vec::with_capacity(names.len());
    for name in names {
        let position = columns
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| SqlError::undefined_column(name))?;
        if positions.contains(&position) {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{name}\" appears twice in {what}"),
            ));
        }
        positions.push(position);
    }
    Ok(positions)
}

/// A `CHECK` constraint: its name, if given, and expression.
pub(crate) fn check_constraint(
    check: &ast::CheckConstraint,
) -> SqlResult<(Option<String>, ast::Expr)> {
    if check.enforced == Some(false) {
        return Err(SqlError::unsupported("NOT ENFORCED constraints"));
    }
    Ok((check.name.as_ref().map(ident_name), (*check.expr).clone()))
}

/// A `UNIQUE` constraint: its columns (one for a column constraint, empty in the AST).
pub(crate) fn unique_constraint(
    unique: &ast::UniqueConstraint,
    column: Option<&str>,
) -> SqlResult<(Option<String>, Vec<String>)> {
    if unique.nulls_distinct == ast::NullsDistinctOption::NotDistinct {
        return Err(SqlError::unsupported("UNIQUE NULLS NOT DISTINCT"));
    }
    if !unique.include.is_empty() || unique.characteristics.is_some() {
        return Err(SqlError::unsupported("this form of UNIQUE constraint"));
    }
    let columns = match column {
        Some(column) => vec![column.to_string()],
        None => key_columns(&unique.columns, "unique constraint")?,
    };
    Ok((unique.name.as_ref().map(ident_name), columns))
}

/// `SERIAL`, `BIGSERIAL`, `SMALLSERIAL` (and `serial4`/`serial8`/`serial2`): the integer type
/// they stand for.
fn serial_type(data_type: &ast::DataType) -> Option<SqlType> {
    let ast::DataType::Custom(name, modifiers) = data_type else {
        return None;
    };
    let [ast::ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
        return None;
    };
    if !modifiers.is_empty() {
        return None;
    }
    match ident.value.to_ascii_lowercase().as_str() {
        "serial" | "serial4" => Some(SqlType::Int),
        "bigserial" | "serial8" => Some(SqlType::BigInt),
        "smallserial" | "serial2" => Some(SqlType::SmallInt),
        _ => None,
    }
}

/// A column as CREATE TABLE or ALTER TABLE … ADD COLUMN defines it, with the constraints its
/// definition declares.
pub struct ColumnDefinition {
    pub column: Column,
    pub primary_key: bool,
    /// `CHECK` constraints (name, if given, and expression).
    pub checks: Vec<(Option<String>, ast::Expr)>,
    /// `REFERENCES` constraints.
    pub references: Vec<ast::ForeignKeyConstraint>,
    /// `UNIQUE` (its constraint name, if given, and the column).
    pub unique: Vec<(Option<String>, Vec<String>)>,
}

pub fn column_definition(def: &ast::ColumnDef, name: &str) -> SqlResult<ColumnDefinition> {
    let column_name = ident_name(&def.name);
    let mut primary_key = false;
    let mut unique_constraints = Vec::new();
    let mut checks = Vec::new();
    let mut references = Vec::new();
    let (ty, identity) = match serial_type(&def.data_type) {
        Some(ty) => (ty, Some(Identity::ByDefault)),
        None => (bind_type(&def.data_type)?, None),
    };
    let mut column = Column {
        name: column_name.clone(),
        ty,
        nullable: identity.is_none(),
        default: Value::Null,
        identity,
        missing: Value::Null,
    };
    for option in &def.options {
        match &option.option {
            ast::ColumnOption::Null => column.nullable = true,
            ast::ColumnOption::NotNull => column.nullable = false,
            ast::ColumnOption::PrimaryKey(_) => primary_key = true,
            ast::ColumnOption::Unique(unique) => {
                unique_constraints.push(unique_constraint(unique, Some(&column_name))?)
            }
            ast::ColumnOption::Check(check) => checks.push(check_constraint(check)?),
            ast::ColumnOption::ForeignKey(fk) => references.push(fk.clone()),
            ast::ColumnOption::Generated {
                generated_as: generated @ (ast::GeneratedAs::Always | ast::GeneratedAs::ByDefault),
                sequence_options,
                generation_expr: None,
                ..
            } => {
                if sequence_options.as_ref().is_some_and(|o| !o.is_empty()) {
                    return Err(SqlError::unsupported("identity sequence options"));
                }
                if !ty.is_integer() {
                    return Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "identity column type must be smallint, integer, or bigint (column \"{column_name}\")"
                        ),
                    ));
                }
                if column.identity.is_some() {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        format!(
                            "multiple identity specifications for column \"{column_name}\" of table \"{name}\""
                        ),
                    ));
                }
                column.identity = Some(match generated {
                    ast::GeneratedAs::Always => Identity::Always,
                    _ => Identity::ByDefault,
                });
                column.nullable = false;
            }
            ast::ColumnOption::Default(_) if column.identity.is_some() => {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    format!(
                        "both default and identity specified for column \"{column_name}\" of table \"{name}\""
                    ),
                ));
            }
            ast::ColumnOption::Default(expr) => {
                let typed = bind(expr, &Scope::empty())?;
                let value = typed.coerce_for_assignment(ty, &column_name)?.eval(&[])?;
                column.default = value;
            }
            other => {
                return Err(SqlError::unsupported(format!("column option {other}")));
            }
        }
    }
    Ok(ColumnDefinition {
        column,
        primary_key,
        checks,
        references,
        unique: unique_constraints,
    })
}

/// Creates a table; its first row key goes to `splits_after_commit`, so that once the
/// transaction commits the table starts a region of its own (as in TiDB).
pub fn create_table(
    txn: &mut dyn Transaction,
    create: &ast::CreateTable,
    splits_after_commit: &mut Vec<Vec<u8>>,
) -> SqlResult<StatementResult> {
    if create.or_replace
        || create.temporary
        || create.external
        || create.query.is_some()
        || create.like.is_some()
        || create.clone.is_some()
        || create.inherits.is_some()
        || create.partition_by.is_some()
        || create.partition_of.is_some()
    {
        return Err(SqlError::unsupported(
            "this form of CREATE TABLE (only column definitions and PRIMARY KEY)",
        ));
    }
    let name = table_name(&create.name)?;
    if create.if_not_exists && catalog::get_table(txn, &name)?.is_some() {
        return Ok(StatementResult::command("CREATE TABLE"));
    }
    if create.columns.is_empty() {
        return Err(SqlError::unsupported("a table without columns"));
    }
    let mut columns: Vec<Column> = Vec::new();
    let mut uniques: Vec<(Option<String>, Vec<String>)> = Vec::new();
    let mut checks: Vec<(Option<String>, ast::Expr)> = Vec::new();
    let mut references: Vec<(Option<String>, ast::ForeignKeyConstraint)> = Vec::new();
    let mut primary_key: Option<Vec<String>> = None;
    let mut set_primary_key = |cols: Vec<String>| {
        if primary_key.is_some() {
            return Err(SqlError::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        primary_key = Some(cols);
        Ok(())
    };
    for def in &create.columns {
        let column_name = ident_name(&def.name);
        if columns.iter().any(|c| c.name == column_name) {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{column_name}\" specified more than once"),
            ));
        }
        let definition = column_definition(def, &name)?;
        if definition.primary_key {
            set_primary_key(vec![column_name.clone()])?;
        }
        uniques.extend(definition.unique);
        checks.extend(definition.checks);
        references.extend(
            definition
                .references
                .into_iter()
                .map(|fk| (Some(column_name.clone()), fk)),
        );
        columns.push(definition.column);
    }
    for constraint in &create.constraints {
        match constraint {
            ast::TableConstraint::PrimaryKey(pk) => {
                set_primary_key(key_columns(&pk.columns, "primary key")?)?
            }
            ast::TableConstraint::Unique(unique) => uniques.push(unique_constraint(unique, None)?),
            ast::TableConstraint::Check(check) => checks.push(check_constraint(check)?),
            ast::TableConstraint::ForeignKey(fk) => references.push((None, fk.clone())),
            other => return Err(SqlError::unsupported(format!("table constraint {other}"))),
        }
    }
    let key_indexes = column_positions(
        &columns,
        &primary_key.unwrap_or_default(),
        "primary key constraint",
    )?;
    for &index in &key_indexes {
        columns[index].nullable = false;
    }
    let mut table = Table::new(0, name, columns, key_indexes);
    let mut names: Vec<String> = Vec::new();
    for (name, unique_columns) in uniques {
        let positions = column_positions(&table.columns, &unique_columns, "unique constraint")?;
        let name = match name {
            Some(name) => name,
            None => catalog::free_index_name(txn, &table, &positions, "key", &names)?,
        };
        if names.contains(&name) || name == table.name {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        names.push(name.clone());
        table.indexes.push(Index {
            id: table.next_index_id,
            name,
            columns: positions,
            unique: true,
            state: IndexState::Public,
            constraint: true,
        });
        table.next_index_id += 1;
    }
    for (name, expr) in checks {
        check::add(&mut table, name, &expr)?;
    }
    let mut fk_names: Vec<String> = Vec::new();
    for (column, fk) in &references {
        let defined = foreign_key::define(txn, &table, fk, column.as_deref(), &fk_names)?;
        if fk_names.contains(&defined.name) {
            return Err(SqlError::duplicate_constraint(&defined.name, &table.name));
        }
        fk_names.push(defined.name.clone());
        table.foreign_keys.push(defined);
    }
    let table = catalog::create_table(txn, table)?;
    // Each referenced table learns of the new one; its writers of the old descriptor (who
    // would not look here) fail.
    let mut parents: Vec<String> = table
        .foreign_keys
        .iter()
        .map(|fk| fk.parent.clone())
        .collect();
    parents.dedup();
    for parent in parents {
        let mut parent = catalog::require_table(txn, &parent)?;
        if !parent.referenced_by.contains(&table.name) {
            parent.referenced_by.push(table.name.clone());
            catalog::put_table_with_new_write_version(txn, parent)?;
        }
    }
    splits_after_commit.push(row_prefix(table.id));
    Ok(StatementResult::command("CREATE TABLE"))
}

pub fn drop(
    txn: &mut dyn Transaction,
    object_type: ast::ObjectType,
    if_exists: bool,
    names: &[ast::ObjectName],
    cascade: bool,
) -> SqlResult<StatementResult> {
    if object_type != ast::ObjectType::Table {
        return Err(SqlError::unsupported(format!("DROP {object_type}")));
    }
    if cascade {
        return Err(SqlError::unsupported("DROP … CASCADE"));
    }
    // Resolve every name first: a missing table fails the statement before anything is dropped.
    let mut tables = Vec::new();
    for name in names {
        let name = table_name(name)?;
        match catalog::get_table(txn, &name)? {
            Some(table) => tables.push(table),
            None if if_exists => {}
            None => return Err(SqlError::undefined_table(&name)),
        }
    }
    let dropped: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    for table in &tables {
        let mut depending = Vec::new();
        for child in table.referenced_by.iter().filter(|c| !dropped.contains(c)) {
            if let Some(child) = catalog::get_table(txn, child)? {
                for fk in child
                    .foreign_keys
                    .iter()
                    .filter(|fk| fk.parent_id == table.id)
                {
                    depending.push(format!(
                        "constraint {} on table {} depends on table {}",
                        fk.name, child.name, table.name
                    ));
                }
            }
        }
        if !depending.is_empty() {
            return Err(SqlError::new(
                sqlstate::DEPENDENT_OBJECTS_STILL_EXIST,
                format!(
                    "cannot drop table {} because other objects depend on it",
                    table.name
                ),
            )
            .with_detail(depending.join("\n")));
        }
    }
    for table in &tables {
        for fk in &table.foreign_keys {
            if dropped.contains(&fk.parent) {
                continue;
            }
            if let Some(mut parent) = catalog::get_table(txn, &fk.parent)? {
                parent.referenced_by.retain(|c| *c != table.name);
                catalog::put_table(txn, &parent)?;
            }
        }
    }
    for table in tables {
        catalog::drop_table(txn, &table);
        delete_all_rows(txn, &table)?;
        let (start, end) = table_sequences(table.id);
        for (key, _) in txn.scan(&start, Some(&end), usize::MAX)? {
            txn.delete(key);
        }
    }
    Ok(StatementResult::command("DROP TABLE"))
}

/// Deletes every row of the table and every index entry, in the statement's transaction.
fn delete_all_rows(txn: &mut dyn Transaction, table: &Table) -> SqlResult<()> {
    catalog::check_writes_at_commit(txn, table);
    for (start, end) in [
        (row_prefix(table.id), row_prefix_end(table.id)),
        index_span(table.id),
    ] {
        for (key, _) in txn.scan(&start, Some(&end), usize::MAX)? {
            txn.delete(key);
        }
    }
    Ok(())
}

/// `TRUNCATE [TABLE] t [, …]`: every row of each table deleted, transactionally (a rollback
/// brings them back). There are no identity columns or foreign keys yet, so `RESTART
/// IDENTITY` and `CASCADE` change nothing more.
pub fn truncate(txn: &mut dyn Transaction, truncate: &ast::Truncate) -> SqlResult<StatementResult> {
    if truncate.partitions.is_some() || truncate.on_cluster.is_some() {
        return Err(SqlError::unsupported("this form of TRUNCATE"));
    }
    if truncate.identity == Some(ast::TruncateIdentityOption::Restart) {
        return Err(SqlError::unsupported(
            "TRUNCATE … RESTART IDENTITY (identity values are handed out in batches per node)",
        ));
    }
    // Resolve every name first: a missing table fails the statement before anything is
    // deleted.
    let mut tables = Vec::new();
    for target in &truncate.table_names {
        let name = table_name(&target.name)?;
        match catalog::get_table(txn, &name)? {
            Some(table) => tables.push(table),
            None if truncate.if_exists => {}
            None => return Err(SqlError::undefined_table(&name)),
        }
    }
    let truncated: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
    for table in &tables {
        if table
            .referenced_by
            .iter()
            .any(|c| !truncated.contains(&c.as_str()))
        {
            return Err(SqlError::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "cannot truncate a table referenced in a foreign key constraint",
            )
            .with_detail(format!(
                "Table \"{}\" references \"{}\".",
                table.referenced_by[0], table.name
            )));
        }
    }
    for table in &tables {
        delete_all_rows(txn, table)?;
    }
    Ok(StatementResult::command("TRUNCATE TABLE"))
}
