//! How many rows a query reads from the store: the access path and LIMIT decide it, not the
//! table's size. A transaction source that counts the row pairs its transactions return
//! (`scan` and `batch_get`; catalog reads are single `get`s and not counted) shows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use kv::{KvResult, LockPurpose, Transaction, TransactionSource, TxnConfig};
use sql::{Database, StatementResult};

struct Counting {
    inner: Arc<dyn TransactionSource>,
    pairs: Arc<AtomicU64>,
}

struct CountingTxn {
    inner: Box<dyn Transaction>,
    pairs: Arc<AtomicU64>,
}

impl TransactionSource for Counting {
    fn begin(&self, config: TxnConfig) -> KvResult<Box<dyn Transaction>> {
        Ok(Box::new(CountingTxn {
            inner: self.inner.begin(config)?,
            pairs: Arc::clone(&self.pairs),
        }))
    }
}

impl Transaction for CountingTxn {
    fn begin_statement(&mut self, lock_timeout: Option<Duration>) -> KvResult<()> {
        self.inner.begin_statement(lock_timeout)
    }
    fn get(&mut self, key: &[u8]) -> KvResult<Option<Vec<u8>>> {
        self.inner.get(key)
    }
    fn batch_get(&mut self, keys: &[Vec<u8>]) -> KvResult<Vec<Option<Vec<u8>>>> {
        let values = self.inner.batch_get(keys)?;
        let found = values.iter().filter(|v| v.is_some()).count();
        self.pairs.fetch_add(found as u64, Ordering::SeqCst);
        Ok(values)
    }
    fn scan(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let pairs = self.inner.scan(start, end, limit)?;
        self.pairs.fetch_add(pairs.len() as u64, Ordering::SeqCst);
        Ok(pairs)
    }
    fn lock_for_write(
        &mut self,
        keys: &[Vec<u8>],
        purpose: LockPurpose,
    ) -> KvResult<Option<Vec<Option<Vec<u8>>>>> {
        self.inner.lock_for_write(keys, purpose)
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.inner.put(key, value)
    }
    fn delete(&mut self, key: Vec<u8>) {
        self.inner.delete(key)
    }
    fn lock(&mut self, key: Vec<u8>) {
        self.inner.lock(key)
    }

    fn scan_newest(
        &mut self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> KvResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.inner.scan_newest(start, end, limit)
    }

    fn check_at_commit(&mut self, key: Vec<u8>, expected: Option<Vec<u8>>) {
        self.inner.check_at_commit(key, expected)
    }
    fn commit(&mut self) -> KvResult<()> {
        self.inner.commit()
    }
    fn rollback(&mut self) -> KvResult<()> {
        self.inner.rollback()
    }
    fn start_ts(&self) -> u64 {
        self.inner.start_ts()
    }
}

/// A session over 10,000 rows, and the counter of pairs read.
fn ten_thousand_rows() -> (sql::Session, Arc<AtomicU64>) {
    let pairs = Arc::new(AtomicU64::new(0));
    let source = Counting {
        inner: kv::in_memory_source(),
        pairs: Arc::clone(&pairs),
    };
    let mut session = Database::new(Arc::new(source)).session();
    for sql in [
        "CREATE TABLE t (id INT PRIMARY KEY, v INT)",
        "INSERT INTO t SELECT n, n % 7 FROM generate_series(1, 10000) AS g(n)",
    ] {
        session.execute(sql).pop().expect("a result").expect(sql);
    }
    (session, pairs)
}

/// The number of rows the query returns and of pairs it read.
fn rows_and_reads(session: &mut sql::Session, pairs: &AtomicU64, sql: &str) -> (usize, u64) {
    pairs.store(0, Ordering::SeqCst);
    let result = session.execute(sql).pop().expect("a result").expect(sql);
    let StatementResult::Rows { rows, .. } = result else {
        panic!("{sql}: rows expected")
    };
    (rows.len(), pairs.load(Ordering::SeqCst))
}

#[test]
fn limit_stops_the_scan_early() {
    let (mut session, pairs) = ten_thousand_rows();
    assert_eq!(
        rows_and_reads(&mut session, &pairs, "SELECT * FROM t LIMIT 5"),
        (5, 5)
    );
    assert_eq!(
        rows_and_reads(&mut session, &pairs, "SELECT * FROM t LIMIT 5 OFFSET 10"),
        (5, 15)
    );
    // Without a limit the whole table is read.
    assert_eq!(
        rows_and_reads(&mut session, &pairs, "SELECT * FROM t"),
        (10_000, 10_000)
    );
    // A filter that drops rows makes the scan read on, in growing pages, not all at once.
    let (rows, read) = rows_and_reads(&mut session, &pairs, "SELECT * FROM t WHERE v = 3 LIMIT 2");
    assert_eq!(rows, 2);
    assert!(read < 100, "read {read} pairs for two rows");
}

