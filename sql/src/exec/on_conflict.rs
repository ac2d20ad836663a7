//! `INSERT … ON CONFLICT`: what an INSERT does with a row whose primary key is taken (by a
//! stored row, or by an earlier row of the same statement).
//!
//! - `DO NOTHING`: the row is skipped.
//! - `DO UPDATE SET … [WHERE …]`: the stored row is updated instead (an upsert). The values
//!   read the stored row by the table's name (or unqualified) and the proposed row as
//!   `excluded`; a row the WHERE rejects is left as it is. Updating a row that the same
//!   statement inserted or updated already fails with 21000, as in PostgreSQL.
//!
//! The stored row is the newest committed version: the INSERT's existence check locks the
//! key first (in a pessimistic transaction), so a concurrent insert of the same key is waited
//! for and then updated, as PostgreSQL does.
//!
//! The conflict target must be the primary key (its columns, or its constraint `t_pkey`);
//! `DO NOTHING` may omit it. RegionDB has no other unique constraints yet, so any other
//! target is 42P10, as PostgreSQL reports a target without a matching constraint. Changing
//! the primary key in `DO UPDATE` is refused (0A000).

use sqlparser::ast;

use super::update::bind_assignments;
use crate::bind::Binder;
use crate::catalog::Table;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, bind, ident_name};
use crate::scope::{Scope, table_columns};
use crate::types::Value;

/// What to do with a row whose key is taken.
pub enum OnConflict {
    /// Fail with 23505 (no ON CONFLICT clause).
    Error,
    Nothing,
    /// Assignments and filter over the stored row followed by the proposed row.
    Update {
        assignments: Vec<(usize, Expr)>,
        filter: Option<Expr>,
    },
}

impl OnConflict {
    pub fn bind(
        on: Option<&ast::OnInsert>,
        table: &Table,
        alias: Option<&str>,
        binder: &Binder,
    ) -> SqlResult<Self> {
        let Some(on) = on else {
            return Ok(OnConflict::Error);
        };
        let ast::OnInsert::OnConflict(on) = on else {
            return Err(SqlError::unsupported("ON DUPLICATE KEY UPDATE"));
        };
        if let Some(target) = &on.conflict_target {
            check_target(target, table)?;
        }
        match &on.action {
            ast::OnConflictAction::DoNothing => Ok(OnConflict::Nothing),
            ast::OnConflictAction::DoUpdate(update) => {
                if on.conflict_target.is_none() {
                    return Err(SqlError::new(
                        sqlstate::SYNTAX_ERROR,
                        "ON CONFLICT DO UPDATE requires inference specification or constraint name",
                    ));
                }
                // The stored row, then the proposed one as `excluded` (an unqualified name
                // both have is ambiguous, as in PostgreSQL).
                let width = table.columns.len();
                let (mut columns, stored) = table_columns(table, alias, 0, 0);
                let (mut excluded, proposed) = table_columns(table, Some("excluded"), width, 1);
                columns.append(&mut excluded);
                let scope = Scope::new(columns, vec![stored, proposed], None, Some(binder));
                let assignments = bind_assignments(table, &update.assignments, &scope)?;
                if assignments
                    .iter()
                    .any(|(i, _)| table.primary_key.contains(i))
                {
                    return Err(SqlError::unsupported(
                        "changing the primary key in ON CONFLICT DO UPDATE",
                    ));
                }
                let filter = match &update.selection {
                    Some(e) => Some(bind(e, &scope)?.into_condition("WHERE")?),
                    None => None,
                };
                if !scope.take_subqueries().is_empty() {
                    return Err(SqlError::unsupported("subqueries in ON CONFLICT DO UPDATE"));
                }
                Ok(OnConflict::Update {
                    assignments,
                    filter,
                })
            }
        }
    }

    /// The new version of `stored` for the conflicting `proposed` row (`None`: leave it).
    pub fn updated(&self, stored: &[Value], proposed: &[Value]) -> SqlResult<Option<Vec<Value>>> {
        let OnConflict::Update {
            assignments,
            filter,
        } = self
        else {
            return Ok(None);
        };
        let both: Vec<Value> = stored.iter().chain(proposed).cloned().collect();
        if let Some(filter) = filter
            && !filter.is_true(&both)?
        {
            return Ok(None);
        }
        let mut values = stored.to_vec();
        for (index, expr) in assignments {
            values[*index] = expr.eval(&both)?;
        }
        Ok(Some(values))
    }
}

fn no_matching_constraint() -> SqlError {
    SqlError::new(
        sqlstate::INVALID_COLUMN_REFERENCE,
        "there is no unique or exclusion constraint matching the ON CONFLICT specification",
    )
}

/// The conflict target must name the primary key.
fn check_target(target: &ast::ConflictTarget, table: &Table) -> SqlResult<()> {
    match target {
        ast::ConflictTarget::Columns {
            predicate: Some(_), ..
        } => Err(SqlError::unsupported(
            "a WHERE predicate in the ON CONFLICT target",
        )),
        ast::ConflictTarget::Columns { columns, .. } => {
            let mut named = Vec::new();
            for ident in columns {
                let name = ident_name(ident);
                let index = table
                    .column_index(&name)
                    .ok_or_else(|| SqlError::undefined_column(&name))?;
                named.push(index);
            }
            named.sort_unstable();
            named.dedup();
            let mut key = table.primary_key.clone();
            key.sort_unstable();
            if key.is_empty() || named != key {
                return Err(no_matching_constraint());
            }
            Ok(())
        }
        ast::ConflictTarget::OnConstraint(name) => {
            let name = super::table_name(name)?;
            if table.primary_key.is_empty() || name != table.pkey_name() {
                return Err(SqlError::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!(
                        "constraint \"{name}\" for table \"{}\" does not exist",
                        table.name
                    ),
                ));
            }
            Ok(())
        }
    }
}
