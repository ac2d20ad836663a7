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
//! The conflict target (the *arbiter*) is the primary key or a public unique index: its
//! columns (in any order), or its constraint's name (`ON CONSTRAINT`: the primary key's or
//! a `UNIQUE` constraint's, not a `CREATE UNIQUE INDEX`'s). Without a
//! target (`DO NOTHING` only), every one of them is an arbiter. A conflict on a unique index
//! that is not an arbiter fails with 23505, as in PostgreSQL. A target that matches none is
//! 42P10. Changing the primary key in `DO UPDATE` is refused (0A000).

use sqlparser::ast;

use super::update::bind_assignments;
use crate::bind::Binder;
use crate::catalog::{Index, Table};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Expr, bind, ident_name};
use crate::scope::{Scope, table_columns};
use crate::types::Value;

/// Which unique keys a conflict on is handled by the ON CONFLICT action (a conflict on any
/// other fails with 23505).
#[derive(Default)]
pub struct Arbiters {
    pub primary_key: bool,
    pub indexes: Vec<Index>,
}

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
    /// The action and its arbiters (see the module doc).
    pub fn bind(
        on: Option<&ast::OnInsert>,
        table: &Table,
        alias: Option<&str>,
        binder: &Binder,
    ) -> SqlResult<(Self, Arbiters)> {
        let Some(on) = on else {
            return Ok((OnConflict::Error, Arbiters::default()));
        };
        let ast::OnInsert::OnConflict(on) = on else {
            return Err(SqlError::unsupported("ON DUPLICATE KEY UPDATE"));
        };
        let arbiters = match &on.conflict_target {
            Some(target) => match arbiter(target, table)? {
                Some(index) => Arbiters {
                    primary_key: false,
                    indexes: vec![index],
                },
                None => Arbiters {
                    primary_key: true,
                    indexes: Vec::new(),
                },
            },
            None => Arbiters {
                primary_key: true,
                indexes: table
                    .public_indexes()
                    .filter(|index| index.unique)
                    .cloned()
                    .collect(),
            },
        };
        let action = Self::bind_action(on, table, alias, binder)?;
        Ok((action, arbiters))
    }

    fn bind_action(
        on: &ast::OnConflict,
        table: &Table,
        alias: Option<&str>,
        binder: &Binder,
    ) -> SqlResult<Self> {
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

/// The arbiter a conflict target names: the primary key (`None`) or a unique index.
fn arbiter(target: &ast::ConflictTarget, table: &Table) -> SqlResult<Option<Index>> {
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
            let sorted = |columns: &[usize]| {
                let mut columns = columns.to_vec();
                columns.sort_unstable();
                columns
            };
            if !table.primary_key.is_empty() && named == sorted(&table.primary_key) {
                return Ok(None);
            }
            table
                .public_indexes()
                .find(|index| index.unique && sorted(&index.columns) == named)
                .map(|index| Some(index.clone()))
                .ok_or_else(no_matching_constraint)
        }
        ast::ConflictTarget::OnConstraint(name) => {
            let name = super::table_name(name)?;
            if !table.primary_key.is_empty() && name == table.pkey_name() {
                return Ok(None);
            }
            if let Some(index) = table
                .public_indexes()
                .find(|index| index.constraint && index.name == name)
            {
                return Ok(Some(index.clone()));
            }
            Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!(
                    "constraint \"{name}\" for table \"{}\" does not exist",
                    table.name
                ),
            ))
        }
    }
}
