//! `SHOW REGIONS [FROM TABLE t]`, `ALTER TABLE t SPLIT AT VALUES …` and `… UNSPLIT`: the
//! cluster's regions as rows, splits on demand, and letting them merge again.
//!
//! `SHOW REGIONS` returns one row per region in key order, as the scheduler last heard of it:
//!
//! | column             | type   | value                                                  |
//! |--------------------|--------|--------------------------------------------------------|
//! | `region_id`        | int8   | the region's ID                                        |
//! | `start_key`        | text   | first key, for humans ([`crate::key_display`]), `/Min` |
//! | `end_key`          | text   | key past the region, `/Max` for the last one           |
//! | `leader_store`     | int8   | store of the last reported leader; NULL if none yet    |
//! | `peer_stores`      | int8[] | stores holding a replica, e.g. `{1,2,3}`               |
//! | `approximate_size` | int8   | bytes, as last measured by the leader (0 before that)  |
//! | `approximate_keys` | int8   | user keys, likewise                                    |
//!
//! `FROM TABLE t` keeps the regions overlapping the table's rows (42P01 if there is no such
//! table). Key values are written with the names in the statement's catalog snapshot.
//!
//! `ALTER TABLE t SPLIT AT VALUES (v, …), …` (CockroachDB's syntax) makes a region start at
//! the row key of each list of primary-key values. The values are bound and coerced to the
//! key columns' types as INSERT does (so `'42'` is fine for an integer key, and a wrong type
//! or an out-of-range value fails with INSERT's SQLSTATE); a list may name a prefix of a
//! composite key (the split falls before every row with that prefix) but not more values than
//! the key has (42601), and no NULL (23502). The statement waits until a region starts at
//! every key, at most 30 seconds (then 58030; the splits may still happen), and returns one
//! row per key: `split_key` (text, as `SHOW REGIONS` writes keys), with the tag `SELECT n`.
//! Tables without a primary key (hidden row IDs) cannot be split by value (0A000).
//!
//! `ALTER TABLE t UNSPLIT AT VALUES (v, …), …` and `ALTER TABLE t UNSPLIT ALL` (CockroachDB's
//! syntax) forget splits asked for at those keys (or anywhere inside the table's rows, but
//! never the table's own start): their regions are merged by the scheduler again once they
//! are small. They return the keys forgotten (`key`, text), tag `SELECT n`.
//!
//! All of them act on the cluster, not in the transaction: a split happens even if the transaction
//! around the statement rolls back (regions are placement, not data). A database without
//! regions (in memory) refuses them with 0A000.

use std::time::Duration;

use sqlparser::ast;

use kv::Transaction;
use kv::client::{RegionAdmin, RegionSummary};

use super::{ColumnInfo, StatementResult, table_name};
use crate::catalog;
use crate::encoding::{row_key, row_prefix, row_prefix_end};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::{Scope, bind};
use crate::key_display::KeyDisplay;
use crate::types::SqlType;

/// How long `SPLIT AT` waits for its regions to appear.
const SPLIT_WAIT: Duration = Duration::from_secs(30);

/// PostgreSQL's OID of `int8[]` (`_int8`).
const INT8_ARRAY_OID: u32 = 1016;

fn require_regions<'a>(
    regions: Option<&'a dyn RegionAdmin>,
    statement: &str,
) -> SqlResult<&'a dyn RegionAdmin> {
    regions.ok_or_else(|| {
        SqlError::unsupported(format!(
            "{statement} on a database without regions (an in-memory store)"
        ))
    })
}

fn show_regions_columns() -> Vec<ColumnInfo> {
    vec![
        ColumnInfo::new("region_id", SqlType::BigInt),
        ColumnInfo::new("start_key", SqlType::Text),
        ColumnInfo::new("end_key", SqlType::Text),
        ColumnInfo::new("leader_store", SqlType::BigInt),
        ColumnInfo {
            name: "peer_stores".into(),
            type_oid: INT8_ARRAY_OID,
            type_size: -1,
        },
        ColumnInfo::new("approximate_size", SqlType::BigInt),
        ColumnInfo::new("approximate_keys", SqlType::BigInt),
    ]
}

fn region_row(region: &RegionSummary, keys: &KeyDisplay) -> Vec<Option<String>> {
    let peers: Vec<String> = region.peer_stores.iter().map(u64::to_string).collect();
    vec![
        Some(region.id.to_string()),
        Some(keys.start(&region.start_key)),
        Some(keys.end(&region.end_key)),
        region.leader_store.map(|store| store.to_string()),
        Some(format!("{{{}}}", peers.join(","))),
        Some(region.approximate_size.to_string()),
        Some(region.approximate_keys.to_string()),
    ]
}

