//! Isolation anomalies of the Hermitage catalogue, driven over the PostgreSQL wire protocol
//! with two or three concurrent sessions, each `isolation/<mode>/*.test` file (format:
//! `sql::script`) on a fresh database:
//!
//! - `read_committed/` and `repeatable_read/` against the real `regiondb` binary in its
//!   default (pessimistic) mode, and the very same files against PostgreSQL on this machine:
//!   the outcomes (anomaly allowed or prevented, which session waits, which errors) match
//!   case by case;
//! - `optimistic/` against a node started with `--txn-mode optimistic` (snapshot isolation,
//!   first committer wins).

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sql::script::{ScriptSession, SessionFactory, check_script_dir};
use support::{Postgres, fresh_node_per_script};

fn dir(mode: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/isolation")
        .join(mode)
}

#[test]
fn hermitage_optimistic_mode_over_the_wire() {
    // The nine anomalies: G0, G1a, G1b, G1c, OTV, PMP, P4, G-single, G2-item.
    check_script_dir(
        &dir("optimistic"),
        9,
        fresh_node_per_script(&["--txn-mode", "optimistic"]),
    );
}

#[test]
fn hermitage_read_committed_over_the_wire() {
    check_script_dir(&dir("read_committed"), 12, fresh_node_per_script(&[]));
}

#[test]
fn hermitage_repeatable_read_over_the_wire() {
    check_script_dir(&dir("repeatable_read"), 12, fresh_node_per_script(&[]));
}

/// The scripts RegionDB passes state what PostgreSQL does: they pass against it too.
#[test]
fn hermitage_scripts_state_what_postgresql_does() {
    let postgres = Arc::new(Postgres::start());
    let databases = Arc::new(AtomicUsize::new(0));
    for mode in ["read_committed", "repeatable_read"] {
        let (postgres, databases) = (Arc::clone(&postgres), Arc::clone(&databases));
        check_script_dir(&dir(mode), 12, move || {
            let name = format!("script_{}", databases.fetch_add(1, Ordering::SeqCst));
            postgres.create_database(&name);
            let postgres = Arc::clone(&postgres);
            Box::new(move || Box::new(postgres.connect_to(&name)) as Box<dyn ScriptSession>)
                as SessionFactory
        });
    }
}
