//! sqllogictest files (the `sqllogictest` crate's format) under `slt/`, each on a fresh
//! database:
//!
//! - `slt/own/`: RegionDB's own files, run in-process, over the wire against the real
//!   binary, and against PostgreSQL 15 of this machine (the same files pass there: what they
//!   expect is what PostgreSQL does). `onlyif regiondb` / `skipif postgresql` mark records
//!   about RegionDB alone.

#[path = "support/slt.rs"]
mod slt;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sql::script::{ScriptSession, SessionFactory};
use support::{Postgres, fresh_node_per_script};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/slt")
        .join(name)
}

#[test]
fn own_files_in_process() {
    slt::check_slt_dir(&dir("own"), 3, "regiondb", || {
        let db = sql::Database::in_memory();
        Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>) as SessionFactory
    });
}

#[test]
fn own_files_over_the_wire() {
    slt::check_slt_dir(&dir("own"), 3, "regiondb", fresh_node_per_script(&[]));
}

/// The files RegionDB passes state what PostgreSQL does: they pass against it too.
#[test]
fn own_files_state_what_postgresql_does() {
    let postgres = Arc::new(Postgres::start());
    let databases = AtomicUsize::new(0);
    slt::check_slt_dir(&dir("own"), 3, "postgresql", || {
        let name = format!("slt_{}", databases.fetch_add(1, Ordering::SeqCst));
        postgres.create_database(&name);
        let postgres = Arc::clone(&postgres);
        Box::new(move || Box::new(postgres.connect_to(&name)) as Box<dyn ScriptSession>)
            as SessionFactory
    });
}

/// The manifest of the corpus files vendored under `slt/sqlite/` (see `convert_corpus`):
/// the upstream file (under the corpus's `test/`), the name it is written as
/// (`slt/sqlite/NAME.slt`), and at most how many of its queries are taken (its first ones:
/// the rest of a big file is left out, to keep CI time and the repository small).
#[rustfmt::skip]
const CORPUS: &[(&str, &str, Option<usize>)] = &[
    ("select1.test",                            "select1",                   None),
    ("select2.test",                            "select2",                   None),
    ("select3.test",                            "select3",                   None),
    ("select4.test",                            "select4",                   None),
    ("select5.test",                            "select5",                   None),
    ("index/between/10/slt_good_1.test",        "index_between_10_1",        Some(2000)),
    ("index/in/10/slt_good_3.test",             "index_in_10_3",             Some(2000)),
    ("index/delete/10/slt_good_0.test",         "index_delete_10_0",         Some(3000)),
    ("index/commute/10/slt_good_10.test",       "index_commute_10_10",       Some(3000)),
    ("index/orderby/10/slt_good_0.test",        "index_orderby_10_0",        Some(3000)),
    ("index/orderby_nosort/10/slt_good_0.test", "index_orderby_nosort_10_0", Some(3000)),
    ("index/random/10/slt_good_0.test",         "index_random_10_0",         Some(3000)),
    ("random/aggregates/slt_good_0.test",       "random_aggregates_0",       Some(3000)),
    ("random/groupby/slt_good_0.test",          "random_groupby_0",          Some(3000)),
    ("random/select/slt_good_0.test",           "random_select_0",           Some(3000)),
    ("random/expr/slt_good_1.test",             "random_expr_1",             Some(3000)),
];

/// What RegionDB still refuses in the corpus (0A000): anything else refused is a regression.
/// (Nothing, since secondary indexes.)
const STILL_REFUSED: &[&str] = &[];

