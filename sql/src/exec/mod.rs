//! Statement execution against one transaction.
//!
//! Each statement kind lives in its own file; all of them read the catalog and rows through
//! the [`Transaction`] they are given, so a statement sees one snapshot and its writes commit
//! or vanish together with the rest of the transaction. Anything the AST can express that is
//! not implemented is refused with SQLSTATE 0A000 rather than ignored.
//!
//! Besides the transaction a statement gets a `Context`: the cluster's regions (for the
//! region statements, which act on the cluster outside any transaction) and the list of
//! splits to ask for once the transaction commits.

mod aggregate;
mod alter;
mod apply;
pub(crate) mod ddl;
mod delete;
mod distinct;
pub(crate) mod insert;
mod join;
mod join_dml;
mod lookup_join;
mod on_conflict;
pub mod operator;
mod query;
mod regions;
mod returning;
pub(crate) mod row_writes;
mod rows;
pub mod scan;
mod set_op;
mod sort;
mod spill;
mod subquery_values;
pub mod table_scan;
mod update;

use sqlparser::ast;

use kv::Transaction;
use kv::client::RegionAdmin;

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::ident_name;
use crate::parse::ParsedStatement;
use crate::region_syntax::RegionStatement;
use crate::schema_change;
use crate::types::SqlType;
pub use spill::{WorkMem, files_created as spill_files_created};

/// What a statement may use besides its transaction.
pub(crate) struct Context<'a> {
    /// The cluster's regions; `None` for a store without regions.
    pub regions: Option<&'a dyn RegionAdmin>,
    /// Keys at which regions should start once the transaction commits (each new table's
    /// first row key); dropped if it rolls back.
    pub splits_after_commit: &'a mut Vec<Vec<u8>>,
    /// Where a query's rows go as they are produced (`None`: into its result).
    pub sink: Option<&'a mut (dyn ResultSink + 'static)>,
    /// What each sort, hash aggregation or hash join may hold before it spills.
    pub work_mem: WorkMem,
    /// Where identity columns take their values.
    pub sequences: &'a crate::sequence::Sequences,
    /// Where transactions come from, for statements that run transactions of their own
    /// (CREATE INDEX outside a block).
    pub source: &'a dyn kv::TransactionSource,
    /// The statement runs in a transaction block (or a multi-statement query), not in a
    /// transaction of its own.
    pub in_block: bool,
}

/// Where a query's rows go as they are produced, instead of being collected into its result:
/// a client connection, which sends them on as they come (so a `SELECT *` of a big table
/// holds a page of it, not all of it). An error (the client went away) stops the query.
pub trait ResultSink {
    /// The result set's columns, before its first row.
    fn columns(&mut self, columns: &[ColumnInfo]) -> SqlResult<()>;
    /// One row, values in PostgreSQL text format (`None`: NULL).
    fn row(&mut self, row: Vec<Option<String>>) -> SqlResult<()>;
    /// One statement's outcome, in statement order (for a query whose rows went to
    /// [`ResultSink::row`], a command with its `SELECT n` tag).
    fn finish(&mut self, result: SqlResult<StatementResult>);
}

/// A result column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    pub type_size: i16,
}

impl ColumnInfo {
    pub fn new(name: impl Into<String>, ty: SqlType) -> Self {
        Self {
            name: name.into(),
            type_oid: ty.oid(),
            type_size: ty.size(),
        }
    }
}

/// What a statement returns to the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatementResult {
    /// A result set; values in PostgreSQL text format, `None` for NULL.
    Rows {
        columns: Vec<ColumnInfo>,
        rows: Vec<Vec<Option<String>>>,
        tag: String,
    },
    /// A command without a result set.
    Command { tag: String },
}

impl StatementResult {
    pub fn command(tag: impl Into<String>) -> Self {
        StatementResult::Command { tag: tag.into() }
    }

    pub fn tag(&self) -> &str {
        match self {
            StatementResult::Rows { tag, .. } | StatementResult::Command { tag } => tag,
        }
    }
}

/// Executes a data, schema or region statement (not transaction control) in `txn`.
pub(crate) fn execute(
    txn: &mut dyn Transaction,
    statement: &ParsedStatement,
    context: Context,
) -> SqlResult<StatementResult> {
    match statement {
        ParsedStatement::Sql(statement) => execute_sql(txn, statement, context),
        ParsedStatement::Regions(RegionStatement::ShowRegions { table }) => {
            regions::show_regions(txn, context.regions, table.as_ref())
        }
        ParsedStatement::Regions(RegionStatement::SplitAt { table, rows }) => {
            regions::split_at(txn, context.regions, table, rows)
        }
        ParsedStatement::Regions(RegionStatement::Unsplit { table, rows }) => {
            regions::unsplit(txn, context.regions, table, rows.as_deref())
        }
    }
}

