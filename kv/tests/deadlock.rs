//! Deadlocks across the stores of an in-process cluster (see `support/cluster.rs`): lock
//! waits in three regions led by three stores are reported to the one detector (the leader
//! of the region holding the empty key), which finds the cycle they close; also when that
//! leader moves while the transactions wait.

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;

use std::time::{Duration, Instant};

use kv::{KvError, Transaction, TxnClient, TxnOptions};
use support_cluster::{TestCluster, store_config};

/// Three regions `[.., b)`, `[b, c)`, `[c, ..)`, led by three different stores; returns
/// their ids in key order.
fn three_regions_on_three_leaders(cluster: &TestCluster) -> Vec<u64> {
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    cluster.split_at(b"b");
    cluster.split_at(b"c");
    let regions: Vec<u64> = cluster.wait_for_regions(3).iter().map(|r| r.id).collect();
    for (region, store) in regions.iter().zip(cluster.store_ids()) {
        cluster.wait_for_voters(*region, 3);
        cluster.transfer_leader(*region, store);
    }
    regions
}

/// A client that waits for locks long enough for any detection to happen first.
fn patient_client(cluster: &TestCluster) -> TxnClient {
    let options = TxnOptions {
        max_lock_wait: Duration::from_secs(60),
        ..TxnOptions::default()
    };
    cluster.client_with(options)
}

/// Transaction i locks `keys[i]`, then (on its own thread) wants `keys[i + 1]`: a cycle of
/// three waits, in three stores. `between_waits` runs after the first two waits began.
/// Returns each transaction's outcome and how long the cycle took to break.
fn a_cycle_of_three(
    client: &TxnClient,
    keys: [&'static str; 3],
    mut between_waits: impl FnMut(),
) -> (Vec<&'static str>, Duration) {
    let mut txns: Vec<_> = keys
        .iter()
        .map(|key| {
            let mut txn = client.begin_txn().unwrap();
            txn.lock_for_update(&[key.as_bytes().to_vec()]).unwrap();
            txn
        })
        .collect();
    let started = Instant::now();
    let mut waiting = Vec::new();
    for (i, mut txn) in txns.drain(..).enumerate() {
        let (mine, wanted) = (keys[i], keys[(i + 1) % 3]);
        waiting.push(std::thread::spawn(move || {
            match txn.lock_for_update(&[wanted.as_bytes().to_vec()]) {
                Ok(_) => {
                    txn.put(wanted.as_bytes().to_vec(), mine.as_bytes().to_vec());
                    txn.commit().unwrap();
                    "committed"
                }
                Err(KvError::Deadlock { .. }) => {
                    txn.rollback().unwrap();
                    "deadlock"
                }
                Err(e) => panic!("transaction {i}: unexpected error {e}"),
            }
        }));
        if i == 1 {
            // Both waits are under way (and reported: they lasted past DETECT_AFTER).
            std::thread::sleep(Duration::from_millis(800));
            between_waits();
        }
    }
    let mut outcomes: Vec<&str> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    let took = started.elapsed();
    outcomes.sort();
    (outcomes, took)
}

#[test]
fn a_cycle_of_waits_through_three_stores_is_broken_by_refusing_one_transaction() {
    let cluster = TestCluster::with_config(3, 3, store_config(1000));
    three_regions_on_three_leaders(&cluster);
    let client = patient_client(&cluster);
    let (outcomes, took) = a_cycle_of_three(&client, ["a", "b", "c"], || {});
    eprintln!("the cycle was broken after {took:?}");
    assert_eq!(outcomes, ["committed", "committed", "deadlock"]);
}

/// The detector's region changes leader after two of the three waits were reported: the new
/// leader starts from an empty graph, the waiters report again in their next slice of
/// waiting, and the cycle is found all the same.
#[test]
fn a_cycle_is_found_when_the_detector_moves_while_transactions_wait() {
    let cluster = TestCluster::with_config(3, 3, store_config(1000));
    let regions = three_regions_on_three_leaders(&cluster);
    let client = patient_client(&cluster);
    let detector_region = regions[0];
    let (outcomes, took) = a_cycle_of_three(&client, ["a", "b", "c"], || {
        let leader = cluster.leader_store(detector_region);
        let other = cluster
            .store_ids()
            .into_iter()
            .find(|&s| s != leader)
            .expect("another store");
        cluster.transfer_leader(detector_region, other);
    });
    eprintln!("the cycle was broken after {took:?}");
    assert_eq!(outcomes, ["committed", "committed", "deadlock"]);
}
