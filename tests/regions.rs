//! Regions seen and split through SQL, end to end: a single-node `regiondb` with tiny regions
//! (16 KiB split size, 24 KiB max), a table that grows past many of them, and the statements
//! `SHOW REGIONS [FROM TABLE t]` and `ALTER TABLE t SPLIT AT VALUES (…)` over the wire.
//!
//! `SHOW REGIONS` shows the scheduler's view, which lags the stores: while a region splits,
//! the scheduler may have heard of one half and not yet of the other, and the list has a gap
//! for a moment. So the checks that need the whole key space read until two lists in a row
//! agree and cover it ([`settled_regions`]), within 30 seconds.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use support::{Node, WireClient};

/// `regiondb` (single node) with regions split at 16 KiB.
fn start_with_small_regions(data_dir: &Path) -> Node {
    Node::start_with(
        data_dir,
        &["--region-split-size", "16KiB", "--region-max-size", "24KiB"],
    )
}

/// One row of `SHOW REGIONS`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Region {
    id: u64,
    start: String,
    end: String,
    peers: String,
    size: u64,
}

fn show_regions(client: &mut WireClient, sql: &str) -> Vec<Region> {
    let reply = client.ok(sql);
    let names: Vec<&str> = reply.columns.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "region_id",
            "start_key",
            "end_key",
            "leader_store",
            "peer_stores",
            "approximate_size",
            "approximate_keys"
        ]
    );
    let text = |v: &Option<String>| v.clone().expect("a NULL where a value must be");
    reply
        .rows
        .iter()
        .map(|row| Region {
            id: text(&row[0]).parse().unwrap(),
            start: text(&row[1]),
            end: text(&row[2]),
            peers: text(&row[4]),
            size: text(&row[5]).parse().unwrap(),
        })
        .collect()
}

