//! SELECT: one table or none, WHERE, ORDER BY, LIMIT/OFFSET, FOR UPDATE.

use std::cmp::Ordering;

use sqlparser::ast;

use kv::Transaction;

use super::scan::{lock_rows, matching_rows};
use super::{ColumnInfo, StatementResult, single_table};
use crate::catalog::{self, Table};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, Scope, Typed, bind, ident_name};
use crate::types::{SqlType, Value};

/// One output column: its expression, name and type.
struct Output {
    expr: Expr,
    name: String,
    ty: SqlType,
}

struct SortKey {
    expr: Expr,
    descending: bool,
    nulls_first: bool,
}

fn output_name(expr: &ast::Expr) -> String {
    match expr {
        ast::Expr::Identifier(ident) => ident_name(ident),
        ast::Expr::CompoundIdentifier(parts) => parts.last().map(ident_name).unwrap_or_default(),
        ast::Expr::Nested(inner) => output_name(inner),
        ast::Expr::Cast { expr, .. } if matches!(**expr, ast::Expr::Identifier(_)) => {
            output_name(expr)
        }
        // As PostgreSQL names them: a function call by its name, a CASE "case".
        ast::Expr::Function(f) => match f.name.0.last() {
            Some(ast::ObjectNamePart::Identifier(ident)) => ident_name(ident),
            _ => "?column?".into(),
        },
        ast::Expr::Case { .. } => "case".into(),
        _ => "?column?".into(),
    }
}

fn output(typed: Typed, name: String) -> Output {
    Output {
        ty: typed.resolved_type(),
        expr: typed.expr,
        name,
    }
}

/// Whether `t.*` names the table in scope (by its alias if it has one).
fn qualifier_matches(kind: &ast::SelectItemQualifiedWildcardKind, scope: &Scope) -> bool {
    let ast::SelectItemQualifiedWildcardKind::ObjectName(name) = kind else {
        return false;
    };
    let Ok(qualifier) = super::table_name(name) else {
        return false;
    };
    scope
        .table
        .is_some_and(|t| scope.alias.unwrap_or(&t.name) == qualifier)
}

fn bind_projection(
    items: &[ast::SelectItem],
    scope: &Scope,
    table: Option<&Table>,
) -> SqlResult<Vec<Output>> {
    let mut outputs = Vec::new();
    for item in items {
        match item {
            ast::SelectItem::UnnamedExpr(expr) => {
                outputs.push(output(bind(expr, scope)?, output_name(expr)))
            }
            ast::SelectItem::ExprWithAlias { expr, alias } => {
                outputs.push(output(bind(expr, scope)?, ident_name(alias)))
            }
            ast::SelectItem::QualifiedWildcard(kind, _) if !qualifier_matches(kind, scope) => {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_TABLE,
                    format!("missing FROM-clause entry for table \"{kind}\""),
                ));
            }
            ast::SelectItem::Wildcard(options) | ast::SelectItem::QualifiedWildcard(_, options)
                if options.opt_ilike.is_none()
                    && options.opt_exclude.is_none()
                    && options.opt_except.is_none()
                    && options.opt_replace.is_none()
                    && options.opt_rename.is_none()
                    && options.opt_alias.is_none() =>
            {
                let Some(table) = table else {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "SELECT * with no tables specified is not valid",
                    ));
                };
                for (i, column) in table.columns.iter().enumerate() {
                    outputs.push(Output {
                        expr: Expr::Column(i),
                        name: column.name.clone(),
                        ty: column.ty,
                    });
                }
            }
            other => return Err(SqlError::unsupported(format!("select item {other}"))),
        }
    }
    Ok(outputs)
}

/// Evaluates a LIMIT or OFFSET count. NULL means no limit (LIMIT) or no offset (OFFSET).
fn constant_count(
    expr: &ast::Expr,
    what: &str,
    if_null: usize,
    negative_code: &'static str,
) -> SqlResult<usize> {
    let bound = bind(expr, &Scope::empty())?.coerce_for_assignment(SqlType::BigInt, what)?;
    match bound.eval(&[])? {
        Value::Int(n) if n >= 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        Value::Int(_) => Err(SqlError::new(
            negative_code,
            format!("{what} must not be negative"),
        )),
        _ => Ok(if_null),
    }
}

