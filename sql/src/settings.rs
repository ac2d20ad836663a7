//! Session settings: the PostgreSQL run-time parameters RegionDB honours, and the statements
//! that read and change them (`SET`, `SET LOCAL`, `RESET`, `SHOW`, `SET TRANSACTION`,
//! `SET SESSION CHARACTERISTICS AS TRANSACTION`).
//!
//! | parameter | values | default |
//! |---|---|---|
//! | `default_transaction_isolation` | `read committed`, `repeatable read` (`read uncommitted` is read committed, as in PostgreSQL; `serializable` is refused with 0A000) | `read committed` |
//! | `transaction_isolation` | the current transaction's level; set only before its first query | the default |
//! | `lock_timeout` | milliseconds, or a number with a unit (`ms`, `s`, `min`, `h`, `d`); 0 waits without limit | `0` |
//! | `work_mem` | kilobytes, or a number with a unit (`B`, `kB`, `MB`, `GB`, `TB`), 64 kB or more: the memory a sort, hash aggregation, DISTINCT or hash join holds before it spills to temporary files | `64MB` (PostgreSQL's is 4MB; RegionDB's rows take more memory) |
//! | `regiondb_txn_mode` | `pessimistic` (writers lock rows and wait), `optimistic` (first committer wins; every transaction reads one snapshot whatever its level) | the node's `--txn-mode` |
//!
//! How long a setting lasts is the session's business (`Session`): as in PostgreSQL, a `SET`
//! inside a transaction block is undone if the block rolls back, and `SET LOCAL` lasts until
//! the block ends. Any other parameter is refused with 42704, as PostgreSQL refuses unknown
//! ones: RegionDB does not pretend to honour a setting it ignores.

use std::time::Duration;

use sqlparser::ast;

use kv::{Isolation, TxnConfig, TxnMode};

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::expr::ident_name;

/// The session's values of the parameters RegionDB honours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub default_isolation: Isolation,
    pub txn_mode: TxnMode,
    /// 0: wait without limit.
    pub lock_timeout_ms: u64,
    pub work_mem_kb: u64,
}

/// `work_mem`'s default, in kilobytes.
pub const DEFAULT_WORK_MEM_KB: u64 = 64 * 1024;

impl Settings {
    /// PostgreSQL's defaults, with the node's transaction mode.
    pub fn new(txn_mode: TxnMode) -> Settings {
        Settings {
            default_isolation: Isolation::ReadCommitted,
            txn_mode,
            lock_timeout_ms: 0,
            work_mem_kb: DEFAULT_WORK_MEM_KB,
        }
    }

    /// The memory an operator may hold before it spills.
    pub fn work_mem(&self) -> crate::exec::WorkMem {
        crate::exec::WorkMem(usize::try_from(self.work_mem_kb * 1024).unwrap_or(usize::MAX))
    }

    /// How a transaction at `isolation` runs under these settings.
    pub fn txn_config(&self, isolation: Isolation) -> TxnConfig {
        TxnConfig {
            mode: self.txn_mode,
            isolation,
            lock_timeout: self.lock_timeout(),
        }
    }

    pub fn lock_timeout(&self) -> Option<Duration> {
        (self.lock_timeout_ms > 0).then(|| Duration::from_millis(self.lock_timeout_ms))
    }

    /// Sets parameter `name` (lower case) to `value`, or to `default`'s value for `None`.
    pub fn set(&mut self, name: &str, value: Option<&str>, default: &Settings) -> SqlResult<()> {
        match name {
            "default_transaction_isolation" => {
                self.default_isolation = match value {
                    Some(v) => parse_isolation(name, v)?,
                    None => default.default_isolation,
                }
            }
            "lock_timeout" => {
                self.lock_timeout_ms = match value {
                    Some(v) => parse_milliseconds(name, v)?,
                    None => default.lock_timeout_ms,
                }
            }
            "work_mem" => {
                self.work_mem_kb = match value {
                    Some(v) => parse_kilobytes(name, v)?,
                    None => default.work_mem_kb,
                }
            }
            "regiondb_txn_mode" => {
                self.txn_mode = match value {
                    Some(v) => parse_txn_mode(name, v)?,
                    None => default.txn_mode,
                }
            }
            _ => return Err(unrecognized(name)),
        }
        Ok(())
    }

