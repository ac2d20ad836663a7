//! The region statements and CREATE TABLE's split request against a model of the cluster's
//! regions: a [`RegionAdmin`] over a set of boundaries that splits wherever it is asked, and
//! records what it was asked. Covers output format and key decoding, the `FROM TABLE` range,
//! value coercion and errors of `SPLIT AT`, and when CREATE TABLE asks for its region. The
//! real cluster is exercised by the process test `tests/regions.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv::client::{RegionAdmin, RegionSummary};
use kv::{KvError, KvResult};
use sql::encoding::{row_key, row_prefix, row_prefix_end};
use sql::types::Value;
use sql::{Database, Session, StatementResult};

/// A split request as the model received it.
#[derive(Clone, Debug, PartialEq)]
struct SplitRequest {
    keys: Vec<Vec<u8>>,
    wait: Option<Duration>,
}

#[derive(Default)]
struct Model {
    /// Region start key → region ID; the empty key starts the first region.
    starts: BTreeMap<Vec<u8>, u64>,
    next_id: u64,
    splits: Vec<SplitRequest>,
    /// The `[start, end)` of every `regions` call.
    scans: Vec<(Vec<u8>, Vec<u8>)>,
    refuse_splits: bool,
    /// The `[start, end)` of every `unsplit` call.
    unsplits: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Model {
    fn split(&mut self, key: Vec<u8>) {
        if !key.is_empty() && !self.starts.contains_key(&key) {
            self.next_id += 1;
            self.starts.insert(key, self.next_id);
        }
    }
}

#[derive(Default)]
struct ModelRegions(Mutex<Model>);

impl ModelRegions {
    fn new(boundaries: Vec<Vec<u8>>) -> Arc<ModelRegions> {
        let regions = ModelRegions::default();
        {
            let mut model = regions.0.lock().unwrap();
            model.starts.insert(Vec::new(), 1);
            model.next_id = 1;
            for key in boundaries {
                model.split(key);
            }
        }
        Arc::new(regions)
    }

    fn splits(&self) -> Vec<SplitRequest> {
        self.0.lock().unwrap().splits.clone()
    }

    fn scans(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.0.lock().unwrap().scans.clone()
    }

    /// Waits until `count` split requests arrived (CREATE TABLE asks from another thread).
    fn wait_for_splits(&self, count: usize) -> Vec<SplitRequest> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let splits = self.splits();
            if splits.len() >= count {
                return splits;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} split requests, got {splits:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl RegionAdmin for ModelRegions {
    fn regions(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<RegionSummary>> {
        let mut model = self.0.lock().unwrap();
        model.scans.push((start.to_vec(), end.to_vec()));
        let starts: Vec<(Vec<u8>, u64)> = model
            .starts
            .iter()
            .map(|(k, id)| (k.clone(), *id))
            .collect();
        let mut regions = Vec::new();
        for (i, (region_start, id)) in starts.iter().enumerate() {
            let region_end = starts
                .get(i + 1)
                .map(|(k, _)| k.clone())
                .unwrap_or_default();
            let starts_before_end = end.is_empty() || region_start.as_slice() < end;
            let ends_after_start = region_end.is_empty() || region_end.as_slice() > start;
            if starts_before_end && ends_after_start {
                regions.push(RegionSummary {
                    id: *id,
                    start_key: region_start.clone(),
                    end_key: region_end,
                    // The first region has no leader yet: NULL.
                    leader_store: (*id != 1).then_some(id % 3 + 1),
                    peer_stores: vec![1, 2, 3],
                    approximate_size: id * 1000,
                    approximate_keys: id * 10,
                });
            }
        }
        Ok(regions)
    }

    fn unsplit(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<Vec<u8>>> {
        let mut model = self.0.lock().unwrap();
        model.unsplits.push((start.to_vec(), end.to_vec()));
        // Every asked-for split key in the range is forgotten (the model keeps its regions).
        let asked: std::collections::BTreeSet<Vec<u8>> = model
            .splits
            .iter()
            .flat_map(|s| s.keys.iter().cloned())
            .collect();
        Ok(asked
            .into_iter()
            .filter(|k| k.as_slice() >= start && (end.is_empty() || k.as_slice() < end))
            .collect())
    }

    fn split_at(&self, keys: Vec<Vec<u8>>, wait: Option<Duration>) -> KvResult<()> {
        let mut model = self.0.lock().unwrap();
        model.splits.push(SplitRequest {
            keys: keys.clone(),
            wait,
        });
        if model.refuse_splits {
            return Err(KvError::Unavailable("scheduler unreachable".into()));
        }
        for key in keys {
            model.split(key);
        }
        Ok(())
    }
}

fn rows(session: &mut Session, sql: &str) -> Vec<String> {
    match session.execute(sql).pop() {
        Some(Ok(StatementResult::Rows { rows, .. })) => rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| v.unwrap_or_else(|| "NULL".into()))
                    .collect::<Vec<_>>()
                    .join(" | ")
            })
            .collect(),
        other => panic!("{sql}: expected rows, got {other:?}"),
    }
}

fn ok(session: &mut Session, sql: &str) {
    for result in session.execute(sql) {
        if let Err(e) = result {
            panic!("{sql}: {e}");
        }
    }
}

fn error_code(session: &mut Session, sql: &str) -> &'static str {
    match session.execute(sql).pop() {
        Some(Err(e)) => e.code,
        other => panic!("{sql}: expected an error, got {other:?}"),
    }
}

/// Table IDs start at 100: `accounts` is 100, `orders` 101.
const ACCOUNTS: u64 = 100;
const ORDERS: u64 = 101;

/// A database with `accounts` and `orders`, each in the region its CREATE TABLE asked for.
fn database(boundaries: Vec<Vec<u8>>) -> (Arc<ModelRegions>, Session) {
    let regions = ModelRegions::new(boundaries);
    let db = Database::in_memory().with_regions(regions.clone());
    let mut session = db.session();
    ok(
        &mut session,
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, owner TEXT)",
    );
    regions.wait_for_splits(1);
    ok(
        &mut session,
        "CREATE TABLE \"Orders\" (customer TEXT, n INT, amount REAL, PRIMARY KEY (customer, n))",
    );
    regions.wait_for_splits(2);
    (regions, session)
}

