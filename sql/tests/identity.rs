//! Identity values stay unique when many sessions, and several nodes (databases over one
//! store, each with its own batches), insert at once; a node takes batches, not one value
//! per insert.

use std::collections::HashSet;
use std::sync::Arc;

use sql::{Database, StatementResult};

fn ids(session: &mut sql::Session, sql: &str) -> Vec<i64> {
    match session.execute(sql).pop().expect("a result").expect(sql) {
        StatementResult::Rows { rows, .. } => rows
            .into_iter()
            .map(|r| r[0].as_deref().expect("an id").parse().expect("a number"))
            .collect(),
        other => panic!("{sql}: rows expected, got {other:?}"),
    }
}

#[test]
fn concurrent_inserts_on_several_nodes_get_unique_ids() {
    let source = kv::in_memory_source();
    // Two "nodes": databases over the same store, each with its own batches.
    let nodes = [
        Database::new(Arc::clone(&source)),
        Database::new(Arc::clone(&source)),
    ];
    let mut setup = nodes[0].session();
    setup
        .execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, who TEXT)")
        .pop()
        .expect("a result")
        .expect("create");

    let threads: Vec<_> = (0..8)
        .map(|i| {
            let db = nodes[i % 2].clone();
            std::thread::spawn(move || {
                let mut session = db.session();
                let mut got = Vec::new();
                for n in 0..60 {
                    let sql = format!("INSERT INTO t (who) VALUES ('{i}-{n}') RETURNING id");
                    got.extend(ids(&mut session, &sql));
                }
                got
            })
        })
        .collect();
    let mut all = Vec::new();
    for thread in threads {
        all.extend(thread.join().expect("a thread"));
    }
    let unique: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), 480);
    assert_eq!(unique.len(), 480, "duplicate ids handed out");
    assert_eq!(
        ids(&mut setup, "SELECT count(*) FROM t"),
        vec![480],
        "every insert stored"
    );
    // Batches, not one counter write per value: at most a few batches per node beyond
    // what 480 values need.
    let highest = *all.iter().max().expect("ids");
    assert!(
        highest <= 480 + 2 * sql::sequence::BATCH,
        "ids up to {highest} for 480 rows"
    );
}