    /// The text `SHOW name` prints (`transaction_isolation` is the session's to answer).
    pub fn show(&self, name: &str) -> SqlResult<String> {
        Ok(match name {
            "default_transaction_isolation" => isolation_name(self.default_isolation).into(),
            "lock_timeout" => show_milliseconds(self.lock_timeout_ms),
            "work_mem" => show_kilobytes(self.work_mem_kb),
            "regiondb_txn_mode" => match self.txn_mode {
                TxnMode::Pessimistic => "pessimistic".into(),
                TxnMode::Optimistic => "optimistic".into(),
            },
            _ => return Err(unrecognized(name)),
        })
    }
}

/// A statement about settings, recognised by [`classify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettingStatement {
    /// `SET [SESSION | LOCAL] name = value` (`value` None: `DEFAULT`).
    Set {
        name: String,
        value: Option<String>,
        local: bool,
    },
    /// `RESET name`, or `RESET ALL` (None).
    Reset(Option<String>),
    Show(String),
    /// `SET TRANSACTION …` (`session`: `SET SESSION CHARACTERISTICS AS TRANSACTION …`).
    SetTransaction {
        isolation: Option<Isolation>,
        session: bool,
    },
}

/// The setting statement `statement` is, if it is one (an error if it is one RegionDB
/// does not support).
pub fn classify(statement: &ast::Statement) -> Option<SqlResult<SettingStatement>> {
    Some(match statement {
        ast::Statement::Set(set) => classify_set(set),
        ast::Statement::ShowVariable { variable } => {
            let words: Vec<String> = variable.iter().map(ident_name).collect();
            match words.as_slice() {
                [name] if name == "all" => Err(SqlError::unsupported("SHOW ALL")),
                // Not a setting: the schema-change jobs (see `crate::schema_change`).
                [name] if name == "jobs" => return None,
                [name] => Ok(SettingStatement::Show(name.clone())),
                [a, b, c] if a == "transaction" && b == "isolation" && c == "level" => {
                    Ok(SettingStatement::Show("transaction_isolation".into()))
                }
                _ => Err(unrecognized(&words.join(" "))),
            }
        }
        ast::Statement::Reset(reset) => match &reset.reset {
            ast::Reset::ALL => Ok(SettingStatement::Reset(None)),
            ast::Reset::ConfigurationParameter(name) => {
                parameter_name(name).map(|n| SettingStatement::Reset(Some(n)))
            }
            ast::Reset::SessionAuthorization => {
                Err(SqlError::unsupported("RESET SESSION AUTHORIZATION"))
            }
        },
        _ => return None,
    })
}

fn classify_set(set: &ast::Set) -> SqlResult<SettingStatement> {
    match set {
        ast::Set::SingleAssignment {
            scope,
            hivevar: false,
            variable,
            values,
        } => {
            let local = match scope {
                None | Some(ast::ContextModifier::Session) => false,
                Some(ast::ContextModifier::Local) => true,
                Some(other) => return Err(SqlError::unsupported(format!("SET {other}"))),
            };
            let name = parameter_name(variable)?;
            let value = match values.as_slice() {
                [value] => setting_value(value)?,
                _ => {
                    return Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!("SET {name} takes only one argument"),
                    ));
                }
            };
            Ok(SettingStatement::Set { name, value, local })
        }
        ast::Set::SetTransaction {
            modes,
            snapshot: None,
            session,
        } => Ok(SettingStatement::SetTransaction {
            isolation: isolation_of(modes)?,
            session: *session,
        }),
        other => Err(SqlError::unsupported(format!("statement \"{other}\""))),
    }
}

/// The isolation level among transaction modes (`BEGIN …`, `SET TRANSACTION …`), if any;
/// the modes RegionDB cannot honour are refused rather than silently weakened or ignored.
pub fn isolation_of(modes: &[ast::TransactionMode]) -> SqlResult<Option<Isolation>> {
    let mut isolation = None;
    for mode in modes {
        match mode {
            ast::TransactionMode::IsolationLevel(
                ast::TransactionIsolationLevel::ReadCommitted
                | ast::TransactionIsolationLevel::ReadUncommitted,
            ) => isolation = Some(Isolation::ReadCommitted),
            ast::TransactionMode::IsolationLevel(
                ast::TransactionIsolationLevel::RepeatableRead,
            ) => isolation = Some(Isolation::RepeatableRead),
            ast::TransactionMode::AccessMode(ast::TransactionAccessMode::ReadWrite) => {}
            other => {
                return Err(SqlError::unsupported(format!(
                    "transaction mode {other} (RegionDB provides READ COMMITTED and REPEATABLE READ)"
                )));
            }
        }
    }
    Ok(isolation)
}

