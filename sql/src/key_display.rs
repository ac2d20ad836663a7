//! Keys of the key space written for humans (`SHOW REGIONS`, `ALTER TABLE … SPLIT AT`).
//!
//! The layout ([`crate::encoding`], [`crate::catalog`]) is decoded as far as it goes:
//!
//! | key                                  | shown as                       |
//! |--------------------------------------|--------------------------------|
//! | empty, as a start                    | `/Min`                         |
//! | empty, as an end                     | `/Max`                         |
//! | `m…` (the catalog)                   | `/System/table/accounts`       |
//! | `t{id}r` (a table's first row key)   | `/Table/accounts`              |
//! | `t{id}r{pk values}`                  | `/Table/accounts/42`, `/Table/accounts/'alice'/3` |
//! | `t{id}s` (just past a table's rows)  | `/Table/accounts/PrefixEnd`    |
//! | anything else                        | `"t\x00…"`: the bytes, quoted and escaped |
//!
//! A table is named as PostgreSQL would quote its identifier (`/Table/"Mixed Case"`); a table
//! the catalog no longer knows (dropped) by its numeric ID (`/Table/104`), which a name can
//! never look like unquoted. Key values print as SQL literals: numbers plainly, text in single
//! quotes (quotes doubled), `true`/`false`, `NULL`. Bytes of a row key that do not decode (a
//! key cut inside a value) follow as a quoted, escaped tail: `/Table/t/1/"\x03\x80"`.
//! Escaped bytes keep printable ASCII, write `"` and `\` as `\"` and `\\`, and everything
//! else as `\xNN`.

use std::collections::HashMap;
use std::fmt::Write as _;

use kv::codec::memcomparable;

use crate::catalog::{self, Table};
use crate::encoding::{ROWS_MARKER, TABLE_PREFIX, decode_value};
use crate::types::{SqlType, Value, format_float};

/// Writes keys for humans, knowing the tables of one catalog snapshot.
pub struct KeyDisplay {
    tables: HashMap<u64, Table>,
}

impl KeyDisplay {
    pub fn new(tables: impl IntoIterator<Item = Table>) -> Self {
        KeyDisplay {
            tables: tables.into_iter().map(|t| (t.id, t)).collect(),
        }
    }

    /// A range's start: the empty key is `/Min`.
    pub fn start(&self, key: &[u8]) -> String {
        if key.is_empty() {
            "/Min".into()
        } else {
            self.key(key)
        }
    }

    /// A range's end: the empty key (unbounded) is `/Max`.
    pub fn end(&self, key: &[u8]) -> String {
        if key.is_empty() {
            "/Max".into()
        } else {
            self.key(key)
        }
    }

    /// A non-empty key.
    pub fn key(&self, key: &[u8]) -> String {
        match key.split_first() {
            Some((&catalog::KEY_PREFIX, rest)) => format!("/System/{}", escape(rest)),
            Some((&TABLE_PREFIX, rest)) if rest.len() >= 8 => {
                let (table_id, tail) = match memcomparable::decode_u64(rest) {
                    Ok(decoded) => decoded,
                    Err(_) => return quoted(key),
                };
                self.table_key(table_id, tail)
            }
            _ => quoted(key),
        }
    }

    fn table_key(&self, table_id: u64, tail: &[u8]) -> String {
        let table = self.tables.get(&table_id);
        let mut out = match table {
            Some(table) => format!("/Table/{}", quote_ident(&table.name)),
            None => format!("/Table/{table_id}"),
        };
        match tail.split_first() {
            Some((&ROWS_MARKER, mut values)) => {
                let key_types: Vec<SqlType> = table
                    .map(|t| t.primary_key.iter().map(|&i| t.columns[i].ty).collect())
                    .unwrap_or_default();
                let mut column = 0;
                while !values.is_empty() {
                    let Ok((value, rest)) = decode_value(values) else {
                        let _ = write!(out, "/{}", quoted(values));
                        break;
                    };
                    let _ = write!(out, "/{}", literal(&value, key_types.get(column).copied()));
                    values = rest;
                    column += 1;
                }
            }
            Some((&marker, [])) if marker == ROWS_MARKER + 1 => out.push_str("/PrefixEnd"),
            _ => {
                let _ = write!(out, "/{}", quoted(tail));
            }
        }
        out
    }
}

