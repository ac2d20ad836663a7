//! Regions that split, on an in-process cluster (see `support/cluster.rs`) with tiny split
//! sizes: splits as data grows and on demand, with a partitioned store, concurrent clients,
//! restarts, message loss and membership changes. Each test checks that every acknowledged
//! write is readable afterwards and that no key is served by two regions (`check_regions`).

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;
#[path = "support/data.rs"]
mod support_data;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kv::Transaction;
use scheduler_api::ClusterApi;
use support_cluster::{TestCluster, seeded_choices, split_config};
use support_data::{assert_holds, read_all, write_keys};

/// Split sizes for the tests: a region past 6 KiB splits into parts of about 4 KiB (some 25
/// rows of the values written here).
const SPLIT_SIZE: u64 = 4 << 10;
const MAX_SIZE: u64 = 6 << 10;

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

/// Region start keys are keys that were written (a split is at a user key, never inside one).
fn assert_split_at_user_keys(cluster: &TestCluster, written: &[String]) {
    for region in cluster.regions() {
        if !region.start_key.is_empty() {
            let start = String::from_utf8(region.start_key.clone()).expect("a written key");
            assert!(written.contains(&start), "region starts at {start:?}");
        }
    }
}

#[test]
fn regions_split_as_they_grow_and_every_write_stays_readable() {
    let cluster = TestCluster::with_config(3, 3, split_config(1000, SPLIT_SIZE, MAX_SIZE));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..400).map(key).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    let regions = cluster.wait_for_regions(5);
    // Every region is replicated like its parent.
    for region in &regions {
        assert_eq!(region.peers.len(), 3, "region {}", region.id);
    }
    let found = read_all(&cluster.client);
    assert_eq!(found.len(), keys.len());
    assert_holds(&found, &keys);
    // A fresh client (empty region cache) reads through the new regions too.
    let fresh = cluster.fresh_client();
    assert_holds(&read_all(&fresh), &keys);
    assert_split_at_user_keys(&cluster, &keys);
    cluster.wait_all_caught_up(&cluster.store_ids());
    cluster.check_regions();
    // Leaders report their regions' sizes.
    cluster.wait_for("region sizes", || {
        let infos = cluster.scheduler.scan_regions(b"", b"", 0).ok()?;
        infos
            .iter()
            .all(|info| info.approximate_keys > 0 && info.approximate_size > 0)
            .then_some(())
    });
}

#[test]
fn a_split_asked_for_happens_at_that_key_and_transactions_span_both_halves() {
    let cluster = TestCluster::with_config(3, 3, split_config(1000, 1 << 20, 2 << 20));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..40).map(key).collect();
    write_keys(&cluster.client, &keys, 40).unwrap();
    let right = cluster.split_at(key(20).as_bytes());
    assert_eq!(right.end_key, b"");
    let left = cluster
        .regions()
        .into_iter()
        .find(|r| r.end_key == key(20).as_bytes())
        .expect("the left half");
    assert_eq!(left.id, first, "the left half keeps the region's id");
    assert_ne!(right.id, first);
    // One transaction over both halves commits atomically.
    let both = vec![key(5), key(35)];
    let mut txn = cluster.client.begin_txn().unwrap();
    for k in &both {
        txn.put(k.as_bytes().to_vec(), b"both".to_vec());
    }
    txn.commit().unwrap();
    let found = read_all(&cluster.client);
    assert_eq!(found[&key(5)], b"both");
    assert_eq!(found[&key(35)], b"both");
    assert_holds(&found, &[key(0), key(19), key(20), key(39)]);
    // A batch read over both halves (one request per region), with a key written by the
    // transaction itself and one that does not exist, answers in the order asked.
    let mut txn = cluster.client.begin_txn().unwrap();
    txn.put(key(36).into_bytes(), b"mine".to_vec());
    let asked: Vec<Vec<u8>> = [key(35), "missing".into(), key(36), key(5), key(19)]
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let values = txn.batch_get(&asked).unwrap();
    assert_eq!(values[0].as_deref(), Some(b"both".as_slice()));
    assert_eq!(values[1], None);
    assert_eq!(values[2].as_deref(), Some(b"mine".as_slice()));
    assert_eq!(values[3].as_deref(), Some(b"both".as_slice()));
    assert!(values[4].is_some());
    txn.rollback().unwrap();
    // Asking again for a split where a region already starts changes nothing.
    let before = cluster.regions().len();
    cluster.split_at(key(20).as_bytes());
    assert_eq!(cluster.regions().len(), before);
    cluster.check_regions();
}

