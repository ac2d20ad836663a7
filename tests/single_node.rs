//! End-to-end tests of the `regiondb` binary: a real process, real sockets, real clients.

mod support;

use support::Node;
use tokio_postgres::NoTls;

#[test]
fn sql_round_trip_with_tags_types_and_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let mut c = node.connect();

    let r = c.ok("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(20) NOT NULL, price DOUBLE PRECISION, qty BIGINT, small SMALLINT, note TEXT, ok BOOLEAN, r REAL)");
    assert_eq!(r.tags, ["CREATE TABLE"]);
    assert_eq!(r.status, b'I');

    let r = c.ok("INSERT INTO items VALUES (1, 'apple', 0.5, 10, 1, NULL, true, 1.5), (2, 'pear', 0.75, 20, 2, 'ripe', false, 2.5), (3, 'fig', 2, 5, 3, NULL, NULL, NULL)");
    assert_eq!(r.tags, ["INSERT 0 3"]);

    let r = c.ok(
        "SELECT id, name, price, qty, small, note, ok, r FROM items WHERE price < 1 ORDER BY id",
    );
    assert_eq!(r.tags, ["SELECT 2"]);
    let oids: Vec<u32> = r.columns.iter().map(|(_, oid)| *oid).collect();
    assert_eq!(oids, [23, 1043, 701, 20, 21, 25, 16, 700]);
    assert_eq!(r.columns[1].0, "name");
    assert_eq!(
        r.rows[0],
        ["1", "apple", "0.5", "10", "1"]
            .iter()
            .map(|s| Some(s.to_string()))
            .chain([None, Some("t".into()), Some("1.5".into())])
            .collect::<Vec<_>>()
    );

    assert_eq!(
        c.ok("UPDATE items SET qty = qty + 1 WHERE id >= 2").tags,
        ["UPDATE 2"]
    );
    assert_eq!(
        c.ok("DELETE FROM items WHERE name = 'fig'").tags,
        ["DELETE 1"]
    );
    assert_eq!(c.rows("SELECT id, qty FROM items"), ["1,10", "2,21"]);

    // Several statements in one Query: one CommandComplete each, one ReadyForQuery.
    let r =
        c.ok("INSERT INTO items (id, name) VALUES (10, 'x'); SELECT id FROM items WHERE id = 10");
    assert_eq!(r.tags, ["INSERT 0 1", "SELECT 1"]);
    assert!(c.query("").empty);

    // Error codes.
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM nope", "42P01"),
        ("SELECT nope FROM items", "42703"),
        ("CREATE TABLE items (a INT)", "42P07"),
        ("INSERT INTO items (id, name) VALUES (1, 'dup')", "23505"),
        ("INSERT INTO items (id) VALUES (99)", "23502"),
        ("INSERT INTO items (id, name) VALUES ('abc', 'x')", "22P02"),
        (
            "INSERT INTO items (id, name, ok) VALUES (99, 'x', 5)",
            "42804",
        ),
        ("SELECT * FROM items WHERE qty", "42804"),
        ("CREATE INDEX i ON items (lower(name))", "0A000"),
    ];
    for (sql, code) in cases {
        let r = c.query(sql);
        assert_eq!(r.code(), Some(code), "{sql}: {:?}", r.error);
        assert_eq!(r.status, b'I', "{sql}");
    }

    // Transaction status through a failed block.
    assert_eq!(c.ok("BEGIN").status, b'T');
    assert_eq!(
        c.ok("INSERT INTO items (id, name) VALUES (20, 'in block')")
            .status,
        b'T'
    );
    let r = c.query("SELECT * FROM nope");
    assert_eq!((r.code(), r.status), (Some("42P01"), b'E'));
    let r = c.query("SELECT 1");
    assert_eq!((r.code(), r.status), (Some("25P02"), b'E'));
    let r = c.ok("ROLLBACK");
    assert_eq!((r.tags[0].as_str(), r.status), ("ROLLBACK", b'I'));
    assert!(c.rows("SELECT id FROM items WHERE id = 20").is_empty());
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=10"),
        NoTls,
    )
    .await
    .expect("connect with tokio-postgres");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn values(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        })
        .collect()
}

