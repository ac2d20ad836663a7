//! sqllogictest over any [`ScriptSession`]: RegionDB in-process (`sql::Session`), RegionDB
//! or PostgreSQL over the wire (`WireClient`). One rendering serves every engine, in the
//! SQLite sqllogictest convention (so that the public corpus's expected results, and their
//! hashes, read the same): NULL as `NULL`, the empty string as `(empty)`, floating-point and
//! numeric values with three decimals, characters outside printable ASCII as `@`; column
//! types `I` (integers), `R` (floating point and numeric), `T` (everything else).

use sql::script::{Failure, ScriptSession, SessionFactory, script_files};
use sql::{ColumnInfo, StatementResult};
use sqllogictest::{DBOutput, DefaultColumnType};

/// A statement's failure, with its SQLSTATE for `statement error (CODE)`.
#[derive(Debug)]
pub struct SltError(pub Failure);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SltError {}

/// One connection of a sqllogictest file.
pub struct SltSession {
    session: Box<dyn ScriptSession>,
    engine: &'static str,
}

impl SltSession {
    pub fn new(session: Box<dyn ScriptSession>, engine: &'static str) -> SltSession {
        SltSession { session, engine }
    }
}

/// PostgreSQL type OIDs as the three sqllogictest column types.
fn column_type(column: &ColumnInfo) -> DefaultColumnType {
    match column.type_oid {
        20 | 21 | 23 | 26 => DefaultColumnType::Integer,
        700 | 701 | 1700 => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Text,
    }
}

/// A value as sqllogictest files write it (see the module doc).
pub fn render(ty: &DefaultColumnType, value: Option<&str>) -> String {
    let Some(value) = value else {
        return "NULL".into();
    };
    if value.is_empty() {
        return "(empty)".into();
    }
    if *ty == DefaultColumnType::FloatingPoint
        && let Ok(number) = value.parse::<f64>()
    {
        return format!("{number:.3}");
    }
    value
        .chars()
        .map(|c| if (' '..='~').contains(&c) { c } else { '@' })
        .collect()
}

/// The number a command tag ends with (`INSERT 0 3` → 3), or 0.
fn tag_count(tag: &str) -> u64 {
    tag.rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

impl sqllogictest::DB for SltSession {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        match self.session.run(sql).map_err(SltError)? {
            Some(StatementResult::Rows { columns, rows, .. }) => {
                let types: Vec<DefaultColumnType> = columns.iter().map(column_type).collect();
                let rows = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .zip(&types)
                            .map(|(value, ty)| render(ty, value.as_deref()))
                            .collect()
                    })
                    .collect();
                Ok(DBOutput::Rows { types, rows })
            }
            Some(StatementResult::Command { tag }) => {
                Ok(DBOutput::StatementComplete(tag_count(&tag)))
            }
            None => Ok(DBOutput::StatementComplete(0)),
        }
    }

    fn engine_name(&self) -> &str {
        self.engine
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        Some(err.0.code.clone())
    }
}

