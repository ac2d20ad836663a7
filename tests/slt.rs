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

/// The corpus files vendored under `slt/sqlite/` (see `convert_corpus`).
const CORPUS_FILES: &[&str] = &["select1", "select2", "select3", "select4", "select5"];

/// The public SQLite sqllogictest corpus, kept to the records PostgreSQL 15 reproduces:
/// RegionDB passes each record or refuses it as not supported (0A000) — it never answers
/// wrongly, nor fails otherwise. The counts are printed (`--nocapture`).
#[test]
fn sqlite_corpus_records_pass_or_are_refused_as_unsupported() {
    let mut problems = Vec::new();
    for name in CORPUS_FILES {
        let path = dir("sqlite").join(format!("{name}.slt"));
        let db = sql::Database::in_memory();
        let tally = slt::tally_slt_file(
            &path,
            "regiondb",
            Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>),
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
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Writes `slt/sqlite/NAME.slt` for each of [`CORPUS_FILES`] from a checkout of the SQLite
/// corpus (`SLT_CORPUS`: the `test/` directory of gregrahn/sqllogictest, public domain),
/// keeping the records that PostgreSQL 15 of this machine reproduces (SQLite differs in
/// places, e.g. where NULLs sort). Run when the corpus selection changes:
/// `SLT_CORPUS=…/test cargo test --test slt convert_corpus -- --ignored`.
#[test]
#[ignore]
fn convert_corpus() {
    let corpus = PathBuf::from(std::env::var("SLT_CORPUS").expect("SLT_CORPUS"));
    let postgres = Postgres::start();
    for (i, name) in CORPUS_FILES.iter().enumerate() {
        let database = format!("corpus_{i}");
        postgres.create_database(&database);
        let port = postgres.port;
        let source = corpus.join(format!("{name}.test"));
        let tally = slt::tally_slt_file(
            &source,
            "postgresql",
            Box::new(move || {
                Box::new(support::WireClient::connect_to(port, &database)) as Box<dyn ScriptSession>
            }),
        );
        let mut text = format!(
            "# {name}.test of the SQLite sqllogictest corpus (gregrahn/sqllogictest, public\n\
             # domain), without the {} records PostgreSQL 15 does not reproduce and the {} it\n\
             # skips. Written by tests/slt.rs convert_corpus; do not edit by hand.\n\n",
            tally.failed.len(),
            tally.skipped
        );
        for record in &tally.passing {
            text.push_str(&format!("{record}\n"));
        }
        std::fs::write(dir("sqlite").join(format!("{name}.slt")), text).expect("write");
        eprintln!(
            "{name}: kept {} records, dropped {}",
            tally.passed,
            tally.failed.len()
        );
    }
}
