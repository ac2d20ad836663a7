//! CHECK constraints: a boolean expression over a row's columns that every row written must
//! not make false (NULL passes, as in PostgreSQL); a row that makes it false fails with
//! 23514.
//!
//! A constraint is stored in the table's descriptor as SQL text ([`Check`]) and bound
//! against the table's columns when a statement writes rows (once per statement, by
//! [`crate::exec::row_writes`]). The expression may not contain subqueries or aggregates.
//!
//! Not here: `ALTER TABLE … ADD CONSTRAINT … CHECK` (checking the stored rows),
//! `NOT VALID`, and renaming a column a constraint uses (refused).

use serde::{Deserialize, Serialize};
use sqlparser::ast;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::catalog::Table;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, bind};
use crate::scope::{Scope, table_columns};
use crate::types::Value;

/// A CHECK constraint as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    /// The expression, as SQL text over the table's column names.
    pub expr: String,
}

/// `check`'s expression bound over a row of `table`.
pub fn bind_check(table: &Table, expr: &ast::Expr) -> SqlResult<Expr> {
    let (columns, relation) = table_columns(table, None, 0, 0);
    let scope = Scope::new(columns, vec![relation], None, None);
    let bound = bind(expr, &scope)?.into_condition("CHECK")?;
    if !scope.take_subqueries().is_empty() {
        return Err(SqlError::unsupported("subqueries in a CHECK constraint"));
    }
    Ok(bound)
}

fn parse(text: &str) -> SqlResult<ast::Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(text)
        .and_then(|mut parser| parser.parse_expr())
        .map_err(|e| {
            SqlError::new(
                sqlstate::DATA_CORRUPTED,
                format!("stored CHECK constraint does not parse: {e}"),
            )
        })
}

/// The table's constraints, bound, ready to check rows.
pub struct BoundChecks {
    checks: Vec<(String, Expr)>,
}

impl BoundChecks {
    /// The constraints in name order: the one a row breaks first is the one PostgreSQL
    /// reports.
    pub fn of(table: &Table) -> SqlResult<BoundChecks> {
        let mut checks = table
            .checks
            .iter()
            .map(|check| Ok((check.name.clone(), bind_check(table, &parse(&check.expr)?)?)))
            .collect::<SqlResult<Vec<_>>>()?;
        checks.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(BoundChecks { checks })
    }

    /// Fails with 23514 if `values` (a row of `table`) makes a constraint false.
    pub fn verify(&self, table: &Table, values: &[Value]) -> SqlResult<()> {
        for (name, expr) in &self.checks {
            if expr.eval(values)? == Value::Bool(false) {
                return Err(SqlError::new(
                    sqlstate::CHECK_VIOLATION,
                    format!(
                        "new row for relation \"{}\" violates check constraint \"{name}\"",
                        table.name
                    ),
                )
                .with_detail(crate::exec::insert::failing_row(table, values)));
            }
        }
        Ok(())
    }
}

/// Adds a CHECK constraint to `table` (checking it binds over the table), named `name` or
/// as PostgreSQL names it; 42710 if the table has a constraint of that name already.
/// Returns the name.
pub fn add(table: &mut Table, name: Option<String>, expr: &ast::Expr) -> SqlResult<String> {
    let bound = bind_check(table, expr)?;
    let taken: Vec<String> = table.checks.iter().map(|c| c.name.clone()).collect();
    let name = name.unwrap_or_else(|| default_name(table, &bound, &taken));
    if taken.contains(&name) {
        return Err(SqlError::duplicate_constraint(&name, &table.name));
    }
    table.checks.push(Check {
        name: name.clone(),
        expr: expr.to_string(),
    });
    Ok(name)
}

/// The columns (positions) a stored constraint reads.
pub fn columns_used(table: &Table, check: &Check) -> SqlResult<Vec<usize>> {
    Ok(bind_check(table, &parse(&check.expr)?)?.columns_used())
}

/// The name PostgreSQL gives an unnamed constraint: `{table}_{column}_check` when it reads one
/// column, else `{table}_check`; a number is appended until no constraint of the table has it.
pub fn default_name(table: &Table, expr: &Expr, taken: &[String]) -> String {
    let used = expr.columns_used();
    let base = match used.as_slice() {
        [only] => format!("{}_{}_check", table.name, table.columns[*only].name),
        _ => format!("{}_check", table.name),
    };
    crate::catalog::numbered_name(&base, |name| Ok(taken.iter().any(|t| t == name))).unwrap_or(base)
}
