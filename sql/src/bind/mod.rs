//! The binder: a query's AST → a [`Plan`], with every name resolved against the catalog and
//! every expression typed by PostgreSQL's rules.
//!
//! A query binds in PostgreSQL's logical order: `WITH` (each common table expression is
//! bound again wherever it is referenced, which gives the same rows as materialising it once
//! for a read-only query), `FROM` ([`from`]), `WHERE`, `GROUP BY`/aggregates/`HAVING`, the
//! select list, `DISTINCT`, `ORDER BY`, `LIMIT`/`OFFSET` ([`select`]), and set operations
//! and `VALUES` here. The binder reads table descriptors through the statement's transaction
//! (each once per statement) and builds the plan the optimizer then rewrites.
//!
//! Refused with 0A000: `WITH RECURSIVE`, `LATERAL`, `DISTINCT ON`, window
//! functions, grouping sets, `FOR UPDATE` with joins, aggregates, `DISTINCT` or set
//! operations, and correlated subqueries where their value cannot be computed per input row
//! (in an aggregate query's select list, HAVING and ORDER BY).

mod from;
mod select;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use sqlparser::ast;

use kv::Transaction;

use crate::catalog::{self, Table};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, ExprType, Typed, coerce_to, common_type, ident_name};
use crate::plan::{Plan, SetOpKind};
use crate::scope::{BoundSubquery, Scope, ScopeColumn, SubqueryBinder};
use crate::types::SqlType;

pub use from::FromItem;
pub use select::{Output, bind_projection, constant_count, output_name};

/// A bound query: its plan and its output columns (name, type).
pub struct BoundQuery {
    pub plan: Plan,
    pub columns: Vec<(String, SqlType)>,
    /// Per column: whether it is an untyped literal (`'7'`, NULL), shown as text but taking
    /// the type the other side of a set operation, or the target column, gives it.
    pub untyped: Vec<bool>,
}

/// A common table expression in scope: its name, column names and query.
#[derive(Clone)]
struct CommonTable {
    name: String,
    columns: Vec<String>,
    query: ast::Query,
}

/// Binds the queries of one statement.
pub struct Binder<'t> {
    txn: RefCell<&'t mut dyn Transaction>,
    tables: RefCell<HashMap<String, Arc<Table>>>,
    common_tables: RefCell<Vec<CommonTable>>,
}

impl SubqueryBinder for Binder<'_> {
    fn bind_subquery(&self, query: &ast::Query, outer: &Scope) -> SqlResult<BoundSubquery> {
        let bound = self.bind_query(query, Some(outer))?;
        Ok(BoundSubquery {
            plan: bound.plan,
            columns: bound.columns,
        })
    }
}

