//! Script-driven SQL tests: every `scripts/*.test` file is a list of steps and expected
//! outcomes, run against a fresh in-memory database. A new case is a text file.
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
use std::fs;
use std::path::Path;

use sql::{Database, Session, StatementResult, TransactionStatus};

struct Runner {
    db: Database,
    sessions: BTreeMap<String, Session>,
    current: String,
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

impl Runner {
    fn session(&mut self) -> &mut Session {
        let db = self.db.clone();
        self.sessions
            .entry(self.current.clone())
            .or_insert_with(|| db.session())
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
                let actual = self.session().transaction_status();
                if actual != expected {
                    return Err(format!("status: expected {expected:?}, got {actual:?}"));
                }
                Ok(())
            }
            "statement" => {
                let sql = body.join("\n");
                let result = self.session().execute(&sql).pop();
                match (rest.first().copied(), result) {
                    (Some("ok"), Some(Ok(r))) => {
                        let tag = rest[1..].join(" ");
                        if !tag.is_empty() && r.tag() != tag {
                            return Err(format!("tag: expected {tag:?}, got {:?}", r.tag()));
                        }
                        Ok(())
                    }
                    (Some("ok"), None) => Ok(()),
                    (Some("ok"), Some(Err(e))) => Err(format!("expected success, got {e}")),
                    (Some("error"), Some(Err(e))) => {
                        let code = rest.get(1).copied().unwrap_or_default();
                        if e.code != code {
                            return Err(format!("expected SQLSTATE {code}, got {e}"));
                        }
                        Ok(())
                    }
                    (Some("error"), other) => Err(format!("expected an error, got {other:?}")),
                    (other, _) => Err(format!("bad statement directive {other:?}")),
                }
            }
            "query" => {
                let split = body
                    .iter()
                    .position(|l| l.trim() == "----")
                    .ok_or("query without ----")?;
                let sql = body[..split].join("\n");
                let expected: Vec<String> =
                    body[split + 1..].iter().map(|l| l.to_string()).collect();
                match self.session().execute(&sql).pop() {
                    Some(Ok(StatementResult::Rows { rows, .. })) => {
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

fn run_script(path: &Path) -> Vec<String> {
    let text = fs::read_to_string(path).expect("readable script");
    let mut runner = Runner {
        db: Database::in_memory(),
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
        let start = i;
        let mut end = i + 1;
        while end < lines.len() && !lines[end].trim().is_empty() {
            end += 1;
        }
        let body: Vec<&str> = lines[start + 1..end].to_vec();
        if let Err(message) = runner.run_block(line, &body) {
            failures.push(format!(
                "{}:{}: {line}\n{message}",
                path.display(),
                start + 1
            ));
        }
        i = end;
    }
    failures
}

#[test]
fn sql_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .expect("scripts directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    let failures: Vec<String> = paths.iter().flat_map(|p| run_script(p)).collect();
    assert!(
        failures.is_empty(),
        "{} failing steps:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