#[test]
fn key_conditions_read_only_their_rows() {
    let (mut session, pairs) = ten_thousand_rows();
    for (sql, rows) in [
        ("SELECT * FROM t WHERE id = 42", 1),
        ("SELECT * FROM t WHERE id IN (3, 500, 9999, 20000)", 3),
        ("SELECT * FROM t WHERE id BETWEEN 100 AND 109", 10),
        ("SELECT * FROM t WHERE id < 4 OR id > 9997", 6),
        ("SELECT * FROM t WHERE id > 50 AND id <= 55 AND v >= 0", 5),
        ("SELECT * FROM t WHERE id = NULL", 0),
    ] {
        assert_eq!(
            rows_and_reads(&mut session, &pairs, sql),
            (rows, rows as u64),
            "{sql}"
        );
    }
}

/// A join reads each table once, whatever the join's size.
#[test]
fn a_hash_join_reads_each_side_once() {
    let (mut session, pairs) = ten_thousand_rows();
    session
        .execute("CREATE TABLE s (k INT PRIMARY KEY, name TEXT)")
        .pop()
        .expect("a result")
        .expect("create");
    session
        .execute("INSERT INTO s SELECT n, 'n' || n FROM generate_series(0, 6) AS g(n)")
        .pop()
        .expect("a result")
        .expect("insert");
    let (rows, read) = rows_and_reads(
        &mut session,
        &pairs,
        "SELECT t.id, s.name FROM t JOIN s ON s.k = t.v",
    );
    assert_eq!((rows, read), (10_000, 10_007));
}

/// Records what a streaming session sends, and can refuse rows after `accept` of them (a
/// client that went away).
struct Recorder {
    events: Vec<String>,
    accept: usize,
    rows: usize,
}

impl sql::ResultSink for Recorder {
    fn columns(&mut self, columns: &[sql::ColumnInfo]) -> sql::SqlResult<()> {
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        self.events.push(format!("columns {}", names.join(",")));
        Ok(())
    }

    fn row(&mut self, row: Vec<Option<String>>) -> sql::SqlResult<()> {
        if self.rows == self.accept {
            return Err(sql::SqlError::new("08006", "the client went away"));
        }
        self.rows += 1;
        let values: Vec<String> = row.into_iter().map(|v| v.unwrap_or_default()).collect();
        self.events.push(format!("row {}", values.join(",")));
        Ok(())
    }

    fn finish(&mut self, result: sql::SqlResult<StatementResult>) {
        self.events.push(match result {
            Ok(r) => format!("finish {}", r.tag()),
            Err(e) => format!("error {}", e.code),
        });
    }
}

/// Streamed rows come in order, each statement's outcome right after its rows.
#[test]
fn streamed_results_come_in_statement_order() {
    let mut session = Database::in_memory().session();
    let mut sink = Recorder {
        events: Vec::new(),
        accept: usize::MAX,
        rows: 0,
    };
    session.execute_streaming(
        "SELECT n FROM generate_series(1, 2) AS g(n); CREATE TABLE x (a INT); SELECT 'b' AS b",
        &mut sink,
    );
    assert_eq!(
        sink.events,
        [
            "columns n",
            "row 1",
            "row 2",
            "finish SELECT 2",
            "finish CREATE TABLE",
            "columns b",
            "row b",
            "finish SELECT 1"
        ]
    );
}

/// When the client stops taking rows, the query stops reading: a page, not the table.
#[test]
fn a_streamed_query_stops_reading_when_its_client_goes() {
    let (mut session, pairs) = ten_thousand_rows();
    pairs.store(0, Ordering::SeqCst);
    let mut sink = Recorder {
        events: Vec::new(),
        accept: 10,
        rows: 0,
    };
    session.execute_streaming("SELECT * FROM t", &mut sink);
    assert_eq!(sink.events.last().map(String::as_str), Some("error 08006"));
    let read = pairs.load(Ordering::SeqCst);
    assert!(read <= 1024, "read {read} pairs for 10 rows sent");
}

/// A small left side joins by point gets on the right table's primary key: only the rows
/// it needs are read, not the right table.
#[test]
fn a_lookup_join_reads_only_the_rows_it_needs() {
    let (mut session, pairs) = ten_thousand_rows();
    // t is the right side here: its 10,000 rows are not read.
    let (rows, read) = rows_and_reads(
        &mut session,
        &pairs,
        "SELECT g.n, t.v FROM generate_series(1, 3) AS g(n) JOIN t ON t.id = g.n * 100",
    );
    assert_eq!((rows, read), (3, 3));
    let (rows, read) = rows_and_reads(
        &mut session,
        &pairs,
        "SELECT a.id, b.id FROM t a LEFT JOIN t b ON b.id = a.id + 9998 WHERE a.id IN (1, 2, 3)",
    );
    // Three left rows by point gets, and the two right rows that exist.
    assert_eq!((rows, read), (3, 5));
}