/// A commit whose prewrite locks the keys of one region and meets a write conflict in
/// another takes the first region's locks back: nobody has to wait for them to expire.
#[test]
fn a_prewrite_failing_in_one_region_leaves_no_lock_in_the_other() {
    let cluster = TestCluster::with_config(3, 3, split_config(1000, 1 << 20, 2 << 20));
    cluster.wait_for_voters(cluster.region_id(), 3);
    cluster.split_at(key(20).as_bytes());
    let (left, right) = (key(5).into_bytes(), key(35).into_bytes());
    let mut loser = cluster.client.begin_txn().unwrap();
    let mut winner = cluster.client.begin_txn().unwrap();
    winner.put(right.clone(), b"winner".to_vec());
    winner.commit().unwrap();
    loser.put(left.clone(), b"loser".to_vec());
    loser.put(right.clone(), b"loser".to_vec());
    assert!(
        matches!(loser.commit(), Err(kv::KvError::WriteConflict { .. })),
        "the second writer of the right key conflicts"
    );
    // A reader that would rather fail than wait for a live lock reads both keys at once.
    let impatient = cluster.client_with(kv::TxnOptions {
        max_lock_wait: Duration::ZERO,
        ..kv::TxnOptions::default()
    });
    let mut reader = impatient.begin_txn().unwrap();
    assert_eq!(reader.get(&left).unwrap(), None);
    assert_eq!(reader.get(&right).unwrap(), Some(b"winner".to_vec()));
}

#[test]
fn a_partitioned_store_catches_up_on_splits_after_healing() {
    // A short log: the partitioned store's parent region is compacted past what it has, so
    // it catches up by snapshot, and learns of the new regions from their leaders.
    let mut cluster = TestCluster::with_config(3, 3, split_config(20, SPLIT_SIZE, MAX_SIZE));
    let first = cluster.region_id();
    let region = cluster.wait_for_voters(first, 3);
    let lagging = cluster.follower(&region).store_id;
    cluster.isolate(lagging);
    let keys: Vec<String> = (0..300).map(key).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    cluster.wait_for_regions(4);
    cluster.heal();
    let stores = cluster.store_ids();
    cluster.wait_all_caught_up(&stores);
    cluster.check_regions();
    // The lagging store now holds every region: with another store down, the cluster still
    // serves every key.
    let other = *stores.iter().find(|&&s| s != lagging).unwrap();
    cluster.stop(other);
    assert_holds(&read_all(&cluster.client), &keys);
}

