//! `regiondb scheduler` as a real process: timestamps and IDs over gRPC, increasing across a
//! restart.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use scheduler::{SchedulerClient, TimestampSource};

/// Starts a scheduler on an ephemeral port; returns the process and its endpoint.
fn start(data_dir: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_regiondb"))
        .args(["scheduler", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("start the scheduler");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("the scheduler exited early")
            .expect("read stdout");
        if let Some(address) = line.strip_prefix("RegionDB scheduler is ready on ") {
            break address.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{address}"))
}

fn terminate(mut child: std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        child.wait().unwrap().success(),
        "the scheduler stops cleanly on SIGTERM"
    );
}

#[test]
fn timestamps_and_ids_keep_increasing_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let (child, endpoint) = start(dir.path());
    let client = SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap();
    let before = (0..100)
        .map(|_| client.get_timestamp().unwrap())
        .max()
        .unwrap();
    let id_before = runtime.block_on(client.alloc_ids(5)).unwrap();
    terminate(child);

    let (mut child, endpoint) = start(dir.path());
    let client = SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap();
    let after = client.get_timestamp().unwrap();
    assert!(after > before, "{after} after {before}");
    assert!(runtime.block_on(client.alloc_ids(1)).unwrap() >= id_before + 5);
    child.kill().unwrap();
    child.wait().unwrap();
}
