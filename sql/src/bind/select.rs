//! Binding a `SELECT`: WHERE, GROUP BY and aggregates, HAVING, the select list, DISTINCT,
//! ORDER BY, LIMIT/OFFSET and FOR UPDATE, in PostgreSQL's logical order.
//!
//! The plan it builds, bottom up: FROM → [Apply: WHERE's subqueries] → Filter(WHERE) →
//! [Aggregate → Apply → Filter(HAVING)] → [Apply: the select list's subqueries] →
//! Project(select list + sort keys not in it) → [Distinct] → [Sort] → [Limit] →
//! [Project: without the extra sort keys].
//!
//! Aggregation: aggregate calls in the select list, HAVING and ORDER BY are collected while
//! binding ([`crate::scope`]); then every expression is rewritten over the aggregation's
//! output row (group keys, then aggregate results). A subexpression equal to a GROUP BY
//! expression becomes its group column; any other column reference is an error (42803).
//! Grouping by a table's whole primary key makes its other columns groupable too.

use sqlparser::ast;

use super::{Binder, BoundQuery, Limit};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, Typed, bind, ident_name};
use crate::plan::{Plan, Scan, SortKey, Spans, SubqueryDef};
use crate::scope::{AggregateState, Scope};
use crate::types::{SqlType, Value};

/// One output column: its expression, name and type.
#[derive(Clone, Debug)]
pub struct Output {
    pub expr: Expr,
    pub name: String,
    pub ty: SqlType,
    /// An untyped literal (see [`BoundQuery::untyped`]).
    pub untyped: bool,
}

/// A sort key before it is placed: an expression and its direction.
pub struct OrderKey {
    pub expr: Expr,
    pub descending: bool,
    pub nulls_first: bool,
}

/// How PostgreSQL names an unaliased output column.
pub fn output_name(expr: &ast::Expr) -> String {
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
        // Functions with syntax of their own, by the function PostgreSQL calls.
        ast::Expr::Ceil { .. } => "ceil".into(),
        ast::Expr::Floor { .. } => "floor".into(),
        ast::Expr::Position { .. } => "position".into(),
        ast::Expr::Substring { shorthand, .. } => {
            if *shorthand { "substr" } else { "substring" }.into()
        }
        ast::Expr::Trim { trim_where, .. } => match trim_where {
            Some(ast::TrimWhereField::Leading) => "ltrim".into(),
            Some(ast::TrimWhereField::Trailing) => "rtrim".into(),
            _ => "btrim".into(),
        },
        ast::Expr::Case { .. } => "case".into(),
        ast::Expr::Exists { .. } => "exists".into(),
        // A scalar subquery by its own single output column.
        ast::Expr::Subquery(query) => match query.body.as_ref() {
            ast::SetExpr::Select(select) => match select.projection.as_slice() {
                [ast::SelectItem::UnnamedExpr(e)] => output_name(e),
                [ast::SelectItem::ExprWithAlias { alias, .. }] => ident_name(alias),
                _ => "?column?".into(),
            },
            _ => "?column?".into(),
        },
        _ => "?column?".into(),
    }
}

/// Evaluates a LIMIT or OFFSET count (`None`: NULL, no limit).
pub fn constant_count(
    expr: &ast::Expr,
    what: &str,
    negative_code: &'static str,
) -> SqlResult<Option<u64>> {
    let bound = bind(expr, &Scope::empty())?.coerce_for_assignment(SqlType::BigInt, what)?;
    match bound.eval(&[])? {
        Value::Int(n) if n >= 0 => Ok(Some(n as u64)),
        Value::Int(_) => Err(SqlError::new(
            negative_code,
            format!("{what} must not be negative"),
        )),
        _ => Ok(None),
    }
}

