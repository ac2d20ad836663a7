//! SQL types and values: what a column can hold, how values compare, convert and print.
//!
//! Integers of every width are held as `i64` and checked against their column's range on
//! the way in; `REAL` values are rounded to `f32` precision on the way in. Text output follows
//! PostgreSQL's text format (`t`/`f`, shortest round-trip floats with an exponent past 15
//! digits, `Infinity`/`NaN`).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{SqlError, SqlResult, sqlstate};

/// A column or expression type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    Bool,
    SmallInt,
    Int,
    BigInt,
    Real,
    Double,
    Text,
    /// `VARCHAR(n)`; `None` is unbounded.
    Varchar(Option<u32>),
    /// `CHAR(n)`: blank-padded to n characters.
    Char(u32),
}

impl SqlType {
    /// The PostgreSQL type OID, for RowDescription.
    pub fn oid(self) -> u32 {
        match self {
            SqlType::Bool => 16,
            SqlType::BigInt => 20,
            SqlType::SmallInt => 21,
            SqlType::Int => 23,
            SqlType::Text => 25,
            SqlType::Real => 700,
            SqlType::Double => 701,
            SqlType::Char(_) => 1042,
            SqlType::Varchar(_) => 1043,
        }
    }

    /// The type's size in bytes for RowDescription (-1: variable).
    pub fn size(self) -> i16 {
        match self {
            SqlType::Bool => 1,
            SqlType::SmallInt => 2,
            SqlType::Int | SqlType::Real => 4,
            SqlType::BigInt | SqlType::Double => 8,
            SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => -1,
        }
    }

    /// PostgreSQL's name for the type, as used in error messages.
    pub fn pg_name(self) -> String {
        match self {
            SqlType::Bool => "boolean".into(),
            SqlType::SmallInt => "smallint".into(),
            SqlType::Int => "integer".into(),
            SqlType::BigInt => "bigint".into(),
            SqlType::Real => "real".into(),
            SqlType::Double => "double precision".into(),
            SqlType::Text => "text".into(),
            SqlType::Varchar(None) => "character varying".into(),
            SqlType::Varchar(Some(n)) => format!("character varying({n})"),
            SqlType::Char(n) => format!("character({n})"),
        }
    }

    pub fn is_integer(self) -> bool {
        matches!(self, SqlType::SmallInt | SqlType::Int | SqlType::BigInt)
    }

    pub fn is_float(self) -> bool {
        matches!(self, SqlType::Real | SqlType::Double)
    }

    pub fn is_numeric(self) -> bool {
        self.is_integer() || self.is_float()
    }

    pub fn is_string(self) -> bool {
        matches!(self, SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_))
    }

    /// The type family: values of types in one family compare with each other.
    pub fn family(self) -> TypeFamily {
        if self.is_numeric() {
            TypeFamily::Numeric
        } else if self.is_string() {
            TypeFamily::String
        } else {
            TypeFamily::Bool
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeFamily {
    Bool,
    Numeric,
    String,
}

impl fmt::Display for SqlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pg_name())
    }
}

/// A value. `Null` is SQL NULL, of any type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// SQL comparison: `None` if either side is NULL (unknown). Values of different families
    /// are never compared: binding rejects such expressions first.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Float(a), Value::Float(b)) => Some(float_cmp(*a, *b)),
            (Value::Int(a), Value::Float(b)) => Some(float_cmp(*a as f64, *b)),
            (Value::Float(a), Value::Int(b)) => Some(float_cmp(*a, *b as f64)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A total order for sorting (ORDER BY): NULLs compare greater than everything, as in
    /// PostgreSQL's default `NULLS LAST` for ascending order.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match (self, other) {
            (Value::Null, Value::Null) => Ordering::Equal,
            (Value::Null, _) => Ordering::Greater,
            (_, Value::Null) => Ordering::Less,
            _ => self.sql_cmp(other).unwrap_or(Ordering::Equal),
        }
    }

    /// The value cast to text: as the output format, except booleans, which cast to
    /// `true`/`false` (their output format is `t`/`f`).
    pub fn to_text_cast(&self, ty: SqlType) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            other => other.to_pg_text(ty),
        }
    }

    /// PostgreSQL's text output format; `None` for NULL.
    pub fn to_pg_text(&self, ty: SqlType) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f, ty == SqlType::Real),
            Value::Text(s) => s.clone(),
        })
    }
}

/// Float ordering as in PostgreSQL: NaN equals itself and sorts above everything.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// Formats like PostgreSQL's `float8out`/`float4out` with the default extra_float_digits = 1:
/// the shortest decimal that round-trips, in exponent form when the decimal exponent is below
/// -4 or at least 15 (6 for `real`).
pub fn format_float(v: f64, is_real: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "1.2345e-7".
    let sci = if is_real {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let limit = if is_real { 6 } else { 15 };
    if exponent < -4 || exponent >= limit {
        let sign = if exponent < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exponent.abs());
    }
    if is_real {
        (v as f32).to_string()
    } else {
        v.to_string()
    }
}

