//! Secondary index entries: what a row puts into an index, and how an entry is read back.
//!
//! An entry of index `i` of table `t` for a row stored under key `t{t}r{pk}`:
//! - `t{t}i{i}{index column values}` → `{pk}` when the index is unique and none of the
//!   values is NULL: the key is the values alone, so two rows with equal values want the
//!   same key, and uniqueness is a property of single keys (checked, and conflicted on by
//!   concurrent writers, like a primary key);
//! - `t{t}i{i}{index column values}{pk}` → empty otherwise (rows with equal values, or with
//!   NULLs, which never collide, as in PostgreSQL, get one key each).
//!
//! Values are encoded as in row keys (memcomparable), so an index's key order is the order
//! of its columns' values (NULL first; `DESC` columns are accepted but stored ascending) and
//! a prefix of values bounds a range of entries. The row's key suffix `{pk}` is the
//! encoded primary key (or the hidden key of a table without one), so an entry leads to its
//! row, and its primary-key values can be read from it without the row.
//!
//! Who writes entries: [`crate::exec::row_writes`] for every row change;
//! [`crate::schema_change`] fills a new index from the table's rows.

use std::collections::BTreeMap;

use kv::Transaction;
use kv::codec::memcomparable::prefix_end;

use crate::catalog::{Index, Table};
use crate::encoding::{
    corrupt, decode_value, encode_value, index_prefix, row_key_suffix, row_prefix, row_prefix_end,
};
use crate::error::SqlResult;
use crate::types::Value;

/// One index entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl Entry {
    /// Of a unique index, with a key that only rows with these values may take.
    pub fn is_unique_key(&self) -> bool {
        !self.value.is_empty()
    }
}

/// The entry `index` of `table` has for the row with `values` stored under `row_key`.
pub fn entry(table: &Table, index: &Index, values: &[Value], row_key: &[u8]) -> Entry {
    let mut key = index_prefix(table.id, index.id);
    let mut has_null = false;
    for &column in &index.columns {
        let value = &values[column];
        has_null |= value.is_null();
        encode_value(&mut key, value);
    }
    let suffix = row_key_suffix(table.id, row_key);
    if index.unique && !has_null {
        Entry {
            key,
            value: suffix.to_vec(),
        }
    } else {
        key.extend_from_slice(suffix);
        Entry {
            key,
            value: Vec::new(),
        }
    }
}

/// What an entry read from `index` says: its column values, and the key of its row.
pub struct DecodedEntry {
    pub values: Vec<Value>,
    pub row_key: Vec<u8>,
}

pub fn decode_entry(
    table: &Table,
    index: &Index,
    key: &[u8],
    value: &[u8],
) -> SqlResult<DecodedEntry> {
    let prefix_len = index_prefix(table.id, index.id).len();
    let mut rest = key.get(prefix_len..).unwrap_or_default();
    let mut values = Vec::with_capacity(index.columns.len());
    for _ in &index.columns {
        let (v, after) = decode_value(rest).map_err(corrupt)?;
        values.push(v);
        rest = after;
    }
    let suffix = if value.is_empty() { rest } else { value };
    let mut row_key = row_prefix(table.id);
    row_key.extend_from_slice(suffix);
    Ok(DecodedEntry { values, row_key })
}

/// The primary-key values encoded in a row key (after the table's row prefix).
pub fn primary_key_values(table: &Table, row_key: &[u8]) -> SqlResult<Vec<Value>> {
    let mut rest = row_key_suffix(table.id, row_key);
    let mut values = Vec::with_capacity(table.primary_key.len());
    for _ in &table.primary_key {
        let (v, after) = decode_value(rest).map_err(corrupt)?;
        values.push(v);
        rest = after;
    }
    Ok(values)
}