fn parameter_name(name: &ast::ObjectName) -> SqlResult<String> {
    match name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(ident)] => Ok(ident_name(ident)),
        _ => Err(unrecognized(&name.to_string())),
    }
}

/// A setting's value as text; `None` for `DEFAULT`.
fn setting_value(value: &ast::Expr) -> SqlResult<Option<String>> {
    match value {
        ast::Expr::Identifier(ident)
            if ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("default") =>
        {
            Ok(None)
        }
        ast::Expr::Identifier(ident) => Ok(Some(ident_name(ident))),
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => Ok(Some(s.clone())),
            ast::Value::Number(n, _) => Ok(Some(n.clone())),
            ast::Value::Boolean(b) => Ok(Some(b.to_string())),
            other => Err(SqlError::unsupported(format!("setting value {other}"))),
        },
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => Ok(setting_value(expr)?.map(|v| format!("-{v}"))),
        other => Err(SqlError::unsupported(format!("setting value {other}"))),
    }
}

fn unrecognized(name: &str) -> SqlError {
    SqlError::new(
        sqlstate::UNDEFINED_OBJECT,
        format!("unrecognized configuration parameter \"{name}\""),
    )
}

fn invalid_value(name: &str, value: &str) -> SqlError {
    SqlError::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\""),
    )
}

pub fn isolation_name(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::ReadCommitted => "read committed",
        Isolation::RepeatableRead => "repeatable read",
    }
}

pub fn parse_isolation(name: &str, value: &str) -> SqlResult<Isolation> {
    match value.trim().to_ascii_lowercase().as_str() {
        "read committed" | "read uncommitted" => Ok(Isolation::ReadCommitted),
        "repeatable read" => Ok(Isolation::RepeatableRead),
        "serializable" => Err(SqlError::unsupported(
            "SERIALIZABLE isolation (RegionDB provides READ COMMITTED and REPEATABLE READ)",
        )),
        _ => Err(invalid_value(name, value)),
    }
}

fn parse_txn_mode(name: &str, value: &str) -> SqlResult<TxnMode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "pessimistic" => Ok(TxnMode::Pessimistic),
        "optimistic" => Ok(TxnMode::Optimistic),
        _ => Err(invalid_value(name, value)),
    }
}

/// Units of time parameters, in milliseconds, as PostgreSQL spells them.
const TIME_UNITS: [(&str, f64); 6] = [
    ("d", 86_400_000.0),
    ("h", 3_600_000.0),
    ("min", 60_000.0),
    ("s", 1_000.0),
    ("ms", 1.0),
    ("us", 0.001),
];

/// The largest value of a time parameter (PostgreSQL's INT_MAX milliseconds).
const MAX_MILLISECONDS: u64 = i32::MAX as u64;

/// Units of memory parameters, in kilobytes, as PostgreSQL spells them (case matters).
const MEMORY_UNITS: [(&str, f64); 5] = [
    ("TB", 1024.0 * 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0),
    ("MB", 1024.0),
    ("kB", 1.0),
    ("B", 1.0 / 1024.0),
];

/// `work_mem`'s range in kilobytes, as PostgreSQL's.
const MIN_KILOBYTES: u64 = 64;
const MAX_KILOBYTES: u64 = i32::MAX as u64;

/// A parameter measured in a base unit (`base`: `ms`, `kB`) that may be written with any of
/// `units` (each worth so many base units), within `min ..= max` base units.
struct Quantity {
    base: &'static str,
    units: &'static [(&'static str, f64)],
    min: u64,
    max: u64,
}

const MILLISECONDS: Quantity = Quantity {
    base: "ms",
    units: &TIME_UNITS,
    min: 0,
    max: MAX_MILLISECONDS,
};

const KILOBYTES: Quantity = Quantity {
    base: "kB",
    units: &MEMORY_UNITS,
    min: MIN_KILOBYTES,
    max: MAX_KILOBYTES,
};

