//! Runs every `scripts/*.test` file (format: `sql::script`) against a fresh in-memory database.

use std::path::Path;

use sql::Database;
use sql::script::{ScriptSession, run_script, script_files};

#[test]
fn sql_scripts() {
    let paths = script_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts"));
    assert!(!paths.is_empty(), "no scripts found");
    let mut failures = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).expect("readable script");
        let db = Database::in_memory();
        let mut new_session = || Box::new(db.session()) as Box<dyn ScriptSession>;
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
