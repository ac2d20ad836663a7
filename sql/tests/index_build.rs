//! Indexes built while other sessions write: afterwards every index equals its table, and a
//! unique index never admitted a duplicate. Sessions insert, update and delete rows (moving
//! values between rows, so the index entries change under the build) on two "nodes"
//! (databases over one store) while `CREATE INDEX` and `CREATE UNIQUE INDEX` run.
//!
//! Randomised: `REGIONDB_SEED` picks the seed; a failure prints it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kv::TxnConfig;
use sql::{Database, StatementResult, catalog};

/// A small seeded generator, so a run replays exactly (up to thread timing).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    std::env::var("REGIONDB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1dea_5eed)
}

fn run(session: &mut sql::Session, sql: &str) -> Result<StatementResult, sql::SqlError> {
    session.execute(sql).pop().expect("a result")
}

const ROWS: u64 = 3000;

#[test]
fn indexes_built_during_writes_equal_their_tables() {
    let seed = seed();
    let source = kv::in_memory_source();
    let nodes = [
        Database::new(Arc::clone(&source)),
        Database::new(Arc::clone(&source)),
    ];
    let mut main = nodes[0].session();
    run(
        &mut main,
        "CREATE TABLE t (id INT PRIMARY KEY, a INT, u INT, note TEXT)",
    )
    .expect("create");
    // `u` starts unique (the id); writers give rows fresh values of it, so it stays unique
    // and the unique index must build; duplicates are tried once it is public.
    run(
        &mut main,
        &format!("INSERT INTO t SELECT g, g % 37, g, 'n' || g FROM generate_series(1, {ROWS}) g"),
    )
    .expect("fill");

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..4u64)
        .map(|w| {
            let db = nodes[(w % 2) as usize].clone();
            let stop = Arc::clone(&stop);
            let committed = Arc::clone(&committed);
            std::thread::spawn(move || {
                let mut rng = Rng(seed ^ (w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let mut session = db.session();
                let mut fresh = (w + 1) * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    fresh += 1;
                    let id = 1 + rng.below(ROWS + 500);
                    let value = rng.below(ROWS * 2);
                    // Writers 0 and 1 keep transactions open across the schema changes.
                    let kind = if w < 2 { 4 } else { rng.below(4) };
                    let sql = match kind {
                        0 => format!(
                            "INSERT INTO t VALUES ({id}, {}, {}, 'w{w}')",
                            value % 37,
                            fresh
                        ),
                        1 => format!("DELETE FROM t WHERE id = {id}"),
                        2 => format!("UPDATE t SET a = {} WHERE id = {id}", value % 37),
                        3 => format!("UPDATE t SET u = {fresh} WHERE id = {id}"),
                        // A transaction open across a schema change: its first write
                        // comes before, its second after.
                        _ => format!(
                            "BEGIN ISOLATION LEVEL {}; \
                             UPDATE t SET a = a + 1 WHERE id = {id}; \
                             SLEEP; \
                             UPDATE t SET u = {fresh} WHERE id = {}; COMMIT",
                            ["REPEATABLE READ", "READ COMMITTED"][rng.below(2) as usize],
                            1 + rng.below(ROWS)
                        ),
                    };
                    // The parts run one after the other; a failed one ends the transaction
                    // (the rest would only be refused with 25P02).
                    let mut failed = false;
                    for part in sql.split("SLEEP;") {
                        if failed {
                            break;
                        }
                        for result in session.execute(part) {
                            match result {
                                Ok(_) => {}
                                // A statement in a transaction of its own is run again when
                                // a schema change fails its commit: it never sees that 40001.
                                Err(e) if e.code == "40001" && w >= 2 => {
                                    panic!("seed {seed}: {sql}: autocommit statement failed: {e:?}")
                                }
                                // Expected under contention and schema changes: duplicates,
                                // serialization failures (transactions open across a schema
                                // change), deadlocks; then the rest of the part is refused.
                                Err(e) if ["23505", "40001", "40P01"].contains(&e.code) => {
                                    failed = true;
                                }
                                Err(e) if failed && e.code == "25P02" => {}
                                Err(e) => panic!("seed {seed}: {sql}: unexpected error {e:?}"),
                            }
                        }
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                    if failed {
                        let _ = session.execute("ROLLBACK");
                    } else {
                        committed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Let the writers get going, then build the indexes under them.
    while committed.load(Ordering::Relaxed) < 50 {
        std::thread::yield_now();
    }
    // Several builds: each is another chance for a writer to straddle one.
    let indexes = [
        ("t_a", "a"),
        ("t_note_a", "note, a"),
        ("t_note", "note"),
        ("t_a_u", "a, u"),
        ("t_u_a", "u, a"),
        ("t_id_a", "id, a"),
    ];
    for (name, columns) in indexes {
        let before = committed.load(Ordering::Relaxed);
        while committed.load(Ordering::Relaxed) < before + 10 {
            std::thread::yield_now();
        }
        run(&mut main, &format!("CREATE INDEX {name} ON t ({columns})")).expect(name);
    }
    run(&mut main, "CREATE UNIQUE INDEX t_u ON t (u)").expect("create unique index t_u");
    let before = committed.load(Ordering::Relaxed);
    while committed.load(Ordering::Relaxed) < before + 50 {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().expect("writer thread");
    }

    // Every index equals its table, at a snapshot after the writers stopped.
    let mut txn = source.begin(TxnConfig::optimistic()).expect("begin");
    let table = catalog::require_table(txn.as_mut(), "t").expect("table");
    let problems = sql::index::check_indexes(txn.as_mut(), &table).expect("check");
    assert!(problems.is_empty(), "seed {seed}: {problems:?}");
    for (name, _) in indexes {
        assert!(
            table.indexes.iter().any(|i| i.name == name),
            "seed {seed}: {name} was built"
        );
    }
    assert!(
        table.indexes.iter().any(|i| i.name == "t_u"),
        "seed {seed}: t_u was built"
    );
    // From now on a duplicate is refused.
    let err = run(
        &mut main,
        "UPDATE t SET u = (SELECT u FROM t ORDER BY id LIMIT 1) \
         WHERE id = (SELECT id FROM t ORDER BY id DESC LIMIT 1)",
    )
    .expect_err("a duplicate u");
    assert_eq!(err.code, "23505", "seed {seed}");
    // Queries through the index agree with a scan of the table.
    let count = |session: &mut sql::Session, sql: &str| match run(session, sql).expect(sql) {
        StatementResult::Rows { rows, .. } => rows[0][0].clone(),
        other => panic!("{other:?}"),
    };
    for a in [0, 5, 36] {
        assert_eq!(
            count(&mut main, &format!("SELECT count(*) FROM t WHERE a = {a}")),
            count(
                &mut main,
                &format!("SELECT count(*) FROM t WHERE a + 0 = {a}")
            ),
            "seed {seed}: a = {a}"
        );
    }
}
