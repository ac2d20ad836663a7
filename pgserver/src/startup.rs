//! The startup handshake: trust authentication and the server parameters drivers read.
//!
//! By the time a `StartupMessage` reaches [`StartupHandler::on_startup`], pgwire has already
//! answered any `SSLRequest`/`GSSENCRequest` with `N` (no TLS acceptor is configured) and routed
//! any `CancelRequest` elsewhere. What is left:
//!
//! 1. Negotiate the protocol version (3.0 or 3.2; a newer 3.x minor is downgraded with
//!    `NegotiateProtocolVersion`).
//! 2. Record the startup parameters (`user`, `database`, `application_name`, …) in the
//!    connection's metadata.
//! 3. Authenticate: trust, so `AuthenticationOk` straight away, for any user and database.
//! 4. Send `ParameterStatus` for each of [`ServerParameters`], then `BackendKeyData` (a process
//!    id and secret, which clients keep for cancel requests) and `ReadyForQuery` (idle).
//!
//! The parameter values are what drivers depend on: tokio-postgres, psycopg and JDBC parse
//! `server_version` as a version number; JDBC refuses to work unless `client_encoding` is UTF8,
//! `DateStyle` starts with ISO and `integer_datetimes` is on; `standard_conforming_strings`
//! decides how clients escape string literals.

use std::collections::HashMap;
use std::fmt::Debug;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_APPLICATION_NAME, METADATA_USER, PidSecretKeyGenerator};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::handler::Handler;

/// The `server_version` reported to clients. It must start with a PostgreSQL version number:
/// drivers parse it to decide which protocol features and catalog queries to use.
pub const SERVER_VERSION: &str = "15.0 (RegionDB)";

/// The `ParameterStatus` values sent after authentication.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ServerParameters;

impl ServerParameters {
    /// The fixed parameters, as (name, value) pairs. `application_name` and
    /// `session_authorization` echo what the client sent and are added per connection.
    pub(crate) fn fixed() -> [(&'static str, &'static str); 11] {
        [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "on"),
            ("default_transaction_read_only", "off"),
            ("in_hot_standby", "off"),
        ]
    }
}

impl ServerParameterProvider for ServerParameters {
    fn server_parameters<C>(&self, client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        let mut parameters: HashMap<String, String> = Self::fixed()
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        let metadata = client.metadata();
        parameters.insert(
            METADATA_APPLICATION_NAME.to_owned(),
            metadata
                .get(METADATA_APPLICATION_NAME)
                .cloned()
                .unwrap_or_default(),
        );
        if let Some(user) = metadata.get(METADATA_USER) {
            parameters.insert("session_authorization".to_owned(), user.clone());
        }
        Some(parameters)
    }
}

#[async_trait]
impl StartupHandler for Handler {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // With trust authentication nothing but the StartupMessage is expected in this phase;
        // anything else (a stray password message) is ignored, as there is nothing to check.
        if let PgWireFrontendMessage::Startup(startup) = message {
            protocol_negotiation(client, &startup).await?;
            save_startup_parameters_to_metadata(client, &startup);
            let (pid, secret_key) = self.pid_generator().generate(client);
            client.set_pid_and_secret_key(pid, secret_key);
            tracing::debug!(
                peer = %client.socket_addr(),
                user = client.metadata().get(METADATA_USER).map(String::as_str).unwrap_or(""),
                pid,
                "connection authenticated (trust)"
            );
            finish_authentication(client, &ServerParameters).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_starts_with_a_postgres_version_number() {
        let major: u32 = SERVER_VERSION
            .split(['.', ' '])
            .next()
            .and_then(|m| m.parse().ok())
            .expect("numeric major version");
        assert!(major >= 10);
    }

    #[test]
    fn fixed_parameters_cover_what_drivers_need() {
        let fixed: HashMap<_, _> = ServerParameters::fixed().into_iter().collect();
        assert_eq!(fixed["server_encoding"], "UTF8");
        assert_eq!(fixed["client_encoding"], "UTF8");
        assert!(fixed["DateStyle"].starts_with("ISO"));
        assert_eq!(fixed["integer_datetimes"], "on");
        assert_eq!(fixed["standard_conforming_strings"], "on");
        assert_eq!(fixed["TimeZone"], "UTC");
    }
}
