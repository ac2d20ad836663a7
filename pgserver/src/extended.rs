//! The extended query protocol, refused cleanly.
//!
//! `Parse`/`Bind`/`Describe`/`Execute` need prepared statements, parameter binding and a way to
//! describe a statement's result columns without running it; the SQL layer has none of these
//! yet. Rather than guess (for instance by running a statement at `Describe` time), every one of
//! these messages is answered with `ErrorResponse` SQLSTATE `0A000` (feature not supported).
//!
//! The connection stays usable, following the protocol's error recovery: after an error in an
//! extended-protocol message pgwire discards everything up to the client's `Sync`, then calls
//! [`on_sync`](ExtendedQueryHandler::on_sync), which answers `ReadyForQuery`. The status in that
//! `ReadyForQuery` is the session's real one. pgwire would report `E` after any error inside a
//! transaction block, but a refused message never reached the session, so its transaction is
//! not aborted (unlike PostgreSQL, where any error inside a block aborts it); claiming `E`
//! would contradict what the next simple query then reports.
//!
//! `Close` and `Flush` keep pgwire's behaviour (`CloseComplete`; flush the socket): both are
//! harmless on a connection with no prepared statements or portals.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::ExtendedQueryHandler;
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::extendedquery::{Bind, Describe, Execute, Parse, Sync as PgSync};
use pgwire::messages::response::ReadyForQuery;

use crate::handler::Handler;
use crate::response;

/// SQLSTATE `feature_not_supported`.
const FEATURE_NOT_SUPPORTED: &str = "0A000";

fn unsupported() -> PgWireError {
    PgWireError::UserError(Box::new(response::error_info(
        FEATURE_NOT_SUPPORTED,
        "extended query protocol is not supported yet".to_owned(),
    )))
}

/// The statement parser pgwire's extended-protocol plumbing requires. It is never asked to
/// parse, because `Parse` is refused before it would be; should that change, it refuses too.
#[derive(Debug, Default)]
pub(crate) struct UnsupportedParser;

#[async_trait]
impl QueryParser for UnsupportedParser {
    type Statement = String;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        _sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Err(unsupported())
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Err(unsupported())
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Err(unsupported())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = String;
    type QueryParser = UnsupportedParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::new(UnsupportedParser)
    }

    async fn on_parse<C>(&self, _client: &mut C, _message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(unsupported())
    }

    async fn on_bind<C>(&self, _client: &mut C, _message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(unsupported())
    }

    async fn on_execute<C>(&self, _client: &mut C, _message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(unsupported())
    }

    async fn on_describe<C>(&self, _client: &mut C, _message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(unsupported())
    }

    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let status = self.session().last_status();
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        _portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(unsupported())
    }
}
