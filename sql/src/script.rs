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
//! statement blocks            the SQL below is still running after a while (it waits for
//!                             a lock); it goes on in the background while other sessions
//!                             take their steps
//! finish ok [TAG]             the current session's blocked statement ends (within 30 s)
//! finish error SQLSTATE       with this outcome, or, `finish query`, with the rows after
//! finish query                `----`
//! ```

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

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

/// What a script needs from a session (sent to another thread while a statement blocks).
pub trait ScriptSession: Send {
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

/// How long a statement must keep running to count as blocked.
const BLOCKED_AFTER: Duration = Duration::from_millis(300);
/// How long a blocked statement may take to finish once expected to.
const FINISH_WITHIN: Duration = Duration::from_secs(30);

type Outcome = Result<Option<StatementResult>, Failure>;

/// A session whose statement is running in the background, and where its outcome will come.
struct Blocked {
    outcome: mpsc::Receiver<(Box<dyn ScriptSession>, Outcome)>,
}

struct Runner<'a> {
    new_session: &'a mut dyn FnMut() -> Box<dyn ScriptSession>,
    sessions: BTreeMap<String, Box<dyn ScriptSession>>,
    blocked: BTreeMap<String, Blocked>,
    current: String,
}

/// Checks a statement's outcome against `statement ok [TAG]` / `statement error CODE`.
fn check_statement(rest: &[&str], result: Outcome) -> Result<(), String> {
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

/// Checks a query's outcome against the expected rendered rows.
fn check_rows(expected: &[String], result: Outcome) -> Result<(), String> {
    match result {
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

/// The expected rows of a query block: the lines after `----`, and the SQL before it.
fn split_query<'b>(body: &[&'b str]) -> Result<(Vec<&'b str>, Vec<String>), String> {
    let split = body
        .iter()
        .position(|l| l.trim() == "----")
        .ok_or("query without ----")?;
    let expected = body[split + 1..].iter().map(|l| l.to_string()).collect();
    Ok((body[..split].to_vec(), expected))
}

impl Runner<'_> {
    fn session(&mut self) -> Result<&mut dyn ScriptSession, String> {
        if self.blocked.contains_key(&self.current) {
            return Err(format!(
                "session {} has a blocked statement: `finish` it first",
                self.current
            ));
        }
        let new_session = &mut self.new_session;
        Ok(self
            .sessions
            .entry(self.current.clone())
            .or_insert_with(|| new_session())
            .as_mut())
    }

    /// Runs `sql` on another thread and checks that it is still running a while later.
    fn start_blocking(&mut self, sql: String) -> Result<(), String> {
        self.session()?;
        let mut session = self
            .sessions
            .remove(&self.current)
            .expect("the session was just made");
        let (send, outcome) = mpsc::channel();
        std::thread::spawn(move || {
            let result = session.run(&sql);
            let _ = send.send((session, result));
        });
        match outcome.recv_timeout(BLOCKED_AFTER) {
            Ok((session, result)) => {
                self.sessions.insert(self.current.clone(), session);
                Err(format!(
                    "expected the statement to block, it ended: {result:?}"
                ))
            }
            Err(_) => {
                self.blocked
                    .insert(self.current.clone(), Blocked { outcome });
                Ok(())
            }
        }
    }

    /// Waits for the current session's blocked statement to end.
    fn finish(&mut self) -> Result<Outcome, String> {
        let blocked = self
            .blocked
            .remove(&self.current)
            .ok_or_else(|| format!("session {} has no blocked statement", self.current))?;
        match blocked.outcome.recv_timeout(FINISH_WITHIN) {
            Ok((session, result)) => {
                self.sessions.insert(self.current.clone(), session);
                Ok(result)
            }
            Err(_) => Err(format!(
                "the blocked statement of session {} did not finish within {FINISH_WITHIN:?}",
                self.current
            )),
        }
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
                let actual = self.session()?.status();
                if actual != expected {
                    return Err(format!("status: expected {expected:?}, got {actual:?}"));
                }
                Ok(())
            }
            "statement" if rest.first() == Some(&"blocks") => self.start_blocking(body.join("\n")),
            "statement" => {
                let result = self.session()?.run(&body.join("\n"));
                check_statement(&rest, result)
            }
            "finish" if rest.first() == Some(&"query") => {
                let (_, expected) = split_query(body)?;
                let result = self.finish()?;
                check_rows(&expected, result)
            }
            "finish" => {
                let result = self.finish()?;
                check_statement(&rest, result)
            }
            "query" => {
                let (sql, expected) = split_query(body)?;
                let result = self.session()?.run(&sql.join("\n"));
                check_rows(&expected, result)
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
        blocked: BTreeMap::new(),
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
    let unfinished: Vec<String> = runner.blocked.keys().cloned().collect();
    for session in unfinished {
        runner.current = session.clone();
        let outcome = runner.finish();
        failures.push(format!(
            "{name}: session {session} ended the script with a blocked statement ({outcome:?})"
        ));
    }
    failures
}

/// The files of a directory with this extension (`test`, `slt`), sorted.
pub fn script_files(dir: &std::path::Path, extension: &str) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.retain(|p: &std::path::PathBuf| p.extension().is_some_and(|e| e == extension));
    paths.sort();
    paths
}

/// A way to open sessions on one fresh database (kept alive by the closure).
pub type SessionFactory = Box<dyn FnMut() -> Box<dyn ScriptSession> + Send>;

/// Runs every `*.test` file of `dir`, each against a fresh database from `fresh`, and panics
/// with every failing step if any fails, or if there are fewer than `at_least` files.
pub fn check_script_dir(
    dir: &std::path::Path,
    at_least: usize,
    mut fresh: impl FnMut() -> SessionFactory,
) {
    let paths = script_files(dir, "test");
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
