//! Name resolution: the columns an expression can name, and what binding it collects.
//!
//! A [`Scope`] is the row an expression is evaluated on: the columns of the FROM clause in
//! order (a table's, a join's left then right side, a derived table's output), each with the
//! qualifier it can be named by (`t.a`, or the alias `x.a`). A subquery's scope has its
//! enclosing query's scope as parent: a name found there is an *outer reference*
//! ([`Expr::Outer`]), which the executor replaces by the outer row's value before running
//! the subquery.
//!
//! Binding also collects, through the scope:
//! - **aggregate calls** (`count(*)`, `sum(x)`, …) where the clause allows them (the select
//!   list, HAVING, ORDER BY); each becomes [`Expr::AggregateRef`] until the planner rewrites
//!   the expression over the aggregation's output. Elsewhere (WHERE, GROUP BY, JOIN … ON) an
//!   aggregate is refused with 42803, as in PostgreSQL, and so is an aggregate inside another;
//! - **subqueries in expressions** (scalar, `IN`, `EXISTS`), bound by the query binder
//!   ([`SubqueryBinder`]); each becomes [`Expr::SubqueryRef`] until the planner places an
//!   `Apply` that computes it per row.
//!
//! Resolution follows PostgreSQL: an unqualified name must match exactly one visible column
//! (42702 if several, 42703 if none, in this scope or an outer one); a qualifier must name a
//! relation in FROM (42P01 otherwise). Columns merged by `JOIN … USING` are visible once
//! unqualified; each side's own column stays reachable by its qualifier.

use std::cell::{Cell, RefCell};

use sqlparser::ast;

use crate::catalog::Table;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, ExprType, Typed};
use crate::plan::{AggregateCall, SubqueryDef};
use crate::types::SqlType;

/// How deeply expressions may nest. Binding and evaluation recurse over the tree, and a
/// client can send `1+1+…+1` with a hundred thousand terms: past this depth the statement is
/// refused (PostgreSQL's 54001) instead of overflowing the stack.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// One column of a scope.
#[derive(Clone, Debug)]
pub struct ScopeColumn {
    /// The relation name or alias it can be qualified with (`None`: a `USING` column).
    pub qualifier: Option<String>,
    pub name: String,
    pub ty: SqlType,
    /// Found by an unqualified name and expanded by `*` (false for each side's copy of a
    /// `USING` column, which the merged column stands for).
    pub visible: bool,
    /// Index of the relation it belongs to in [`Scope::relations`].
    pub relation: Option<usize>,
    /// A `USING` column that always equals this other column of the scope (the left side's
    /// for an inner or left join, the right side's for a right join).
    pub same_as: Option<usize>,
}

/// A relation of FROM: its name, and for a base table the positions of its primary key
/// columns in the scope (grouping by them makes the table's other columns groupable, as
/// PostgreSQL's functional dependency rule allows).
#[derive(Clone, Debug)]
pub struct Relation {
    pub qualifier: String,
    pub primary_key: Option<Vec<usize>>,
}

/// Where aggregate calls may appear while binding.
#[derive(Debug)]
pub enum AggregateState {
    /// Refused: the clause named (`WHERE`, `GROUP BY`, `JOIN conditions`, …).
    NotAllowed(&'static str),
    /// Allowed: calls so far.
    Collecting(Vec<AggregateCall>),
}

/// Binds the subqueries that appear in expressions (implemented by the query binder, which
/// can read the catalog).
pub trait SubqueryBinder {
    /// Binds `query` with `outer` as the scope its outer references resolve in.
    fn bind_subquery(&self, query: &ast::Query, outer: &Scope) -> SqlResult<BoundSubquery>;
}

/// A bound subquery: its plan and output columns.
pub struct BoundSubquery {
    pub plan: crate::plan::Plan,
    pub columns: Vec<(String, SqlType)>,
}

/// The columns visible to an expression, and what binding it collects (see the module doc).
pub struct Scope<'a> {
    pub columns: Vec<ScopeColumn>,
    pub relations: Vec<Relation>,
    parent: Option<&'a Scope<'a>>,
    binder: Option<&'a dyn SubqueryBinder>,
    depth: Cell<usize>,
    pub aggregates: RefCell<AggregateState>,
    /// Whether an aggregate call's arguments are being bound (aggregates do not nest).
    in_aggregate: Cell<bool>,
    pub subqueries: RefCell<Vec<SubqueryDef>>,
}