/// The optimistic mode (`regiondb_txn_mode`): snapshot isolation, first committer wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_sessions_get_snapshot_isolation_and_conflicts_abort() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let a = connect(node.port).await;
    let b = connect(node.port).await;
    for session in [&a, &b] {
        session
            .batch_execute("SET regiondb_txn_mode = optimistic")
            .await
            .unwrap();
    }
    a.batch_execute("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0)")
        .await
        .unwrap();

    // Snapshot: a's block does not see b's later committed insert.
    a.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        values(&a.simple_query("SELECT id FROM t").await.unwrap()),
        ["1"]
    );
    b.batch_execute("INSERT INTO t VALUES (2, 0)")
        .await
        .unwrap();
    assert_eq!(
        values(&a.simple_query("SELECT id FROM t").await.unwrap()),
        ["1"]
    );
    a.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        values(&a.simple_query("SELECT id FROM t").await.unwrap()),
        ["1", "2"]
    );

    // Concurrent updates of one row: the second to commit gets 40001 and rolls back.
    a.batch_execute("BEGIN; UPDATE t SET v = v + 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE t SET v = v + 10 WHERE id = 1; UPDATE t SET v = 5 WHERE id = 2")
        .await
        .unwrap();
    a.batch_execute("COMMIT").await.unwrap();
    let err = b
        .batch_execute("COMMIT")
        .await
        .expect_err("second committer must fail");
    assert_eq!(err.code().map(|c| c.code()), Some("40001"), "{err}");
    // Nothing of b's transaction was applied, and b's session is usable again.
    assert_eq!(
        values(&b.simple_query("SELECT id, v FROM t").await.unwrap()),
        ["1,1", "2,0"]
    );
}