fn bind_order_by(
    order_by: &ast::OrderBy,
    scope: &Scope,
    outputs: &[Output],
) -> SqlResult<Vec<SortKey>> {
    let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
        return Err(SqlError::unsupported("ORDER BY ALL"));
    };
    let mut keys = Vec::new();
    for item in exprs {
        if item.with_fill.is_some() {
            return Err(SqlError::unsupported("ORDER BY … WITH FILL"));
        }
        let descending = match &item.options.sort {
            None | Some(ast::OrderBySort::Asc) => false,
            Some(ast::OrderBySort::Desc) => true,
            Some(_) => return Err(SqlError::unsupported("ORDER BY … USING")),
        };
        let nulls_first = item.options.nulls_first.unwrap_or(descending);
        // ORDER BY 2 (output position) and ORDER BY alias refer to output columns.
        let expr = match &item.expr {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ast::Value::Number(text, _) = &v.value else {
                    unreachable!()
                };
                let position: usize = text.parse().unwrap_or(0);
                match outputs.get(position.wrapping_sub(1)) {
                    Some(out) => out.expr.clone(),
                    None => {
                        return Err(SqlError::new(
                            sqlstate::INVALID_COLUMN_REFERENCE,
                            format!("ORDER BY position {text} is not in select list"),
                        ));
                    }
                }
            }
            ast::Expr::Identifier(ident) if outputs.iter().any(|o| o.name == ident_name(ident)) => {
                let name = ident_name(ident);
                let matching: Vec<&Output> = outputs.iter().filter(|o| o.name == name).collect();
                if matching.len() > 1 && matching.iter().any(|o| o.expr != matching[0].expr) {
                    return Err(SqlError::new(
                        sqlstate::AMBIGUOUS_COLUMN,
                        format!("ORDER BY \"{name}\" is ambiguous"),
                    ));
                }
                matching[0].expr.clone()
            }
            other => bind(other, scope)?.expr,
        };
        keys.push(SortKey {
            expr,
            descending,
            nulls_first,
        });
    }
    Ok(keys)
}

