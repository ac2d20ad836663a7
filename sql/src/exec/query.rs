//! Queries and EXPLAIN: bind → optimize → execute, and the rows as PostgreSQL text.

use sqlparser::ast;

use kv::Transaction;

use super::operator::build;
use super::{ColumnInfo, StatementResult};
use crate::bind::Binder;
use crate::error::{SqlError, SqlResult};
use crate::optimizer::optimize;
use crate::plan::explain::explain;
use crate::types::SqlType;

/// Runs a query (SELECT, VALUES, set operations).
pub fn execute(txn: &mut dyn Transaction, query: &ast::Query) -> SqlResult<StatementResult> {
    let bound = Binder::new(txn).bind_query(query, None)?;
    let plan = optimize(bound.plan)?;
    let mut operator = build(plan);
    let mut rows = Vec::new();
    while let Some(row) = operator.next(txn)? {
        rows.push(
            row.iter()
                .zip(&bound.columns)
                .map(|(value, (_, ty))| value.to_pg_text(*ty))
                .collect(),
        );
    }
    let columns = bound
        .columns
        .iter()
        .map(|(name, ty)| ColumnInfo::new(name.clone(), *ty))
        .collect();
    let tag = format!("SELECT {}", rows.len());
    Ok(StatementResult::Rows { columns, rows, tag })
}

/// `EXPLAIN query`: the optimized plan, one line per row of a `QUERY PLAN` column.
pub fn explain_statement(
    txn: &mut dyn Transaction,
    statement: &ast::Statement,
    analyze: bool,
) -> SqlResult<StatementResult> {
    if analyze {
        return Err(SqlError::unsupported("EXPLAIN ANALYZE"));
    }
    let ast::Statement::Query(query) = statement else {
        return Err(SqlError::unsupported(format!(
            "EXPLAIN of {}",
            super::first_words(statement)
        )));
    };
    let bound = Binder::new(txn).bind_query(query, None)?;
    let plan = optimize(bound.plan)?;
    let rows: Vec<Vec<Option<String>>> =
        explain(&plan).into_iter().map(|l| vec![Some(l)]).collect();
    let tag = "EXPLAIN".to_string();
    Ok(StatementResult::Rows {
        columns: vec![ColumnInfo::new("QUERY PLAN", SqlType::Text)],
        rows,
        tag,
    })
}