/// The first column of a query's rows.
fn first_column(session: &mut sql::Session, sql: &str) -> Vec<String> {
    let result = session.execute(sql).pop().expect("a result").expect(sql);
    let StatementResult::Rows { rows, .. } = result else {
        panic!("{sql}: rows expected")
    };
    rows.into_iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect()
}

/// ORDER BY … LIMIT keeps only the first rows while sorting (top-N), with the same result as
/// sorting everything: ties in input order, OFFSET counted.
#[test]
fn a_top_n_sort_returns_what_a_full_sort_does() {
    let (mut session, _) = ten_thousand_rows();
    assert_eq!(
        first_column(
            &mut session,
            "SELECT id FROM t ORDER BY v DESC, id LIMIT 3 OFFSET 1"
        ),
        ["13", "20", "27"]
    );
    // Ties keep their input (key) order.
    assert_eq!(
        first_column(&mut session, "SELECT id FROM t ORDER BY v LIMIT 2"),
        ["7", "14"]
    );
}

/// EXPLAIN ANALYZE's lines with the times taken out.
fn analyzed(session: &mut sql::Session, sql: &str) -> Vec<String> {
    let result = session.execute(sql).pop().expect("a result").expect(sql);
    let StatementResult::Rows { rows, .. } = result else {
        panic!("{sql}: rows expected")
    };
    rows.into_iter()
        .map(|row| {
            let line = row[0].clone().expect("a line");
            match (line.find(" time="), line.find(" ms")) {
                (Some(start), Some(end)) if start < end => {
                    format!("{}{}", &line[..start], &line[end + 3..])
                }
                _ => line,
            }
        })
        .collect()
}

#[test]
fn explain_analyze_counts_each_operators_rows() {
    let (mut session, pairs) = ten_thousand_rows();
    let lines = analyzed(
        &mut session,
        "EXPLAIN ANALYZE SELECT id FROM t WHERE v = 3 ORDER BY id DESC LIMIT 4",
    );
    assert_eq!(
        lines[..4],
        [
            "Limit 4 (actual rows=4)",
            "  -> Sort id DESC (top 4) (actual rows=4)",
            "    -> Project t.id (actual rows=1429)",
            "      -> Scan t (full) filter t.v = 3 (actual rows=1429)",
        ],
        "{lines:#?}"
    );
    assert!(lines[4].starts_with("Execution Time: "), "{lines:#?}");
    // The query ran: the whole table was read.
    assert_eq!(pairs.load(Ordering::SeqCst), 10_000);

    // A LIMIT stops the scan: it produced only the rows the limit took.
    let lines = analyzed(&mut session, "EXPLAIN ANALYZE SELECT * FROM t LIMIT 3");
    assert_eq!(
        lines[..2],
        [
            "Limit 3 (actual rows=3)",
            "  -> Scan t (full) first 3 rows (actual rows=3)",
        ],
        "{lines:#?}"
    );

    // Spilling shows.
    session.execute("SET work_mem = '64kB'");
    let lines = analyzed(
        &mut session,
        "EXPLAIN ANALYZE SELECT v, id FROM t ORDER BY v, id",
    );
    assert!(
        lines[0].starts_with("Sort v, id (actual rows=10000 spilled to ")
            && lines[0].ends_with(" temporary files)"),
        "{lines:#?}"
    );
}

#[test]
fn secondary_indexes_read_only_the_entries_and_rows_they_match() {
    let (mut session, pairs) = ten_thousand_rows();
    for sql in [
        "CREATE TABLE w (id INT PRIMARY KEY, k INT NOT NULL, note TEXT)",
        "INSERT INTO w SELECT n, n % 1000, 'n' || n FROM generate_series(1, 10000) AS g(n)",
        "CREATE INDEX w_k ON w (k)",
    ] {
        session.execute(sql).pop().expect("a result").expect(sql);
    }
    // Ten entries and their ten rows.
    assert_eq!(
        rows_and_reads(&mut session, &pairs, "SELECT * FROM w WHERE k = 7"),
        (10, 20)
    );
    // Index-only: the entries alone.
    assert_eq!(
        rows_and_reads(&mut session, &pairs, "SELECT id FROM w WHERE k = 7"),
        (10, 10)
    );
    assert_eq!(
        rows_and_reads(
            &mut session,
            &pairs,
            "SELECT count(*) FROM w WHERE k BETWEEN 5 AND 9"
        ),
        (1, 50)
    );
    // ORDER BY the indexed column with a LIMIT reads the first entries, not the table.
    assert_eq!(
        rows_and_reads(
            &mut session,
            &pairs,
            "SELECT note FROM w ORDER BY k LIMIT 3"
        ),
        (3, 6)
    );
    // A lookup join through the index: the left rows, then each one's entries and rows.
    assert_eq!(
        rows_and_reads(
            &mut session,
            &pairs,
            "SELECT w.note FROM t JOIN w ON w.k = t.id WHERE t.id IN (1, 2)"
        ),
        (20, 2 + 20 + 20)
    );
}
