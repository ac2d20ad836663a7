//! Binding FROM: tables, aliases (`t AS x(a, b)`), joins with ON and USING, subqueries,
//! common table expressions, `generate_series`, and comma lists (cross joins, which the
//! optimizer turns into joins on the WHERE clause's conditions).
//!
//! The row of a join is its left side's columns followed by its right side's. `USING (c)`
//! adds, in front, one merged column per name (the left value; for a RIGHT join the right
//! one; for a FULL join the first that is not NULL): it is what an unqualified `c` and `*`
//! see, as in PostgreSQL; `l.c` and `r.c` still name each side's own column.

use sqlparser::ast;

use super::{Binder, BoundQuery};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{CmpOp, Expr, ExprType, Typed, bind, coerce_to, common_type, ident_name};
use crate::plan::{JoinAlgorithm, JoinKind, Plan};
use crate::scope::{AggregateState, Relation, Scope, ScopeColumn, table_columns};
use crate::types::SqlType;

/// A bound FROM item: its plan and the columns (and relations) it makes visible.
pub struct FromItem {
    pub plan: Plan,
    pub columns: Vec<ScopeColumn>,
    pub relations: Vec<Relation>,
}

impl FromItem {
    /// One relation named `qualifier` over the output of `bound`, its columns renamed by
    /// `aliases`.
    fn derived(bound: BoundQuery, qualifier: String, aliases: &[String]) -> SqlResult<FromItem> {
        if aliases.len() > bound.columns.len() {
            return Err(SqlError::new(
                sqlstate::INVALID_COLUMN_REFERENCE,
                format!(
                    "table \"{qualifier}\" has {} columns available but {} columns specified",
                    bound.columns.len(),
                    aliases.len()
                ),
            ));
        }
        let columns = bound
            .columns
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| ScopeColumn {
                qualifier: Some(qualifier.clone()),
                name: aliases.get(i).cloned().unwrap_or_else(|| name.clone()),
                ty: *ty,
                visible: true,
                relation: Some(0),
                same_as: None,
            })
            .collect();
        Ok(FromItem {
            plan: bound.plan,
            columns,
            relations: vec![Relation {
                qualifier,
                primary_key: None,
            }],
        })
    }
}

/// The left and right items' columns and relations side by side.
fn side_by_side(left: &FromItem, right: &FromItem) -> SqlResult<(Vec<ScopeColumn>, Vec<Relation>)> {
    for relation in &right.relations {
        if left
            .relations
            .iter()
            .any(|r| r.qualifier == relation.qualifier)
        {
            return Err(SqlError::new(
                sqlstate::DUPLICATE_ALIAS,
                format!(
                    "table name \"{}\" specified more than once",
                    relation.qualifier
                ),
            ));
        }
    }
    let offset = left.columns.len();
    let shift = left.relations.len();
    let mut columns = left.columns.clone();
    columns.extend(right.columns.iter().cloned().map(|mut c| {
        c.relation = c.relation.map(|r| r + shift);
        c
    }));
    let mut relations = left.relations.clone();
    relations.extend(right.relations.iter().cloned().map(|mut r| {
        r.primary_key = r
            .primary_key
            .map(|pk| pk.into_iter().map(|c| c + offset).collect());
        r
    }));
    Ok((columns, relations))
}

fn alias_columns(alias: Option<&ast::TableAlias>) -> Vec<String> {
    alias
        .map(|a| a.columns.iter().map(|c| ident_name(&c.name)).collect())
        .unwrap_or_default()
}

