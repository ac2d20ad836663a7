//! The accept loop and the life of one connection.
//!
//! [`serve`] accepts connections until its shutdown future resolves. Each connection gets its
//! own [`sql::Session`] and its own tokio task, which runs pgwire's per-socket message loop and,
//! when that ends for whatever reason, closes the session (rolling back an open transaction).
//! A failing connection — malformed messages, a client vanishing mid-query, even a panic in the
//! SQL layer — ends only its own task.
//!
//! Shutdown: stop accepting (the listener is dropped, so new clients are refused), tell every
//! connection to stop, and give them [`SHUTDOWN_GRACE`] to close their sessions; tasks still
//! running after that (a statement stuck waiting on storage) are aborted, and their sessions are
//! closed from `Drop` on the blocking pool instead.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::RandomPidSecretKeyGenerator;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::handler::ConnectionHandlers;
use crate::session::SessionHandle;

/// How long open connections get to close their sessions once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// After a failed `accept` (say, out of file descriptors), wait this long before retrying, so a
/// persistent failure does not spin a core.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Serves the PostgreSQL wire protocol on `listener` for `db` until `shutdown` resolves.
///
/// Returns once the listener is closed and all connections have ended (gracefully within
/// [`SHUTDOWN_GRACE`], or aborted after it). Errors accepting a single connection are logged
/// and do not stop the server.
pub async fn serve(
    listener: TcpListener,
    db: sql::Database,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "PostgreSQL wire server listening");
    }
    let pids = Arc::new(RandomPidSecretKeyGenerator::default());
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    let session = SessionHandle::new(db.session());
                    let handlers = ConnectionHandlers::new(session.clone(), Arc::clone(&pids));
                    connections.spawn(run_connection(socket, handlers, session, stop_rx.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            },
            // Reap finished connections so the set does not grow with every connection served.
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                log_connection_end(finished);
            }
        }
    }

    tracing::info!(
        open_connections = connections.len(),
        "PostgreSQL wire server shutting down"
    );
    drop(listener);
    // Dropping the sender wakes every connection's `changed()`.
    drop(stop_tx);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(finished) = connections.join_next().await {
            log_connection_end(finished);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = connections.len(),
            "connections did not close in time; aborting them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One connection from accept to close. `session` is the same session the handlers use; it is
/// closed here however the protocol loop ended.
async fn run_connection(
    socket: TcpStream,
    handlers: ConnectionHandlers,
    session: SessionHandle,
    mut stop: watch::Receiver<()>,
) {
    let peer = socket.peer_addr().ok();
    tokio::select! {
        result = pgwire::tokio::process_socket(socket, None, handlers) => {
            if let Err(error) = result {
                // Usually the client hanging up mid-exchange; nothing to tell anyone.
                tracing::debug!(?peer, %error, "connection ended with an I/O error");
            }
        }
        // Resolves when the server shuts down (the sender is dropped, never sent to).
        _ = stop.changed() => {
            tracing::debug!(?peer, "closing connection for shutdown");
        }
    }
    session.close().await;
    tracing::debug!(?peer, "connection closed");
}

fn log_connection_end(finished: Result<(), tokio::task::JoinError>) {
    match finished {
        Err(error) if error.is_panic() => tracing::error!(%error, "connection task panicked"),
        _ => {}
    }
}