fn invalid_input(ty: SqlType, text: &str) -> SqlError {
    SqlError::new(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        format!(
            "invalid input syntax for type {}: \"{text}\"",
            ty_input_name(ty)
        ),
    )
}

/// The name PostgreSQL uses in "invalid input syntax for type …".
fn ty_input_name(ty: SqlType) -> String {
    match ty {
        SqlType::Varchar(_) => "character varying".into(),
        SqlType::Char(_) => "character".into(),
        other => other.pg_name(),
    }
}

pub fn range_error(ty: SqlType) -> SqlError {
    SqlError::out_of_range(format!("{} out of range", ty.pg_name()))
}

fn check_int_range(v: i64, ty: SqlType) -> SqlResult<i64> {
    let ok = match ty {
        SqlType::SmallInt => i16::try_from(v).is_ok(),
        SqlType::Int => i32::try_from(v).is_ok(),
        _ => true,
    };
    if ok { Ok(v) } else { Err(range_error(ty)) }
}

/// Parses PostgreSQL text input for a type (string literals, `'…'::type`).
pub fn parse_text(text: &str, ty: SqlType) -> SqlResult<Value> {
    let trimmed = text.trim();
    match ty {
        SqlType::Bool => {
            // PostgreSQL accepts any unambiguous prefix of true/false/yes/no, and on/off/1/0.
            let word = trimmed.to_ascii_lowercase();
            let prefix_of = |full: &str| !word.is_empty() && full.starts_with(word.as_str());
            if prefix_of("true") || prefix_of("yes") || word == "on" || word == "1" {
                Ok(Value::Bool(true))
            } else if prefix_of("false") || prefix_of("no") || word == "off" || word == "0" {
                Ok(Value::Bool(false))
            } else {
                Err(invalid_input(ty, text))
            }
        }
        SqlType::SmallInt | SqlType::Int | SqlType::BigInt => {
            let v: i128 = trimmed.parse().map_err(|_| invalid_input(ty, text))?;
            let v = i64::try_from(v).map_err(|_| {
                SqlError::out_of_range(format!("value \"{text}\" is out of range for type {ty}"))
            })?;
            check_int_range(v, ty).map(Value::Int).map_err(|_| {
                SqlError::out_of_range(format!("value \"{text}\" is out of range for type {ty}"))
            })
        }
        SqlType::Real | SqlType::Double => {
            let v = match trimmed.to_ascii_lowercase().as_str() {
                "nan" => f64::NAN,
                "infinity" | "+infinity" | "inf" | "+inf" => f64::INFINITY,
                "-infinity" | "-inf" => f64::NEG_INFINITY,
                lower if lower.contains("inf") || lower.contains("nan") => {
                    return Err(invalid_input(ty, text));
                }
                _ => {
                    let v = trimmed
                        .parse::<f64>()
                        .map_err(|_| invalid_input(ty, text))?;
                    if v.is_infinite() {
                        return Err(SqlError::out_of_range(format!(
                            "\"{trimmed}\" is out of range for type {ty}"
                        )));
                    }
                    v
                }
            };
            coerce_float(v, ty)
        }
        SqlType::Text | SqlType::Varchar(_) | SqlType::Char(_) => {
            coerce_string(text.to_string(), ty, false)
        }
    }
}

fn coerce_float(v: f64, ty: SqlType) -> SqlResult<Value> {
    if ty == SqlType::Real {
        let r = v as f32;
        if r.is_infinite() && v.is_finite() {
            return Err(range_error(ty));
        }
        return Ok(Value::Float(r as f64));
    }
    Ok(Value::Float(v))
}

/// Applies a string type's length rule. An explicit cast truncates; an assignment errors
/// unless only blanks are cut (PostgreSQL's rule).
fn coerce_string(s: String, ty: SqlType, explicit_cast: bool) -> SqlResult<Value> {
    let limit = match ty {
        SqlType::Varchar(Some(n)) | SqlType::Char(n) => n as usize,
        _ => return Ok(Value::Text(s)),
    };
    let len = s.chars().count();
    let mut s = s;
    if len > limit {
        let cut: String = s.chars().take(limit).collect();
        let rest_is_blank = s.chars().skip(limit).all(|c| c == ' ');
        if !explicit_cast && !rest_is_blank {
            return Err(SqlError::new(
                sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type {}", ty.pg_name()),
            ));
        }
        s = cut;
    } else if let SqlType::Char(_) = ty {
        s.extend(std::iter::repeat_n(' ', limit - len));
    }
    Ok(Value::Text(s))
}

