//! The simple query protocol: `Query` in, results and `ReadyForQuery` out.
//!
//! pgwire's default `on_query` is replaced rather than fed through `do_query`, because its
//! defaults decide two things RegionDB's SQL layer already knows exactly: the `CommandComplete`
//! tag (rebuilt from a row count) and the transaction status (guessed from whether a response
//! looked like BEGIN, COMMIT or an error). Here the tags come verbatim from the
//! [`sql::StatementResult`]s, and the `ReadyForQuery` status from
//! [`sql::Session::transaction_status`], read right after the statements ran.
//!
//! Failure modes:
//! - SQL errors are results: `ErrorResponse` (severity `ERROR`), then `ReadyForQuery` — with
//!   status `E` if the error happened inside a transaction block, which the session reports.
//! - If the SQL layer panics, the session is unusable: the client gets `FATAL` `XX000` and the
//!   connection is closed (its transaction is rolled back as the session closes). Other
//!   connections are unaffected.
//! - Rows are streamed: the session sends them in batches over a bounded channel as the query
//!   produces them, and each batch is flushed to the client. If the client disconnects
//!   mid-query, relaying fails, the channel closes, the running statement fails at its next
//!   row, and the session is closed. An autocommitted query's rows go out before its commit;
//!   if that fails (only an optimistic `FOR UPDATE` can), the error follows the rows.

use std::fmt::Debug;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::query::{SimpleQueryHandler, send_ready_for_query};
use pgwire::api::results::Response;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_FATAL};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::simplequery::Query;
use tokio::sync::mpsc;

use crate::handler::Handler;
use crate::response;
use crate::session::Event;

/// Batches of rows (or other events) on their way from the session to the client at once.
const EVENTS_IN_FLIGHT: usize = 16;

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);

        // The session runs on the blocking pool and streams what it produces; this side
        // relays it to the client as it comes, flushing each batch of rows (so a slow client
        // slows the query down instead of letting rows pile up).
        let (events, mut received) = mpsc::channel(EVENTS_IN_FLIGHT);
        let session = self.session();
        let run = session.execute_streaming(query.query, events);
        let relay = async {
            let mut encoder = response::RowEncoder::new();
            let mut statements = 0usize;
            while let Some(event) = received.recv().await {
                match event {
                    Event::Columns(columns) => {
                        let description = response::row_description(&columns);
                        client
                            .feed(PgWireBackendMessage::RowDescription(description))
                            .await?;
                    }
                    Event::Rows(rows) => {
                        for row in rows {
                            let row = encoder.encode(&row)?;
                            client.feed(PgWireBackendMessage::DataRow(row)).await?;
                        }
                        client.flush().await?;
                    }
                    Event::Finished(result) => {
                        statements += 1;
                        for message in response::statement_messages(result) {
                            client.feed(message?).await?;
                        }
                    }
                }
            }
            Ok::<usize, PgWireError>(statements)
        };
        let (outcome, relayed) = tokio::join!(run, relay);
        let Ok(status) = outcome else {
            return Err(session_lost());
        };
        // No statements at all (empty string, only `;`, only comments): PostgreSQL answers
        // EmptyQueryResponse instead of any CommandComplete.
        if relayed? == 0 {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        }

        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    /// Not reached: `on_query` above handles the whole exchange itself.
    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Err(PgWireError::UserError(Box::new(response::error_info(
            "XX000",
            "internal error: simple queries are executed by on_query".to_owned(),
        ))))
    }
}

/// The error that ends a connection whose session can no longer run statements. `FATAL`
/// makes pgwire send it and then close the socket.
fn session_lost() -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        SEVERITY_FATAL.to_owned(),
        "XX000".to_owned(),
        "internal error: the SQL session failed; the connection is closed and its transaction \
         rolled back"
            .to_owned(),
    )))
}
