//! INSERT … VALUES.

use sqlparser::ast;

use kv::Transaction;

use super::scan::key_for_row;
use super::{StatementResult, refuse_returning, table_name};
use crate::catalog::{self, Table};
use crate::encoding::encode_row;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Scope, bind, ident_name};
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
            ));
        }
    }
    Ok(())
}

/// The error for a second row with the same primary key.
pub fn duplicate_key(table: &Table, values: &[Value]) -> SqlError {
    let names: Vec<&str> = table
        .primary_key
        .iter()
        .map(|&i| table.columns[i].name.as_str())
        .collect();
    let shown: Vec<String> = table
        .primary_key
        .iter()
        .map(|&i| {
            values[i]
                .to_pg_text(table.columns[i].ty)
                .unwrap_or_else(|| "null".into())
        })
        .collect();
    SqlError::new(
        sqlstate::UNIQUE_VIOLATION,
        format!(
            "duplicate key value violates unique constraint \"{}\" (Key ({})=({}) already exists.)",
            table.pkey_name(),
            names.join(", "),
            shown.join(", ")
        ),
    )
}

fn is_default_keyword(expr: &ast::Expr) -> bool {
    matches!(expr, ast::Expr::Identifier(ident)
        if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default"))
}

pub fn execute(txn: &mut dyn Transaction, insert: &ast::Insert) -> SqlResult<StatementResult> {
    refuse_returning(&insert.returning)?;
    if insert.on.is_some() {
        return Err(SqlError::unsupported("INSERT … ON CONFLICT"));
    }
    if insert.overriding.is_some() || insert.table_alias.is_some() {
        return Err(SqlError::unsupported("this form of INSERT"));
    }
    let ast::TableObject::TableName(name) = &insert.table else {
        return Err(SqlError::unsupported("INSERT into a table function"));
    };
    let table = catalog::require_table(txn, &table_name(name)?)?;

    // Target columns: the list given, or all columns in order.
    let targets: Vec<usize> = if insert.columns.is_empty() {
        (0..table.columns.len()).collect()
    } else {
        let mut targets = Vec::new();
        for column in &insert.columns {
            let Some(ast::ObjectNamePart::Identifier(ident)) = column.0.last() else {
                return Err(SqlError::unsupported(format!("column reference {column}")));
            };
            let name = ident_name(ident);
            let index = table.column_index(&name).ok_or_else(|| {
                SqlError::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!(
                        "column \"{name}\" of relation \"{}\" does not exist",
                        table.name
                    ),
                )
            })?;
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
    let ast::SetExpr::Values(values) = source.body.as_ref() else {
        return Err(SqlError::unsupported("INSERT … SELECT"));
    };
    if source.order_by.is_some() || source.limit_clause.is_some() || source.with.is_some() {
        return Err(SqlError::unsupported("this form of INSERT … VALUES"));
    }

    let start_ts = txn.start_ts();
    let mut count = 0u64;
    for row in &values.rows {
        let exprs = &row.content;
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
        let mut record: Vec<Value> = table.columns.iter().map(|c| c.default.clone()).collect();
        for (&index, expr) in targets.iter().zip(exprs) {
            if is_default_keyword(expr) {
                continue;
            }
            let column = &table.columns[index];
            let bound =
                bind(expr, &Scope::empty())?.coerce_for_assignment(column.ty, &column.name)?;
            record[index] = bound.eval(&[])?;
        }
        check_not_null(&table, &record)?;
        let key = key_for_row(&table, &record, start_ts);
        if txn.get(&key)?.is_some() {
            return Err(duplicate_key(&table, &record));
        }
        txn.put(key, encode_row(&record));
        count += 1;
    }
    Ok(StatementResult::command(format!("INSERT 0 {count}")))
}
