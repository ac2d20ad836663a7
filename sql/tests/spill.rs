//! Operators past `work_mem` spill to temporary files and answer exactly as in memory: the
//! same queries run with the default budget (no file written) and with 64kB (files written),
//! and their results are compared. Sorts must even agree on the order of rows with equal keys
//! (the external merge sort is stable). One test, so that no other test of this binary
//! writes spill files while it counts them.

use std::collections::HashMap;

use sql::{Database, StatementResult};

fn rows(session: &mut sql::Session, sql: &str) -> Vec<Vec<Option<String>>> {
    match session.execute(sql).pop().expect("a result").expect(sql) {
        StatementResult::Rows { rows, .. } => rows,
        other => panic!("{sql}: rows expected, got {other:?}"),
    }
}

fn run(session: &mut sql::Session, sql: &str) {
    session.execute(sql).pop().expect("a result").expect(sql);
}

/// The rows as a multiset, for queries without an order.
fn counted(rows: Vec<Vec<Option<String>>>) -> HashMap<Vec<Option<String>>, usize> {
    let mut counts = HashMap::new();
    for row in rows {
        *counts.entry(row).or_default() += 1;
    }
    counts
}

#[test]
fn spilled_operators_answer_as_in_memory() {
    let mut session = Database::in_memory().session();
    for sql in [
        "CREATE TABLE a (id INT PRIMARY KEY, k INT, s TEXT)",
        "INSERT INTO a SELECT n, n % 3001, 'row ' || CAST(n % 4099 AS TEXT) FROM generate_series(1, 30000) AS g(n)",
        "CREATE TABLE b (id INT PRIMARY KEY, k INT)",
        "INSERT INTO b SELECT n, CASE WHEN n % 11 = 0 THEN NULL ELSE n % 4000 END FROM generate_series(1, 12000) AS g(n)",
    ] {
        run(&mut session, sql);
    }
    let ordered = [
        // Ties on k: the input (key) order decides among them, in memory and spilled.
        "SELECT id, k FROM a ORDER BY k",
        "SELECT s, id FROM a ORDER BY s DESC, k",
        "SELECT id FROM a ORDER BY k DESC LIMIT 5 OFFSET 20000",
    ];
    let unordered = [
        "SELECT k, count(*), sum(id), min(s), max(s), count(DISTINCT s) FROM a GROUP BY k",
        "SELECT s, string_agg(CAST(id AS TEXT), ',') FROM a GROUP BY s",
        "SELECT DISTINCT s FROM a",
        "SELECT DISTINCT k % 500, s FROM a",
        "SELECT a.id, b.id FROM a JOIN b ON a.k = b.k",
        "SELECT a.id, b.id FROM a LEFT JOIN b ON a.k = b.k AND b.id % 2 = 0",
        "SELECT a.id, b.id FROM a RIGHT JOIN b ON a.id = b.k",
        "SELECT a.id, b.id FROM a FULL JOIN b ON a.id = b.k + 20000",
    ];
    let in_memory_ordered: Vec<_> = ordered.iter().map(|q| rows(&mut session, q)).collect();
    let in_memory_unordered: Vec<_> = unordered.iter().map(|q| rows(&mut session, q)).collect();

    run(&mut session, "SET work_mem = '64kB'");
    for (query, expected) in ordered.iter().zip(&in_memory_ordered) {
        let before = sql::spill_files_created();
        assert_eq!(&rows(&mut session, query), expected, "{query}");
        assert!(sql::spill_files_created() > before, "{query} did not spill");
    }
    for (query, expected) in unordered.iter().zip(in_memory_unordered) {
        let before = sql::spill_files_created();
        let spilled = rows(&mut session, query);
        assert!(!spilled.is_empty(), "{query}");
        assert_eq!(counted(spilled), counted(expected), "{query}");
        assert!(sql::spill_files_created() > before, "{query} did not spill");
    }

    // With the default budget, nothing here spills.
    run(&mut session, "RESET work_mem");
    let before = sql::spill_files_created();
    for query in ordered.iter().chain(&unordered) {
        rows(&mut session, query);
    }
    assert_eq!(sql::spill_files_created(), before);
}