impl Binder<'_> {
    /// FROM's items, cross-joined in order; no items: one row without columns.
    pub fn bind_from(
        &self,
        from: &[ast::TableWithJoins],
        outer: Option<&Scope>,
    ) -> SqlResult<FromItem> {
        let mut items = from.iter();
        let Some(first) = items.next() else {
            return Ok(FromItem {
                plan: Plan::Values {
                    rows: vec![vec![]],
                    width: 0,
                },
                columns: Vec::new(),
                relations: Vec::new(),
            });
        };
        let mut joined = self.bind_table_with_joins(first, outer)?;
        for item in items {
            let right = self.bind_table_with_joins(item, outer)?;
            joined = self.join(
                joined,
                right,
                JoinKind::Inner,
                &ast::JoinConstraint::None,
                outer,
            )?;
        }
        Ok(joined)
    }

    fn bind_table_with_joins(
        &self,
        from: &ast::TableWithJoins,
        outer: Option<&Scope>,
    ) -> SqlResult<FromItem> {
        let mut joined = self.bind_factor(&from.relation, outer)?;
        for join in &from.joins {
            if join.global {
                return Err(SqlError::unsupported("GLOBAL JOIN"));
            }
            use ast::JoinOperator as J;
            let (kind, constraint) = match &join.join_operator {
                J::Join(c) | J::Inner(c) => (JoinKind::Inner, c),
                J::Left(c) | J::LeftOuter(c) => (JoinKind::Left, c),
                J::Right(c) | J::RightOuter(c) => (JoinKind::Right, c),
                J::FullOuter(c) => (JoinKind::Full, c),
                J::CrossJoin(c) => (JoinKind::Inner, c),
                other => {
                    return Err(SqlError::unsupported(format!("join {other:?}")));
                }
            };
            let right = self.bind_factor(&join.relation, outer)?;
            joined = self.join(joined, right, kind, constraint, outer)?;
        }
        Ok(joined)
    }

    fn join(
        &self,
        left: FromItem,
        right: FromItem,
        kind: JoinKind,
        constraint: &ast::JoinConstraint,
        outer: Option<&Scope>,
    ) -> SqlResult<FromItem> {
        let (columns, relations) = side_by_side(&left, &right)?;
        let left_width = left.columns.len();
        let plan = |on: Option<Expr>| Plan::Join {
            left: Box::new(left.plan),
            right: Box::new(right.plan),
            kind,
            on,
            algorithm: JoinAlgorithm::NestedLoop,
        };
        // NATURAL: USING the column names both sides have.
        let natural;
        let constraint = match constraint {
            ast::JoinConstraint::Natural => {
                let names: Vec<String> = left
                    .columns
                    .iter()
                    .filter(|l| {
                        l.visible && right.columns.iter().any(|r| r.visible && r.name == l.name)
                    })
                    .map(|l| l.name.clone())
                    .collect();
                natural = if names.is_empty() {
                    ast::JoinConstraint::None
                } else {
                    ast::JoinConstraint::Using(
                        names
                            .iter()
                            .map(|n| ast::ObjectName::from(vec![ast::Ident::with_quote('"', n)]))
                            .collect(),
                    )
                };
                &natural
            }
            other => other,
        };
        match constraint {
            ast::JoinConstraint::None => Ok(FromItem {
                plan: plan(None),
                columns,
                relations,
            }),
            ast::JoinConstraint::On(condition) => {
                let scope = Scope::new(columns, relations, outer, Some(self));
                scope.set_aggregates(AggregateState::NotAllowed("JOIN conditions"));
                let on = bind(condition, &scope)?.into_condition("JOIN/ON")?;
                if !scope.take_subqueries().is_empty() {
                    return Err(SqlError::unsupported("subqueries in JOIN conditions"));
                }
                Ok(FromItem {
                    plan: plan(Some(on)),
                    columns: scope.columns,
                    relations: scope.relations,
                })
            }
            ast::JoinConstraint::Using(names) => {
                let names = names
                    .iter()
                    .map(crate::exec::table_name)
                    .collect::<SqlResult<Vec<String>>>()?;
                let find = |columns: &[ScopeColumn], name: &str, side: &str| {
                    let found: Vec<usize> = columns
                        .iter()
                        .enumerate()
                        .filter(|(_, c)| c.visible && c.name == name)
                        .map(|(i, _)| i)
                        .collect();
                    match found.as_slice() {
                        [i] => Ok(*i),
                        [] => Err(SqlError::new(
                            sqlstate::UNDEFINED_COLUMN,
                            format!(
                                "column \"{name}\" specified in USING clause does not exist in {side} table"
                            ),
                        )),
                        _ => Err(SqlError::new(
                            sqlstate::AMBIGUOUS_COLUMN,
                            format!(
                                "common column name \"{name}\" appears more than once in {side} table"
                            ),
                        )),
                    }
                };
                let mut conditions = Vec::new();
                let mut merged = Vec::new();
                let mut columns = columns;
                for (i, name) in names.iter().enumerate() {
                    if names[..i].contains(name) {
                        return Err(SqlError::new(
                            sqlstate::DUPLICATE_COLUMN,
                            format!(
                                "column name \"{name}\" appears more than once in USING clause"
                            ),
                        ));
                    }
                    let l = find(&left.columns, name, "left")?;
                    let r = left_width + find(&right.columns, name, "right")?;
                    let (lt, rt) = (columns[l].ty, columns[r].ty);
                    let equal = crate::expr::compare(
                        Typed::known(Expr::Column(l), lt),
                        CmpOp::Eq,
                        Typed::known(Expr::Column(r), rt),
                    )?;
                    conditions.push(equal);
                    let ty =
                        common_type(&[ExprType::Known(lt), ExprType::Known(rt)], "JOIN/USING")?;
                    let from =
                        |i: usize, t: SqlType| coerce_to(Typed::known(Expr::Column(i), t), ty);
                    let expr = match kind {
                        JoinKind::Inner | JoinKind::Left => from(l, lt)?,
                        JoinKind::Right => from(r, rt)?,
                        JoinKind::Full => Expr::Coalesce(vec![from(l, lt)?, from(r, rt)?]),
                    };
                    let same_as = match kind {
                        JoinKind::Inner | JoinKind::Left if lt == ty => Some(l),
                        JoinKind::Right if rt == ty => Some(r),
                        _ => None,
                    };
                    merged.push((name.clone(), ty, expr, same_as));
                    columns[l].visible = false;
                    columns[r].visible = false;
                }
                let on = Expr::and_all(conditions);
                let width = columns.len();
                let n = merged.len();
                let mut exprs: Vec<Expr> = merged.iter().map(|(_, _, e, _)| e.clone()).collect();
                exprs.extend((0..width).map(Expr::Column));
                let mut names_out: Vec<String> =
                    merged.iter().map(|(n, _, _, _)| n.clone()).collect();
                names_out.extend(columns.iter().map(|c| match &c.qualifier {
                    Some(q) => format!("{q}.{}", c.name),
                    None => c.name.clone(),
                }));
                let mut scope_columns: Vec<ScopeColumn> = merged
                    .into_iter()
                    .map(|(name, ty, _, same_as)| ScopeColumn {
                        qualifier: None,
                        name,
                        ty,
                        visible: true,
                        relation: None,
                        same_as: same_as.map(|c| c + n),
                    })
                    .collect();
                scope_columns.extend(columns);
                let relations = relations
                    .into_iter()
                    .map(|mut r| {
                        r.primary_key = r
                            .primary_key
                            .map(|pk| pk.into_iter().map(|c| c + n).collect());
                        r
                    })
                    .collect();
                Ok(FromItem {
                    plan: Plan::Project {
                        input: Box::new(plan(on)),
                        exprs,
                        names: names_out,
                    },
                    columns: scope_columns,
                    relations,
                })
            }
            ast::JoinConstraint::Natural => unreachable!("rewritten to USING above"),
            ast::JoinConstraint::UsingAlias(..) => Err(SqlError::unsupported("USING … AS")),
        }
    }

    fn bind_factor(&self, factor: &ast::TableFactor, outer: Option<&Scope>) -> SqlResult<FromItem> {
        match factor {
            ast::TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version: None,
                with_ordinality: false,
                partitions,
                json_path: None,
                sample: None,
                index_directives,
                ..
            } if with_hints.is_empty() && partitions.is_empty() && index_directives.is_empty() => {
                let table_name = crate::exec::table_name(name)?;
                if let Some(args) = args {
                    return self.bind_table_function(&table_name, args, alias.as_ref(), outer);
                }
                let aliases = alias_columns(alias.as_ref());
                let qualifier = alias
                    .as_ref()
                    .map_or_else(|| table_name.clone(), |a| ident_name(&a.name));
                // A common table expression of an enclosing WITH hides a table.
                let common = {
                    let tables = self.common_tables.borrow();
                    tables
                        .iter()
                        .rposition(|t| t.name == table_name)
                        .map(|i| (i, tables[i].clone()))
                };
                if let Some((index, common)) = common {
                    let hidden = self.common_tables.borrow_mut().split_off(index);
                    let bound = self.bind_query(&common.query, None);
                    self.common_tables.borrow_mut().extend(hidden);
                    let mut bound = bound?;
                    if !common.columns.is_empty() {
                        if common.columns.len() > bound.columns.len() {
                            return Err(SqlError::new(
                                sqlstate::INVALID_COLUMN_REFERENCE,
                                format!(
                                    "WITH query \"{}\" has {} columns available but {} columns specified",
                                    common.name,
                                    bound.columns.len(),
                                    common.columns.len()
                                ),
                            ));
                        }
                        for (column, name) in bound.columns.iter_mut().zip(&common.columns) {
                            column.0 = name.clone();
                        }
                    }
                    return FromItem::derived(bound, qualifier, &aliases);
                }
                let table = self.table(&table_name)?;
                if aliases.len() > table.columns.len() {
                    return Err(SqlError::new(
                        sqlstate::INVALID_COLUMN_REFERENCE,
                        format!(
                            "table \"{qualifier}\" has {} columns available but {} columns specified",
                            table.columns.len(),
                            aliases.len()
                        ),
                    ));
                }
                let (mut columns, relation) = table_columns(&table, Some(&qualifier), 0, 0);
                for (column, name) in columns.iter_mut().zip(&aliases) {
                    column.name = name.clone();
                }
                Ok(FromItem {
                    plan: super::select::full_scan(table, qualifier),
                    columns,
                    relations: vec![relation],
                })
            }
            ast::TableFactor::Derived {
                lateral,
                subquery,
                alias,
                sample: None,
            } => {
                if *lateral {
                    return Err(SqlError::unsupported("LATERAL"));
                }
                let Some(alias) = alias else {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "subquery in FROM must have an alias",
                    ));
                };
                let bound = self.bind_query(subquery, outer)?;
                FromItem::derived(bound, ident_name(&alias.name), &alias_columns(Some(alias)))
            }
            ast::TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } => self.bind_table_with_joins(table_with_joins, outer),
            other => Err(SqlError::unsupported(format!("FROM item {other}"))),
        }
    }

    /// `generate_series(start, stop [, step])` over integers.
    fn bind_table_function(
        &self,
        name: &str,
        args: &ast::TableFunctionArgs,
        alias: Option<&ast::TableAlias>,
        outer: Option<&Scope>,
    ) -> SqlResult<FromItem> {
        if name != "generate_series" {
            return Err(SqlError::unsupported(format!("table function {name}()")));
        }
        let scope = Scope::new(Vec::new(), Vec::new(), outer, Some(self));
        let mut bound = Vec::new();
        for arg in &args.args {
            let ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) = arg else {
                return Err(SqlError::unsupported("this form of generate_series()"));
            };
            bound.push(bind(e, &scope)?);
        }
        if !scope.take_subqueries().is_empty() {
            return Err(SqlError::unsupported("subqueries in generate_series()"));
        }
        let types: Vec<ExprType> = bound.iter().map(|t| t.ty.clone()).collect();
        let integers = types.iter().all(|t| match t {
            ExprType::Known(t) => t.is_integer(),
            ExprType::Unknown(_) => true,
        });
        if !(2..=3).contains(&bound.len()) || !integers {
            let listed: Vec<String> = types.iter().map(ExprType::name).collect();
            return Err(SqlError::new(
                sqlstate::UNDEFINED_FUNCTION,
                format!(
                    "function generate_series({}) does not exist",
                    listed.join(", ")
                ),
            ));
        }
        let ty = match common_type(&types, "generate_series")? {
            SqlType::BigInt => SqlType::BigInt,
            _ => SqlType::Int,
        };
        let mut exprs = bound
            .into_iter()
            .map(|t| coerce_to(t, ty))
            .collect::<SqlResult<Vec<Expr>>>()?
            .into_iter();
        let start = exprs.next().expect("two arguments");
        let stop = exprs.next().expect("two arguments");
        let step = exprs
            .next()
            .unwrap_or(Expr::Const(crate::types::Value::Int(1)));
        let qualifier = alias.map_or_else(|| name.to_string(), |a| ident_name(&a.name));
        let column = alias_columns(alias)
            .into_iter()
            .next()
            .unwrap_or_else(|| qualifier.clone());
        Ok(FromItem {
            plan: Plan::Series {
                start,
                stop,
                step,
                name: column.clone(),
            },
            columns: vec![ScopeColumn {
                qualifier: Some(qualifier.clone()),
                name: column,
                ty,
                visible: true,
                relation: Some(0),
                same_as: None,
            }],
            relations: vec![Relation {
                qualifier,
                primary_key: None,
            }],
        })
    }
}
