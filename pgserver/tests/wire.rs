//! End-to-end tests of the PostgreSQL wire server: a real `serve` on an ephemeral port over an
//! in-memory database, driven by tokio-postgres (simple protocol) and by a small raw-protocol
//! client for what tokio-postgres does not expose (type OIDs, ReadyForQuery status bytes,
//! SSLRequest, malformed messages).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

#[path = "../src/testing.rs"]
mod testing;

use testing::{CountingSource, OpenTransactions};

/// Every test body runs under this limit, so a protocol hang fails instead of stalling CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    /// Transactions begun and not yet committed or rolled back, across all sessions.
    open: OpenTransactions,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let source = CountingSource::new(kv::in_memory_source());
        let open = source.counter();
        let db = sql::Database::new(Arc::new(source));
        let task = tokio::spawn(pgserver::serve(listener, db, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            open,
            shutdown: Some(tx),
            task,
        }
    }

    async fn client(&self) -> Client {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.addr.ip().to_string())
            .port(self.addr.port())
            .user("tester")
            .dbname("regiondb")
            .application_name("wire-test");
        let (client, connection) = config.connect(NoTls).await.expect("connect");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    async fn raw(&self) -> raw::Conn {
        raw::Conn::connect(self.addr).await
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("serve returns after shutdown")
            .expect("serve task does not panic");
        result.expect("serve returns Ok");
    }
}

async fn with_timeout<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test timed out");
}

