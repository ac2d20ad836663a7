//! DELETE.

use sqlparser::ast;

use kv::Transaction;

use super::returning::{self, Returning};
use super::row_writes::{self, RowChange};
use super::scan::target_rows;
use super::{StatementResult, WorkMem, dml_scope, single_table};
use crate::bind::Binder;
use crate::catalog;
use crate::error::{SqlError, SqlResult};
use crate::expr::bind;

pub fn execute(
    txn: &mut dyn Transaction,
    delete: &ast::Delete,
    work_mem: WorkMem,
) -> SqlResult<StatementResult> {
    if delete.limit.is_some() || !delete.order_by.is_empty() || !delete.tables.is_empty() {
        return Err(SqlError::unsupported("this form of DELETE"));
    }
    let from = match &delete.from {
        ast::FromTable::WithFromKeyword(from) | ast::FromTable::WithoutKeyword(from) => from,
    };
    let [target] = from.as_slice() else {
        return Err(SqlError::unsupported("DELETE from several tables"));
    };
    let (name, alias) = single_table(target)?;
    let table = catalog::require_table(txn, &name)?;
    if let Some(using) = &delete.using {
        let statement = super::join_dml::JoinedDml {
            target,
            from: using,
            assignments: None,
            selection: delete.selection.as_ref(),
            returning: &delete.returning,
        };
        return super::join_dml::execute(txn, &table, statement, work_mem);
    }
    let (filter, subqueries, returning) = {
        let binder = Binder::new(txn);
        let scope = dml_scope(&table, alias.as_deref(), &binder);
        let filter = match &delete.selection {
            Some(expr) => Some(bind(expr, &scope)?.into_condition("WHERE")?),
            None => None,
        };
        let subqueries = scope.take_subqueries();
        let returning = Returning::bind(&delete.returning, &scope)?;
        (filter, subqueries, returning)
    };
    let rows = target_rows(txn, &table, filter, &subqueries)?;
    let count = rows.len();
    let changes: Vec<RowChange> = rows
        .iter()
        .map(|row| RowChange::delete(&row.key, &row.values))
        .collect();
    row_writes::apply(txn, &table, &changes)?;
    returning::result(
        returning.as_ref(),
        rows.iter().map(|r| r.values.as_slice()),
        format!("DELETE {count}"),
    )
}
