//! Isolation anomalies of the Hermitage catalogue, driven over the PostgreSQL wire protocol
//! against the real `regiondb` binary with two or three concurrent sessions. Each
//! `isolation/*.test` file (format: `sql::script`) gets a fresh node.

mod support;

use std::path::Path;

use sql::script::{ScriptSession, run_script, script_files};
use support::Node;

#[test]
fn hermitage_anomalies_over_the_wire() {
    let paths = script_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/isolation"));
    assert!(
        paths.len() >= 9,
        "expected the Hermitage scripts, found {paths:?}"
    );
    let mut failures = Vec::new();
    for path in paths {
        let dir = tempfile::tempdir().unwrap();
        let node = Node::start(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        let mut new_session = || Box::new(node.connect()) as Box<dyn ScriptSession>;
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