fn check_select_shape(select: &ast::Select) -> SqlResult<()> {
    if let ast::GroupByExpr::All(_) = &select.group_by {
        return Err(SqlError::unsupported("GROUP BY ALL"));
    }
    if let ast::GroupByExpr::Expressions(_, modifiers) = &select.group_by
        && !modifiers.is_empty()
    {
        return Err(SqlError::unsupported("GROUP BY … WITH"));
    }
    if let Some(ast::Distinct::On(_)) = &select.distinct {
        return Err(SqlError::unsupported("DISTINCT ON"));
    }
    if !select.named_window.is_empty() {
        return Err(SqlError::unsupported("WINDOW"));
    }
    if select.into.is_some()
        || select.top.is_some()
        || select.qualify.is_some()
        || !select.lateral_views.is_empty()
        || select.prewhere.is_some()
        || !select.sort_by.is_empty()
        || !select.cluster_by.is_empty()
        || !select.distribute_by.is_empty()
        || !select.connect_by.is_empty()
        || select.exclude.is_some()
        || select.value_table_mode.is_some()
    {
        return Err(SqlError::unsupported("this form of SELECT"));
    }
    Ok(())
}

/// Replaces `SubqueryRef(k)` by the column an Apply appends for it (`base + k`).
fn place_subqueries(expr: Expr, base: usize) -> Expr {
    expr.transform_up(&mut |e| {
        Ok(match e {
            Expr::SubqueryRef(k) => Expr::Column(base + k),
            other => other,
        })
    })
    .expect("infallible")
}

/// `plan` with an Apply computing `subqueries`, if there are any.
fn with_subqueries(plan: Plan, subqueries: Vec<SubqueryDef>) -> Plan {
    if subqueries.is_empty() {
        return plan;
    }
    Plan::Apply {
        input: Box::new(plan),
        subqueries,
    }
}