/// Polls `check` until it returns `Ok`, for at most 30 seconds; fails with the last `Err`.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match check() {
            Ok(found) => return found,
            Err(why) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}: {why}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Why `regions` do not cover the key space once in key order (from `/Min`, each ending where
/// the next starts, to `/Max`, every region with replicas), if they do not.
fn chain_gap(regions: &[Region]) -> Result<(), String> {
    let first = regions.first().map(|r| r.start.as_str());
    let last = regions.last().map(|r| r.end.as_str());
    if first != Some("/Min") || last != Some("/Max") {
        return Err(format!("not from /Min to /Max: {regions:#?}"));
    }
    if let Some(pair) = regions.windows(2).find(|pair| pair[0].end != pair[1].start) {
        return Err(format!(
            "a gap or overlap between {:?} and {:?}",
            pair[0], pair[1]
        ));
    }
    let ids: BTreeSet<u64> = regions.iter().map(|r| r.id).collect();
    if ids.len() != regions.len() {
        return Err(format!("a region listed twice: {regions:#?}"));
    }
    match regions
        .iter()
        .find(|r| !r.peers.starts_with('{') || r.peers.len() <= 2)
    {
        Some(region) => Err(format!("no peers: {region:?}")),
        None => Ok(()),
    }
}

/// `SHOW REGIONS` once the list covers the key space and reads the same twice in a row.
fn settled_regions(client: &mut WireClient) -> Vec<Region> {
    wait_for("SHOW REGIONS to cover the key space", || {
        let regions = show_regions(client, "SHOW REGIONS");
        chain_gap(&regions)?;
        if show_regions(client, "SHOW REGIONS") != regions {
            return Err("the regions changed between two reads".into());
        }
        Ok(regions)
    })
}

/// Waits until some region starts at `start`.
fn wait_for_region_at(client: &mut WireClient, start: &str) {
    wait_for(&format!("a region starting at {start}"), || {
        let regions = show_regions(client, "SHOW REGIONS");
        if regions.iter().any(|r| r.start == start) {
            Ok(())
        } else {
            Err(format!("{regions:#?}"))
        }
    })
}

const ROWS: usize = 3000;

#[test]
fn regions_split_as_a_table_grows_and_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_with_small_regions(dir.path());
    let mut c = node.connect();

    c.ok("CREATE TABLE accounts (id INT PRIMARY KEY, owner TEXT, balance BIGINT)");
    // The new table gets a region of its own, asked for after its CREATE TABLE committed.
    wait_for_region_at(&mut c, "/Table/accounts");

    for batch in (1..=ROWS).collect::<Vec<_>>().chunks(200) {
        let values: Vec<String> = batch
            .iter()
            .map(|i| format!("({i}, 'owner-{i:06}-{}', {})", "x".repeat(60), i * 10))
            .collect();
        c.ok(&format!(
            "INSERT INTO accounts VALUES {}",
            values.join(", ")
        ));
    }

    // The table outgrows its region, which splits (by size, on its own) into several.
    wait_for("accounts to span several regions", || {
        let regions = show_regions(&mut c, "show regions from table accounts;");
        if regions.len() >= 3 {
            Ok(())
        } else {
            Err(format!("{regions:#?}"))
        }
    });

    // FROM TABLE gives the regions overlapping the table: a consecutive part of the list,
    // from the table's own first region on. (Read between two equal full lists.)
    let (all, table_regions) = wait_for("a settled view of accounts' regions", || {
        let all = settled_regions(&mut c);
        let table_regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE accounts");
        if show_regions(&mut c, "SHOW REGIONS") != all {
            return Err("the regions changed while reading".into());
        }
        Ok((all, table_regions))
    });
    assert!(table_regions.len() >= 3, "{table_regions:#?}");
    let first = all
        .iter()
        .position(|r| r.id == table_regions[0].id)
        .expect("the table's first region is in SHOW REGIONS");
    assert_eq!(all[first..first + table_regions.len()], table_regions[..]);
    assert_eq!(table_regions[0].start, "/Table/accounts");
    assert_eq!(all[first - 1].end, "/Table/accounts");
    assert!(all[..first].iter().all(|r| !r.start.starts_with("/Table/")));
    for region in &table_regions[1..] {
        assert!(
            region.start.starts_with("/Table/accounts/"),
            "a region of accounts starting at {}",
            region.start
        );
    }
    wait_for("a measured region of accounts", || {
        let regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE accounts");
        if regions.iter().any(|r| r.size > 0) {
            Ok(())
        } else {
            Err(format!("{regions:#?}"))
        }
    });

    // Every row is still there, across the regions.
    let read_all = |c: &mut WireClient| -> Vec<u64> {
        c.ok("SELECT id FROM accounts")
            .rows
            .iter()
            .map(|row| row[0].as_deref().unwrap().parse().unwrap())
            .collect()
    };
    assert_eq!(read_all(&mut c), (1..=ROWS as u64).collect::<Vec<_>>());
    assert_eq!(
        c.rows("SELECT owner, balance FROM accounts WHERE id = 2999"),
        [format!("owner-002999-{},29990", "x".repeat(60))]
    );

    // A table created later starts its own region too, which is the last one.
    c.ok("CREATE TABLE later (k INT PRIMARY KEY)");
    wait_for_region_at(&mut c, "/Table/later");
    let all = settled_regions(&mut c);
    let last = all.last().unwrap();
    assert_eq!(
        (last.start.as_str(), last.end.as_str()),
        ("/Table/later", "/Max")
    );
    let later = show_regions(&mut c, "SHOW REGIONS FROM TABLE later");
    assert_eq!(later.len(), 1, "{later:#?}");
    assert_eq!(later[0].start, "/Table/later");

    // Split on demand: the statement returns once the region exists.
    let reply = c.ok("ALTER TABLE accounts SPLIT AT VALUES (500)");
    assert_eq!(reply.rows, [[Some("/Table/accounts/500".to_string())]]);
    let all = settled_regions(&mut c);
    assert!(
        all.iter().any(|r| r.start == "/Table/accounts/500"),
        "no region starts at /Table/accounts/500: {all:#?}"
    );
    // Splitting where a region already starts is fine.
    c.ok("ALTER TABLE accounts SPLIT AT VALUES (500)");
    assert_eq!(read_all(&mut c).len(), ROWS);

    assert_eq!(
        c.query("SHOW REGIONS FROM TABLE nope").code(),
        Some("42P01")
    );
    assert_eq!(
        c.query("ALTER TABLE accounts SPLIT AT VALUES ('many')")
            .code(),
        Some("22P02")
    );
    assert!(node.terminate().success());
}