/// A key value as a SQL literal; `ty` (the key column's type, when known) tells a `real` from
/// a `double precision`.
fn literal(value: &Value, ty: Option<SqlType>) -> String {
    match value {
        Value::Null => "NULL".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => format_float(*f, ty == Some(SqlType::Real)),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// An identifier as PostgreSQL's `quote_ident` writes it: plain if it is lower-case letters,
/// digits and underscores not starting with a digit, double-quoted otherwise.
fn quote_ident(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

fn quoted(bytes: &[u8]) -> String {
    format!("\"{}\"", escape(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Column;
    use crate::encoding::{row_key, row_prefix, row_prefix_end};

    fn table(id: u64, name: &str, key: &[(&str, SqlType)]) -> Table {
        Table::new(
            id,
            name.into(),
            key.iter()
                .map(|(name, ty)| Column {
                    name: (*name).into(),
                    ty: *ty,
                    nullable: false,
                    default: Value::Null,
                    identity: None,
                    missing: Value::Null,
                })
                .collect(),
            (0..key.len()).collect(),
        )
    }

    fn display() -> KeyDisplay {
        KeyDisplay::new([
            table(100, "accounts", &[("id", SqlType::BigInt)]),
            table(
                101,
                "Orders",
                &[("customer", SqlType::Text), ("n", SqlType::Int)],
            ),
            table(
                102,
                "readings",
                &[("r", SqlType::Real), ("ok", SqlType::Bool)],
            ),
        ])
    }

    #[test]
    fn empty_keys_are_the_ends_of_the_key_space() {
        let d = display();
        assert_eq!(d.start(b""), "/Min");
        assert_eq!(d.end(b""), "/Max");
    }

    #[test]
    fn row_keys_show_their_table_and_primary_key() {
        let d = display();
        assert_eq!(d.key(&row_prefix(100)), "/Table/accounts");
        assert_eq!(
            d.key(&row_key(100, [&Value::Int(42)])),
            "/Table/accounts/42"
        );
        assert_eq!(
            d.key(&row_key(100, [&Value::Int(-7)])),
            "/Table/accounts/-7"
        );
        assert_eq!(
            d.start(&row_key(
                101,
                [&Value::Text("o'neil".into()), &Value::Int(3)]
            )),
            "/Table/\"Orders\"/'o''neil'/3"
        );
        // A prefix of a composite key (a split point between customers).
        assert_eq!(
            d.key(&row_key(101, [&Value::Text("alice".into())])),
            "/Table/\"Orders\"/'alice'"
        );
        assert_eq!(
            d.key(&row_key(
                102,
                [&Value::Float(0.1_f32 as f64), &Value::Bool(true)]
            )),
            "/Table/readings/0.1/true"
        );
        assert_eq!(d.key(&row_prefix_end(100)), "/Table/accounts/PrefixEnd");
    }

    #[test]
    fn unknown_tables_show_their_id() {
        let d = display();
        assert_eq!(d.key(&row_key(555, [&Value::Int(1)])), "/Table/555/1");
        assert_eq!(
            d.key(&row_key(555, [&Value::Float(0.5), &Value::Null])),
            "/Table/555/0.5/NULL"
        );
    }

    #[test]
    fn catalog_keys_are_system_keys() {
        let d = display();
        assert_eq!(d.key(b"mtable/accounts"), "/System/table/accounts");
        assert_eq!(d.key(b"mnext_table_id"), "/System/next_table_id");
        assert_eq!(d.key(b"m\x00\xff"), "/System/\\x00\\xff");
    }

    #[test]
    fn undecodable_bytes_are_escaped() {
        let d = display();
        // Cut inside the second value.
        let mut cut = row_key(100, [&Value::Int(1), &Value::Int(2)]);
        cut.truncate(cut.len() - 6);
        assert_eq!(d.key(&cut), "/Table/accounts/1/\"\\x03\\x80\\x00\"");
        // A table prefix without the rows marker, and a short `t` key.
        let mut bare = row_prefix(100);
        bare.pop();
        assert_eq!(d.key(&bare), "/Table/accounts/\"\"");
        assert_eq!(d.key(b"t\x01"), "\"t\\x01\"");
        assert_eq!(d.key(b"zz\"\\\n"), "\"zz\\\"\\\\\\x0a\"");
    }
}
