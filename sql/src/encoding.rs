//! How SQL data is laid out in the key space.
//!
//! - Row: `t{table_id}r{primary key values}` → `{all column values}`.
//! - Secondary index entry: `t{table_id}i{index_id}{index column values}…` (see
//!   [`crate::index`]).
//! - Catalog: `m{…}` (see [`crate::catalog`]).
//!
//! `table_id` is a big-endian `u64`; values are encoded memcomparably, each behind a type tag,
//! so a row key's byte order is the primary key's SQL order (for composite keys,
//! lexicographic by column) and a prefix of key columns bounds a range of rows. The same
//! value encoding (which decodes without knowing the types) is used for the row's value.
//!
//! Float encoding: the IEEE bits with the sign bit flipped for positives and all bits flipped
//! for negatives, which orders like the numbers; `-0.0` is normalised to `0.0` so equal
//! numbers have one key. (NaN sorts above +Infinity, as in PostgreSQL.)

use kv::codec::memcomparable::{self, DecodeError};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::types::Value;

const TAG_NULL: u8 = 0x00;
const TAG_FALSE: u8 = 0x01;
const TAG_TRUE: u8 = 0x02;
const TAG_INT: u8 = 0x03;
const TAG_FLOAT: u8 = 0x04;
const TAG_TEXT: u8 = 0x05;
/// `-0.0` in a stored row (keys write it as `0.0`: the two are equal, as in PostgreSQL).
const TAG_NEGATIVE_ZERO: u8 = 0x06;

pub fn encode_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(false) => out.push(TAG_FALSE),
        Value::Bool(true) => out.push(TAG_TRUE),
        Value::Int(i) => {
            out.push(TAG_INT);
            memcomparable::encode_i64(out, *i);
        }
        Value::Float(f) => {
            out.push(TAG_FLOAT);
            let f = if *f == 0.0 { 0.0 } else { *f };
            let bits = if f.is_nan() {
                f64::NAN.to_bits()
            } else {
                f.to_bits()
            };
            let ordered = if bits >> 63 == 0 {
                bits | (1 << 63)
            } else {
                !bits
            };
            memcomparable::encode_u64(out, ordered);
        }
        Value::Text(s) => {
            out.push(TAG_TEXT);
            memcomparable::encode_bytes(out, s.as_bytes());
        }
    }
}

pub fn decode_value(input: &[u8]) -> Result<(Value, &[u8]), DecodeError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| DecodeError("missing value tag".into()))?;
    Ok(match tag {
        TAG_NULL => (Value::Null, rest),
        TAG_FALSE => (Value::Bool(false), rest),
        TAG_TRUE => (Value::Bool(true), rest),
        TAG_INT => {
            let (i, rest) = memcomparable::decode_i64(rest)?;
            (Value::Int(i), rest)
        }
        TAG_FLOAT => {
            let (ordered, rest) = memcomparable::decode_u64(rest)?;
            let bits = if ordered >> 63 == 1 {
                ordered & !(1 << 63)
            } else {
                !ordered
            };
            (Value::Float(f64::from_bits(bits)), rest)
        }
        TAG_NEGATIVE_ZERO => (Value::Float(-0.0), rest),
        TAG_TEXT => {
            let (bytes, rest) = memcomparable::decode_bytes(rest)?;
            let s = String::from_utf8(bytes).map_err(|e| DecodeError(e.to_string()))?;
            (Value::Text(s), rest)
        }
        other => return Err(DecodeError(format!("unknown value tag {other}"))),
    })
}

pub(crate) fn corrupt(e: DecodeError) -> SqlError {
    SqlError::new(sqlstate::DATA_CORRUPTED, e.to_string())
}

/// The first byte of every key that belongs to a table.
pub const TABLE_PREFIX: u8 = b't';
/// After `t{table_id}`: the table's rows follow.
pub const ROWS_MARKER: u8 = b'r';

/// After `t{table_id}`: the table's secondary index entries follow.
pub const INDEX_MARKER: u8 = b'i';

/// The prefix of every entry of one index.
pub fn index_prefix(table_id: u64, index_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.push(TABLE_PREFIX);
    memcomparable::encode_u64(&mut key, table_id);
    key.push(INDEX_MARKER);
    memcomparable::encode_u64(&mut key, index_id);
    key
}

/// `[start, end)` holding every index entry of a table.
pub fn index_span(table_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = Vec::with_capacity(16);
    start.push(TABLE_PREFIX);
    memcomparable::encode_u64(&mut start, table_id);
    start.push(INDEX_MARKER);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    (start, end)
}

/// The part of a row key after the table's row prefix (the encoded primary key).
pub fn row_key_suffix(table_id: u64, key: &[u8]) -> &[u8] {
    let prefix_len = row_prefix(table_id).len();
    key.get(prefix_len..).unwrap_or_default()
}

/// The prefix of every row key of a table.
pub fn row_prefix(table_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.push(TABLE_PREFIX);
    memcomparable::encode_u64(&mut key, table_id);
    key.push(ROWS_MARKER);
    key
}

/// The end (exclusive) of a table's row range.
pub fn row_prefix_end(table_id: u64) -> Vec<u8> {
    let mut key = row_prefix(table_id);
    // `r` + 1: past every row key, before anything else the table may get later.
    if let Some(last) = key.last_mut() {
        *last += 1;
    }
    key
}