/// A table of 1,000,000 rows on a single node (regions split at 1 MiB here, so that a
/// million small rows make dozens of them): loaded through SQL, it splits into many regions
/// that cover the key space, and every row reads back.
#[test]
fn a_million_rows_split_into_many_regions() {
    const MILLION: u64 = 1_000_000;
    const PER_STATEMENT: u64 = 5_000;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(
        dir.path(),
        &["--region-split-size", "1MiB", "--region-max-size", "2MiB"],
    );
    let mut c = node.connect();
    c.ok("CREATE TABLE big (id BIGINT PRIMARY KEY, v BIGINT)");
    let started = Instant::now();
    for first in (1..=MILLION).step_by(PER_STATEMENT as usize) {
        let values: Vec<String> = (first..first + PER_STATEMENT)
            .map(|i| format!("({i},{})", i * 7))
            .collect();
        c.ok(&format!("INSERT INTO big VALUES {}", values.join(",")));
    }
    eprintln!("1,000,000 rows loaded in {:?}", started.elapsed());
    let regions = wait_for("big to span many regions", || {
        let regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE big");
        if regions.len() >= 16 {
            Ok(regions)
        } else {
            Err(format!("{} regions", regions.len()))
        }
    });
    eprintln!("big spans {} regions", regions.len());
    chain_gap(&settled_regions(&mut c)).unwrap();
    // Rows at both ends, in the middle, and a range that crosses region boundaries.
    for id in [1, 2, MILLION / 2, MILLION - 1, MILLION] {
        let reply = c.ok(&format!("SELECT v FROM big WHERE id = {id}"));
        assert_eq!(
            reply.rows,
            vec![vec![Some((id * 7).to_string())]],
            "row {id}"
        );
    }
    let reply = c.ok("SELECT id FROM big WHERE id > 990000");
    let ids: Vec<u64> = reply
        .rows
        .iter()
        .map(|row| row[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (990_001..=MILLION).collect::<Vec<_>>());
    // Every row: counted page by page through the primary key.
    let mut counted = 0u64;
    let mut after = 0u64;
    loop {
        let reply = c.ok(&format!(
            "SELECT id FROM big WHERE id > {after} AND id <= {}",
            after + 100_000
        ));
        counted += reply.rows.len() as u64;
        after += 100_000;
        if after >= MILLION {
            break;
        }
    }
    assert_eq!(counted, MILLION);
}

/// `ALTER TABLE t UNSPLIT ALL` lets the scheduler merge the regions `SPLIT AT` made back into
/// one (they are tiny), while the boundaries of tables stay (`t`, created last, has the last
/// region, which ends where the keyspace ends); every row stays.
#[test]
fn unsplit_regions_merge_back_and_every_row_stays() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(dir.path(), &["--split-merge-interval", "0s"]);
    let mut c = node.connect();
    c.ok("CREATE TABLE u (id INT PRIMARY KEY)");
    c.ok("CREATE TABLE t (id INT PRIMARY KEY, v TEXT)");
    let values: Vec<String> = (0..200).map(|i| format!("({i}, 'row {i}')")).collect();
    c.ok(&format!("INSERT INTO t VALUES {}", values.join(", ")));
    c.ok("INSERT INTO u VALUES (1), (2)");
    let splits: Vec<String> = (1..10).map(|i| format!("({})", i * 20)).collect();
    c.ok(&format!(
        "ALTER TABLE t SPLIT AT VALUES {}",
        splits.join(", ")
    ));
    wait_for("ten regions of t", || {
        let regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE t");
        (regions.len() == 10)
            .then_some(())
            .ok_or(format!("{regions:#?}"))
    });
    let forgotten = c.rows("ALTER TABLE t UNSPLIT ALL");
    assert_eq!(forgotten.len(), 9, "{forgotten:?}");
    assert_eq!(forgotten[0], "/Table/t/20");
    // Merges go one heartbeat at a time (a region busy merging is not merged again at once).
    let deadline = Instant::now() + Duration::from_secs(90);
    let merged = loop {
        let regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE t");
        if let [only] = regions.as_slice() {
            break only.clone();
        }
        assert!(Instant::now() < deadline, "not merged: {regions:#?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (merged.start.as_str(), merged.end.as_str()),
        ("/Table/t", "/Max")
    );
    let all = settled_regions(&mut c);
    let bounds: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.start.as_str(), r.end.as_str()))
        .collect();
    assert_eq!(
        bounds,
        [
            ("/Min", "/Table/u"),
            ("/Table/u", "/Table/t"),
            ("/Table/t", "/Max")
        ]
    );
    assert_eq!(c.rows("SELECT id FROM t").len(), 200);
    c.ok("UPDATE t SET v = 'changed' WHERE id = 150");
    assert_eq!(c.rows("SELECT v FROM t WHERE id = 150"), ["changed"]);
    assert_eq!(c.rows("SELECT id FROM u").len(), 2);
    // The merged layout survives a restart.
    drop(c);
    node.terminate();
    let node = Node::start_with(dir.path(), &["--split-merge-interval", "0s"]);
    let mut c = node.connect();
    assert_eq!(c.rows("SELECT id FROM t").len(), 200);
    let regions = show_regions(&mut c, "SHOW REGIONS FROM TABLE t");
    assert_eq!(regions.len(), 1, "{regions:#?}");
}
