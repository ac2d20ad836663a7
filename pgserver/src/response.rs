//! Turning SQL results into backend protocol messages.
//!
//! The SQL layer hands over finished results: column metadata with PostgreSQL type OIDs, values
//! already rendered in PostgreSQL's text format, the exact `CommandComplete` tag, and errors
//! with their SQLSTATE. This module only frames them; it never interprets a value or a tag.
//!
//! pgwire's own `Response`/`QueryResponse` types are not used for results on purpose: they
//! rebuild the command tag from a row count (`SELECT` + count) and need a `postgres_types::Type`
//! per column, while the SQL layer already knows the full tag and may use OIDs that crate has no
//! constant for. Building the messages directly keeps both exact.

use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat};
use pgwire::error::{ErrorInfo, PgWireResult, SEVERITY_ERROR};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::data::{DataRow, FORMAT_CODE_TEXT, FieldDescription, RowDescription};
use pgwire::messages::response::{CommandComplete, ErrorResponse, TransactionStatus};
use pgwire::types::format::FormatOptions;
use sql::{ColumnInfo, SqlError, StatementResult};
use std::sync::Arc;

/// The messages for one statement's result, in order. Rows are encoded lazily, so a large
/// result set is not held twice (as values and as encoded messages).
pub(crate) type StatementMessages =
    Box<dyn Iterator<Item = PgWireResult<PgWireBackendMessage>> + Send>;

/// `RowDescription` + `DataRow`… + `CommandComplete` for a result set, `CommandComplete` for a
/// command, `ErrorResponse` for an error.
pub(crate) fn statement_messages(result: Result<StatementResult, SqlError>) -> StatementMessages {
    match result {
        Ok(StatementResult::Rows { columns, rows, tag }) => {
            let description = PgWireBackendMessage::RowDescription(row_description(&columns));
            let mut encoder = RowEncoder::new();
            let data_rows = rows
                .into_iter()
                .map(move |row| encoder.encode(&row).map(PgWireBackendMessage::DataRow));
            let complete = PgWireBackendMessage::CommandComplete(command_complete(tag));
            Box::new(
                std::iter::once(Ok(description))
                    .chain(data_rows)
                    .chain(std::iter::once(Ok(complete))),
            )
        }
        Ok(StatementResult::Command { tag }) => Box::new(std::iter::once(Ok(
            PgWireBackendMessage::CommandComplete(command_complete(tag)),
        ))),
        Err(error) => Box::new(std::iter::once(Ok(PgWireBackendMessage::ErrorResponse(
            error_response(error),
        )))),
    }
}

/// Column names and types. Every column is sent in text format; table and column ids are 0
/// (not a plain table column, as far as the client needs to know) and there is no type modifier.
pub(crate) fn row_description(columns: &[ColumnInfo]) -> RowDescription {
    RowDescription::new(
        columns
            .iter()
            .map(|column| {
                FieldDescription::new(
                    column.name.clone(),
                    0,
                    0,
                    column.type_oid,
                    column.type_size,
                    -1,
                    FORMAT_CODE_TEXT,
                )
            })
            .collect(),
    )
}

/// Encodes rows of text values into `DataRow` messages, reusing one buffer.
pub(crate) struct RowEncoder {
    encoder: DataRowEncoder,
    options: FormatOptions,
}

impl RowEncoder {
    pub(crate) fn new() -> Self {
        Self {
            // The schema is only consulted by `encode_field`; the type is given per value below.
            encoder: DataRowEncoder::new(Arc::new(Vec::new())),
            options: FormatOptions::default(),
        }
    }

    /// Copies each value's text verbatim (declaring it `text` keeps pgwire from re-quoting
    /// anything); `None` becomes SQL NULL (length -1).
    pub(crate) fn encode(&mut self, row: &[Option<String>]) -> PgWireResult<DataRow> {
        for value in row {
            self.encoder.encode_field_with_type_and_format(
                &value.as_deref(),
                &Type::TEXT,
                FieldFormat::Text,
                &self.options,
            )?;
        }
        Ok(self.encoder.take_row())
    }
}

