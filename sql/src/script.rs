//! Script-driven SQL tests: a text file of steps and expected outcomes, run against any kind of
//! session (in-process [`Session`](crate::Session)s, or clients over the wire), so that a new
//! case costs a text file. Used by this crate's tests and by the end-to-end tests.
//!
//! Format (blocks separated by blank lines; `#` starts a comment line):
//!
//! ```text
//! statement ok [TAG]          the SQL below succeeds (and its command tag is TAG, if given)
//! statement error SQLSTATE    the SQL below fails with that SQLSTATE
//! query                       the SQL below returns exactly the rows after `----`,
//!                             columns joined by " | ", NULL as `NULL`, in order
//! session NAME                following steps run in session NAME (created on first use;
//!                             the first session is `main`)
//! status I|T|E                the current session's transaction status
//! ```

use std::collections::BTreeMap;

use crate::{StatementResult, TransactionStatus};

/// A failed statement as a script sees it.
#[derive(Debug)]
pub struct Failure {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.code)
    }
}

/// What a script needs from a session.
pub trait ScriptSession {
    /// Runs one query string; the outcome of its last statement.
    fn run(&mut self, sql: &str) -> Result<Option<StatementResult>, Failure>;
    /// The transaction status after the last query.
    fn status(&mut self) -> TransactionStatus;
}

impl ScriptSession for crate::Session {
    fn run(&mut self, sql: &str) -> Result<Option<StatementResult>, Failure> {
        self.execute(sql).pop().transpose().map_err(|e| Failure {
            code: e.code.to_string(),
            message: e.message,
        })
    }

    fn status(&mut self) -> TransactionStatus {
        self.transaction_status()
    }
}

fn render_rows(rows: &[Vec<Option<String>>]) -> Vec<String> {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

struct Runner<'a> {
    new_session: &'a mut dyn FnMut() -> Box<dyn ScriptSession>,
    sessions: BTreeMap<String, Box<dyn ScriptSession>>,
    current: String,
}

impl Runner<'_> {
    fn session(&mut self) -> &mut dyn ScriptSession {
        let new_session = &mut self.new_session;
        self.sessions
            .entry(self.current.clone())
            .or_insert_with(|| new_session())
            .as_mut()
    }

    /// Runs one block; returns a description of the mismatch, if any.
    fn run_block(&mut self, header: &str, body: &[&str]) -> Result<(), String> {
        let mut words = header.split_whitespace();
        let directive = words.next().unwrap_or_default();
        let rest: Vec<&str> = words.collect();
        match directive {
            "session" => {
                self.current = rest.first().ok_or("session needs a name")?.to_string();
                Ok(())
            }
            "status" => {
                let expected = match rest.first().copied() {
                    Some("I") => TransactionStatus::Idle,
                    Some("T") => TransactionStatus::InBlock,
                    Some("E") => TransactionStatus::Failed,
                    other => return Err(format!("bad status {other:?}")),
                };
                let actual = self.session().status();
                if actual != expected {
                    return Err(format!("status: expected {expected:?}, got {actual:?}"));
                }
                Ok(())
            }
            "statement" => {
                let result = self.session().run(&body.join("\n"));
                match (rest.first().copied(), result) {
                    (Some("ok"), Ok(r)) => {
                        let tag = rest[1..].join(" ");
                        let actual = r.as_ref().map(|r| r.tag()).unwrap_or_default();
                        if !tag.is_empty() && actual != tag {
                            return Err(format!("tag: expected {tag:?}, got {actual:?}"));
                        }
                        Ok(())
                    }
                    (Some("ok"), Err(e)) => Err(format!("expected success, got {e}")),
                    (Some("error"), Err(e)) => {
                        let code = rest.get(1).copied().unwrap_or_default();
                        if e.code != code {
                            return Err(format!("expected SQLSTATE {code}, got {e}"));
                        }
                        Ok(())
                    }
                    (Some("error"), Ok(r)) => Err(format!("expected an error, got {r:?}")),
                    (other, _) => Err(format!("bad statement directive {other:?}")),
                }
            }
            "query" => {
                let split = body
                    .iter()
                    .position(|l| l.trim() == "----")
                    .ok_or("query without ----")?;
                let expected: Vec<String> =
                    body[split + 1..].iter().map(|l| l.to_string()).collect();
                match self.session().run(&body[..split].join("\n")) {
                    Ok(Some(StatementResult::Rows { rows, .. })) => {
                        let actual = render_rows(&rows);
                        if actual != expected {
                            return Err(format!(
                                "rows differ\n--- expected\n{}\n--- actual\n{}",
                                expected.join("\n"),
                                actual.join("\n")
                            ));
                        }
                        Ok(())
                    }
                    other => Err(format!("expected rows, got {other:?}")),
                }
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }
}

/// Runs a script; `name` labels failures (a file name), `new_session` opens a session. Returns
/// one message per failing step (empty: the script passed).
pub fn run_script(
    text: &str,
    name: &str,
    new_session: &mut dyn FnMut() -> Box<dyn ScriptSession>,
) -> Vec<String> {
    let mut runner = Runner {
        new_session,
        sessions: BTreeMap::new(),
        current: "main".into(),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut failures = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            i += 1;
            continue;
        }
        let mut end = i + 1;
        while end < lines.len() && !lines[end].trim().is_empty() {
            end += 1;
        }
        if let Err(message) = runner.run_block(line, &lines[i + 1..end]) {
            failures.push(format!("{name}:{}: {line}\n{message}", i + 1));
        }
        i = end;
    }
    failures
}

/// The `*.test` files of a directory, sorted.
pub fn script_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "test"));
    paths.sort();
    paths
}

/// A way to open sessions on one fresh database (kept alive by the closure).
pub type SessionFactory = Box<dyn FnMut() -> Box<dyn ScriptSession>>;

/// Runs every `*.test` file of `dir`, each against a fresh database from `fresh`, and panics
/// with every failing step if any fails, or if there are fewer than `at_least` files.
pub fn check_script_dir(
    dir: &std::path::Path,
    at_least: usize,
    mut fresh: impl FnMut() -> SessionFactory,
) {
    let paths = script_files(dir);
    assert!(
        paths.len() >= at_least,
        "expected at least {at_least} scripts in {}, found {paths:?}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut new_session = fresh();
        failures.extend(run_script(
            &text,
            &path.display().to_string(),
            &mut new_session,
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failing steps:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