#[test]
fn show_regions_lists_every_region_in_key_order_with_readable_boundaries() {
    let (_, mut session) = database(vec![
        b"mtable/".to_vec(),
        row_key(ACCOUNTS, [&Value::Int(42)]),
        row_key(ORDERS, [&Value::Text("o'neil".into()), &Value::Int(3)]),
        row_key(999, [&Value::Int(1)]),
    ]);
    assert_eq!(
        rows(&mut session, "SHOW REGIONS"),
        [
            "1 | /Min | /System/table/ | NULL | {1,2,3} | 1000 | 10",
            "2 | /System/table/ | /Table/accounts | 3 | {1,2,3} | 2000 | 20",
            "6 | /Table/accounts | /Table/accounts/42 | 1 | {1,2,3} | 6000 | 60",
            "3 | /Table/accounts/42 | /Table/\"Orders\" | 1 | {1,2,3} | 3000 | 30",
            "7 | /Table/\"Orders\" | /Table/\"Orders\"/'o''neil'/3 | 2 | {1,2,3} | 7000 | 70",
            "4 | /Table/\"Orders\"/'o''neil'/3 | /Table/999/1 | 2 | {1,2,3} | 4000 | 40",
            "5 | /Table/999/1 | /Max | 3 | {1,2,3} | 5000 | 50",
        ]
    );
    // Column names and types: int8, text, int8[].
    let Some(Ok(StatementResult::Rows { columns, tag, .. })) =
        session.execute("show regions;").pop()
    else {
        panic!("SHOW REGIONS returned no rows");
    };
    let described: Vec<(&str, u32)> = columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid))
        .collect();
    assert_eq!(
        described,
        [
            ("region_id", 20),
            ("start_key", 25),
            ("end_key", 25),
            ("leader_store", 20),
            ("peer_stores", 1016),
            ("approximate_size", 20),
            ("approximate_keys", 20),
        ]
    );
    assert_eq!(tag, "SELECT 7");
}

#[test]
fn show_regions_from_table_keeps_the_regions_overlapping_its_rows() {
    let (regions, mut session) = database(vec![row_key(ACCOUNTS, [&Value::Int(42)])]);
    let ranges = |session: &mut Session, sql: &str| -> Vec<String> {
        rows(session, sql)
            .iter()
            .map(|row| {
                let fields: Vec<&str> = row.split(" | ").collect();
                format!("{} {}", fields[1], fields[2])
            })
            .collect()
    };
    assert_eq!(
        ranges(&mut session, "SHOW REGIONS FROM TABLE accounts"),
        [
            "/Table/accounts /Table/accounts/42",
            "/Table/accounts/42 /Table/\"Orders\""
        ]
    );
    assert_eq!(
        regions.scans().last(),
        Some(&(row_prefix(ACCOUNTS), row_prefix_end(ACCOUNTS)))
    );
    assert_eq!(
        ranges(&mut session, "SHOW REGIONS FROM TABLE public.\"Orders\""),
        ["/Table/\"Orders\" /Max"]
    );
    assert_eq!(
        error_code(&mut session, "SHOW REGIONS FROM TABLE nope"),
        "42P01"
    );
    assert_eq!(
        error_code(&mut session, "SHOW REGIONS FROM TABLE orders"),
        "42P01"
    );
}