impl Binder<'_> {
    pub(super) fn bind_select(
        &self,
        select: &ast::Select,
        order_by: Option<&ast::OrderBy>,
        limit: Limit,
        for_update: bool,
        outer: Option<&Scope>,
    ) -> SqlResult<BoundQuery> {
        check_select_shape(select)?;
        let from = self.bind_from(&select.from, outer)?;
        let scope = Scope::new(from.columns, from.relations, outer, Some(self));
        let mut plan = from.plan;

        // WHERE
        if let Some(selection) = &select.selection {
            scope.set_aggregates(AggregateState::NotAllowed("WHERE"));
            let predicate = bind(selection, &scope)?.into_condition("WHERE")?;
            let subqueries = scope.take_subqueries();
            let base = plan.width();
            let predicate = place_subqueries(predicate, base);
            match plan {
                Plan::Scan(scan) if for_update => {
                    if !subqueries.is_empty() {
                        return Err(SqlError::unsupported("FOR UPDATE with subqueries in WHERE"));
                    }
                    plan = Plan::Scan(Scan {
                        filter: Some(predicate),
                        ..scan
                    });
                }
                input => {
                    plan = Plan::Filter {
                        input: Box::new(with_subqueries(input, subqueries)),
                        predicate,
                    };
                }
            }
        }

        // GROUP BY (bound before the select list: they may name its items)
        let group_by = match &select.group_by {
            ast::GroupByExpr::Expressions(exprs, _) => exprs
                .iter()
                .map(|e| self.bind_group_key(e, select, &scope))
                .collect::<SqlResult<Vec<Expr>>>()?,
            ast::GroupByExpr::All(_) => unreachable!("refused above"),
        };
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported("subqueries in GROUP BY"));
        }

        // The select list, HAVING and ORDER BY may hold aggregates.
        scope.set_aggregates(AggregateState::Collecting(Vec::new()));
        let mut outputs = bind_projection(&select.projection, &scope)?;
        let having = match &select.having {
            Some(h) => Some(bind(h, &scope)?.into_condition("HAVING")?),
            None => None,
        };
        let distinct = matches!(select.distinct, Some(ast::Distinct::Distinct));
        let mut keys = match order_by {
            Some(order_by) => bind_order_by(order_by, &scope, &outputs, distinct)?,
            None => Vec::new(),
        };
        let AggregateState::Collecting(aggregates) =
            scope.set_aggregates(AggregateState::NotAllowed("this context"))
        else {
            unreachable!("set above")
        };
        let subqueries = scope.take_subqueries();
        let grouped = !group_by.is_empty() || !aggregates.is_empty() || having.is_some();

        if for_update {
            if grouped || distinct {
                return Err(SqlError::unsupported(
                    "FOR UPDATE with aggregates, GROUP BY or DISTINCT",
                ));
            }
            match &mut plan {
                Plan::Scan(scan) => scan.lock = true,
                _ => {
                    return Err(SqlError::unsupported(
                        "FOR UPDATE with joins or subqueries in FROM",
                    ));
                }
            }
        }

        if grouped {
            if subqueries.iter().any(|s| s.correlated) {
                return Err(SqlError::unsupported(
                    "correlated subqueries in an aggregate query's select list, HAVING or ORDER BY",
                ));
            }
            let group_by = functionally_dependent(group_by, &scope);
            let n_groups = group_by.len();
            let n_aggregates = aggregates.len();
            let regroup = |e: Expr| regroup(e, &group_by, &scope);
            for output in &mut outputs {
                output.expr = regroup(std::mem::replace(
                    &mut output.expr,
                    Expr::Const(Value::Null),
                ))?;
            }
            for key in &mut keys {
                key.expr = regroup(std::mem::replace(&mut key.expr, Expr::Const(Value::Null)))?;
            }
            let having = having.map(regroup).transpose()?;
            let mut subqueries = subqueries;
            for subquery in &mut subqueries {
                if let crate::plan::SubqueryKind::In { operand, .. } = &mut subquery.kind {
                    *operand = regroup(std::mem::replace(operand, Expr::Const(Value::Null)))?;
                }
            }
            let base = n_groups + n_aggregates;
            plan = with_subqueries(
                Plan::Aggregate {
                    input: Box::new(plan),
                    group_by,
                    aggregates,
                },
                subqueries,
            );
            if let Some(having) = having {
                plan = Plan::Filter {
                    input: Box::new(plan),
                    predicate: place_subqueries(having, base),
                };
            }
            for output in &mut outputs {
                output.expr = place_subqueries(output.expr.clone(), base);
            }
            for key in &mut keys {
                key.expr = place_subqueries(key.expr.clone(), base);
            }
        } else {
            let base = plan.width();
            plan = with_subqueries(plan, subqueries);
            for output in &mut outputs {
                output.expr = place_subqueries(output.expr.clone(), base);
            }
            for key in &mut keys {
                key.expr = place_subqueries(key.expr.clone(), base);
            }
        }

        let columns = outputs.iter().map(|o| (o.name.clone(), o.ty)).collect();
        let untyped = outputs.iter().map(|o| o.untyped).collect();
        Ok(BoundQuery {
            plan: finish(plan, &outputs, keys, distinct, limit),
            columns,
            untyped,
        })
    }

    /// A GROUP BY item: a select-list position, an output column's name (when no input
    /// column has it), or an expression over the input.
    fn bind_group_key(
        &self,
        expr: &ast::Expr,
        select: &ast::Select,
        scope: &Scope,
    ) -> SqlResult<Expr> {
        let item_expr = |item: &ast::SelectItem| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                Some(e.clone())
            }
            _ => None,
        };
        let resolved = match expr {
            ast::Expr::Value(v) if matches!(v.value, ast::Value::Number(..)) => {
                let ast::Value::Number(text, _) = &v.value else {
                    unreachable!()
                };
                let position: usize = text.parse().unwrap_or(0);
                match select
                    .projection
                    .get(position.wrapping_sub(1))
                    .and_then(item_expr)
                {
                    Some(e) => e,
                    None => {
                        return Err(SqlError::new(
                            sqlstate::INVALID_COLUMN_REFERENCE,
                            format!("GROUP BY position {text} is not in select list"),
                        ));
                    }
                }
            }
            ast::Expr::Identifier(ident) if scope.column(None, &ident_name(ident)).is_err() => {
                let name = ident_name(ident);
                select
                    .projection
                    .iter()
                    .find_map(|item| match item {
                        ast::SelectItem::ExprWithAlias { expr, alias }
                            if ident_name(alias) == name =>
                        {
                            Some(expr.clone())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| expr.clone())
            }
            other => other.clone(),
        };
        scope.set_aggregates(AggregateState::NotAllowed("GROUP BY"));
        let bound = bind(&resolved, scope)?;
        Ok(bound.expr)
    }
}

