//! A connection's SQL session, driven from async code.
//!
//! [`sql::Session`] is blocking and `Send` but not `Sync`. [`SessionHandle`] puts it behind a
//! `std::sync::Mutex` inside an `Arc`, so the protocol handlers (which pgwire needs to be
//! `Send + Sync`) can share it, and runs every call on tokio's blocking pool.
//!
//! Invariants:
//! - Every call that can block runs in `spawn_blocking`; the async side only waits for it.
//! - The transaction status reported to the client is read in the same blocking call (under the
//!   same lock) as the statement that produced it, and cached for `Sync`, which must answer
//!   without running anything.
//! - The session is closed (its open transaction rolled back) exactly once: explicitly through
//!   [`SessionHandle::close`] when the connection ends normally, or from `Drop` when the last
//!   handle goes away without that (the connection task was aborted). After a close, the slot is
//!   empty and further calls fail with [`SessionGone`].
//! - A panic in the SQL layer poisons the mutex. The session's state is then unknown, so it is
//!   never used for another statement; it is still closed, to release what it holds.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use pgwire::messages::response::TransactionStatus;
use sql::{ColumnInfo, ResultSink, Session, SqlError, StatementResult};
use tokio::sync::mpsc;

use crate::response;

/// The outcome of one simple-query string: one result per executed statement.
#[cfg(test)]
pub(crate) type QueryResults = Vec<Result<StatementResult, SqlError>>;

/// The session can no longer run statements: it was closed, or the SQL layer panicked while
/// running one. The connection must be ended.
#[derive(Debug)]
pub(crate) struct SessionGone;

/// A cloneable, shareable handle on one connection's session.
#[derive(Clone)]
pub(crate) struct SessionHandle {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once closed.
    session: Mutex<Option<Session>>,
    /// The status after the last statement, for `ReadyForQuery` after `Sync`. Kept in pgwire's
    /// form, which is `Copy`.
    status: Mutex<TransactionStatus>,
}

impl SessionHandle {
    pub(crate) fn new(session: Session) -> Self {
        Self {
            inner: Arc::new(Inner {
                session: Mutex::new(Some(session)),
                status: Mutex::new(TransactionStatus::Idle),
            }),
        }
    }

    /// Runs `run` on the session on the blocking pool and returns its result together with
    /// the transaction status afterwards, as `ReadyForQuery` reports it.
    async fn on_session<T: Send + 'static>(
        &self,
        run: impl FnOnce(&mut Session) -> T + Send + 'static,
    ) -> Result<(T, TransactionStatus), SessionGone> {
        let inner = Arc::clone(&self.inner);
        let outcome = tokio::task::spawn_blocking(move || {
            // A poisoned lock means an earlier statement panicked mid-way: refuse to continue.
            let mut slot = inner.session.lock().map_err(|_| SessionGone)?;
            let session = slot.as_mut().ok_or(SessionGone)?;
            let result = run(session);
            let status = response::ready_status(&session.transaction_status());
            *lock_ignoring_poison(&inner.status) = status;
            Ok((result, status))
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(join_error) => {
                tracing::error!(error = %join_error, "SQL session panicked while executing");
                Err(SessionGone)
            }
        }
    }

    /// Runs a simple-query string and returns its results together with the transaction
    /// status afterwards (rows collected: for tests; connections stream with
    /// [`SessionHandle::execute_streaming`]).
    #[cfg(test)]
    pub(crate) async fn execute(
        &self,
        sql: String,
    ) -> Result<(QueryResults, TransactionStatus), SessionGone> {
        self.on_session(move |session| session.execute(&sql)).await
    }

    /// Runs a simple-query string, sending what it produces to `events` as it is produced
    /// (rows in batches), and returns the transaction status afterwards. The channel is
    /// bounded: while the client does not read, the query waits, holding a bounded number of
    /// rows. If the receiver goes away, the running query fails.
    pub(crate) async fn execute_streaming(
        &self,
        sql: String,
        events: mpsc::Sender<Event>,
    ) -> Result<TransactionStatus, SessionGone> {
        let run = move |session: &mut Session| {
            let mut sink = ChannelSink {
                events,
                batch: Vec::new(),
            };
            session.execute_streaming(&sql, &mut sink);
        };
        self.on_session(run).await.map(|((), status)| status)
    }

    /// The transaction status after the last statement. Never blocks on the session.
    pub(crate) fn last_status(&self) -> TransactionStatus {
        *lock_ignoring_poison(&self.inner.status)
    }

    /// Closes the session, rolling back any open transaction. Waits for a statement that is
    /// still running (its client may have gone away mid-query) before rolling back. Idempotent.
    pub(crate) async fn close(&self) {
        let inner = Arc::clone(&self.inner);
        let closed = tokio::task::spawn_blocking(move || {
            let session = lock_ignoring_poison(&inner.session).take();
            if let Some(session) = session {
                close_session(session);
            }
        })
        .await;
        if let Err(join_error) = closed {
            tracing::error!(error = %join_error, "closing the SQL session failed");
        }
    }
}

