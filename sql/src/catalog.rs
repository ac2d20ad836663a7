//! The catalog: table descriptors stored in the key space, read and written inside the
//! statement's own transaction, so DDL is transactional and every statement sees the schema
//! of its snapshot.
//!
//! Keys (all under `m`, which no row key can take):
//! - `m` `table/` name → the table's descriptor as JSON;
//! - `m` `next_table_id` → the next table ID (big-endian `u64`).
//!
//! Table IDs are never reused, so rows of a dropped table can never reappear under a new
//! table. Two transactions that create tables concurrently both write the ID counter; the
//! second to commit gets a serialization failure (40001) and may retry.
//!
//! Not here yet: schemas/namespaces, secondary indexes, ALTER TABLE, a schema cache (every
//! statement reads the descriptors it needs).

use serde::{Deserialize, Serialize};

use kv::Transaction;
use kv::codec::memcomparable::prefix_end;

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::types::{SqlType, Value};

/// The first ID handed to a user table.
const FIRST_TABLE_ID: u64 = 100;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    /// Value used when an INSERT does not name the column (constant defaults only).
    pub default: Value,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub id: u64,
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns`, in key order.
    pub primary_key: Vec<usize>,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// The primary key constraint's name, as PostgreSQL would call it.
    pub fn pkey_name(&self) -> String {
        format!("{}_pkey", self.name)
    }
}

/// The first byte of every catalog key.
pub const KEY_PREFIX: u8 = b'm';
const TABLE_KEY_PREFIX: &[u8] = b"mtable/";

fn table_key(name: &str) -> Vec<u8> {
    let mut key = TABLE_KEY_PREFIX.to_vec();
    key.extend_from_slice(name.as_bytes());
    key
}

const NEXT_TABLE_ID_KEY: &[u8] = b"mnext_table_id";

fn corrupt(what: &str, e: impl std::fmt::Display) -> SqlError {
    SqlError::new(
        sqlstate::DATA_CORRUPTED,
        format!("corrupt catalog entry {what}: {e}"),
    )
}

pub fn get_table(txn: &mut dyn Transaction, name: &str) -> SqlResult<Option<Table>> {
    match txn.get(&table_key(name))? {
        Some(bytes) => {
            let table = serde_json::from_slice(&bytes).map_err(|e| corrupt(name, e))?;
            Ok(Some(table))
        }
        None => Ok(None),
    }
}

/// Every table, in name order.
pub fn list_tables(txn: &mut dyn Transaction) -> SqlResult<Vec<Table>> {
    let end = prefix_end(TABLE_KEY_PREFIX).unwrap_or_default();
    txn.scan(TABLE_KEY_PREFIX, Some(&end), usize::MAX)?
        .into_iter()
        .map(|(key, bytes)| {
            serde_json::from_slice(&bytes).map_err(|e| corrupt(&String::from_utf8_lossy(&key), e))
        })
        .collect()
}

pub fn require_table(txn: &mut dyn Transaction, name: &str) -> SqlResult<Table> {
    get_table(txn, name)?.ok_or_else(|| SqlError::undefined_table(name))
}

/// Allocates an ID and stores a new table. `table.id` is overwritten.
pub fn create_table(txn: &mut dyn Transaction, mut table: Table) -> SqlResult<Table> {
    if get_table(txn, &table.name)?.is_some() {
        return Err(SqlError::new(
            sqlstate::DUPLICATE_TABLE,
            format!("relation \"{}\" already exists", table.name),
        ));
    }
    let id = match txn.get(NEXT_TABLE_ID_KEY)? {
        Some(bytes) => {
            let bytes: [u8; 8] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| corrupt("next_table_id", "length"))?;
            u64::from_be_bytes(bytes)
        }
        None => FIRST_TABLE_ID,
    };
    txn.put(NEXT_TABLE_ID_KEY.to_vec(), (id + 1).to_be_bytes().to_vec());
    table.id = id;
    let json = serde_json::to_vec(&table).map_err(|e| corrupt(&table.name, e))?;
    txn.put(table_key(&table.name), json);
    Ok(table)
}

pub fn drop_table(txn: &mut dyn Transaction, table: &Table) {
    txn.delete(table_key(&table.name));
}