/// Counts one level of nesting while alive.
pub struct DepthGuard<'s>(&'s Cell<usize>);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl<'a> Scope<'a> {
    /// No columns: constants only (DDL defaults, FROM-less SELECT).
    pub fn empty() -> Scope<'static> {
        Scope::new(Vec::new(), Vec::new(), None, None)
    }

    pub fn new(
        columns: Vec<ScopeColumn>,
        relations: Vec<Relation>,
        parent: Option<&'a Scope<'a>>,
        binder: Option<&'a dyn SubqueryBinder>,
    ) -> Scope<'a> {
        Scope {
            columns,
            relations,
            parent,
            binder,
            depth: Cell::new(0),
            aggregates: RefCell::new(AggregateState::NotAllowed("this context")),
            in_aggregate: Cell::new(false),
            subqueries: RefCell::new(Vec::new()),
        }
    }

    /// One table, named by `alias` or its own name.
    pub fn table(table: &Table, alias: Option<&str>) -> Scope<'static> {
        let (columns, relation) = table_columns(table, alias, 0, 0);
        Scope::new(columns, vec![relation], None, None)
    }

    /// A scope over the same columns with a different parent and binder (for the next
    /// clause of the same query).
    pub fn with_links(
        columns: Vec<ScopeColumn>,
        relations: Vec<Relation>,
        parent: Option<&'a Scope<'a>>,
        binder: Option<&'a dyn SubqueryBinder>,
    ) -> Scope<'a> {
        Scope::new(columns, relations, parent, binder)
    }

    pub fn parent(&self) -> Option<&'a Scope<'a>> {
        self.parent
    }

    pub fn binder(&self) -> Option<&'a dyn SubqueryBinder> {
        self.binder
    }

    pub fn width(&self) -> usize {
        self.columns.len()
    }

    /// Sets where aggregates may appear for the clause about to be bound.
    pub fn set_aggregates(&self, state: AggregateState) -> AggregateState {
        self.aggregates.replace(state)
    }

    /// Takes the subqueries collected so far.
    pub fn take_subqueries(&self) -> Vec<SubqueryDef> {
        std::mem::take(&mut *self.subqueries.borrow_mut())
    }

    pub fn enter(&self) -> SqlResult<DepthGuard<'_>> {
        let depth = self.depth.get() + 1;
        if depth > MAX_EXPRESSION_DEPTH {
            return Err(SqlError::new(
                sqlstate::STATEMENT_TOO_COMPLEX,
                format!(
                    "expression is too deeply nested (more than {MAX_EXPRESSION_DEPTH} levels)"
                ),
            ));
        }
        self.depth.set(depth);
        Ok(DepthGuard(&self.depth))
    }

    /// Registers an aggregate call (its arguments already bound), returning the expression
    /// that stands for its result.
    pub fn add_aggregate(&self, call: AggregateCall) -> SqlResult<Typed> {
        let ty = call.result_type;
        let mut state = self.aggregates.borrow_mut();
        match &mut *state {
            AggregateState::NotAllowed(clause) => Err(SqlError::new(
                sqlstate::GROUPING_ERROR,
                format!("aggregate functions are not allowed in {clause}"),
            )),
            AggregateState::Collecting(calls) => {
                let index = match calls.iter().position(|c| *c == call) {
                    Some(i) => i,
                    None => {
                        calls.push(call);
                        calls.len() - 1
                    }
                };
                Ok(Typed {
                    expr: Expr::AggregateRef(index),
                    ty: ExprType::Known(ty),
                })
            }
        }
    }

    /// Whether aggregates are allowed where binding is now; errors for a nested aggregate.
    pub fn begin_aggregate_arguments(&self) -> SqlResult<()> {
        if self.in_aggregate.get() {
            return Err(SqlError::new(
                sqlstate::GROUPING_ERROR,
                "aggregate function calls cannot be nested",
            ));
        }
        if let AggregateState::NotAllowed(clause) = &*self.aggregates.borrow() {
            return Err(SqlError::new(
                sqlstate::GROUPING_ERROR,
                format!("aggregate functions are not allowed in {clause}"),
            ));
        }
        self.in_aggregate.set(true);
        Ok(())
    }

    pub fn end_aggregate_arguments(&self) {
        self.in_aggregate.set(false);
    }

    /// Registers a subquery used in an expression; returns its reference. Not inside an
    /// aggregate's arguments (which are computed below the Apply that computes subqueries).
    pub fn add_subquery(&self, def: SubqueryDef) -> SqlResult<Expr> {
        if self.in_aggregate.get() {
            return Err(SqlError::unsupported(
                "a subquery in an aggregate's arguments or FILTER",
            ));
        }
        if let crate::plan::SubqueryKind::In { operand, .. } = &def.kind
            && operand.any(&|e| matches!(e, Expr::SubqueryRef(_)))
        {
            return Err(SqlError::unsupported(
                "a subquery as the operand of IN (subquery)",
            ));
        }
        let mut subqueries = self.subqueries.borrow_mut();
        subqueries.push(def);
        Ok(Expr::SubqueryRef(subqueries.len() - 1))
    }

    fn has_relation(&self, qualifier: &str) -> bool {
        self.columns
            .iter()
            .any(|c| c.qualifier.as_deref() == Some(qualifier))
            || self.relations.iter().any(|r| r.qualifier == qualifier)
    }

    /// The column `qualifier.name` (or unqualified `name`) in this scope: its index, if
    /// found; an error if ambiguous or if the qualifier names a relation without it.
    fn find(&self, qualifier: Option<&str>, name: &str) -> SqlResult<Option<usize>> {
        let mut found = None;
        for (i, column) in self.columns.iter().enumerate() {
            let matches = column.name == name
                && match qualifier {
                    Some(q) => column.qualifier.as_deref() == Some(q),
                    None => column.visible,
                };
            if !matches {
                continue;
            }
            if found.is_some() {
                let shown = match qualifier {
                    Some(q) => format!("{q}.{name}"),
                    None => name.to_string(),
                };
                return Err(SqlError::new(
                    sqlstate::AMBIGUOUS_COLUMN,
                    format!("column reference \"{shown}\" is ambiguous"),
                ));
            }
            found = Some(i);
        }
        Ok(found)
    }

    /// Resolves a column name here or in an enclosing query.
    pub fn column(&self, qualifier: Option<&str>, name: &str) -> SqlResult<Typed> {
        let full_name = match qualifier {
            Some(q) => format!("{q}.{name}"),
            None => name.to_string(),
        };
        let mut scope = self;
        let mut depth = 0;
        let mut relation_seen = false;
        loop {
            if let Some(i) = scope.find(qualifier, name)? {
                let ty = scope.columns[i].ty;
                let expr = if depth == 0 {
                    Expr::Column(i)
                } else {
                    Expr::Outer { depth, index: i }
                };
                return Ok(Typed {
                    expr,
                    ty: ExprType::Known(ty),
                });
            }
            if let Some(q) = qualifier
                && scope.has_relation(q)
            {
                relation_seen = true;
                break;
            }
            match scope.parent {
                Some(parent) => {
                    scope = parent;
                    depth += 1;
                }
                None => break,
            }
        }
        match qualifier {
            Some(q) if !relation_seen => Err(SqlError::new(
                sqlstate::UNDEFINED_TABLE,
                format!("missing FROM-clause entry for table \"{q}\""),
            )),
            _ => Err(SqlError::undefined_column(&full_name)),
        }
    }

    /// The columns `*` stands for (`qualifier.*` when given), as (index, column).
    pub fn star(&self, qualifier: Option<&str>) -> SqlResult<Vec<(usize, &ScopeColumn)>> {
        let columns: Vec<(usize, &ScopeColumn)> = match qualifier {
            None => self
                .columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.visible)
                .collect(),
            Some(q) => {
                if !self.has_relation(q) {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("missing FROM-clause entry for table \"{q}\""),
                    ));
                }
                self.columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.qualifier.as_deref() == Some(q))
                    .collect()
            }
        };
        Ok(columns)
    }
}

/// A table's columns as scope columns at `offset`, with its relation (index `relation`).
pub fn table_columns(
    table: &Table,
    alias: Option<&str>,
    offset: usize,
    relation: usize,
) -> (Vec<ScopeColumn>, Relation) {
    let qualifier = alias.unwrap_or(&table.name).to_string();
    let columns = table
        .columns
        .iter()
        .map(|c| ScopeColumn {
            qualifier: Some(qualifier.clone()),
            name: c.name.clone(),
            ty: c.ty,
            visible: true,
            relation: Some(relation),
            same_as: None,
        })
        .collect();
    let primary_key = if table.primary_key.is_empty() {
        None
    } else {
        Some(table.primary_key.iter().map(|&i| offset + i).collect())
    };
    (
        columns,
        Relation {
            qualifier,
            primary_key,
        },
    )
}