impl<'t> Binder<'t> {
    pub fn new(txn: &'t mut dyn Transaction) -> Binder<'t> {
        Binder {
            txn: RefCell::new(txn),
            tables: RefCell::new(HashMap::new()),
            common_tables: RefCell::new(Vec::new()),
        }
    }

    /// A table's descriptor, read once per statement.
    fn table(&self, name: &str) -> SqlResult<Arc<Table>> {
        if let Some(table) = self.tables.borrow().get(name) {
            return Ok(Arc::clone(table));
        }
        let table = Arc::new(catalog::require_table(&mut **self.txn.borrow_mut(), name)?);
        self.tables
            .borrow_mut()
            .insert(name.to_string(), Arc::clone(&table));
        Ok(table)
    }

    /// Binds a query; `outer` is the scope of the query it is a subquery of.
    pub fn bind_query(&self, query: &ast::Query, outer: Option<&Scope>) -> SqlResult<BoundQuery> {
        if query.for_clause.is_some()
            || !query.pipe_operators.is_empty()
            || query.settings.is_some()
            || query.format_clause.is_some()
        {
            return Err(SqlError::unsupported("this form of query"));
        }
        let defined = self.common_tables.borrow().len();
        if let Some(with) = &query.with {
            if with.recursive {
                return Err(SqlError::unsupported("WITH RECURSIVE"));
            }
            for cte in &with.cte_tables {
                if cte.from.is_some() {
                    return Err(SqlError::unsupported("this form of WITH"));
                }
                let name = ident_name(&cte.alias.name);
                let mut tables = self.common_tables.borrow_mut();
                if tables[defined..].iter().any(|t| t.name == name) {
                    return Err(SqlError::new(
                        sqlstate::DUPLICATE_ALIAS,
                        format!("WITH query name \"{name}\" specified more than once"),
                    ));
                }
                tables.push(CommonTable {
                    name,
                    columns: cte
                        .alias
                        .columns
                        .iter()
                        .map(|c| ident_name(&c.name))
                        .collect(),
                    query: (*cte.query).clone(),
                });
            }
        }
        let result = self.bind_query_body(query, outer);
        self.common_tables.borrow_mut().truncate(defined);
        result
    }

    fn bind_query_body(&self, query: &ast::Query, outer: Option<&Scope>) -> SqlResult<BoundQuery> {
        let mut for_update = false;
        for lock in &query.locks {
            if lock.of.is_some() || lock.nonblock.is_some() {
                return Err(SqlError::unsupported(
                    "FOR UPDATE OF / NOWAIT / SKIP LOCKED",
                ));
            }
            for_update = true;
        }
        let mut limit = bind_limit(query.limit_clause.as_ref())?;
        if let Some(fetch) = &query.fetch {
            if fetch.with_ties || fetch.percent {
                return Err(SqlError::unsupported("FETCH … WITH TIES / PERCENT"));
            }
            if limit.limit.is_some() {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "multiple LIMIT clauses not allowed",
                ));
            }
            limit.limit = match &fetch.quantity {
                Some(e) => constant_count(e, "FETCH FIRST", "2201W")?,
                None => Some(1),
            };
        }
        if let ast::SetExpr::Select(select) = query.body.as_ref() {
            return self.bind_select(select, query.order_by.as_ref(), limit, for_update, outer);
        }
        if for_update {
            return Err(SqlError::unsupported(
                "FOR UPDATE with UNION/INTERSECT/EXCEPT or VALUES",
            ));
        }
        let bound = self.bind_set_expr(&query.body, outer)?;
        self.order_and_limit(bound, query.order_by.as_ref(), limit, outer)
    }

    /// ORDER BY and LIMIT over the output of a set operation or VALUES: keys name output
    /// columns (by name or position) or are expressions over them.
    fn order_and_limit(
        &self,
        bound: BoundQuery,
        order_by: Option<&ast::OrderBy>,
        limit: Limit,
        outer: Option<&Scope>,
    ) -> SqlResult<BoundQuery> {
        let columns: Vec<ScopeColumn> = bound
            .columns
            .iter()
            .map(|(name, ty)| ScopeColumn {
                qualifier: None,
                name: name.clone(),
                ty: *ty,
                visible: true,
                relation: None,
                same_as: None,
            })
            .collect();
        let scope = Scope::new(columns, Vec::new(), outer, Some(self));
        let outputs: Vec<select::Output> = bound
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| select::Output {
                expr: Expr::Column(i),
                name: name.clone(),
                ty: *ty,
                untyped: false,
            })
            .collect();
        let keys = match order_by {
            Some(order_by) => select::bind_order_by(order_by, &scope, &outputs, false)?,
            None => Vec::new(),
        };
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported("subqueries in this ORDER BY"));
        }
        if matches!(bound.plan, Plan::SetOp { .. })
            && keys.iter().any(|k| !matches!(k.expr, Expr::Column(_)))
        {
            return Err(SqlError::unsupported(
                "invalid UNION/INTERSECT/EXCEPT ORDER BY clause: only result column names can be used, not expressions or functions",
            ));
        }
        let plan = select::finish(bound.plan, &outputs, keys, false, limit);
        Ok(BoundQuery {
            plan,
            columns: bound.columns,
            untyped: bound.untyped,
        })
    }

    fn bind_set_expr(&self, body: &ast::SetExpr, outer: Option<&Scope>) -> SqlResult<BoundQuery> {
        match body {
            ast::SetExpr::Select(select) => {
                self.bind_select(select, None, Limit::default(), false, outer)
            }
            ast::SetExpr::Query(query) => self.bind_query(query, outer),
            ast::SetExpr::SetOperation {
                left,
                op,
                set_quantifier,
                right,
            } => {
                let op = match op {
                    ast::SetOperator::Union => SetOpKind::Union,
                    ast::SetOperator::Intersect => SetOpKind::Intersect,
                    ast::SetOperator::Except => SetOpKind::Except,
                    ast::SetOperator::Minus => return Err(SqlError::unsupported("MINUS")),
                };
                let all = match set_quantifier {
                    ast::SetQuantifier::All => true,
                    ast::SetQuantifier::Distinct | ast::SetQuantifier::None => false,
                    other => return Err(SqlError::unsupported(format!("{} {other}", op.name()))),
                };
                let left = self.bind_set_expr(left, outer)?;
                let right = self.bind_set_expr(right, outer)?;
                set_operation(op, all, left, right)
            }
            ast::SetExpr::Values(values) => self.bind_values(values, outer),
            other => Err(SqlError::unsupported(format!("query {other}"))),
        }
    }

    /// `VALUES (…), (…)`: columns `column1`, `column2`, … of each column's common type.
    fn bind_values(&self, values: &ast::Values, outer: Option<&Scope>) -> SqlResult<BoundQuery> {
        if values.explicit_row || values.value_keyword {
            return Err(SqlError::unsupported("this form of VALUES"));
        }
        let scope = Scope::new(Vec::new(), Vec::new(), outer, Some(self));
        let width = values.rows.first().map_or(0, |r| r.len());
        let mut rows: Vec<Vec<Typed>> = Vec::with_capacity(values.rows.len());
        for row in &values.rows {
            if row.len() != width {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "VALUES lists must all be the same length",
                ));
            }
            rows.push(
                row.iter()
                    .map(|e| crate::expr::bind(e, &scope))
                    .collect::<SqlResult<_>>()?,
            );
        }
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported("subqueries in VALUES"));
        }
        let mut types = Vec::with_capacity(width);
        let mut untyped = Vec::with_capacity(width);
        for column in 0..width {
            let column_types: Vec<ExprType> = rows.iter().map(|r| r[column].ty.clone()).collect();
            types.push(common_type(&column_types, "VALUES")?);
            untyped.push(
                column_types
                    .iter()
                    .all(|t| matches!(t, ExprType::Unknown(_))),
            );
        }
        let rows = rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .zip(&types)
                    .map(|(typed, ty)| coerce_to(typed, *ty))
                    .collect::<SqlResult<Vec<Expr>>>()
            })
            .collect::<SqlResult<Vec<_>>>()?;
        let columns = types
            .iter()
            .enumerate()
            .map(|(i, ty)| (format!("column{}", i + 1), *ty))
            .collect();
        Ok(BoundQuery {
            plan: Plan::Values { rows, width },
            columns,
            untyped,
        })
    }
}