#[test]
fn show_regions_sees_the_catalog_of_its_transaction() {
    let (_, mut session) = database(vec![]);
    ok(&mut session, "BEGIN");
    ok(&mut session, "DROP TABLE accounts");
    let starts: Vec<String> = rows(&mut session, "SHOW REGIONS")
        .iter()
        .map(|row| row.split(" | ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(starts, ["/Min", "/Table/100", "/Table/\"Orders\""]);
    ok(&mut session, "ROLLBACK");
}

#[test]
fn create_table_asks_for_its_region_only_once_committed() {
    let (regions, mut session) = database(vec![]);
    assert_eq!(
        regions.splits(),
        [
            SplitRequest {
                keys: vec![row_prefix(ACCOUNTS)],
                wait: None
            },
            SplitRequest {
                keys: vec![row_prefix(ORDERS)],
                wait: None
            },
        ]
    );

    // Rolled back, explicitly or by a failing statement of the same string: nothing asked.
    ok(&mut session, "BEGIN");
    ok(&mut session, "CREATE TABLE gone (k INT PRIMARY KEY)");
    ok(&mut session, "ROLLBACK");
    assert_eq!(
        error_code(
            &mut session,
            "CREATE TABLE gone (k INT PRIMARY KEY); SELECT * FROM nope"
        ),
        "42P01"
    );
    ok(&mut session, "BEGIN");
    ok(&mut session, "CREATE TABLE gone (k INT PRIMARY KEY)");
    assert_eq!(error_code(&mut session, "SELECT * FROM nope"), "42P01");
    ok(&mut session, "COMMIT");

    // In a block: asked once the block commits, for every table it created.
    ok(&mut session, "BEGIN");
    ok(&mut session, "CREATE TABLE a (k INT PRIMARY KEY)");
    ok(&mut session, "CREATE TABLE b (k INT)");
    assert_eq!(regions.splits().len(), 2, "asked before COMMIT");
    ok(&mut session, "COMMIT");
    let splits = regions.wait_for_splits(3);
    assert_eq!(
        splits[2],
        SplitRequest {
            keys: vec![row_prefix(102), row_prefix(103)],
            wait: None
        }
    );
    // IF NOT EXISTS on an existing table creates nothing and asks nothing.
    ok(
        &mut session,
        "CREATE TABLE IF NOT EXISTS a (k INT PRIMARY KEY)",
    );
    ok(&mut session, "CREATE TABLE c (k INT PRIMARY KEY)");
    let splits = regions.wait_for_splits(4);
    assert_eq!(splits.len(), 4, "{splits:?}");
    assert_eq!(splits[3].keys, [row_prefix(104)]);
    let starts: Vec<String> = rows(&mut session, "SHOW REGIONS")
        .iter()
        .map(|row| row.split(" | ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        starts,
        [
            "/Min",
            "/Table/accounts",
            "/Table/\"Orders\"",
            "/Table/a",
            "/Table/b",
            "/Table/c"
        ]
    );
}

#[test]
fn create_table_succeeds_when_the_split_request_fails() {
    let (regions, mut session) = database(vec![]);
    regions.0.lock().unwrap().refuse_splits = true;
    ok(&mut session, "CREATE TABLE t (k INT PRIMARY KEY)");
    ok(&mut session, "INSERT INTO t VALUES (1)");
    regions.wait_for_splits(3);
    assert_eq!(rows(&mut session, "SELECT k FROM t"), ["1"]);
}

#[test]
fn split_at_coerces_values_like_insert_and_waits_for_the_regions() {
    let (regions, mut session) = database(vec![]);
    assert_eq!(
        rows(
            &mut session,
            "alter table accounts split at values (500), ('7'), (2 * 3)"
        ),
        [
            "/Table/accounts/500",
            "/Table/accounts/7",
            "/Table/accounts/6"
        ]
    );
    assert_eq!(
        regions.splits().last(),
        Some(&SplitRequest {
            keys: vec![
                row_key(ACCOUNTS, [&Value::Int(500)]),
                row_key(ACCOUNTS, [&Value::Int(7)]),
                row_key(ACCOUNTS, [&Value::Int(6)]),
            ],
            wait: Some(Duration::from_secs(30)),
        })
    );
    // A prefix of a composite key, and a full key.
    assert_eq!(
        rows(
            &mut session,
            "ALTER TABLE \"Orders\" SPLIT AT VALUES ('bob'), ('carol', 2);"
        ),
        ["/Table/\"Orders\"/'bob'", "/Table/\"Orders\"/'carol'/2"]
    );
    let starts: Vec<String> = rows(&mut session, "SHOW REGIONS FROM TABLE accounts")
        .iter()
        .map(|row| row.split(" | ").nth(1).unwrap().to_string())
        .collect();
    assert_eq!(
        starts,
        [
            "/Table/accounts",
            "/Table/accounts/6",
            "/Table/accounts/7",
            "/Table/accounts/500"
        ]
    );
}

#[test]
fn split_at_refuses_what_insert_would_refuse() {
    let (regions, mut session) = database(vec![]);
    ok(&mut session, "CREATE TABLE small (k INT PRIMARY KEY)");
    ok(&mut session, "CREATE TABLE heap (v INT)");
    let asked = regions.wait_for_splits(4).len();
    for (sql, code) in [
        ("ALTER TABLE accounts SPLIT AT VALUES (1, 2)", "42601"),
        ("ALTER TABLE accounts SPLIT AT VALUES ('abc')", "22P02"),
        ("ALTER TABLE accounts SPLIT AT VALUES (true)", "42804"),
        ("ALTER TABLE small SPLIT AT VALUES (3000000000)", "22003"),
        ("ALTER TABLE accounts SPLIT AT VALUES (NULL)", "23502"),
        ("ALTER TABLE accounts SPLIT AT VALUES (nope)", "42703"),
        ("ALTER TABLE nope SPLIT AT VALUES (1)", "42P01"),
        ("ALTER TABLE heap SPLIT AT VALUES (1)", "0A000"),
        ("ALTER TABLE accounts SPLIT AT VALUES (1) (2)", "42601"),
    ] {
        assert_eq!(error_code(&mut session, sql), code, "{sql}");
    }
    // One bad list fails the statement before anything is asked.
    assert_eq!(
        error_code(
            &mut session,
            "ALTER TABLE accounts SPLIT AT VALUES (1), ('x')"
        ),
        "22P02"
    );
    assert_eq!(regions.splits().len(), asked);
    // A split the cluster cannot make in time is an error the client sees.
    regions.0.lock().unwrap().refuse_splits = true;
    assert_eq!(
        error_code(&mut session, "ALTER TABLE accounts SPLIT AT VALUES (1)"),
        "58030"
    );
}

#[test]
fn unsplit_forgets_the_splits_at_its_keys_or_inside_the_whole_table() {
    let (regions, mut session) = database(vec![]);
    ok(
        &mut session,
        "ALTER TABLE accounts SPLIT AT VALUES (10), (20), (30)",
    );
    assert_eq!(
        rows(
            &mut session,
            "ALTER TABLE accounts UNSPLIT AT VALUES ('20')"
        ),
        ["/Table/accounts/20"]
    );
    let key = row_key(ACCOUNTS, [&Value::Int(20)]);
    let mut past = key.clone();
    past.push(0);
    assert_eq!(
        regions.0.lock().unwrap().unsplits.last(),
        Some(&(key, past))
    );
    // ALL: everything inside the table's rows, not the table's own start (nor other tables).
    assert_eq!(
        rows(&mut session, "alter table accounts unsplit all"),
        [
            "/Table/accounts/10",
            "/Table/accounts/20",
            "/Table/accounts/30"
        ]
    );
    let mut inside = row_prefix(ACCOUNTS);
    inside.push(0);
    assert_eq!(
        regions.0.lock().unwrap().unsplits.last(),
        Some(&(inside, row_prefix_end(ACCOUNTS)))
    );
    for (sql, code) in [
        ("ALTER TABLE accounts UNSPLIT AT VALUES ('abc')", "22P02"),
        ("ALTER TABLE nope UNSPLIT ALL", "42P01"),
        ("ALTER TABLE accounts UNSPLIT", "42601"),
    ] {
        assert_eq!(error_code(&mut session, sql), code, "{sql}");
    }
}