#[test]
fn splits_under_concurrent_clients_restarts_and_message_loss_lose_nothing() {
    let mut cluster = TestCluster::with_config(3, 3, split_config(100, SPLIT_SIZE, MAX_SIZE));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let mut next = seeded_choices(11);
    let stores = cluster.store_ids();
    let writers = 4;
    let deadline = Instant::now() + Duration::from_secs(8);
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let client = cluster.client.clone();
            std::thread::spawn(move || {
                let (mut acked, mut tried) = (Vec::new(), Vec::new());
                let mut i = 0;
                while Instant::now() < deadline {
                    let batch: Vec<String> = (i..i + 3).map(|j| format!("w{w}-{j:05}")).collect();
                    i += 3;
                    tried.extend(batch.iter().cloned());
                    if write_keys(&client, &batch, 3).is_ok() {
                        acked.extend(batch);
                    }
                }
                (acked, tried)
            })
        })
        .collect();
    // Faults while they write: restarts and a lossy network.
    while Instant::now() + Duration::from_millis(1500) < deadline {
        std::thread::sleep(Duration::from_millis(700));
        match next(2) {
            0 => {
                let victim = stores[next(3) as usize];
                cluster.stop(victim);
                std::thread::sleep(Duration::from_millis(300));
                cluster.start(victim);
            }
            _ => {
                cluster.network.drop_percent(10, next(u64::MAX));
                std::thread::sleep(Duration::from_millis(500));
                cluster.heal();
            }
        }
    }
    let mut acked = Vec::new();
    let mut tried = Vec::new();
    for thread in threads {
        let (a, t) = thread.join().expect("writer");
        acked.extend(a);
        tried.extend(t);
    }
    cluster.heal();
    assert!(
        acked.len() > 100,
        "only {} writes were acknowledged",
        acked.len()
    );
    cluster.wait_for_regions(3);
    let found = {
        let mut txn = cluster.client.begin_txn().expect("begin");
        match txn.scan(b"", None, usize::MAX) {
            Ok(pairs) => pairs
                .into_iter()
                .map(|(k, v)| (String::from_utf8(k).expect("utf-8"), v))
                .collect::<BTreeMap<_, _>>(),
            // A failed read names a key (e.g. a lock that cannot be resolved): show what every
            // store holds for it, and which of its replicas covers it, before failing.
            Err(e) => {
                let text = e.to_string();
                let inner = text
                    .split('[')
                    .nth(1)
                    .and_then(|t| t.split(']').next())
                    .unwrap_or("");
                let key: Vec<u8> = inner.split(", ").filter_map(|n| n.parse().ok()).collect();
                eprintln!("failing key {:?}", String::from_utf8_lossy(&key));
                dump_key(&cluster, &key);
                panic!("{text}");
            }
        }
    };
    assert_holds(&found, &acked);
    for key in found.keys() {
        assert!(tried.contains(key), "{key} was never written");
    }
    cluster.wait_all_caught_up(&stores);
    cluster.check_regions();
}

#[test]
fn splits_during_membership_changes_end_with_every_region_on_every_store() {
    // One store holds everything and splits; two more join while it goes on splitting, and
    // the scheduler replicates every region (old and new) to them.
    let mut cluster = TestCluster::with_config(1, 3, split_config(1000, SPLIT_SIZE, MAX_SIZE));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 1);
    let keys: Vec<String> = (0..200).map(key).collect();
    write_keys(&cluster.client, &keys[..100], 10).unwrap();
    cluster.wait_for_regions(2);
    let origin = cluster.store_ids()[0];
    cluster.add_store();
    cluster.add_store();
    write_keys(&cluster.client, &keys[100..], 10).unwrap();
    cluster.wait_for("every region on three stores", || {
        let regions = cluster.regions();
        regions
            .iter()
            .all(|r| r.peers.len() == 3 && r.peers.iter().all(|p| !p.learner))
            .then_some(())
    });
    let stores = cluster.store_ids();
    cluster.wait_all_caught_up(&stores);
    cluster.check_regions();
    // The new stores alone (a majority) serve everything.
    cluster.stop(origin);
    assert_holds(&read_all(&cluster.client), &keys);
}

/// Prints every store's MVCC records of `key` (lock, write and default families, newest
/// first) and the replica of each store whose range holds it.
fn dump_key(cluster: &TestCluster, key: &[u8]) {
    use kv::storage::{Cf, Engine, Snapshot};
    for id in cluster.store_ids() {
        let store = cluster.store(id);
        let snapshot = store.engine().snapshot();
        let prefix = kv::mvcc::key::encode_user_key(key);
        for cf in [Cf::Lock, Cf::Write, Cf::Default] {
            for item in snapshot.scan(cf, &prefix, None).take(4) {
                let (k, v) = item.unwrap();
                if !k.starts_with(&prefix) {
                    break;
                }
                eprintln!(
                    "store {id} {cf:?} {:?} -> {} bytes {:?}",
                    &k[prefix.len()..],
                    v.len(),
                    &v[..v.len().min(12)]
                );
            }
        }
        for region_id in store.region_ids() {
            if let Some(status) = store.peer(region_id).and_then(|p| p.status()) {
                let r = &status.region;
                let inside = key >= r.start_key.as_slice()
                    && (r.end_key.is_empty() || key < r.end_key.as_slice());
                if inside {
                    eprintln!(
                        "store {id}: region {} {:?} applied {} role {:?} epoch {:?}",
                        r.id,
                        (
                            String::from_utf8_lossy(&r.start_key),
                            String::from_utf8_lossy(&r.end_key)
                        ),
                        status.raft.applied,
                        status.raft.role,
                        r.epoch
                    );
                }
            }
        }
    }
}