/// Runs every `*.slt` file of `dir` with connections from `fresh` (called once per file; the
/// closure it returns opens the file's connections), `engine` labelling `skipif`/`onlyif`.
/// Panics with every failure, or if there are fewer than `at_least` files.
pub fn check_slt_dir(
    dir: &std::path::Path,
    at_least: usize,
    engine: &'static str,
    mut fresh: impl FnMut() -> SessionFactory,
) {
    let mut paths = script_files(dir, "slt");
    assert!(
        paths.len() >= at_least,
        "expected at least {at_least} .slt files in {}, found {paths:?}",
        dir.display()
    );
    // SLT_ONLY=name runs only the files whose path contains it (while working on one).
    if let Ok(only) = std::env::var("SLT_ONLY") {
        paths.retain(|p| p.to_string_lossy().contains(&only));
    }
    let mut failures = Vec::new();
    for path in paths {
        let mut connect = fresh();
        let mut runner = sqllogictest::Runner::new(move || {
            let session = SltSession::new(connect(), engine);
            async move { Ok::<_, SltError>(session) }
        });
        runner.add_label(engine);
        if let Err(e) = runner.run_file(&path) {
            failures.push(format!("{}: {}", path.display(), e.display(false)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing files:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// How the records of a file fared, one by one (a failing record does not stop the rest).
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    /// Not run on this engine (`skipif`/`onlyif`).
    pub skipped: usize,
    /// Refused with SQLSTATE 0A000 (feature_not_supported): honest, and counted apart, by
    /// the message's first words (which name the feature).
    pub unsupported: usize,
    pub unsupported_by: std::collections::BTreeMap<String, usize>,
    /// The lines of the records that passed.
    pub passed_lines: Vec<u32>,
    /// The lines of the records refused as not supported, with the feature refused.
    pub unsupported_lines: Vec<(u32, String)>,
    /// Wrong results and other errors: each with its line and what went wrong.
    pub failed: Vec<(u32, String)>,
    /// The records that passed, and the others that are not statements or queries (blank
    /// lines, comments, settings), in order: what a file of the passing records holds. Not
    /// the `skipif`/`onlyif` lines: a record kept runs on every engine (and the condition of
    /// a record left out must not fall to the next one).
    pub passing: Vec<sqllogictest::Record<DefaultColumnType>>,
}

/// The records of the sqllogictest file `path`, in order. The SQLite corpus ends some
/// `skipif`/`onlyif` lines with a comment (`skipif mysql # not compatible`), which the
/// sqllogictest crate does not read: it is cut off (the lines keep their numbers).
pub fn parse_slt_file(path: &std::path::Path) -> Vec<sqllogictest::Record<DefaultColumnType>> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text: String = text
        .lines()
        .map(|line| match line.split_once(" #") {
            Some((condition, _)) if line.starts_with("skipif ") || line.starts_with("onlyif ") => {
                format!("{}\n", condition.trim_end())
            }
            _ => format!("{line}\n"),
        })
        .collect();
    sqllogictest::parse_with_name::<DefaultColumnType>(&text, path.display().to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Results of more values than this are compared by their hash, as the SQLite corpus writes
/// them (RegionDB's own files write every value: they use no threshold).
pub const CORPUS_HASH_THRESHOLD: usize = 8;

/// Runs the records of `path` one by one on one connection from `connect`.
pub fn tally_slt_file(
    path: &std::path::Path,
    engine: &'static str,
    connect: SessionFactory,
    hash_threshold: usize,
) -> Tally {
    tally_records(parse_slt_file(path), engine, connect, hash_threshold)
}

/// Runs `records` one by one on one connection from `connect`.
pub fn tally_records(
    records: Vec<sqllogictest::Record<DefaultColumnType>>,
    engine: &'static str,
    mut connect: SessionFactory,
    hash_threshold: usize,
) -> Tally {
    let mut runner = sqllogictest::Runner::new(move || {
        let session = SltSession::new(connect(), engine);
        async move { Ok::<_, SltError>(session) }
    });
    runner.add_label(engine);
    runner.with_hash_threshold(hash_threshold);
    let mut tally = Tally::default();
    for record in records {
        let counted = matches!(
            record,
            sqllogictest::Record::Statement { .. } | sqllogictest::Record::Query { .. }
        );
        let line = match &record {
            sqllogictest::Record::Statement { loc, .. }
            | sqllogictest::Record::Query { loc, .. } => loc.line(),
            _ => 0,
        };
        match runner.run(record.clone()) {
            Ok(sqllogictest::RecordOutput::Nothing) if counted => tally.skipped += 1,
            Ok(_) if counted => {
                tally.passed += 1;
                tally.passed_lines.push(line);
                tally.passing.push(record);
            }
            Ok(_) if matches!(record, sqllogictest::Record::Condition(_)) => {}
            Ok(_) => tally.passing.push(record),
            Err(e) => {
                let message = e.to_string();
                if message.contains("SQLSTATE 0A000") {
                    tally.unsupported += 1;
                    let feature: String = message
                        .split_once("failed: ")
                        .map_or(message.as_str(), |(_, m)| m)
                        .split(" is not supported")
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(60)
                        .collect();
                    tally.unsupported_lines.push((line, feature.clone()));
                    *tally.unsupported_by.entry(feature).or_default() += 1;
                } else {
                    tally.failed.push((line, message));
                }
            }
        }
    }
    tally
}

#[test]
fn values_render_as_the_sqllogictest_corpus_writes_them() {
    let (int, real, text) = (
        DefaultColumnType::Integer,
        DefaultColumnType::FloatingPoint,
        DefaultColumnType::Text,
    );
    assert_eq!(render(&int, None), "NULL");
    assert_eq!(render(&text, Some("")), "(empty)");
    assert_eq!(render(&real, Some("2.5")), "2.500");
    assert_eq!(render(&real, Some("-0.3333333")), "-0.333");
    assert_eq!(render(&text, Some("naïve\tx")), "na@ve@x");
    assert_eq!(render(&int, Some("42")), "42");
    assert_eq!(tag_count("INSERT 0 3"), 3);
    assert_eq!(tag_count("CREATE TABLE"), 0);
}