impl Quantity {
    /// `value` in base units: a number, optionally followed by a unit (a plain number is in
    /// base units), rounded as PostgreSQL's rint() rounds (halves to even).
    fn parse(&self, name: &str, value: &str) -> SqlResult<u64> {
        let text = value.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '-' || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = (&text[..split], text[split..].trim());
        let per_unit = match unit {
            "" => 1.0,
            unit => self
                .units
                .iter()
                .find(|(u, _)| *u == unit)
                .map(|(_, per_unit)| *per_unit)
                .ok_or_else(|| invalid_value(name, value))?,
        };
        let number: f64 = number.parse().map_err(|_| invalid_value(name, value))?;
        let amount = (number * per_unit).round_ties_even();
        if !(self.min as f64..=self.max as f64).contains(&amount) {
            return Err(SqlError::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "{amount} {} is outside the valid range for parameter \"{name}\" ({} .. {})",
                    self.base, self.min, self.max
                ),
            ));
        }
        Ok(amount as u64)
    }

    /// PostgreSQL's display: in the largest unit that divides the amount exactly.
    fn show(&self, amount: u64) -> String {
        if amount == 0 {
            return "0".into();
        }
        let (unit, per_unit) = self
            .units
            .iter()
            .map(|&(unit, per_unit)| (unit, per_unit as u64))
            .find(|&(_, per_unit)| per_unit > 0 && amount.is_multiple_of(per_unit))
            .unwrap_or((self.base, 1));
        format!("{}{unit}", amount / per_unit)
    }
}

fn parse_milliseconds(name: &str, value: &str) -> SqlResult<u64> {
    MILLISECONDS.parse(name, value)
}

fn show_milliseconds(ms: u64) -> String {
    MILLISECONDS.show(ms)
}

fn parse_kilobytes(name: &str, value: &str) -> SqlResult<u64> {
    KILOBYTES.parse(name, value)
}

fn show_kilobytes(kb: u64) -> String {
    KILOBYTES.show(kb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_read_and_print_as_postgresql_does() {
        let ms = |v: &str| parse_milliseconds("lock_timeout", v);
        assert_eq!(ms("100").unwrap(), 100);
        assert_eq!(ms("2s").unwrap(), 2_000);
        assert_eq!(ms("1.5s").unwrap(), 1_500);
        assert_eq!(ms(" 3 min ").unwrap(), 180_000);
        assert_eq!(ms("2500us").unwrap(), 2);
        assert_eq!(ms("3500us").unwrap(), 4);
        assert_eq!(ms("0").unwrap(), 0);
        for bad in ["", "abc", "5 parsecs", "-1", "99999999999"] {
            assert_eq!(
                ms(bad).unwrap_err().code,
                sqlstate::INVALID_PARAMETER_VALUE,
                "{bad}"
            );
        }
        assert_eq!(show_milliseconds(0), "0");
        assert_eq!(show_milliseconds(1_500), "1500ms");
        assert_eq!(show_milliseconds(2_000), "2s");
        assert_eq!(show_milliseconds(120_000), "2min");
        assert_eq!(show_milliseconds(86_400_000), "1d");
    }

    #[test]
    fn memory_values_read_and_print_as_postgresql_does() {
        let kb = |v: &str| parse_kilobytes("work_mem", v);
        assert_eq!(kb("64").unwrap(), 64);
        assert_eq!(kb("4MB").unwrap(), 4096);
        assert_eq!(kb("1.5MB").unwrap(), 1536);
        assert_eq!(kb("1GB").unwrap(), 1024 * 1024);
        assert_eq!(kb("65536B").unwrap(), 64);
        for bad in ["", "63", "4mb", "-1", "3TB", "many"] {
            assert_eq!(
                kb(bad).unwrap_err().code,
                sqlstate::INVALID_PARAMETER_VALUE,
                "{bad}"
            );
        }
        assert_eq!(show_kilobytes(64), "64kB");
        assert_eq!(show_kilobytes(4096), "4MB");
        assert_eq!(show_kilobytes(1536), "1536kB");
        assert_eq!(show_kilobytes(2 * 1024 * 1024), "2GB");
    }

    #[test]
    fn isolation_levels_read_as_postgresql_names_them() {
        let level = |v: &str| parse_isolation("default_transaction_isolation", v);
        assert_eq!(level("READ COMMITTED").unwrap(), Isolation::ReadCommitted);
        assert_eq!(level("read uncommitted").unwrap(), Isolation::ReadCommitted);
        assert_eq!(level("repeatable read").unwrap(), Isolation::RepeatableRead);
        assert_eq!(
            level("serializable").unwrap_err().code,
            sqlstate::FEATURE_NOT_SUPPORTED
        );
        assert_eq!(
            level("snapshot").unwrap_err().code,
            sqlstate::INVALID_PARAMETER_VALUE
        );
    }
}
