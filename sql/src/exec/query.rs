//! Queries and EXPLAIN: bind → optimize → execute, and the rows as PostgreSQL text.

use sqlparser::ast;

use kv::Transaction;

use super::operator::{build, build_measured};
use super::spill::WorkMem;
use super::{ColumnInfo, ResultSink, StatementResult};
use crate::bind::Binder;
use crate::error::{SqlError, SqlResult};
use crate::optimizer::optimize;
use crate::plan::explain::{explain, explain_annotated};
use crate::types::SqlType;

/// Runs a query (SELECT, VALUES, set operations): its rows go to `sink` as they are
/// produced, or into the result.
pub fn execute(
    txn: &mut dyn Transaction,
    query: &ast::Query,
    sink: Option<&mut (dyn ResultSink + 'static)>,
    work_mem: WorkMem,
) -> SqlResult<StatementResult> {
    let bound = Binder::new(txn).bind_query(query, None)?;
    let plan = optimize(bound.plan)?;
    let mut operator = build(plan, work_mem);
    let columns: Vec<ColumnInfo> = bound
        .columns
        .iter()
        .map(|(name, ty)| ColumnInfo::new(name.clone(), *ty))
        .collect();
    let render = |row: Vec<crate::types::Value>| -> Vec<Option<String>> {
        row.iter()
            .zip(&bound.columns)
            .map(|(value, (_, ty))| value.to_pg_text(*ty))
            .collect()
    };
    if let Some(sink) = sink {
        sink.columns(&columns)?;
        let mut count = 0u64;
        while let Some(row) = operator.next(txn)? {
            sink.row(render(row))?;
            count += 1;
        }
        return Ok(StatementResult::command(format!("SELECT {count}")));
    }
    let mut rows = Vec::new();
    while let Some(row) = operator.next(txn)? {
        rows.push(render(row));
    }
    let tag = format!("SELECT {}", rows.len());
    Ok(StatementResult::Rows { columns, rows, tag })
}

/// `EXPLAIN [ANALYZE] query`: the optimized plan, one line per row of a `QUERY PLAN` column.
/// ANALYZE runs the query (its rows are dropped) and adds each operator's rows and time
/// (its inputs' included) to its line, and the whole run's time at the end. Nodes that run
/// inside another operator (a filter or projection the Apply evaluates, a lookup join's
/// reads, subqueries) have no numbers of their own.
pub fn explain_statement(
    txn: &mut dyn Transaction,
    statement: &ast::Statement,
    analyze: bool,
    work_mem: WorkMem,
) -> SqlResult<StatementResult> {
    let ast::Statement::Query(query) = statement else {
        return Err(SqlError::unsupported(format!(
            "EXPLAIN of {}",
            super::first_words(statement)
        )));
    };
    let bound = Binder::new(txn).bind_query(query, None)?;
    let plan = optimize(bound.plan)?;
    let lines = if analyze {
        let start = std::time::Instant::now();
        let (mut operator, measures) = build_measured(plan.clone(), work_mem);
        while operator.next(txn)?.is_some() {}
        let elapsed = start.elapsed();
        let mut lines = explain_annotated(&plan, &|path| {
            measures.get(path).map(|m| {
                let spilled = match m.spill_files {
                    0 => String::new(),
                    n => format!(" spilled to {n} temporary files"),
                };
                format!(
                    "(actual rows={} time={:.3} ms{spilled})",
                    m.rows,
                    m.elapsed.as_secs_f64() * 1000.0
                )
            })
        });
        lines.push(format!(
            "Execution Time: {:.3} ms",
            elapsed.as_secs_f64() * 1000.0
        ));
        lines
    } else {
        explain(&plan)
    };
    let rows: Vec<Vec<Option<String>>> = lines.into_iter().map(|l| vec![Some(l)]).collect();
    let tag = "EXPLAIN".to_string();
    Ok(StatementResult::Rows {
        columns: vec![ColumnInfo::new("QUERY PLAN", SqlType::Text)],
        rows,
        tag,
    })
}
