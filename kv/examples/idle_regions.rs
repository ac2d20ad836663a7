//! Benchmark (not a test): what idle regions cost a store.
//!
//! Starts one store (RocksDB in a temporary directory, an in-process scheduler, one replica
//! per region), splits its keyspace into N regions, lets it sit idle, and reports the CPU the
//! process used while idle (as a share of one core), its resident memory and its thread count,
//! once (nearly) every region hibernates.
//! Then grows to the next N and measures again.
//!
//! ```sh
//! source scripts/env.sh
//! cargo run --release -p kv --example idle_regions             # 1,000 then 10,000 regions
//! cargo run --release -p kv --example idle_regions -- 100 1000 # other counts
//! ```
//!
//! Linux only (it reads `/proc/self`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::raftstore::store::ensure_store_id;
use kv::raftstore::{RaftEnvelope, Store, StoreConfig, Transport};
use kv::storage::RocksEngine;
use proto::metapb::Store as StoreMeta;
use scheduler::{Cluster, ClusterApi, ClusterConfig, IdAllocator, LocalCluster};

/// One store alone: nobody to send raft messages to.
struct NoOtherStores;

impl Transport for NoOtherStores {
    fn send(&self, _envelope: RaftEnvelope) {}
}

/// CPU time of this process so far (user + system), from /proc/self/stat.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 =
        fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A line of /proc/self/status, e.g. `VmRSS` (kB) or `Threads`.
fn status(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn key(i: usize) -> Vec<u8> {
    format!("k{i:08}").into_bytes()
}

fn main() {
    let counts: Vec<usize> = {
        let args: Vec<usize> = std::env::args()
            .skip(1)
            .filter_map(|a| a.parse().ok())
            .collect();
        if args.is_empty() {
            vec![1_000, 10_000]
        } else {
            args
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = Arc::new(RocksEngine::open(dir.path()).expect("open engine"));
    let cluster: Arc<dyn ClusterApi> = Arc::new(LocalCluster::new(
        Arc::new(Cluster::in_memory(ClusterConfig {
            max_replicas: 1,
            ..ClusterConfig::default()
        })),
        Arc::new(IdAllocator::in_memory()),
    ));
    let store_id = ensure_store_id(engine.as_ref(), cluster.as_ref()).expect("store id");
    let meta = StoreMeta {
        id: store_id,
        address: "in-process".into(),
        pg_address: String::new(),
    };
    let store = Store::start(
        engine,
        meta,
        Arc::clone(&cluster),
        Arc::new(NoOtherStores),
        StoreConfig::default(),
    )
    .expect("start the store");

    println!("regions | idle CPU (% of one core) | RSS (MiB) | threads");
    let mut regions = 1;
    // The region holding the end of the keyspace: the one split next.
    let mut last = loop {
        if let Ok(Some((region, _))) = cluster.get_region(b"") {
            break region.id;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for &count in &counts {
        let started = Instant::now();
        // Split the last region again and again: region i starts at key(i).
        while regions < count {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match store.split_region(last, &key(regions)) {
                    Ok(new_region) => {
                        last = new_region;
                        break;
                    }
                    // The newest region's replica may still be electing itself.
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("split at region {regions}: {e}"),
                }
            }
            regions += 1;
        }
        eprintln!("{count} regions made in {:?}", started.elapsed());
        // Let elections, heartbeats and split checks settle (quiet regions hibernate after
        // a few seconds), then measure idling.
        let settled = Instant::now();
        let hibernating = || {
            store
                .region_ids()
                .into_iter()
                .filter(|&id| store.peer(id).is_some_and(|p| p.is_hibernating()))
                .count()
        };
        std::thread::sleep(Duration::from_secs(5));
        while hibernating() < count * 99 / 100 && settled.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!(
            "{} of {count} regions hibernating after {:?}",
            hibernating(),
            settled.elapsed()
        );
        let (cpu_before, wall_before) = (cpu_time(), Instant::now());
        std::thread::sleep(Duration::from_secs(10));
        let cpu = cpu_time() - cpu_before;
        let wall = wall_before.elapsed();
        println!(
            "{count:7} | {:24.1} | {:9.1} | {}",
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            status("VmRSS:") as f64 / 1024.0,
            status("Threads:"),
        );
    }
    store.stop();
}