pub(crate) fn command_complete(tag: String) -> CommandComplete {
    CommandComplete::new(tag)
}

/// The pgwire form of a SQL error, severity `ERROR`. Also used to build `PgWireError::UserError`
/// so that errors raised in the protocol layer carry our SQLSTATE.
pub(crate) fn error_info(code: &str, message: String) -> ErrorInfo {
    let mut info = ErrorInfo::new(SEVERITY_ERROR.to_owned(), code.to_owned(), message);
    // The non-localized severity (field `V`), as PostgreSQL ≥ 9.6 sends it.
    info.severity_nonlocalized = Some(SEVERITY_ERROR.to_owned());
    info
}

pub(crate) fn error_response(error: SqlError) -> ErrorResponse {
    let mut info = error_info(error.code, error.message);
    info.detail = error.detail;
    info.into()
}

/// The `ReadyForQuery` status byte for the session's transaction state.
pub(crate) fn ready_status(status: &sql::TransactionStatus) -> TransactionStatus {
    match status {
        sql::TransactionStatus::Idle => TransactionStatus::Idle,
        sql::TransactionStatus::InBlock => TransactionStatus::Transaction,
        sql::TransactionStatus::Failed => TransactionStatus::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_oid: u32, type_size: i16) -> ColumnInfo {
        ColumnInfo {
            name: name.to_owned(),
            type_oid,
            type_size,
        }
    }

    fn messages(result: Result<StatementResult, SqlError>) -> Vec<PgWireBackendMessage> {
        statement_messages(result)
            .collect::<PgWireResult<Vec<_>>>()
            .expect("encoding text values cannot fail")
    }

    /// The wire bytes of a `DataRow` body: for each value a big-endian i32 length (-1 for NULL)
    /// followed by the bytes.
    fn expected_row_bytes(values: &[Option<&str>]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for value in values {
            match value {
                Some(text) => {
                    bytes.extend_from_slice(&(text.len() as i32).to_be_bytes());
                    bytes.extend_from_slice(text.as_bytes());
                }
                None => bytes.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        bytes
    }

    #[test]
    fn rows_become_description_data_rows_and_exact_tag() {
        let result = Ok(StatementResult::Rows {
            columns: vec![column("id", 20, 8), column("name", 25, -1)],
            rows: vec![
                vec![Some("1".to_owned()), Some("alice".to_owned())],
                vec![Some("2".to_owned()), None],
            ],
            tag: "SELECT 2".to_owned(),
        });
        let messages = messages(result);
        assert_eq!(messages.len(), 4);

        let PgWireBackendMessage::RowDescription(description) = &messages[0] else {
            panic!("expected RowDescription, got {:?}", messages[0]);
        };
        let fields: Vec<_> = description
            .fields
            .iter()
            .map(|f| (f.name.as_str(), f.type_id, f.type_size, f.format_code))
            .collect();
        assert_eq!(fields, vec![("id", 20, 8, 0), ("name", 25, -1, 0)]);
        assert!(description.fields.iter().all(|f| f.type_modifier == -1));

        let PgWireBackendMessage::DataRow(first) = &messages[1] else {
            panic!("expected DataRow, got {:?}", messages[1]);
        };
        assert_eq!(first.field_count, 2);
        assert_eq!(
            first.data.as_ref(),
            expected_row_bytes(&[Some("1"), Some("alice")])
        );

        let PgWireBackendMessage::DataRow(second) = &messages[2] else {
            panic!("expected DataRow, got {:?}", messages[2]);
        };
        assert_eq!(second.field_count, 2);
        assert_eq!(second.data.as_ref(), expected_row_bytes(&[Some("2"), None]));

        let PgWireBackendMessage::CommandComplete(complete) = &messages[3] else {
            panic!("expected CommandComplete, got {:?}", messages[3]);
        };
        assert_eq!(complete.tag, "SELECT 2");
    }

    #[test]
    fn empty_result_set_still_describes_columns() {
        let result = Ok(StatementResult::Rows {
            columns: vec![column("x", 23, 4)],
            rows: vec![],
            tag: "SELECT 0".to_owned(),
        });
        let messages = messages(result);
        assert_eq!(messages.len(), 2);
        assert!(matches!(
            messages[0],
            PgWireBackendMessage::RowDescription(_)
        ));
        let PgWireBackendMessage::CommandComplete(complete) = &messages[1] else {
            panic!("expected CommandComplete, got {:?}", messages[1]);
        };
        assert_eq!(complete.tag, "SELECT 0");
    }

    #[test]
    fn text_values_are_copied_verbatim() {
        // Quotes, braces, backslashes and non-ASCII must not be escaped or re-quoted: the SQL
        // layer already produced PostgreSQL's text form.
        let values = ["{1,\"a b\"}", "it's \\ here", "ünïcødé", ""];
        let row: Vec<_> = values.iter().map(|v| Some((*v).to_owned())).collect();
        let data = RowEncoder::new().encode(&row).expect("encode");
        let expected: Vec<_> = values.iter().map(|v| Some(*v)).collect();
        assert_eq!(data.data.as_ref(), expected_row_bytes(&expected));
        assert_eq!(data.field_count, 4);
    }

    #[test]
    fn encoder_reuse_does_not_leak_between_rows() {
        let mut encoder = RowEncoder::new();
        let first = encoder
            .encode(&[Some("long value".to_owned())])
            .expect("encode");
        let second = encoder
            .encode(&[None, Some("x".to_owned())])
            .expect("encode");
        assert_eq!(
            first.data.as_ref(),
            expected_row_bytes(&[Some("long value")])
        );
        assert_eq!(second.data.as_ref(), expected_row_bytes(&[None, Some("x")]));
        assert_eq!(second.field_count, 2);
    }

    #[test]
    fn command_becomes_command_complete_with_tag_unchanged() {
        let messages = messages(Ok(StatementResult::Command {
            tag: "INSERT 0 3".to_owned(),
        }));
        assert_eq!(messages.len(), 1);
        let PgWireBackendMessage::CommandComplete(complete) = &messages[0] else {
            panic!("expected CommandComplete, got {:?}", messages[0]);
        };
        assert_eq!(complete.tag, "INSERT 0 3");
    }

    #[test]
    fn error_carries_severity_sqlstate_message_and_detail() {
        let messages = messages(Err(SqlError::new(
            "42P01",
            "relation \"missing\" does not exist",
        )
        .with_detail("it never was")));
        assert_eq!(messages.len(), 1);
        let PgWireBackendMessage::ErrorResponse(error) = &messages[0] else {
            panic!("expected ErrorResponse, got {:?}", messages[0]);
        };
        let field = |code: u8| {
            error
                .fields
                .iter()
                .find(|(c, _)| *c == code)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field(b'S'), Some("ERROR"));
        assert_eq!(field(b'V'), Some("ERROR"));
        assert_eq!(field(b'C'), Some("42P01"));
        assert_eq!(field(b'M'), Some("relation \"missing\" does not exist"));
        assert_eq!(field(b'D'), Some("it never was"));
    }

    #[test]
    fn transaction_status_maps_to_ready_for_query_byte() {
        assert_eq!(
            ready_status(&sql::TransactionStatus::Idle),
            TransactionStatus::Idle
        );
        assert_eq!(
            ready_status(&sql::TransactionStatus::InBlock),
            TransactionStatus::Transaction
        );
        assert_eq!(
            ready_status(&sql::TransactionStatus::Failed),
            TransactionStatus::Error
        );
        assert_eq!(TransactionStatus::Idle as u8, b'I');
        assert_eq!(TransactionStatus::Transaction as u8, b'T');
        assert_eq!(TransactionStatus::Error as u8, b'E');
    }
}
