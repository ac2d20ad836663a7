//! `RETURNING`: an INSERT, UPDATE or DELETE returns rows computed from each row it wrote
//! (the new values) or deleted (the old values), by the clause's select list over the
//! table's columns (`*`, expressions, aliases), in the order the statement handled the rows.
//! The command tag stays the statement's (`INSERT 0 3` with three rows).
//!
//! Not implemented: subqueries in RETURNING (0A000).

use sqlparser::ast;

use super::{ColumnInfo, StatementResult};
use crate::bind::bind_projection;
use crate::error::{SqlError, SqlResult};
use crate::expr::Expr;
use crate::scope::Scope;
use crate::types::{SqlType, Value};

/// A bound RETURNING list.
pub struct Returning {
    exprs: Vec<Expr>,
    columns: Vec<(String, SqlType)>,
}

impl Returning {
    /// Binds `items` over the table's scope (its columns in table order).
    pub fn bind(items: &Option<Vec<ast::SelectItem>>, scope: &Scope) -> SqlResult<Option<Self>> {
        let Some(items) = items else {
            return Ok(None);
        };
        let outputs = bind_projection(items, scope)?;
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported("subqueries in RETURNING"));
        }
        Ok(Some(Returning {
            exprs: outputs.iter().map(|o| o.expr.clone()).collect(),
            columns: outputs.into_iter().map(|o| (o.name, o.ty)).collect(),
        }))
    }
}

/// The statement's result: its tag, with the returned rows if there is a RETURNING list.
pub fn result<'a>(
    returning: Option<&Returning>,
    rows: impl IntoIterator<Item = &'a [Value]>,
    tag: String,
) -> SqlResult<StatementResult> {
    let Some(returning) = returning else {
        return Ok(StatementResult::command(tag));
    };
    let rows = rows
        .into_iter()
        .map(|row| {
            returning
                .exprs
                .iter()
                .zip(&returning.columns)
                .map(|(expr, (_, ty))| Ok(expr.eval(row)?.to_pg_text(*ty)))
                .collect::<SqlResult<Vec<Option<String>>>>()
        })
        .collect::<SqlResult<Vec<_>>>()?;
    Ok(StatementResult::Rows {
        columns: returning
            .columns
            .iter()
            .map(|(name, ty)| ColumnInfo::new(name.clone(), *ty))
            .collect(),
        rows,
        tag,
    })
}