/// The default mode: two sessions that lock two rows in opposite orders deadlock; one is
/// refused with 40P01 at once (its transaction rolls back), the other gets the row and
/// commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_sessions_locking_rows_in_opposite_orders_one_gets_40p01_the_other_commits() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let a = std::sync::Arc::new(connect(node.port).await);
    let b = std::sync::Arc::new(connect(node.port).await);
    a.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 0), (2, 0)",
    )
    .await
    .unwrap();
    a.batch_execute("BEGIN; UPDATE t SET v = 1 WHERE id = 1")
        .await
        .unwrap();
    b.batch_execute("BEGIN; UPDATE t SET v = 2 WHERE id = 2")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let second = |client: std::sync::Arc<tokio_postgres::Client>, sql: &'static str| {
        tokio::spawn(async move {
            let outcome = client.batch_execute(sql).await;
            let code = outcome
                .as_ref()
                .err()
                .and_then(|e| e.code().map(|c| c.code().to_string()));
            match code {
                None => client.batch_execute("COMMIT").await.map(|_| "committed"),
                Some(code) if code == "40P01" => {
                    client.batch_execute("ROLLBACK").await.map(|_| "deadlock")
                }
                Some(code) => panic!("unexpected error {code}: {outcome:?}"),
            }
        })
    };
    let a_waits = second(std::sync::Arc::clone(&a), "UPDATE t SET v = 1 WHERE id = 2");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let b_waits = second(std::sync::Arc::clone(&b), "UPDATE t SET v = 2 WHERE id = 1");
    let mut outcomes = [
        a_waits.await.unwrap().unwrap(),
        b_waits.await.unwrap().unwrap(),
    ];
    println!("deadlock resolved in {:?}", started.elapsed());
    outcomes.sort();
    assert_eq!(outcomes, ["committed", "deadlock"]);
    let rows = values(&a.simple_query("SELECT v FROM t ORDER BY id").await.unwrap());
    assert!(rows == ["1", "1"] || rows == ["2", "2"], "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let setup = connect(node.port).await;
    setup
        .batch_execute("CREATE TABLE hits (client INT, n INT, PRIMARY KEY (client, n))")
        .await
        .unwrap();
    let clients = 16;
    let per_client = 20;
    let tasks: Vec<_> = (0..clients)
        .map(|client| {
            let port = node.port;
            tokio::spawn(async move {
                let c = connect(port).await;
                for n in 0..per_client {
                    c.batch_execute(&format!("INSERT INTO hits VALUES ({client}, {n})"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let rows = values(&setup.simple_query("SELECT client FROM hits").await.unwrap());
    assert_eq!(rows.len(), clients * per_client);
}

#[test]
fn acknowledged_rows_survive_restart_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();

    let node = Node::start(dir.path());
    let mut c = node.connect();
    c.ok("CREATE TABLE durable (id INT PRIMARY KEY, note TEXT)");
    c.ok("INSERT INTO durable VALUES (1, 'before restart')");
    c.ok("BEGIN; INSERT INTO durable VALUES (2, 'in a committed block'); COMMIT");
    c.ok("BEGIN; INSERT INTO durable VALUES (3, 'never committed')");
    drop(c);
    let status = node.terminate();
    assert!(
        status.success(),
        "SIGTERM should stop regiondb cleanly, got {status}"
    );

    let node = Node::start(dir.path());
    let mut c = node.connect();
    assert_eq!(c.rows("SELECT id FROM durable"), ["1", "2"]);
    for i in 10..60 {
        c.ok(&format!("INSERT INTO durable VALUES ({i}, 'before kill')"));
    }
    c.ok("UPDATE durable SET note = 'updated' WHERE id = 1");
    c.ok("DELETE FROM durable WHERE id = 2");
    node.kill9();

    let node = Node::start(dir.path());
    let mut c = node.connect();
    let rows = c.rows("SELECT id FROM durable");
    let expected: Vec<String> = std::iter::once(1)
        .chain(10..60)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(rows, expected);
    assert_eq!(c.rows("SELECT note FROM durable WHERE id = 1"), ["updated"]);
    // The restarted node keeps issuing timestamps above the old ones: new writes are visible.
    c.ok("INSERT INTO durable VALUES (100, 'after restart')");
    assert_eq!(
        c.rows("SELECT note FROM durable WHERE id = 100"),
        ["after restart"]
    );
}

#[test]
fn a_second_process_cannot_open_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _node = Node::start(dir.path());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_regiondb"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--pg-listen")
        .arg("127.0.0.1:0")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}

/// Writers commit 3-row transactions while the node is killed with SIGKILL mid-stream. After a
/// restart every acknowledged transaction is there in full, and no transaction is there in
/// part: commits interrupted between the primary and the secondaries are rolled forward, and
/// those interrupted before the primary are rolled back (after their locks' TTL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_concurrent_commits_keeps_transactions_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let setup = connect(node.port).await;
    setup
        .batch_execute("CREATE TABLE parts (txn INT, part INT, PRIMARY KEY (txn, part))")
        .await
        .unwrap();

    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let (port, acknowledged) = (node.port, std::sync::Arc::clone(&acknowledged));
            tokio::spawn(async move {
                let client = connect(port).await;
                for i in 0.. {
                    let txn = writer * 100_000 + i;
                    let sql = format!(
                        "BEGIN; INSERT INTO parts VALUES ({txn}, 1), ({txn}, 2); \
                         INSERT INTO parts VALUES ({txn}, 3); COMMIT"
                    );
                    match client.batch_execute(&sql).await {
                        Ok(()) => acknowledged.lock().unwrap().push(txn),
                        Err(_) => return, // The node is gone.
                    }
                }
            })
        })
        .collect();
    // Let some transactions through, then kill the node under load.
    while acknowledged.lock().unwrap().len() < 40 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    node.kill9();
    for writer in writers {
        writer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();

    let node = Node::start(dir.path());
    let client = connect(node.port).await;
    let rows = values(
        &client
            .simple_query("SELECT txn, part FROM parts")
            .await
            .unwrap(),
    );
    let mut parts: std::collections::BTreeMap<i64, usize> = std::collections::BTreeMap::new();
    for row in &rows {
        let txn: i64 = row.split(',').next().unwrap().parse().unwrap();
        *parts.entry(txn).or_default() += 1;
    }
    for (txn, count) in &parts {
        assert_eq!(
            *count, 3,
            "transaction {txn} is present in part: {count} of 3 rows"
        );
    }
    for txn in acknowledged {
        assert!(
            parts.contains_key(&(txn as i64)),
            "acknowledged transaction {txn} was lost"
        );
    }
}
