//! One connection's protocol handler: the object pgwire calls back into.
//!
//! pgwire's connection loop (`pgwire::tokio::process_socket`) takes a [`PgWireServerHandlers`]
//! value per connection and asks it for a handler per protocol phase. RegionDB builds a fresh
//! [`ConnectionHandlers`] for every accepted socket, so the handler can own that connection's
//! [`SessionHandle`] directly instead of looking a session up by connection id.
//!
//! The phases are implemented beside their concern: startup in `startup.rs`, the simple query
//! protocol in `query.rs`, the (refused) extended query protocol in `extended.rs`. Cancel
//! requests go to pgwire's no-op handler and are ignored; COPY is never started, so the copy
//! handler is never reached.

use std::sync::Arc;

use pgwire::api::auth::StartupHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireServerHandlers, RandomPidSecretKeyGenerator};
use pgwire::error::PgWireError;

use crate::session::SessionHandle;

/// The per-connection state every protocol phase needs.
pub(crate) struct Handler {
    session: SessionHandle,
    /// Shared by all connections so process ids stay unique within the server.
    pids: Arc<RandomPidSecretKeyGenerator>,
}

impl Handler {
    pub(crate) fn session(&self) -> &SessionHandle {
        &self.session
    }

    pub(crate) fn pid_generator(&self) -> &RandomPidSecretKeyGenerator {
        &self.pids
    }
}

/// What `process_socket` is given for one connection.
pub(crate) struct ConnectionHandlers {
    handler: Arc<Handler>,
}

impl ConnectionHandlers {
    pub(crate) fn new(session: SessionHandle, pids: Arc<RandomPidSecretKeyGenerator>) -> Self {
        Self {
            handler: Arc::new(Handler { session, pids }),
        }
    }
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.handler)
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::clone(&self.handler)
    }
}

/// Errors that end a protocol exchange (malformed or out-of-order messages, refused extended
/// protocol messages, I/O failures) pass through here before pgwire sends them to the client.
/// SQL errors do not: they are ordinary results. Only logged; the SQLSTATE was chosen where the
/// error was raised.
impl ErrorHandler for Handler {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        if error.is_fatal() {
            tracing::info!(peer = %client.socket_addr(), %error, "ending connection on protocol error");
        } else {
            tracing::debug!(peer = %client.socket_addr(), %error, "protocol error");
        }
    }
}