/// A row key from the primary key values.
pub fn row_key<'a>(table_id: u64, pk: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut key = row_prefix(table_id);
    for value in pk {
        encode_value(&mut key, value);
    }
    key
}

/// A row's values, as [`encode_value`] writes them but keeping the sign of a zero (a key
/// cannot: it would make `-0` and `0` two keys).
pub fn encode_row(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for value in values {
        match value {
            Value::Float(f) if *f == 0.0 && f.is_sign_negative() => out.push(TAG_NEGATIVE_ZERO),
            _ => encode_value(&mut out, value),
        }
    }
    out
}

/// Every value of a stored row, in slot order.
pub fn decode_values(mut input: &[u8]) -> SqlResult<Vec<Value>> {
    let mut values = Vec::new();
    while !input.is_empty() {
        let (value, rest) = decode_value(input).map_err(corrupt)?;
        values.push(value);
        input = rest;
    }
    Ok(values)
}

/// Decodes a row of `width` columns; columns missing from old rows read as NULL.
pub fn decode_row(input: &[u8], width: usize) -> SqlResult<Vec<Value>> {
    let mut values = decode_values(input)?;
    if values.len() > width {
        return Err(corrupt(DecodeError(format!(
            "row has {} values, table has {width} columns",
            values.len()
        ))));
    }
    values.resize(width, Value::Null);
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_value(&mut out, v);
        out
    }

    /// A small seeded generator, so the property tests replay exactly.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    fn random_value(rng: &mut Rng, kind: u64) -> Value {
        match kind {
            0 => Value::Int(match rng.next() % 4 {
                0 => rng.next() as i64,
                1 => (rng.next() % 200) as i64 - 100,
                2 => i64::MIN + (rng.next() % 3) as i64,
                _ => i64::MAX - (rng.next() % 3) as i64,
            }),
            1 => Value::Float(match rng.next() % 5 {
                0 => f64::from_bits(rng.next()),
                1 => (rng.next() % 1000) as f64 / 7.0 - 70.0,
                2 => f64::INFINITY,
                3 => f64::NEG_INFINITY,
                _ => -0.0,
            }),
            2 => {
                let len = rng.next() % 6;
                Value::Text(
                    (0..len)
                        .map(|_| ['\0', 'a', 'b', 'é', '\u{7f}', 'z'][(rng.next() % 6) as usize])
                        .collect(),
                )
            }
            _ => Value::Bool(rng.next().is_multiple_of(2)),
        }
    }

    #[test]
    fn values_round_trip_and_keep_order() {
        let seed = std::env::var("REGIONDB_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5eed_1234_u64);
        let mut rng = Rng(seed);
        for kind in 0..4 {
            let values: Vec<Value> = (0..300).map(|_| random_value(&mut rng, kind)).collect();
            for a in &values {
                let encoded = enc(a);
                let (decoded, rest) = decode_value(&encoded).unwrap();
                assert!(rest.is_empty());
                match (a, &decoded) {
                    (Value::Float(x), Value::Float(y)) if x.is_nan() => assert!(y.is_nan()),
                    (Value::Float(x), Value::Float(y)) => assert_eq!(x, y, "seed {seed}"),
                    _ => assert_eq!(a, &decoded, "seed {seed}"),
                }
                for b in &values {
                    assert_eq!(
                        a.sort_cmp(b),
                        enc(a).cmp(&enc(b)),
                        "seed {seed}: order of {a:?} and {b:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn composite_keys_order_by_first_column_then_second() {
        let k = |a: i64, b: &str| row_key(7, [&Value::Int(a), &Value::Text(b.into())]);
        assert!(k(1, "zzz") < k(2, ""));
        assert!(k(1, "a") < k(1, "a\0"));
        assert!(k(1, "a\0") < k(1, "ab"));
        assert!(k(-5, "x") < k(1, "a"));
        assert!(row_prefix(7) < k(i64::MIN, ""));
        assert!(k(i64::MAX, "\u{10ffff}") < row_prefix_end(7));
        assert!(row_prefix_end(7) <= row_prefix(8));
    }

    #[test]
    fn rows_round_trip_and_pad_missing_columns() {
        let row = vec![
            Value::Int(1),
            Value::Null,
            Value::Text("x".into()),
            Value::Bool(true),
        ];
        assert_eq!(decode_row(&encode_row(&row), 4).unwrap(), row);
        let mut wider = row.clone();
        wider.push(Value::Null);
        assert_eq!(decode_row(&encode_row(&row), 5).unwrap(), wider);
        assert_eq!(decode_row(&encode_row(&row), 3).unwrap_err().code, "XX001");
        // A stored row keeps a negative zero; a key writes it as zero.
        let zeros = decode_row(&encode_row(&[Value::Float(-0.0), Value::Float(0.0)]), 2).unwrap();
        assert!(matches!(zeros[0], Value::Float(f) if f == 0.0 && f.is_sign_negative()));
        assert!(matches!(zeros[1], Value::Float(f) if f == 0.0 && f.is_sign_positive()));
        assert_eq!(enc(&Value::Float(-0.0)), enc(&Value::Float(0.0)));
        assert_eq!(decode_row(&[0x09], 1).unwrap_err().code, "XX001");
    }
}