/// Converts a value of type `from` to type `to`: for storing into a column (`explicit =
/// false`, assignment rules) or for `CAST` (`explicit = true`).
pub fn convert(value: Value, from: SqlType, to: SqlType, explicit: bool) -> SqlResult<Value> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    let mismatch = || {
        SqlError::new(
            if explicit {
                sqlstate::CANNOT_COERCE
            } else {
                sqlstate::DATATYPE_MISMATCH
            },
            format!("cannot cast type {} to {}", from.pg_name(), to.pg_name()),
        )
    };
    match (value, to) {
        (Value::Int(i), t) if t.is_integer() => check_int_range(i, t).map(Value::Int),
        (Value::Int(i), t) if t.is_float() => coerce_float(i as f64, t),
        (Value::Float(f), t) if t.is_float() => coerce_float(f, t),
        (Value::Float(f), t) if t.is_integer() => {
            // PostgreSQL rounds half away from zero... to even, in fact (rint).
            let r = f.round_ties_even();
            if !r.is_finite() || r < i64::MIN as f64 || r >= i64::MAX as f64 {
                return Err(range_error(t));
            }
            check_int_range(r as i64, t).map(Value::Int)
        }
        (Value::Bool(b), SqlType::Bool) => Ok(Value::Bool(b)),
        (Value::Bool(b), SqlType::Int) if explicit => Ok(Value::Int(b as i64)),
        (Value::Int(i), SqlType::Bool) if explicit && from == SqlType::Int => {
            Ok(Value::Bool(i != 0))
        }
        (Value::Text(s), t) if t.is_string() => {
            // Casting CHAR(n) to another string type drops its padding.
            let s = if matches!(from, SqlType::Char(_)) && !matches!(t, SqlType::Char(_)) {
                s.trim_end_matches(' ').to_string()
            } else {
                s
            };
            coerce_string(s, t, explicit)
        }
        (Value::Text(s), t) if explicit => parse_text(&s, t),
        (v, t) if t.is_string() => {
            let text = v.to_text_cast(from).unwrap_or_default();
            coerce_string(text, t, explicit)
        }
        _ => Err(mismatch()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_postgres() {
        let cases = [
            (0.1, "0.1"),
            (1.0, "1"),
            (-2.5, "-2.5"),
            (1e15, "1e+15"),
            (123456789012345.0, "123456789012345"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e300, "1.5e+300"),
            (f64::INFINITY, "Infinity"),
            (f64::NEG_INFINITY, "-Infinity"),
            (f64::NAN, "NaN"),
        ];
        for (v, text) in cases {
            assert_eq!(format_float(v, false), text, "{v}");
        }
        assert_eq!(format_float(1234567.0, true), "1.234567e+06");
        assert_eq!(format_float(0.1f32 as f64, true), "0.1");
        assert_eq!(format_float(123456.0, true), "123456");
    }

    #[test]
    fn text_input_is_checked() {
        assert_eq!(parse_text(" 42 ", SqlType::Int).unwrap(), Value::Int(42));
        assert_eq!(parse_text("abc", SqlType::Int).unwrap_err().code, "22P02");
        assert_eq!(
            parse_text("40000", SqlType::SmallInt).unwrap_err().code,
            "22003"
        );
        assert_eq!(parse_text("yes", SqlType::Bool).unwrap(), Value::Bool(true));
        assert_eq!(
            parse_text("maybe", SqlType::Bool).unwrap_err().code,
            "22P02"
        );
        assert_eq!(
            parse_text("abcd", SqlType::Varchar(Some(3)))
                .unwrap_err()
                .code,
            "22001"
        );
        assert_eq!(
            parse_text("ab", SqlType::Char(4)).unwrap(),
            Value::Text("ab  ".into())
        );
        assert_eq!(
            parse_text("-Infinity", SqlType::Double).unwrap(),
            Value::Float(f64::NEG_INFINITY)
        );
    }

    #[test]
    fn conversions_follow_assignment_and_cast_rules() {
        assert_eq!(
            convert(Value::Int(70000), SqlType::Int, SqlType::SmallInt, false)
                .unwrap_err()
                .code,
            "22003"
        );
        assert_eq!(
            convert(Value::Float(2.5), SqlType::Double, SqlType::Int, false).unwrap(),
            Value::Int(2)
        );
        assert_eq!(
            convert(Value::Bool(true), SqlType::Bool, SqlType::Int, false)
                .unwrap_err()
                .code,
            "42804"
        );
        assert_eq!(
            convert(
                Value::Text("abcdef".into()),
                SqlType::Text,
                SqlType::Varchar(Some(3)),
                true
            )
            .unwrap(),
            Value::Text("abc".into())
        );
        assert_eq!(
            convert(Value::Int(7), SqlType::Int, SqlType::Text, true).unwrap(),
            Value::Text("7".into())
        );
    }
}