fn compare_keys(a: &[Value], b: &[Value], keys: &[SortKey]) -> Ordering {
    for (i, key) in keys.iter().enumerate() {
        let (x, y) = (&a[i], &b[i]);
        let ordering = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) => {
                if key.nulls_first {
                    Ordering::Less
                } else {
                    Ordering::Greater
                }
            }
            (false, true) => {
                if key.nulls_first {
                    Ordering::Greater
                } else {
                    Ordering::Less
                }
            }
            (false, false) => {
                let o = x.sort_cmp(y);
                if key.descending { o.reverse() } else { o }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

fn check_select_shape(select: &ast::Select) -> SqlResult<()> {
    let grouped = match &select.group_by {
        ast::GroupByExpr::Expressions(exprs, modifiers) => {
            !exprs.is_empty() || !modifiers.is_empty()
        }
        ast::GroupByExpr::All(_) => true,
    };
    if grouped || select.having.is_some() {
        return Err(SqlError::unsupported("GROUP BY / HAVING"));
    }
    if select.distinct.is_some() {
        return Err(SqlError::unsupported("SELECT DISTINCT"));
    }
    if select.into.is_some()
        || select.top.is_some()
        || !select.named_window.is_empty()
        || select.qualify.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.sort_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.connect_by.is_empty()
    {
        return Err(SqlError::unsupported("this form of SELECT"));
    }
    Ok(())
}

pub fn execute(txn: &mut dyn Transaction, query: &ast::Query) -> SqlResult<StatementResult> {
    if query.with.is_some() {
        return Err(SqlError::unsupported("WITH"));
    }
    if query.fetch.is_some() || query.for_clause.is_some() || !query.pipe_operators.is_empty() {
        return Err(SqlError::unsupported("this form of query"));
    }
    let select = match query.body.as_ref() {
        ast::SetExpr::Select(select) => select,
        ast::SetExpr::SetOperation { .. } => {
            return Err(SqlError::unsupported("UNION/INTERSECT/EXCEPT"));
        }
        ast::SetExpr::Values(_) => return Err(SqlError::unsupported("VALUES as a query")),
        _ => return Err(SqlError::unsupported("this form of query")),
    };
    check_select_shape(select)?;
    let mut for_update = false;
    for lock in &query.locks {
        if lock.of.is_some() || lock.nonblock.is_some() {
            return Err(SqlError::unsupported(
                "FOR UPDATE OF / NOWAIT / SKIP LOCKED",
            ));
        }
        for_update = true;
    }

    let (table, alias) = match select.from.as_slice() {
        [] => (None, None),
        [from] => {
            let (name, alias) = single_table(from)?;
            (Some(catalog::require_table(txn, &name)?), alias)
        }
        _ => return Err(SqlError::unsupported("several tables in FROM (joins)")),
    };
    let scope = match &table {
        Some(t) => Scope::table(t, alias.as_deref()),
        None => Scope::empty(),
    };
    let outputs = bind_projection(&select.projection, &scope, table.as_ref())?;
    let filter = match &select.selection {
        Some(expr) => Some(bind(expr, &scope)?.into_condition("WHERE")?),
        None => None,
    };
    let sort_keys = match &query.order_by {
        Some(order_by) => bind_order_by(order_by, &scope, &outputs)?,
        None => Vec::new(),
    };
    let (limit, offset) = match &query.limit_clause {
        None => (usize::MAX, 0),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(SqlError::unsupported("LIMIT BY"));
            }
            let limit = match limit {
                Some(e) => constant_count(e, "LIMIT", usize::MAX, "2201W")?,
                None => usize::MAX,
            };
            let offset = match offset {
                Some(o) => constant_count(&o.value, "OFFSET", 0, "2201X")?,
                None => 0,
            };
            (limit, offset)
        }
        Some(_) => return Err(SqlError::unsupported("LIMIT offset, count")),
    };

    // Rows: from the table, or the single empty row of a FROM-less SELECT.
    let source_rows: Vec<Vec<Value>> = match &table {
        Some(table) => {
            let mut rows = matching_rows(txn, table, filter.as_ref())?;
            if for_update {
                // Pessimistic: locked now, at their newest versions. Optimistic: the
                // commit checks them for conflicts.
                rows = lock_rows(txn, table, rows, filter.as_ref())?;
                for row in &rows {
                    txn.lock(row.key.clone());
                }
            }
            rows.into_iter().map(|r| r.values).collect()
        }
        None => {
            let keep = match &filter {
                Some(f) => f.is_true(&[])?,
                None => true,
            };
            if keep { vec![vec![]] } else { vec![] }
        }
    };

    let mut rows: Vec<(Vec<Value>, Vec<Value>)> = Vec::with_capacity(source_rows.len());
    for source in &source_rows {
        let sort: Vec<Value> = sort_keys
            .iter()
            .map(|k| k.expr.eval(source))
            .collect::<SqlResult<_>>()?;
        let out: Vec<Value> = outputs
            .iter()
            .map(|o| o.expr.eval(source))
            .collect::<SqlResult<_>>()?;
        rows.push((sort, out));
    }
    if !sort_keys.is_empty() {
        rows.sort_by(|a, b| compare_keys(&a.0, &b.0, &sort_keys));
    }
    let text_rows: Vec<Vec<Option<String>>> = rows
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|(_, values)| {
            values
                .iter()
                .zip(&outputs)
                .map(|(v, o)| v.to_pg_text(o.ty))
                .collect()
        })
        .collect();
    let columns = outputs
        .iter()
        .map(|o| ColumnInfo::new(o.name.clone(), o.ty))
        .collect();
    let tag = format!("SELECT {}", text_rows.len());
    Ok(StatementResult::Rows {
        columns,
        rows: text_rows,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use crate::{Database, StatementResult};

    /// Unaliased output columns are named as PostgreSQL names them.
    #[test]
    fn output_columns_are_named_as_postgresql_names_them() {
        let mut session = Database::in_memory().session();
        let result = session
            .execute("SELECT 1 + 1, COALESCE(NULL, 2), abs(-1), CASE WHEN true THEN 1 END, 3 AS x")
            .pop()
            .expect("a result")
            .expect("success");
        let StatementResult::Rows { columns, .. } = result else {
            panic!("rows expected");
        };
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["?column?", "coalesce", "abs", "case", "x"]);
    }
}