/// Adds to `group_by` the other columns of each table whose whole primary key is grouped
/// (PostgreSQL's functional dependency: they have one value per group).
fn functionally_dependent(mut group_by: Vec<Expr>, scope: &Scope) -> Vec<Expr> {
    // A USING column grouped is the side's own column grouped.
    for (i, column) in scope.columns.iter().enumerate() {
        if let Some(same) = column.same_as
            && group_by.contains(&Expr::Column(i))
            && !group_by.contains(&Expr::Column(same))
        {
            group_by.push(Expr::Column(same));
        }
    }
    for (r, relation) in scope.relations.iter().enumerate() {
        let Some(pk) = &relation.primary_key else {
            continue;
        };
        if !pk.iter().all(|&c| group_by.contains(&Expr::Column(c))) {
            continue;
        }
        for (i, column) in scope.columns.iter().enumerate() {
            if column.relation == Some(r) && !group_by.contains(&Expr::Column(i)) {
                group_by.push(Expr::Column(i));
            }
        }
    }
    // …and the other way round.
    for (i, column) in scope.columns.iter().enumerate() {
        if let Some(same) = column.same_as
            && group_by.contains(&Expr::Column(same))
            && !group_by.contains(&Expr::Column(i))
        {
            group_by.push(Expr::Column(i));
        }
    }
    group_by
}

/// Rewrites an expression over the aggregation's output row (see the module doc).
fn regroup(expr: Expr, group_by: &[Expr], scope: &Scope) -> SqlResult<Expr> {
    let n_groups = group_by.len();
    expr.transform_down(&mut |e| {
        if let Some(g) = group_by.iter().position(|k| k == e) {
            return Ok(Some(Expr::Column(g)));
        }
        match e {
            Expr::AggregateRef(k) => Ok(Some(Expr::Column(n_groups + k))),
            Expr::Column(i) => {
                let column = &scope.columns[*i];
                let name = match &column.qualifier {
                    Some(q) => format!("{q}.{}", column.name),
                    None => column.name.clone(),
                };
                Err(SqlError::new(
                    sqlstate::GROUPING_ERROR,
                    format!(
                        "column \"{name}\" must appear in the GROUP BY clause or be used in an aggregate function"
                    ),
                ))
            }
            _ => Ok(None),
        }
    })
}

fn output(typed: Typed, name: String) -> Output {
    Output {
        untyped: matches!(typed.ty, crate::expr::ExprType::Unknown(_)),
        ty: typed.resolved_type(),
        expr: typed.expr,
        name,
    }
}

pub fn bind_projection(items: &[ast::SelectItem], scope: &Scope) -> SqlResult<Vec<Output>> {
    let mut outputs = Vec::new();
    for item in items {
        match item {
            ast::SelectItem::UnnamedExpr(expr) => {
                outputs.push(output(bind(expr, scope)?, output_name(expr)))
            }
            ast::SelectItem::ExprWithAlias { expr, alias } => {
                outputs.push(output(bind(expr, scope)?, ident_name(alias)))
            }
            ast::SelectItem::Wildcard(options) | ast::SelectItem::QualifiedWildcard(_, options)
                if options.opt_ilike.is_none()
                    && options.opt_exclude.is_none()
                    && options.opt_except.is_none()
                    && options.opt_replace.is_none()
                    && options.opt_rename.is_none()
                    && options.opt_alias.is_none() =>
            {
                let qualifier = match item {
                    ast::SelectItem::QualifiedWildcard(
                        ast::SelectItemQualifiedWildcardKind::ObjectName(name),
                        _,
                    ) => Some(crate::exec::table_name(name)?),
                    ast::SelectItem::QualifiedWildcard(kind, _) => {
                        return Err(SqlError::unsupported(format!("select item {kind}.*")));
                    }
                    _ => None,
                };
                if qualifier.is_none() && scope.columns.is_empty() {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "SELECT * with no tables specified is not valid",
                    ));
                }
                for (i, column) in scope.star(qualifier.as_deref())? {
                    outputs.push(Output {
                        expr: Expr::Column(i),
                        name: column.name.clone(),
                        ty: column.ty,
                        untyped: false,
                    });
                }
            }
            other => return Err(SqlError::unsupported(format!("select item {other}"))),
        }
    }
    Ok(outputs)
}

