//! Binding aggregate calls (`count`, `sum`, `avg`, `min`, `max`, `bool_and`/`every`,
//! `bool_or`, `string_agg`) with PostgreSQL's result types, except that `sum(bigint)` is a
//! `bigint` (exact, 22003 on overflow) and `avg` is a `double precision`, where PostgreSQL
//! answers `numeric`, which RegionDB does not have yet. The call is registered with the
//! scope ([`Scope::add_aggregate`]), which refuses it where aggregates may not appear.

use sqlparser::ast;

use super::{Expr, ExprType, Typed, bind, coerce_to};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::plan::{AggregateCall, AggregateFn};
use crate::scope::Scope;
use crate::types::SqlType;

/// Clears the scope's "inside an aggregate" mark when dropped.
struct ArgumentsGuard<'s, 'a>(&'s Scope<'a>);

impl Drop for ArgumentsGuard<'_, '_> {
    fn drop(&mut self) {
        self.0.end_aggregate_arguments();
    }
}

pub fn bind_aggregate(f: &ast::Function, name: &str, scope: &Scope) -> SqlResult<Typed> {
    let unsupported = |what: &str| SqlError::unsupported(format!("{what} in aggregate {name}()"));
    if f.over.is_some() {
        return Err(SqlError::unsupported(format!(
            "window function {name}() OVER"
        )));
    }
    if !f.within_group.is_empty() {
        return Err(unsupported("WITHIN GROUP"));
    }
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(SqlError::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function {name}() does not exist"),
        ));
    };
    if !list.clauses.is_empty() {
        return Err(unsupported("ORDER BY or other clauses"));
    }
    let distinct = matches!(
        list.duplicate_treatment,
        Some(ast::DuplicateTreatment::Distinct)
    );
    // count(*)
    if let [ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Wildcard)] = list.args.as_slice() {
        if name != "count" || distinct {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!("function {name}(*) does not exist"),
            ));
        }
        let filter = bind_filter(f, scope)?;
        return scope.add_aggregate(AggregateCall {
            func: AggregateFn::CountStar,
            args: Vec::new(),
            arg_type: None,
            distinct: false,
            filter,
            result_type: SqlType::BigInt,
        });
    }
    let mut args = Vec::with_capacity(list.args.len());
    {
        scope.begin_aggregate_arguments()?;
        let _guard = ArgumentsGuard(scope);
        for arg in &list.args {
            match arg {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => {
                    args.push(bind(e, scope)?)
                }
                _ => return Err(unsupported("this argument")),
            }
        }
    }
    let filter = bind_filter(f, scope)?;
    // PostgreSQL computes an aggregate of only an enclosing query's columns in that query.
    let outer_only = args.iter().all(|a| a.expr.columns_used().is_empty())
        && args.iter().any(|a| a.expr.max_outer_depth() > 0);
    if outer_only {
        return Err(SqlError::unsupported(format!(
            "aggregate {name}() over only an enclosing query's columns"
        )));
    }
    let types: Vec<ExprType> = args.iter().map(|a| a.ty.clone()).collect();
    let no_such = || {
        let listed: Vec<String> = types.iter().map(ExprType::name).collect();
        SqlError::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function {name}({}) does not exist", listed.join(", ")),
        )
    };
    let known = |t: &ExprType| match t {
        ExprType::Known(t) => Some(*t),
        ExprType::Unknown(_) => None,
    };
    let (func, arg_type, result_type) = match (name, types.as_slice()) {
        ("count", [t]) => (
            AggregateFn::Count,
            known(t).unwrap_or(SqlType::Text),
            SqlType::BigInt,
        ),
        ("sum" | "avg", [t]) => {
            let arg = known(t).unwrap_or(SqlType::Double);
            if !arg.is_numeric() {
                return Err(no_such());
            }
            let result = match (name, arg) {
                ("avg", _) => SqlType::Double,
                (_, t) if t.is_integer() => SqlType::BigInt,
                (_, t) => t,
            };
            let func = if name == "sum" {
                AggregateFn::Sum
            } else {
                AggregateFn::Avg
            };
            (func, arg, result)
        }
        ("min" | "max", [t]) => {
            let arg = known(t).unwrap_or(SqlType::Text);
            if arg == SqlType::Bool {
                return Err(no_such());
            }
            let func = if name == "min" {
                AggregateFn::Min
            } else {
                AggregateFn::Max
            };
            (func, arg, arg)
        }
        ("bool_and" | "every" | "bool_or", [t]) => {
            if !matches!(known(t), None | Some(SqlType::Bool)) {
                return Err(no_such());
            }
            let func = if name == "bool_or" {
                AggregateFn::BoolOr
            } else {
                AggregateFn::BoolAnd
            };
            (func, SqlType::Bool, SqlType::Bool)
        }
        ("string_agg", [a, b]) => {
            let stringy = |t: &ExprType| known(t).is_none_or(|t| t.is_string());
            if !stringy(a) || !stringy(b) {
                return Err(no_such());
            }
            (AggregateFn::StringAgg, SqlType::Text, SqlType::Text)
        }
        _ => return Err(no_such()),
    };
    let args = args
        .into_iter()
        .map(|a| {
            let ty = match (func, &a.ty) {
                (AggregateFn::StringAgg, _) => SqlType::Text,
                (_, ExprType::Known(t)) => *t,
                _ => arg_type,
            };
            coerce_to(a, ty)
        })
        .collect::<SqlResult<Vec<Expr>>>()?;
    scope.add_aggregate(AggregateCall {
        func,
        args,
        arg_type: Some(arg_type),
        distinct,
        filter,
        result_type,
    })
}

/// `FILTER (WHERE condition)`, bound over the aggregate's input.
fn bind_filter(f: &ast::Function, scope: &Scope) -> SqlResult<Option<Expr>> {
    scope.begin_aggregate_arguments()?;
    let _guard = ArgumentsGuard(scope);
    match &f.filter {
        Some(condition) => Ok(Some(bind(condition, scope)?.into_condition("FILTER")?)),
        None => Ok(None),
    }
}