/// The public SQLite sqllogictest corpus, kept to the records PostgreSQL 15 reproduces:
/// RegionDB passes each record or refuses it as not supported (0A000) — it never answers
/// wrongly, nor fails otherwise — and refuses nothing but [`STILL_REFUSED`]. The counts are
/// printed (`--nocapture`).
#[test]
fn sqlite_corpus_records_pass_or_are_refused_as_unsupported() {
    let vendored = sql::script::script_files(&dir("sqlite"), "slt");
    let mut listed: Vec<PathBuf> = CORPUS
        .iter()
        .map(|(_, name, _)| dir("sqlite").join(format!("{name}.slt")))
        .collect();
    listed.sort();
    assert_eq!(vendored, listed, "slt/sqlite/ holds the files of CORPUS");
    let mut problems = Vec::new();
    for (_, name, _) in CORPUS {
        let path = dir("sqlite").join(format!("{name}.slt"));
        let db = sql::Database::in_memory();
        let tally = slt::tally_slt_file(
            &path,
            "regiondb",
            Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>),
            slt::CORPUS_HASH_THRESHOLD,
        );
        eprintln!(
            "{name}: {} passed, {} not supported (0A000), {} skipped, {} failed",
            tally.passed,
            tally.unsupported,
            tally.skipped,
            tally.failed.len()
        );
        let mut features: Vec<(&String, &usize)> = tally.unsupported_by.iter().collect();
        features.sort_by(|a, b| b.1.cmp(a.1));
        for (feature, count) in features.iter().take(5) {
            eprintln!("  {count:5} refused: {feature}");
        }
        for (line, message) in &tally.failed {
            problems.push(format!("{name}.slt:{line}: {message}"));
        }
        for (line, feature) in &tally.unsupported_lines {
            if !STILL_REFUSED.contains(&feature.as_str()) {
                problems.push(format!("{name}.slt:{line}: refused: {feature}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Every `.slt` file, on PostgreSQL 15 of this machine and on RegionDB (in-process), record
/// by record: writes `slt/CONFORMANCE.md` with the counts, and fails if a record that passes
/// on PostgreSQL fails on RegionDB other than by a refusal (0A000) or a `skipif regiondb`
/// with its reason in the file. Needs PostgreSQL, so not in the default run:
/// `scripts/conformance.sh`.
#[test]
#[ignore]
fn conformance() {
    let postgres = Postgres::start();
    let mut files = script_files_in(&dir("own"));
    files.extend(script_files_in(&dir("sqlite")));
    let mut table = String::from(
        "# Conformance: RegionDB and PostgreSQL 15 on the same sqllogictest files\n\n\
         Written by `scripts/conformance.sh` (tests/slt.rs `conformance`). Records: statements and\n\
         queries; *refused*: RegionDB answers 0A000 (feature not supported); *skipped*: the\n\
         file marks the record as not run on that engine (`skipif`/`onlyif`, with the reason).\n\n\
         | file | records | PostgreSQL passed | RegionDB passed | RegionDB refused | RegionDB skipped |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let mut problems = Vec::new();
    let mut totals = [0usize; 5];
    for (i, path) in files.iter().enumerate() {
        let name = format!(
            "{}/{}",
            path.parent()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            path.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        let hash_threshold = if path.starts_with(dir("sqlite")) {
            slt::CORPUS_HASH_THRESHOLD
        } else {
            0
        };
        let database = format!("conformance_{i}");
        postgres.create_database(&database);
        let port = postgres.port;
        let on_postgres = slt::tally_slt_file(
            path,
            "postgresql",
            Box::new(move || {
                Box::new(support::WireClient::connect_to(port, &database)) as Box<dyn ScriptSession>
            }),
            hash_threshold,
        );
        let db = sql::Database::in_memory();
        let on_regiondb = slt::tally_slt_file(
            path,
            "regiondb",
            Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>),
            hash_threshold,
        );
        let records = on_regiondb.passed
            + on_regiondb.unsupported
            + on_regiondb.skipped
            + on_regiondb.failed.len();
        for line in &on_postgres.passed_lines {
            if let Some((_, message)) = on_regiondb.failed.iter().find(|(l, _)| l == line) {
                problems.push(format!(
                    "{name}:{line}: passes on PostgreSQL, fails on RegionDB: {message}"
                ));
            }
        }
        let row = [
            records,
            on_postgres.passed,
            on_regiondb.passed,
            on_regiondb.unsupported,
            on_regiondb.skipped,
        ];
        for (total, n) in totals.iter_mut().zip(row) {
            *total += n;
        }
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            row[0], row[1], row[2], row[3], row[4]
        ));
        eprintln!("{name}: {row:?}");
    }
    table.push_str(&format!(
        "| **all** | {} | {} | {} | {} | {} |\n",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    ));
    std::fs::write(dir("").join("CONFORMANCE.md"), table).expect("write CONFORMANCE.md");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

fn script_files_in(path: &Path) -> Vec<PathBuf> {
    sql::script::script_files(path, "slt")
}

/// Writes `slt/sqlite/NAME.slt` for each file of [`CORPUS`] from a checkout of the SQLite
/// corpus (`SLT_CORPUS`: the `test/` directory of gregrahn/sqllogictest, public domain),
/// keeping the records that PostgreSQL 15 of this machine reproduces (SQLite differs in
/// places, e.g. where NULLs sort); a file with a maximum ends after that many of its queries.
/// Run when the corpus selection changes (the same corpus writes the same files):
/// `SLT_CORPUS=…/test cargo test --test slt convert_corpus -- --ignored --nocapture`.
#[test]
#[ignore]
fn convert_corpus() {
    let corpus = PathBuf::from(std::env::var("SLT_CORPUS").expect("SLT_CORPUS"));
    let postgres = Postgres::start();
    for (i, (upstream, name, max_queries)) in CORPUS.iter().enumerate() {
        let mut records = slt::parse_slt_file(&corpus.join(upstream));
        let is_query =
            |record: &sqllogictest::Record<_>| matches!(record, sqllogictest::Record::Query { .. });
        let queries = records.iter().filter(|r| is_query(r)).count();
        // Where the file is cut: after its last query taken.
        let mut truncated = String::new();
        if let Some(max) = *max_queries
            && max < queries
        {
            let (end, line) = records
                .iter()
                .enumerate()
                .filter_map(|(at, record)| match record {
                    sqllogictest::Record::Query { loc, .. } => Some((at + 1, loc.line())),
                    _ => None,
                })
                .nth(max - 1)
                .expect("the last query taken");
            records.truncate(end);
            truncated = format!(
                "\n# Truncated: only its first {max} of {queries} queries, up to the one at\n\
                 # line {line}, are taken.\n#"
            );
        }
        let database = format!("corpus_{i}");
        postgres.create_database(&database);
        let port = postgres.port;
        let tally = slt::tally_records(
            records,
            "postgresql",
            Box::new(move || {
                Box::new(support::WireClient::connect_to(port, &database)) as Box<dyn ScriptSession>
            }),
            slt::CORPUS_HASH_THRESHOLD,
        );
        let mut text = format!(
            "# {upstream} of the SQLite sqllogictest corpus (gregrahn/sqllogictest, public\n\
             # domain), without the {} records PostgreSQL 15 does not reproduce and the {} it\n\
             # skips.{truncated} Written by tests/slt.rs convert_corpus; do not edit by hand.\n\n",
            tally.failed.len(),
            tally.skipped
        );
        for record in &tally.passing {
            text.push_str(&format!("{record}\n"));
        }
        std::fs::write(dir("sqlite").join(format!("{name}.slt")), text).expect("write");
        eprintln!(
            "{name}: kept {} records ({} queries), dropped {}, skipped {}",
            tally.passed,
            tally.passing.iter().filter(|r| is_query(r)).count(),
            tally.failed.len(),
            tally.skipped
        );
    }
}