/// What a streamed query string produces, in order.
pub(crate) enum Event {
    /// A result set begins.
    Columns(Vec<ColumnInfo>),
    /// Its next rows.
    Rows(Vec<Vec<Option<String>>>),
    /// A statement's outcome.
    Finished(Result<StatementResult, SqlError>),
}

/// Rows per [`Event::Rows`]: few enough to keep memory small, enough to amortize the channel.
const ROWS_PER_EVENT: usize = 64;

/// Sends a session's results over a bounded channel (see [`SessionHandle::execute_streaming`]).
struct ChannelSink {
    events: mpsc::Sender<Event>,
    batch: Vec<Vec<Option<String>>>,
}

impl ChannelSink {
    fn send(&self, event: Event) -> Result<(), SqlError> {
        self.events
            .blocking_send(event)
            .map_err(|_| SqlError::new("08006", "the client connection was lost"))
    }

    fn flush(&mut self) -> Result<(), SqlError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.batch);
        self.send(Event::Rows(rows))
    }
}

impl ResultSink for ChannelSink {
    fn columns(&mut self, columns: &[ColumnInfo]) -> Result<(), SqlError> {
        self.flush()?;
        self.send(Event::Columns(columns.to_vec()))
    }

    fn row(&mut self, row: Vec<Option<String>>) -> Result<(), SqlError> {
        self.batch.push(row);
        if self.batch.len() >= ROWS_PER_EVENT {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self, result: Result<StatementResult, SqlError>) {
        // A lost client: nothing more to tell it.
        let _ = self.flush();
        let _ = self.send(Event::Finished(result));
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let session = self
            .session
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(session) = session else {
            return;
        };
        // Closing may block, and this can run on an async worker thread (an aborted connection
        // task). Prefer the blocking pool; without a runtime there is nothing to block.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || close_session(session));
            }
            Err(_) => close_session(session),
        }
    }
}

/// Rolls back whatever the session holds. A panic here must not take down the thread that is
/// dropping the connection (it may already be unwinding), so it is caught and logged.
fn close_session(mut session: Session) {
    if catch_unwind(AssertUnwindSafe(|| session.close())).is_err() {
        tracing::error!("SQL session panicked while closing");
    }
}

fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::testing::{CountingSource, OpenTransactions};

    fn database() -> (sql::Database, OpenTransactions) {
        let source = CountingSource::new(kv::in_memory_source());
        let open = source.counter();
        (sql::Database::new(Arc::new(source)), open)
    }

    #[tokio::test]
    async fn execute_reports_results_and_status_together() {
        let (db, _) = database();
        let session = SessionHandle::new(db.session());
        assert_eq!(session.last_status(), TransactionStatus::Idle);

        let (results, status) = session
            .execute("CREATE TABLE t (k INT PRIMARY KEY); BEGIN".to_owned())
            .await
            .expect("session alive");
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(status, TransactionStatus::Transaction);
        assert_eq!(session.last_status(), TransactionStatus::Transaction);

        let (results, status) = session
            .execute("SELECT * FROM missing".to_owned())
            .await
            .expect("session alive");
        assert_eq!(results.len(), 1);
        assert!(results[0].is_err());
        assert_eq!(status, TransactionStatus::Error);
        assert_eq!(session.last_status(), TransactionStatus::Error);
    }

    #[tokio::test]
    async fn close_rolls_back_and_is_final() {
        let (db, open) = database();
        let session = SessionHandle::new(db.session());
        session
            .execute(
                "CREATE TABLE t (k INT PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1)".to_owned(),
            )
            .await
            .expect("insert");
        assert_eq!(open.get(), 1, "the block's transaction is open");

        session.close().await;
        assert_eq!(open.get(), 0, "close rolled it back");
        session.close().await; // idempotent
        assert!(session.execute("SELECT 1".to_owned()).await.is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_last_handle_rolls_back() {
        let (db, open) = database();
        let session = SessionHandle::new(db.session());
        session
            .execute(
                "CREATE TABLE t (k INT PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1)".to_owned(),
            )
            .await
            .expect("insert");
        let clone = session.clone();
        drop(session);
        assert_eq!(open.get(), 1, "still referenced, still open");
        drop(clone);
        // The rollback runs on the blocking pool.
        assert_eq!(open.wait_for(0, Duration::from_secs(5)).await, 0);
    }
}