pub fn show_regions(
    txn: &mut dyn Transaction,
    regions: Option<&dyn RegionAdmin>,
    table: Option<&ast::ObjectName>,
) -> SqlResult<StatementResult> {
    let regions = require_regions(regions, "SHOW REGIONS")?;
    let (start, end) = match table {
        Some(name) => {
            let table = catalog::require_table(txn, &table_name(name)?)?;
            (row_prefix(table.id), row_prefix_end(table.id))
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut found = regions.regions(&start, &end)?;
    found.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    let keys = KeyDisplay::new(catalog::list_tables(txn)?);
    let rows: Vec<_> = found.iter().map(|r| region_row(r, &keys)).collect();
    Ok(StatementResult::Rows {
        columns: show_regions_columns(),
        tag: format!("SELECT {}", rows.len()),
        rows,
    })
}

pub fn split_at(
    txn: &mut dyn Transaction,
    regions: Option<&dyn RegionAdmin>,
    table: &ast::ObjectName,
    rows: &[Vec<ast::Expr>],
) -> SqlResult<StatementResult> {
    let regions = require_regions(regions, "ALTER TABLE … SPLIT AT")?;
    let table = catalog::require_table(txn, &table_name(table)?)?;
    let keys = split_keys(&table, rows, "SPLIT AT")?;
    regions.split_at(keys.clone(), Some(SPLIT_WAIT))?;
    Ok(key_rows(&table, "split_key", &keys))
}

/// `ALTER TABLE t UNSPLIT AT VALUES …` / `… UNSPLIT ALL`: the splits asked for at those keys
/// (or at any key inside the table's rows; never the table's own start) are forgotten, so
/// their regions may merge again once small. Returns the keys forgotten.
pub fn unsplit(
    txn: &mut dyn Transaction,
    regions: Option<&dyn RegionAdmin>,
    table: &ast::ObjectName,
    rows: Option<&[Vec<ast::Expr>]>,
) -> SqlResult<StatementResult> {
    let regions = require_regions(regions, "ALTER TABLE … UNSPLIT")?;
    let table = catalog::require_table(txn, &table_name(table)?)?;
    let mut forgotten = Vec::new();
    match rows {
        Some(rows) => {
            for key in split_keys(&table, rows, "UNSPLIT AT")? {
                // Exactly this key: [key, key + \0).
                let mut end = key.clone();
                end.push(0);
                forgotten.extend(regions.unsplit(&key, &end)?);
            }
        }
        None => {
            let mut start = row_prefix(table.id);
            start.push(0);
            forgotten.extend(regions.unsplit(&start, &row_prefix_end(table.id))?);
        }
    }
    Ok(key_rows(&table, "key", &forgotten))
}

/// The row keys of `rows` of primary-key values, bound and coerced like INSERT's values.
fn split_keys(
    table: &catalog::Table,
    rows: &[Vec<ast::Expr>],
    what: &str,
) -> SqlResult<Vec<Vec<u8>>> {
    if table.primary_key.is_empty() {
        return Err(SqlError::unsupported(format!(
            "{what} on table \"{}\", which has no primary key",
            table.name
        )));
    }
    let mut keys = Vec::with_capacity(rows.len());
    for row in rows {
        if row.len() > table.primary_key.len() {
            return Err(SqlError::new(
                sqlstate::SYNTAX_ERROR,
                format!(
                    "{what} has more expressions than primary key columns ({} for \"{}\")",
                    table.primary_key.len(),
                    table.name
                ),
            ));
        }
        let mut values = Vec::with_capacity(row.len());
        for (expr, &index) in row.iter().zip(&table.primary_key) {
            let column = &table.columns[index];
            let value = bind(expr, &Scope::empty())?
                .coerce_for_assignment(column.ty, &column.name)?
                .eval(&[])?;
            if value.is_null() {
                return Err(SqlError::new(
                    sqlstate::NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" cannot be a split point of relation \"{}\"",
                        column.name, table.name
                    ),
                ));
            }
            values.push(value);
        }
        keys.push(row_key(table.id, values.iter()));
    }
    Ok(keys)
}

/// One row per key, in a text column `column`, written as `SHOW REGIONS` writes keys.
fn key_rows(table: &catalog::Table, column: &str, keys: &[Vec<u8>]) -> StatementResult {
    let display = KeyDisplay::new([table.clone()]);
    let rows: Vec<Vec<Option<String>>> = keys.iter().map(|k| vec![Some(display.key(k))]).collect();
    StatementResult::Rows {
        columns: vec![ColumnInfo::new(column, SqlType::Text)],
        tag: format!("SELECT {}", rows.len()),
        rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;

    #[test]
    fn region_rows_render_missing_leaders_and_peer_lists() {
        let keys = KeyDisplay::new([]);
        let region = RegionSummary {
            id: 7,
            start_key: Vec::new(),
            end_key: row_prefix(100),
            leader_store: None,
            peer_stores: vec![1, 2, 3],
            approximate_size: 4096,
            approximate_keys: 12,
        };
        let text = |v: &str| Some(v.to_string());
        assert_eq!(
            region_row(&region, &keys),
            [
                text("7"),
                text("/Min"),
                text("/Table/100"),
                None,
                text("{1,2,3}"),
                text("4096"),
                text("12")
            ]
        );
        let lonely = RegionSummary {
            start_key: row_key(100, [&Value::Int(5)]),
            leader_store: Some(2),
            ..RegionSummary::default()
        };
        let row = region_row(&lonely, &keys);
        assert_eq!(
            row[1..5],
            [text("/Table/100/5"), text("/Max"), text("2"), text("{}")]
        );
    }
}
