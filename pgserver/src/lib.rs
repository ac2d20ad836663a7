//! The PostgreSQL wire protocol (v3) front door of RegionDB.
//!
//! `psql`, drivers and ORMs talk to RegionDB as if it were PostgreSQL. This crate owns the
//! sockets and the protocol state machine; everything about SQL lives in the `sql` crate behind
//! [`sql::Session`]. Message framing, the startup handshake, SSL negotiation and the per-message
//! state machine come from the [`pgwire`] crate; this crate plugs RegionDB into its handler
//! traits.
//!
//! # Connections and sessions
//!
//! [`serve`] accepts TCP connections and runs each in its own tokio task. A connection owns
//! exactly one [`sql::Session`], created from the shared [`sql::Database`] when the connection is
//! accepted. The session holds everything that is per connection in SQL terms: the open
//! transaction, if any, and its failed/aborted state.
//!
//! `Session` methods block (they may wait on storage locks or the network), so they never run on
//! the async runtime: every call goes through `tokio::task::spawn_blocking`, with the session
//! behind a mutex that the blocking task locks. The protocol is strictly request/response per
//! connection, so that mutex is never contended in normal operation.
//!
//! When a connection ends — the client sends Terminate, hangs up, sends something malformed, or
//! the server shuts down — the session is closed with [`sql::Session::close`], which rolls back
//! any open transaction. If a statement is still running when the client disappears, the close
//! waits for it to finish and then rolls back. If the connection task is aborted outright, the
//! session's `Drop` performs the same close on the blocking pool, so no path leaks an open
//! transaction (short of the process dying, where the storage layer's lock TTLs clean up).
//!
//! # How a statement flows (simple query protocol)
//!
//! 1. The client sends `Query` with a string that may hold several statements separated by `;`.
//! 2. [`sql::Session::execute`] runs them in order and returns one result per statement,
//!    stopping after the first error.
//! 3. Each result becomes protocol messages: a result set is `RowDescription` (column names and
//!    type OIDs, text format) followed by one `DataRow` per row and `CommandComplete` with the
//!    tag the SQL layer chose (e.g. `SELECT 3`); a command is just `CommandComplete`
//!    (e.g. `INSERT 0 3`); an error is `ErrorResponse` with severity `ERROR`, the SQL layer's
//!    SQLSTATE and message. A query string with no statements at all gets
//!    `EmptyQueryResponse`.
//! 4. `ReadyForQuery` closes the exchange.
//!
//! Values arrive from the SQL layer already rendered in PostgreSQL's text format, so the wire
//! layer copies them verbatim and never interprets types.
//!
//! # Transaction status
//!
//! `ReadyForQuery` carries the transaction status: `I` idle, `T` inside a transaction block, `E`
//! inside a failed block (every statement but `ROLLBACK` fails with `25P02` until the block
//! ends). Clients rely on it (psql shows it in the prompt, pools use it to decide whether a
//! connection can be reused), so it must be exact. pgwire can track the status itself by
//! guessing from the kind of each response; RegionDB does not let it guess: the status is read
//! from [`sql::Session::transaction_status`] after every query, in the same blocking call that
//! ran it, and that value is what both `ReadyForQuery` and pgwire's own bookkeeping get.
//!
//! # Startup
//!
//! An `SSLRequest` is answered `N` (pgwire does that when no TLS acceptor is configured) and the
//! client continues in plain text. Authentication is `trust`: any user and any database name
//! are accepted without a password. The server then sends the `ParameterStatus` values drivers
//! read (see `startup.rs`): a `server_version` that starts with a PostgreSQL version number,
//! UTF8 encodings, ISO dates, integer datetimes, standard-conforming strings and UTC.
//! `CancelRequest` is accepted and ignored: RegionDB cannot interrupt a running statement yet.
//!
//! # Deliberately not implemented (yet)
//!
//! - TLS. `SSLRequest` is refused and direct-TLS connections are dropped.
//! - Authentication methods other than trust (no password, MD5 or SCRAM).
//! - Query cancellation (`CancelRequest` is ignored).
//! - `COPY` in either direction.
//! - The extended query protocol (`Parse`/`Bind`/`Describe`/`Execute`). The SQL layer has no
//!   prepared statements or way to describe a statement without running it, so every extended
//!   protocol message is answered with `ErrorResponse` SQLSTATE `0A000` ("extended query
//!   protocol is not supported yet"). As the protocol prescribes, the server then discards
//!   messages up to the next `Sync`, answers that with `ReadyForQuery`, and the connection stays
//!   usable for simple queries. Drivers that only use the simple protocol (`psql`,
//!   tokio-postgres's `simple_query`/`batch_execute`) work.
//! - Notices (`NoticeResponse`) and asynchronous notifications.
//! - A `FATAL 57P01` message to open connections on shutdown: they are simply closed.

mod extended;
mod handler;
mod query;
mod response;
mod server;
mod session;
mod startup;
#[cfg(test)]
mod testing;

pub use server::{SHUTDOWN_GRACE, serve};
pub use startup::SERVER_VERSION;
