//! Isolation anomalies of the Hermitage catalogue, driven over the PostgreSQL wire protocol
//! against the real `regiondb` binary with two or three concurrent sessions. Each
//! `isolation/*.test` file (format: `sql::script`) gets a fresh node.

mod support;

use std::path::Path;

use sql::script::{ScriptSession, SessionFactory, check_script_dir};
use support::Node;

#[test]
fn hermitage_anomalies_over_the_wire() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/isolation");
    // The nine anomalies: G0, G1a, G1b, G1c, OTV, PMP, P4, G-single, G2-item.
    check_script_dir(&dir, 9, || {
        let data = tempfile::tempdir().expect("temporary directory");
        let node = Node::start(data.path());
        Box::new(move || {
            let _keep = &data; // The node's data lives as long as its sessions.
            Box::new(node.connect()) as Box<dyn ScriptSession>
        }) as SessionFactory
    });
}
