//! SQL errors and the one place where every failure gets its PostgreSQL SQLSTATE.

use std::fmt;

use kv::KvError;

/// SQLSTATE codes used by RegionDB (PostgreSQL Appendix A).
pub mod sqlstate {
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const DUPLICATE_TABLE: &str = "42P07";
    pub const DUPLICATE_COLUMN: &str = "42701";
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    pub const INVALID_TABLE_DEFINITION: &str = "42P16";
    pub const DATATYPE_MISMATCH: &str = "42804";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
    pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
    pub const STRING_DATA_RIGHT_TRUNCATION: &str = "22001";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    pub const CANNOT_COERCE: &str = "42846";
    pub const UNIQUE_VIOLATION: &str = "23505";
    pub const NOT_NULL_VIOLATION: &str = "23502";
    pub const CHECK_VIOLATION: &str = "23514";
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const INVALID_FOREIGN_KEY: &str = "42830";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const SERIALIZATION_FAILURE: &str = "40001";
    pub const DEADLOCK_DETECTED: &str = "40P01";
    pub const LOCK_NOT_AVAILABLE: &str = "55P03";
    pub const STATEMENT_COMPLETION_UNKNOWN: &str = "40003";
    pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
    pub const ACTIVE_SQL_TRANSACTION: &str = "25001";
    pub const NO_ACTIVE_SQL_TRANSACTION: &str = "25P01";
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    pub const GROUPING_ERROR: &str = "42803";
    pub const CARDINALITY_VIOLATION: &str = "21000";
    pub const DUPLICATE_ALIAS: &str = "42712";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    pub const DATA_CORRUPTED: &str = "XX001";
    pub const IO_ERROR: &str = "58030";
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const GENERATED_ALWAYS: &str = "428C9";
    pub const DEPENDENT_OBJECTS_STILL_EXIST: &str = "2BP01";
    pub const WRONG_OBJECT_TYPE: &str = "42809";
}

/// An error reported to the client: a SQLSTATE, a message, and maybe a detail (the
/// `DETAIL:` line psql prints, e.g. the key a unique violation is about).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
}

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
        }
    }

    /// The same error with a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("{what} is not supported"),
        )
    }

    pub fn undefined_table(name: &str) -> Self {
        Self::new(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )
    }

    pub fn undefined_column(name: &str) -> Self {
        Self::new(
            sqlstate::UNDEFINED_COLUMN,
            format!("column \"{name}\" does not exist"),
        )
    }

    pub fn duplicate_constraint(name: &str, table: &str) -> Self {
        Self::new(
            sqlstate::DUPLICATE_OBJECT,
            format!("constraint \"{name}\" for relation \"{table}\" already exists"),
        )
    }

    pub fn mismatch(message: impl Into<String>) -> Self {
        Self::new(sqlstate::DATATYPE_MISMATCH, message)
    }

    pub fn out_of_range(message: impl Into<String>) -> Self {
        Self::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, message)
    }
}

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

impl std::error::Error for SqlError {}

impl From<KvError> for SqlError {
    fn from(e: KvError) -> Self {
        let code = match &e {
            KvError::Deadlock { .. } => sqlstate::DEADLOCK_DETECTED,
            KvError::LockTimeout { .. } => sqlstate::LOCK_NOT_AVAILABLE,
            e if e.is_retryable_transaction() => sqlstate::SERIALIZATION_FAILURE,
            KvError::Corrupt(_) => sqlstate::DATA_CORRUPTED,
            KvError::Storage(kv::storage::StorageError::Corrupt(_)) => sqlstate::DATA_CORRUPTED,
            KvError::CommitUnknown { .. } => sqlstate::STATEMENT_COMPLETION_UNKNOWN,
            KvError::ServerIsBusy(_) => sqlstate::INSUFFICIENT_RESOURCES,
            // The cluster could not serve the request in time (no quorum, a store down, the
            // routing gave up): the statement may be retried.
            e if e.is_region_error() => sqlstate::IO_ERROR,
            KvError::Storage(_) | KvError::Tso(_) | KvError::Unavailable(_) => sqlstate::IO_ERROR,
            _ => sqlstate::INTERNAL_ERROR,
        };
        SqlError::new(code, e.to_string())
    }
}

pub type SqlResult<T> = Result<T, SqlError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_errors_map_to_sqlstates() {
        let code = |e: KvError| SqlError::from(e).code;
        assert_eq!(
            code(KvError::RegionNotFound { region_id: 1 }),
            sqlstate::IO_ERROR
        );
        assert_eq!(
            code(KvError::EpochNotMatch {
                region_id: 1,
                current: None
            }),
            sqlstate::IO_ERROR
        );
        assert_eq!(
            code(KvError::NotLeader {
                region_id: 1,
                leader: None
            }),
            sqlstate::IO_ERROR
        );
        assert_eq!(
            code(KvError::ServerIsBusy("queue full".into())),
            sqlstate::INSUFFICIENT_RESOURCES
        );
        assert_eq!(
            code(KvError::Unavailable("down".into())),
            sqlstate::IO_ERROR
        );
        let deadlock = KvError::Deadlock {
            key: b"k".to_vec(),
            start_ts: kv::Timestamp(2),
            lock_ts: kv::Timestamp(1),
        };
        assert_eq!(code(deadlock), "40P01");
    }
}