/// ORDER BY keys: a position or an output column's name refers to that output column;
/// anything else is an expression over the input (which, with DISTINCT, must be in the
/// select list).
pub fn bind_order_by(
    order_by: &ast::OrderBy,
    scope: &Scope,
    outputs: &[Output],
    distinct: bool,
) -> SqlResult<Vec<OrderKey>> {
    let ast::OrderByKind::Expressions(exprs) = &order_by.kind else {
        return Err(SqlError::unsupported("ORDER BY ALL"));
    };
    if order_by.interpolate.is_some() {
        return Err(SqlError::unsupported("ORDER BY … INTERPOLATE"));
    }
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
        if let ast::Expr::Value(v) = &item.expr
            && !matches!(v.value, ast::Value::Number(..))
        {
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                "non-integer constant in ORDER BY",
            ));
        }
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
            other => {
                let expr = bind(other, scope)?.expr;
                if distinct && !outputs.iter().any(|o| o.expr == expr) {
                    return Err(SqlError::new(
                        sqlstate::INVALID_COLUMN_REFERENCE,
                        "for SELECT DISTINCT, ORDER BY expressions must appear in select list",
                    ));
                }
                expr
            }
        };
        keys.push(OrderKey {
            expr,
            descending,
            nulls_first,
        });
    }
    Ok(keys)
}

/// The top of a SELECT's plan: the projection with any sort keys not in it, DISTINCT, the
/// sort, the limit, and a projection that drops the extra sort keys.
pub fn finish(
    input: Plan,
    outputs: &[Output],
    keys: Vec<OrderKey>,
    distinct: bool,
    limit: Limit,
) -> Plan {
    let mut exprs: Vec<Expr> = outputs.iter().map(|o| o.expr.clone()).collect();
    let mut names: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
    let mut sort = Vec::with_capacity(keys.len());
    for key in keys {
        let column = match exprs.iter().position(|e| *e == key.expr) {
            Some(i) => i,
            None => {
                exprs.push(key.expr);
                names.push(format!("sort{}", sort.len() + 1));
                exprs.len() - 1
            }
        };
        sort.push(SortKey {
            column,
            descending: key.descending,
            nulls_first: key.nulls_first,
        });
    }
    let width = outputs.len();
    let identity = exprs.len() == input.width()
        && exprs.iter().enumerate().all(|(i, e)| *e == Expr::Column(i));
    let mut plan = if identity {
        input
    } else {
        Plan::Project {
            input: Box::new(input),
            exprs: exprs.clone(),
            names: names.clone(),
        }
    };
    if distinct {
        plan = Plan::Distinct {
            input: Box::new(plan),
        };
    }
    if !sort.is_empty() {
        plan = Plan::Sort {
            input: Box::new(plan),
            keys: sort,
            top: None,
        };
    }
    if limit.limit.is_some() || limit.offset > 0 {
        plan = Plan::Limit {
            input: Box::new(plan),
            limit: limit.limit,
            offset: limit.offset,
        };
    }
    if exprs.len() > width {
        plan = Plan::Project {
            input: Box::new(plan),
            exprs: (0..width).map(Expr::Column).collect(),
            names: names[..width].to_vec(),
        };
    }
    plan
}

/// A scan of a whole table (the access path is chosen by the optimizer).
pub fn full_scan(table: std::sync::Arc<crate::catalog::Table>, qualifier: String) -> Plan {
    Plan::Scan(Scan {
        table,
        qualifier,
        filter: None,
        spans: Spans::Full,
        index: None,
        lock: false,
        limit_hint: None,
    })
}

#[cfg(test)]
mod tests {
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    use super::output_name;

    #[test]
    fn unaliased_columns_are_named_as_postgresql_names_them() {
        for (sql, name) in [
            ("ceil(1.5)", "ceil"),
            ("floor(x)", "floor"),
            ("ceiling(2.1)", "ceiling"),
            ("substring('abc' from 2)", "substring"),
            ("substring('abc', 2)", "substring"),
            ("substr('abc', 2)", "substr"),
            ("position('b' in 'abc')", "position"),
            ("trim(' a ')", "btrim"),
            ("trim(leading 'x' from 'xa')", "ltrim"),
            ("trim(trailing from 'a ')", "rtrim"),
            ("t.col", "col"),
            ("CASE WHEN true THEN 1 END", "case"),
            ("1 + 2", "?column?"),
        ] {
            let expr = Parser::new(&PostgreSqlDialect {})
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_expr())
                .expect(sql);
            assert_eq!(output_name(&expr), name, "{sql}");
        }
    }
}