fn execute_sql(
    txn: &mut dyn Transaction,
    statement: &ast::Statement,
    context: Context,
) -> SqlResult<StatementResult> {
    match statement {
        ast::Statement::CreateTable(create) => {
            ddl::create_table(txn, create, context.splits_after_commit)
        }
        ast::Statement::Drop {
            object_type: ast::ObjectType::Index,
            if_exists,
            names,
            cascade: false,
            ..
        } => schema_change::drop_indexes(txn, *if_exists, names),
        ast::Statement::Drop {
            object_type,
            if_exists,
            names,
            cascade,
            ..
        } => ddl::drop(txn, *object_type, *if_exists, names, *cascade),
        ast::Statement::Truncate(truncate) => ddl::truncate(txn, truncate),
        ast::Statement::AlterTable(alter) => {
            alter::alter_table(txn, context.source, context.in_block, alter)
        }
        ast::Statement::CreateIndex(create) if context.in_block => {
            schema_change::create_index_in_block(txn, context.source, create)
        }
        ast::Statement::CreateIndex(create) => schema_change::create_index(context.source, create),
        ast::Statement::ShowVariable { .. } => show_jobs(txn),
        ast::Statement::Insert(insert) => {
            insert::execute(txn, insert, context.work_mem, context.sequences)
        }
        ast::Statement::Query(query) => query::execute(txn, query, context.sink, context.work_mem),
        ast::Statement::Explain {
            statement,
            analyze,
            verbose: false,
            query_plan: false,
            estimate: false,
            format: None,
            options: None,
            ..
        } => query::explain_statement(txn, statement, *analyze, context.work_mem),
        ast::Statement::Update(update) => update::execute(txn, update, context.work_mem),
        ast::Statement::Delete(delete) => delete::execute(txn, delete, context.work_mem),
        other => Err(SqlError::unsupported(format!(
            "statement \"{}\"",
            first_words(other)
        ))),
    }
}

/// `SHOW JOBS`: the index builds recorded, with their progress.
fn show_jobs(txn: &mut dyn Transaction) -> SqlResult<StatementResult> {
    let rows: Vec<Vec<Option<String>>> = schema_change::jobs(txn)?
        .into_iter()
        .map(|job| {
            vec![
                Some(format!(
                    "CREATE {}INDEX {} ON {}",
                    if job.unique { "UNIQUE " } else { "" },
                    job.index,
                    job.table
                )),
                Some(job.state),
                Some(job.rows_done.to_string()),
            ]
        })
        .collect();
    Ok(StatementResult::Rows {
        columns: vec![
            ColumnInfo::new("job", SqlType::Text),
            ColumnInfo::new("state", SqlType::Text),
            ColumnInfo::new("rows_done", SqlType::BigInt),
        ],
        tag: format!("SELECT {}", rows.len()),
        rows,
    })
}

/// The statement's leading keywords, for error messages.
pub fn first_words(statement: &ast::Statement) -> String {
    statement
        .to_string()
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A table name: `name` or `public.name`.
pub fn table_name(name: &ast::ObjectName) -> SqlResult<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ast::ObjectNamePart::Identifier(ident) => Ok(ident_name(ident)),
            other => Err(SqlError::unsupported(format!("name part {other}"))),
        })
        .collect::<SqlResult<_>>()?;
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == "public" => Ok(table.clone()),
        [schema, _] => Err(SqlError::new(
            "3F000",
            format!("schema \"{schema}\" does not exist (RegionDB has only \"public\")"),
        )),
        _ => Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            format!("improper qualified name: {name}"),
        )),
    }
}

/// A column an INSERT or UPDATE writes (`t.c` or `c`): its position and name in `table`.
pub fn target_column(
    table: &crate::catalog::Table,
    column: &ast::ObjectName,
) -> SqlResult<(usize, String)> {
    let Some(ast::ObjectNamePart::Identifier(ident)) = column.0.last() else {
        return Err(SqlError::unsupported(format!("column reference {column}")));
    };
    let name = ident_name(ident);
    let index = table.column_index(&name).ok_or_else(|| {
        SqlError::new(
            sqlstate::UNDEFINED_COLUMN,
            format!(
                "column \"{name}\" of relation \"{}\" does not exist",
                table.name
            ),
        )
    })?;
    Ok((index, name))
}

/// The single table a DML statement targets, with its alias.
pub fn single_table(from: &ast::TableWithJoins) -> SqlResult<(String, Option<String>)> {
    if !from.joins.is_empty() {
        return Err(SqlError::unsupported("JOIN"));
    }
    match &from.relation {
        ast::TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            with_ordinality: false,
            partitions,
            json_path: None,
            sample: None,
            index_directives,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_directives.is_empty() => {
            if let Some(alias) = alias
                && !alias.columns.is_empty()
            {
                return Err(SqlError::unsupported("column aliases in FROM"));
            }
            Ok((
                table_name(name)?,
                alias.as_ref().map(|a| ident_name(&a.name)),
            ))
        }
        other => Err(SqlError::unsupported(format!("FROM item {other}"))),
    }
}

/// The scope of an UPDATE's or DELETE's expressions: the target table's columns, with
/// subqueries bound by `binder`.
fn dml_scope<'a>(
    table: &crate::catalog::Table,
    alias: Option<&str>,
    binder: &'a crate::bind::Binder<'_>,
) -> crate::scope::Scope<'a> {
    let (columns, relation) = crate::scope::table_columns(table, alias, 0, 0);
    crate::scope::Scope::new(columns, vec![relation], None, Some(binder))
}
