//! DELETE.

use sqlparser::ast;

use kv::Transaction;

use super::scan::{lock_rows, matching_rows};
use super::{StatementResult, refuse_returning, single_table};
use crate::catalog;
use crate::error::{SqlError, SqlResult};
use crate::expr::{Scope, bind};

pub fn execute(txn: &mut dyn Transaction, delete: &ast::Delete) -> SqlResult<StatementResult> {
    refuse_returning(&delete.returning)?;
    if delete.using.is_some()
        || delete.limit.is_some()
        || !delete.order_by.is_empty()
        || !delete.tables.is_empty()
    {
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
    let scope = Scope::table(&table, alias.as_deref());
    let filter = match &delete.selection {
        Some(expr) => Some(bind(expr, &scope)?.into_condition("WHERE")?),
        None => None,
    };
    let rows = matching_rows(txn, &table, filter.as_ref())?;
    let rows = lock_rows(txn, &table, rows, filter.as_ref())?;
    let count = rows.len();
    for row in rows {
        txn.delete(row.key);
    }
    Ok(StatementResult::command(format!("DELETE {count}")))
}
