//! Runs every `scripts/*.test` file (format: `sql::script`) against a fresh in-memory database.

use std::path::Path;

use sql::Database;
use sql::script::{ScriptSession, SessionFactory, check_script_dir};

#[test]
fn sql_scripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts");
    check_script_dir(&dir, 1, || {
        let db = Database::in_memory();
        Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>) as SessionFactory
    });
}
