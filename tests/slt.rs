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

use sql::script::ScriptSession;
use support::{Node, Postgres};

fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/slt")
        .join(name)
}

type Connect = Box<dyn FnMut() -> Box<dyn ScriptSession> + Send>;

#[test]
fn own_files_in_process() {
    slt::check_slt_dir(&dir("own"), 3, "regiondb", || {
        let db = sql::Database::in_memory();
        Box::new(move || Box::new(db.session()) as Box<dyn ScriptSession>) as Connect
    });
}

#[test]
fn own_files_over_the_wire() {
    slt::check_slt_dir(&dir("own"), 3, "regiondb", || {
        let data = tempfile::tempdir().expect("temporary directory");
        let node = Node::start(data.path());
        Box::new(move || {
            let _keep = &data; // The node's data lives as long as its connections.
            Box::new(node.connect()) as Box<dyn ScriptSession>
        }) as Connect
    });
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
        Box::new(move || Box::new(postgres.connect_to(&name)) as Box<dyn ScriptSession>) as Connect
    });
}