/// `left op right`: columns matched by position, each of the two sides' common type.
fn set_operation(
    op: SetOpKind,
    all: bool,
    left: BoundQuery,
    right: BoundQuery,
) -> SqlResult<BoundQuery> {
    if left.columns.len() != right.columns.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            format!(
                "each {} query must have the same number of columns",
                op.name()
            ),
        ));
    }
    let typed = |ty: SqlType, untyped: bool| {
        if untyped {
            ExprType::Unknown(Some(String::new()))
        } else {
            ExprType::Known(ty)
        }
    };
    let mut types = Vec::with_capacity(left.columns.len());
    for (i, ((_, l), (_, r))) in left.columns.iter().zip(&right.columns).enumerate() {
        types.push(common_type(
            &[typed(*l, left.untyped[i]), typed(*r, right.untyped[i])],
            op.name(),
        )?);
    }
    let untyped: Vec<bool> = left
        .untyped
        .iter()
        .zip(&right.untyped)
        .map(|(l, r)| *l && *r)
        .collect();
    let cast = |side: BoundQuery| -> SqlResult<Plan> {
        if side.columns.iter().zip(&types).all(|((_, t), c)| t == c) {
            return Ok(side.plan);
        }
        let exprs = side
            .columns
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(i, ((_, from), to))| {
                if side.untyped[i] && from != to {
                    // An untyped literal is read as the other side's type.
                    return Ok(Expr::Cast {
                        expr: Box::new(Expr::Column(i)),
                        from: *from,
                        to: *to,
                        explicit: true,
                    });
                }
                coerce_to(Typed::known(Expr::Column(i), *from), *to)
            })
            .collect::<SqlResult<Vec<_>>>()?;
        let names = side.columns.iter().map(|(n, _)| n.clone()).collect();
        Ok(Plan::Project {
            input: Box::new(side.plan),
            exprs,
            names,
        })
    };
    let columns = left
        .columns
        .iter()
        .zip(&types)
        .map(|((name, _), ty)| (name.clone(), *ty))
        .collect();
    let left_plan = cast(left)?;
    let right_plan = cast(right)?;
    Ok(BoundQuery {
        plan: Plan::SetOp {
            op,
            all,
            left: Box::new(left_plan),
            right: Box::new(right_plan),
        },
        columns,
        untyped,
    })
}

/// LIMIT and OFFSET, evaluated.
#[derive(Clone, Copy, Debug, Default)]
pub struct Limit {
    pub limit: Option<u64>,
    pub offset: u64,
}

fn bind_limit(clause: Option<&ast::LimitClause>) -> SqlResult<Limit> {
    match clause {
        None => Ok(Limit::default()),
        Some(ast::LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) => {
            if !limit_by.is_empty() {
                return Err(SqlError::unsupported("LIMIT BY"));
            }
            let limit = match limit {
                Some(e) => constant_count(e, "LIMIT", "2201W")?,
                None => None,
            };
            let offset = match offset {
                Some(o) => constant_count(&o.value, "OFFSET", "2201X")?.unwrap_or(0),
                None => 0,
            };
            Ok(Limit { limit, offset })
        }
        Some(_) => Err(SqlError::unsupported("LIMIT offset, count")),
    }
}