/// The rows of a simple-query response, as optional strings.
fn rows(messages: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The CommandComplete row counts of a simple-query response.
fn completions(messages: &[SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .unwrap_or_else(|| panic!("expected a server error with SQLSTATE, got {error:?}"))
        .code()
        .to_owned()
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_insert_select_round_trip() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;

        client
            .batch_execute(
                "CREATE TABLE accounts (id INT PRIMARY KEY, name TEXT, balance BIGINT, ok BOOLEAN);
                 INSERT INTO accounts VALUES (1, 'alice', 100, true), (2, NULL, -250, false);",
            )
            .await
            .expect("create and insert");

        let messages = client
            .simple_query("INSERT INTO accounts VALUES (3, 'carol''s', 0, NULL)")
            .await
            .expect("insert");
        assert_eq!(completions(&messages), vec![1]);

        let messages = client
            .simple_query("SELECT id, name, balance, ok FROM accounts ORDER BY id")
            .await
            .expect("select");
        assert_eq!(
            rows(&messages),
            vec![
                vec![s("1"), s("alice"), s("100"), s("t")],
                vec![s("2"), None, s("-250"), s("f")],
                vec![s("3"), s("carol's"), s("0"), None],
            ]
        );
        assert_eq!(completions(&messages), vec![3]);
        let SimpleQueryMessage::RowDescription(columns) = &messages[0] else {
            panic!("expected RowDescription first, got {:?}", messages[0]);
        };
        let names: Vec<_> = columns.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["id", "name", "balance", "ok"]);

        // tokio-postgres does not expose type OIDs from the simple protocol; read them raw.
        let mut raw = server.raw().await;
        let response = raw
            .query("SELECT id, name, balance, ok FROM accounts")
            .await;
        assert_eq!(
            response.column_types(),
            vec![
                ("id".to_owned(), 23),      // int4
                ("name".to_owned(), 25),    // text
                ("balance".to_owned(), 20), // int8
                ("ok".to_owned(), 16),      // bool
            ]
        );
        assert_eq!(response.data_rows().len(), 3);
        assert_eq!(response.command_tags(), vec!["SELECT 3".to_owned()]);
        assert_eq!(response.ready_status(), b'I');

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_sqlstate_and_connection_stays_usable() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;

        let error = client
            .simple_query("SELECT * FROM no_such_table")
            .await
            .expect_err("missing table");
        assert_eq!(sqlstate(&error), "42P01");
        assert_eq!(error.code(), Some(&SqlState::UNDEFINED_TABLE));

        let error = client
            .simple_query("SELEC oops")
            .await
            .expect_err("syntax error");
        assert_eq!(sqlstate(&error), "42601");

        // After an error outside a transaction block, the next query just works.
        let messages = client.simple_query("SELECT 1").await.expect("select 1");
        assert_eq!(rows(&messages), vec![vec![s("1")]]);

        // A multi-statement string is one implicit transaction: statements after the failing
        // one do not run, and those before it are rolled back, as in PostgreSQL.
        client
            .batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
            .await
            .expect("create");
        let error = client
            .batch_execute("INSERT INTO t VALUES (1); SELECT * FROM nope; INSERT INTO t VALUES (2)")
            .await
            .expect_err("second statement fails");
        assert_eq!(sqlstate(&error), "42P01");
        let messages = client
            .simple_query("SELECT k FROM t ORDER BY k")
            .await
            .expect("select");
        assert!(rows(&messages).is_empty(), "{:?}", rows(&messages));

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transaction_rejects_statements_until_rollback() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;
        client
            .batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
            .await
            .expect("create");

        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("begin");
        let error = client
            .simple_query("SELECT * FROM missing")
            .await
            .expect_err("error inside the block");
        assert_eq!(sqlstate(&error), "42P01");
        let error = client
            .simple_query("SELECT k FROM t")
            .await
            .expect_err("the block is aborted");
        assert_eq!(sqlstate(&error), "25P02");
        assert_eq!(error.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));

        client.batch_execute("ROLLBACK").await.expect("rollback");
        let messages = client
            .simple_query("SELECT k FROM t")
            .await
            .expect("select");
        assert!(rows(&messages).is_empty(), "the insert was rolled back");

        // COMMIT makes the block's writes visible to other connections.
        client
            .batch_execute("BEGIN; INSERT INTO t VALUES (2); COMMIT")
            .await
            .expect("commit");
        let other = server.client().await;
        let messages = other.simple_query("SELECT k FROM t").await.expect("select");
        assert_eq!(rows(&messages), vec![vec![s("2")]]);

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_for_query_reports_transaction_status() {
    with_timeout(async {
        let server = Server::start().await;
        let mut raw = server.raw().await;

        assert_eq!(
            raw.query("CREATE TABLE t (k INT PRIMARY KEY)")
                .await
                .ready_status(),
            b'I'
        );
        assert_eq!(raw.query("BEGIN").await.ready_status(), b'T');
        assert_eq!(
            raw.query("INSERT INTO t VALUES (1)").await.ready_status(),
            b'T'
        );

        let failed = raw.query("SELECT * FROM missing").await;
        assert_eq!(failed.error_codes(), vec!["42P01".to_owned()]);
        assert_eq!(failed.ready_status(), b'E');

        let still_failed = raw.query("SELECT 1").await;
        assert_eq!(still_failed.error_codes(), vec!["25P02".to_owned()]);
        assert_eq!(still_failed.ready_status(), b'E');

        let rolled_back = raw.query("ROLLBACK").await;
        assert_eq!(rolled_back.command_tags(), vec!["ROLLBACK".to_owned()]);
        assert_eq!(rolled_back.ready_status(), b'I');

        let committed = raw.query("BEGIN; INSERT INTO t VALUES (2); COMMIT").await;
        assert_eq!(
            committed.command_tags(),
            vec![
                "BEGIN".to_owned(),
                "INSERT 0 1".to_owned(),
                "COMMIT".to_owned()
            ]
        );
        assert_eq!(committed.ready_status(), b'I');

        // A statement that does not even parse: no effect outside a block, aborts one inside.
        let syntax = raw.query("SELEC 1").await;
        assert_eq!(syntax.error_codes(), vec!["42601".to_owned()]);
        assert_eq!(syntax.ready_status(), b'I');
        assert_eq!(raw.query("BEGIN").await.ready_status(), b'T');
        assert_eq!(raw.query("SELEC 1").await.ready_status(), b'E');
        let ended = raw.query("COMMIT").await;
        assert_eq!(ended.command_tags(), vec!["ROLLBACK".to_owned()]);
        assert_eq!(ended.ready_status(), b'I');

        // The error is reported with severity ERROR, not FATAL: the connection lives on.
        let error = raw.query("SELECT * FROM missing").await;
        assert_eq!(error.error_field(b'S'), vec!["ERROR".to_owned()]);
        assert_eq!(error.ready_status(), b'I');

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_queries_and_results() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;
        client
            .batch_execute("CREATE TABLE big (k INT PRIMARY KEY, v TEXT)")
            .await
            .expect("create");

        // One statement of ~100 KB, more than any single socket read.
        let values: Vec<String> = (0..2000)
            .map(|k| format!("({k}, 'value number {k} {}')", "x".repeat(20)))
            .collect();
        let insert = format!("INSERT INTO big VALUES {}", values.join(", "));
        assert!(insert.len() > 90_000);
        let messages = client.simple_query(&insert).await.expect("big insert");
        assert_eq!(completions(&messages), vec![2000]);

        // A single value larger than pgwire's small-message limits.
        let long = "ü".repeat(60_000);
        client
            .batch_execute(&format!("INSERT INTO big VALUES (-1, '{long}')"))
            .await
            .expect("long value");

        let messages = client
            .simple_query("SELECT k, v FROM big ORDER BY k")
            .await
            .expect("select all");
        let rows = rows(&messages);
        assert_eq!(rows.len(), 2001);
        assert_eq!(rows[0], vec![s("-1"), Some(long)]);
        assert_eq!(rows[2000][0], s("1999"));
        assert_eq!(completions(&messages), vec![2001]);

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_query_gets_empty_query_response() {
    with_timeout(async {
        let server = Server::start().await;
        let mut raw = server.raw().await;
        for query in ["", "   ", ";", " ; ; "] {
            let response = raw.query(query).await;
            assert_eq!(response.types(), vec![b'I', b'Z'], "query {query:?}");
            assert_eq!(response.ready_status(), b'I');
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connections_are_isolated() {
    with_timeout(async {
        let server = Server::start().await;
        let a = server.client().await;
        let b = server.client().await;
        a.batch_execute("CREATE TABLE t (k INT PRIMARY KEY, v TEXT)")
            .await
            .expect("create");

        a.batch_execute("BEGIN; INSERT INTO t VALUES (1, 'from a')")
            .await
            .expect("a writes");
        let seen_by_b = b.simple_query("SELECT k FROM t").await.expect("b reads");
        assert!(
            rows(&seen_by_b).is_empty(),
            "uncommitted write is invisible"
        );
        a.batch_execute("COMMIT").await.expect("a commits");
        let seen_by_b = b.simple_query("SELECT k, v FROM t").await.expect("b reads");
        assert_eq!(rows(&seen_by_b), vec![vec![s("1"), s("from a")]]);

        // Many connections at once, each writing its own rows.
        let mut tasks = Vec::new();
        for i in 0..8 {
            let client = server.client().await;
            tasks.push(tokio::spawn(async move {
                for j in 0..5 {
                    let k = 100 + i * 10 + j;
                    client
                        .batch_execute(&format!("INSERT INTO t VALUES ({k}, 'c{i}')"))
                        .await
                        .expect("concurrent insert");
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
        let messages = a.simple_query("SELECT k FROM t").await.expect("select");
        assert_eq!(rows(&messages).len(), 1 + 8 * 5);

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_is_refused_and_connection_survives() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;

        // tokio-postgres's `query` prepares the statement with Parse/Describe/Sync.
        let error = client
            .query("SELECT 1", &[])
            .await
            .expect_err("extended protocol is refused");
        assert_eq!(sqlstate(&error), "0A000");
        let messages = client.simple_query("SELECT 1").await.expect("still usable");
        assert_eq!(rows(&messages), vec![vec![s("1")]]);

        // Raw: everything up to Sync is discarded after the error, and the ReadyForQuery after
        // Sync carries the session's real status, here inside an (unaborted) transaction.
        let mut raw = server.raw().await;
        assert_eq!(raw.query("BEGIN").await.ready_status(), b'T');
        let response = raw.extended("SELECT 1").await;
        assert_eq!(response.error_codes(), vec!["0A000".to_owned()]);
        assert_eq!(response.types(), vec![b'E', b'Z']);
        assert_eq!(response.ready_status(), b'T');
        let after = raw.query("SELECT 1").await;
        assert!(after.error_codes().is_empty());
        assert_eq!(after.ready_status(), b'T');
        assert_eq!(raw.query("COMMIT").await.ready_status(), b'I');

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_refused_and_startup_continues() {
    with_timeout(async {
        let server = Server::start().await;
        let mut raw = raw::Conn::connect_with_ssl_request(server.addr).await;
        let response = raw.query("SELECT 1").await;
        assert_eq!(response.data_rows().len(), 1);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_sends_driver_parameters() {
    with_timeout(async {
        let server = Server::start().await;
        let raw = server.raw().await;
        let parameter = |name: &str| raw.parameters.get(name).cloned().unwrap_or_default();
        assert!(
            parameter("server_version")
                .split('.')
                .next()
                .is_some_and(|major| major.parse::<u32>().is_ok()),
            "server_version {:?}",
            parameter("server_version")
        );
        assert_eq!(parameter("server_encoding"), "UTF8");
        assert_eq!(parameter("client_encoding"), "UTF8");
        assert_eq!(parameter("DateStyle"), "ISO, MDY");
        assert_eq!(parameter("integer_datetimes"), "on");
        assert_eq!(parameter("standard_conforming_strings"), "on");
        assert_eq!(parameter("TimeZone"), "UTC");
        assert_eq!(parameter("application_name"), "raw-test");
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_is_accepted_and_ignored() {
    with_timeout(async {
        let server = Server::start().await;
        let client = server.client().await;
        client
            .cancel_token()
            .cancel_query(NoTls)
            .await
            .expect("cancel request is accepted");
        let messages = client.simple_query("SELECT 1").await.expect("unaffected");
        assert_eq!(rows(&messages), vec![vec![s("1")]]);
        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_and_abrupt_disconnects_do_not_hurt_others() {
    with_timeout(async {
        let server = Server::start().await;
        let survivor = server.client().await;
        survivor
            .batch_execute("CREATE TABLE t (k INT PRIMARY KEY)")
            .await
            .expect("create");

        // An unknown message type.
        let mut bad = server.raw().await;
        bad.send_bytes(b"\x01\x00\x00\x00\x04").await;
        bad.expect_closed_or_error().await;

        // A message claiming a negative length.
        let mut bad = server.raw().await;
        bad.send_bytes(b"Q\xff\xff\xff\xf0SELECT 1\x00").await;
        bad.expect_closed_or_error().await;

        // A message claiming to be enormous.
        let mut bad = server.raw().await;
        bad.send_bytes(b"Q\x7f\xff\xff\xffSELECT 1\x00").await;
        bad.expect_closed_or_error().await;

        // Garbage instead of a startup packet.
        let mut bad = raw::Conn::connect_unstarted(server.addr).await;
        bad.send_bytes(b"\x00\x00\x00\x08\x00\x00\x00\x00").await;
        bad.expect_closed_or_error().await;

        // A client that vanishes inside a transaction, and one mid-query.
        let mut gone = server.raw().await;
        assert_eq!(
            gone.query("BEGIN; INSERT INTO t VALUES (1)")
                .await
                .ready_status(),
            b'T'
        );
        drop(gone);
        let mut gone = server.raw().await;
        gone.send_query("INSERT INTO t VALUES (2); SELECT k FROM t")
            .await;
        drop(gone);

        // Both vanished sessions were closed, rolling back what they had open.
        assert_eq!(server.open.wait_for(0, Duration::from_secs(10)).await, 0);

        // The other connection and new ones are fine; the vanished transaction never committed.
        let messages = survivor.simple_query("SELECT 1").await.expect("survivor");
        assert_eq!(rows(&messages), vec![vec![s("1")]]);
        let fresh = server.client().await;
        let messages = fresh.simple_query("SELECT k FROM t").await.expect("fresh");
        assert!(
            !rows(&messages).contains(&vec![s("1")]),
            "an abandoned transaction's write must not become visible"
        );

        server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_connections_and_stops_accepting() {
    with_timeout(async {
        let server = Server::start().await;
        let addr = server.addr;
        let client = server.client().await;
        client
            .batch_execute("CREATE TABLE t (k INT PRIMARY KEY); BEGIN; INSERT INTO t VALUES (1)")
            .await
            .expect("open transaction");

        assert_eq!(server.open.get(), 1);

        let open = server.open.clone();
        server.stop().await;
        assert_eq!(open.get(), 0, "shutdown rolled back the open transaction");

        assert!(
            client.simple_query("SELECT 1").await.is_err(),
            "connection is closed by shutdown"
        );
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "listener is closed"
        );
    })
    .await;
}

/// A minimal client for the raw protocol, enough to observe what drivers hide.
mod raw {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const PROTOCOL_3_0: i32 = 196_608;
    const SSL_REQUEST_CODE: i32 = 80_877_103;

    pub struct Conn {
        stream: TcpStream,
        pub parameters: HashMap<String, String>,
    }

    /// One backend message: type byte and body.
    pub struct Message {
        pub kind: u8,
        pub body: Vec<u8>,
    }

    /// Everything the server sent for one request, up to and including ReadyForQuery.
    pub struct Response {
        pub messages: Vec<Message>,
    }

    impl Conn {
        pub async fn connect(addr: SocketAddr) -> Conn {
            let mut conn = Conn::connect_unstarted(addr).await;
            conn.startup().await;
            conn
        }

        pub async fn connect_with_ssl_request(addr: SocketAddr) -> Conn {
            let mut conn = Conn::connect_unstarted(addr).await;
            let mut packet = Vec::new();
            packet.extend_from_slice(&8i32.to_be_bytes());
            packet.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
            conn.send_bytes(&packet).await;
            let answer = conn.stream.read_u8().await.expect("SSL answer");
            assert_eq!(answer, b'N', "SSLRequest must be refused");
            conn.startup().await;
            conn
        }

        pub async fn connect_unstarted(addr: SocketAddr) -> Conn {
            Conn {
                stream: TcpStream::connect(addr).await.expect("connect"),
                parameters: HashMap::new(),
            }
        }

        async fn startup(&mut self) {
            let mut body = Vec::new();
            body.extend_from_slice(&PROTOCOL_3_0.to_be_bytes());
            for (key, value) in [
                ("user", "raw"),
                ("database", "regiondb"),
                ("application_name", "raw-test"),
            ] {
                cstring(&mut body, key);
                cstring(&mut body, value);
            }
            body.push(0);
            let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            packet.extend_from_slice(&body);
            self.send_bytes(&packet).await;

            let response = self.read_until_ready().await;
            let kinds = response.types();
            assert_eq!(kinds.first(), Some(&b'R'), "AuthenticationOk first");
            assert!(kinds.contains(&b'K'), "BackendKeyData");
            for message in &response.messages {
                if message.kind == b'S' {
                    let mut fields = message.body.split(|b| *b == 0);
                    let name = String::from_utf8_lossy(fields.next().unwrap_or_default());
                    let value = String::from_utf8_lossy(fields.next().unwrap_or_default());
                    self.parameters
                        .insert(name.into_owned(), value.into_owned());
                }
            }
        }

        pub async fn send_bytes(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).await.expect("write");
        }

        async fn send_message(&mut self, kind: u8, body: &[u8]) {
            let mut packet = vec![kind];
            packet.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
            packet.extend_from_slice(body);
            self.send_bytes(&packet).await;
        }

        pub async fn send_query(&mut self, sql: &str) {
            let mut body = Vec::new();
            cstring(&mut body, sql);
            self.send_message(b'Q', &body).await;
        }

        pub async fn query(&mut self, sql: &str) -> Response {
            self.send_query(sql).await;
            self.read_until_ready().await
        }

        /// Parse + Bind + Describe + Execute + Sync for a parameterless statement.
        pub async fn extended(&mut self, sql: &str) -> Response {
            let mut parse = Vec::new();
            cstring(&mut parse, "");
            cstring(&mut parse, sql);
            parse.extend_from_slice(&0i16.to_be_bytes());
            self.send_message(b'P', &parse).await;

            let mut bind = Vec::new();
            cstring(&mut bind, "");
            cstring(&mut bind, "");
            bind.extend_from_slice(&0i16.to_be_bytes()); // parameter formats
            bind.extend_from_slice(&0i16.to_be_bytes()); // parameters
            bind.extend_from_slice(&0i16.to_be_bytes()); // result formats
            self.send_message(b'B', &bind).await;

            let mut describe = vec![b'P'];
            cstring(&mut describe, "");
            self.send_message(b'D', &describe).await;

            let mut execute = Vec::new();
            cstring(&mut execute, "");
            execute.extend_from_slice(&0i32.to_be_bytes());
            self.send_message(b'E', &execute).await;

            self.send_message(b'S', &[]).await;
            self.read_until_ready().await
        }

        async fn read_message(&mut self) -> Option<Message> {
            let kind = self.stream.read_u8().await.ok()?;
            let len = self.stream.read_i32().await.ok()?;
            let mut body = vec![0; usize::try_from(len).ok()?.checked_sub(4)?];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(Message { kind, body })
        }

        async fn read_until_ready(&mut self) -> Response {
            let mut messages = Vec::new();
            loop {
                let message = self
                    .read_message()
                    .await
                    .expect("server closed the connection before ReadyForQuery");
                let done = message.kind == b'Z';
                messages.push(message);
                if done {
                    return Response { messages };
                }
            }
        }

        /// After a protocol violation the server may send a FATAL ErrorResponse; either way the
        /// connection must end (reads reach EOF) rather than hang.
        pub async fn expect_closed_or_error(&mut self) {
            let outcome = tokio::time::timeout(Duration::from_secs(10), async {
                while let Some(message) = self.read_message().await {
                    if message.kind == b'E' {
                        continue;
                    }
                    if message.kind == b'Z' {
                        // The server answered and is ready again: also acceptable.
                        return;
                    }
                }
            })
            .await;
            assert!(outcome.is_ok(), "server neither answered nor closed");
        }
    }

    impl Response {
        pub fn types(&self) -> Vec<u8> {
            self.messages.iter().map(|m| m.kind).collect()
        }

        pub fn ready_status(&self) -> u8 {
            let last = self.messages.last().expect("ReadyForQuery");
            assert_eq!(last.kind, b'Z');
            last.body[0]
        }

        /// (name, type OID) of every column in the RowDescriptions.
        pub fn column_types(&self) -> Vec<(String, u32)> {
            let mut columns = Vec::new();
            for message in self.messages.iter().filter(|m| m.kind == b'T') {
                let body = &message.body;
                let count = i16::from_be_bytes([body[0], body[1]]);
                let mut at = 2;
                for _ in 0..count {
                    let end = at + body[at..].iter().position(|b| *b == 0).expect("name");
                    let name = String::from_utf8_lossy(&body[at..end]).into_owned();
                    at = end + 1;
                    let oid_at = at + 4 + 2;
                    let oid = u32::from_be_bytes([
                        body[oid_at],
                        body[oid_at + 1],
                        body[oid_at + 2],
                        body[oid_at + 3],
                    ]);
                    let format_at = at + 4 + 2 + 4 + 2 + 4;
                    assert_eq!(&body[format_at..format_at + 2], &[0, 0], "text format");
                    at += 18;
                    columns.push((name, oid));
                }
            }
            columns
        }

        pub fn data_rows(&self) -> Vec<&Message> {
            self.messages.iter().filter(|m| m.kind == b'D').collect()
        }

        pub fn command_tags(&self) -> Vec<String> {
            self.messages
                .iter()
                .filter(|m| m.kind == b'C')
                .map(|m| {
                    String::from_utf8_lossy(m.body.strip_suffix(&[0]).unwrap_or(&m.body))
                        .into_owned()
                })
                .collect()
        }

        /// The value of `field` in every ErrorResponse.
        pub fn error_field(&self, field: u8) -> Vec<String> {
            self.messages
                .iter()
                .filter(|m| m.kind == b'E')
                .filter_map(|m| {
                    m.body
                        .split(|b| *b == 0)
                        .find(|f| f.first() == Some(&field))
                        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                })
                .collect()
        }

        pub fn error_codes(&self) -> Vec<String> {
            self.error_field(b'C')
        }
    }

    fn cstring(buf: &mut Vec<u8>, s: &str) {
        buf.extend_from_slice(s.as_bytes());
        buf.push(0);
    }
}