/// Compares each maintained index of `table` with the table's rows, as `txn` sees them:
/// every row must have its entry and every entry its row. Returns the differences found
/// (empty: the indexes equal the table). Reads the whole table and its indexes.
pub fn check_indexes(txn: &mut dyn Transaction, table: &Table) -> SqlResult<Vec<String>> {
    let rows = txn.scan(
        &row_prefix(table.id),
        Some(&row_prefix_end(table.id)),
        usize::MAX,
    )?;
    let mut problems = Vec::new();
    for index in table.maintained_indexes() {
        let mut expected: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for (key, value) in &rows {
            let values = table.decode_row(value)?;
            let e = entry(table, index, &values, key);
            if let Some(other) = expected.insert(e.key.clone(), e.value.clone()) {
                problems.push(format!(
                    "{}: two rows want entry {:?} ({:?} and {:?})",
                    index.name, e.key, other, e.value
                ));
            }
        }
        let prefix = index_prefix(table.id, index.id);
        let end = prefix_end(&prefix).unwrap_or_default();
        let stored: BTreeMap<Vec<u8>, Vec<u8>> = txn
            .scan(&prefix, Some(&end), usize::MAX)?
            .into_iter()
            .collect();
        for (key, value) in &expected {
            match stored.get(key) {
                None => problems.push(format!("{}: missing entry {key:?}", index.name)),
                Some(found) if found != value => problems.push(format!(
                    "{}: entry {key:?} leads to {found:?}, not {value:?}",
                    index.name
                )),
                Some(_) => {}
            }
        }
        for key in stored.keys() {
            if !expected.contains_key(key) {
                problems.push(format!("{}: entry {key:?} without a row", index.name));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Column, IndexState};
    use crate::encoding::row_key;
    use crate::types::SqlType;

    fn table() -> Table {
        let column = |name: &str, ty| Column {
            name: name.into(),
            ty,
            nullable: true,
            default: Value::Null,
            identity: None,
            missing: Value::Null,
        };
        Table::new(
            7,
            "t".into(),
            vec![column("id", SqlType::Int), column("a", SqlType::Text)],
            vec![0],
        )
    }

    fn index(unique: bool) -> Index {
        Index {
            id: 3,
            name: "t_a_idx".into(),
            columns: vec![1],
            unique,
            state: IndexState::Public,
            constraint: false,
        }
    }

    #[test]
    fn entries_round_trip_and_order_by_value_then_row() {
        let t = table();
        for unique in [false, true] {
            let ix = index(unique);
            let row = |id: i64, a: Option<&str>| {
                let values = vec![
                    Value::Int(id),
                    a.map_or(Value::Null, |a| Value::Text(a.into())),
                ];
                let key = row_key(t.id, [&values[0]]);
                (values, key)
            };
            for (values, key) in [row(5, Some("x")), row(-1, None), row(9, Some(""))] {
                let e = entry(&t, &ix, &values, &key);
                assert_eq!(e.is_unique_key(), unique && !values[1].is_null());
                let decoded = decode_entry(&t, &ix, &e.key, &e.value).unwrap();
                assert_eq!(decoded.values, vec![values[1].clone()]);
                assert_eq!(decoded.row_key, key);
                assert_eq!(
                    primary_key_values(&t, &decoded.row_key).unwrap(),
                    vec![values[0].clone()]
                );
            }
            let (v1, k1) = row(2, Some("a"));
            let (v2, k2) = row(1, Some("b"));
            assert!(entry(&t, &ix, &v1, &k1).key < entry(&t, &ix, &v2, &k2).key);
            // Equal values: a unique index wants one key, a plain one has a key per row.
            let (v3, k3) = row(3, Some("a"));
            assert_eq!(
                entry(&t, &ix, &v1, &k1).key == entry(&t, &ix, &v3, &k3).key,
                unique
            );
            // NULLs never share a key.
            let (n1, nk1) = row(4, None);
            let (n2, nk2) = row(6, None);
            assert_ne!(entry(&t, &ix, &n1, &nk1).key, entry(&t, &ix, &n2, &nk2).key);
        }
    }
}
