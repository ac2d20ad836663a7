//! Regions that merge, on an in-process cluster (see `support/cluster.rs`): by hand through a
//! store, and by the scheduler's merge checker (small neighbours, never across a sticky split
//! key), with writes going on, a replica that is down while the merge is decided, and
//! restarts. Each test checks that every acknowledged write is readable afterwards, that no
//! key is served by two regions (`check_regions`), and that the source's replicas are gone on
//! every store while the target's serve the whole range.

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;
#[path = "support/data.rs"]
mod support_data;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kv::Transaction;
use kv::raftstore::region;
use proto::metapb::Region;
use scheduler::{ClusterApi, MergeConfig};
use support_cluster::{TestCluster, store_config};
use support_data::{assert_holds, read_all, value, write_keys};

fn key(i: usize) -> String {
    format!("key-{i:05}")
}

/// Splits the region holding `key` at `key` through its leader's store (not through the
/// scheduler, so the boundary is not sticky); returns the new region's id.
fn split_by_hand(cluster: &TestCluster, key: &str) -> u64 {
    cluster.wait_for("the split", || {
        let (region, _) = cluster.scheduler.get_region(key.as_bytes()).ok()??;
        if region.start_key == key.as_bytes() {
            return Some(region.id);
        }
        let leader = cluster.leader_store(region.id);
        cluster
            .store(leader)
            .split_region(region.id, key.as_bytes())
            .ok()
    })
}

/// Waits until, on every store in `stores`, the replica of `source` is gone and the replica
/// of `target` covers `merged`'s range.
fn wait_merged_everywhere(cluster: &TestCluster, stores: &[u64], source: u64, merged: &Region) {
    cluster.wait_for("the merge on every store", || {
        for &store in stores {
            let store = cluster.store(store);
            if store.peer(source).is_some() {
                return None;
            }
            let target = store.peer(merged.id)?.region();
            if (&target.start_key, &target.end_key) != (&merged.start_key, &merged.end_key) {
                return None;
            }
        }
        Some(())
    });
}

#[test]
fn two_regions_merge_by_hand_on_every_replica() {
    let cluster = TestCluster::new(3, 3);
    let stores = cluster.store_ids();
    let one = stores[0];
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..60).map(key).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    let middle = split_by_hand(&cluster, &key(20));
    split_by_hand(&cluster, &key(40));
    cluster.wait_for_regions(3);
    // Both leaders on one store, which merges the middle region into the first.
    cluster.transfer_leader(first, one);
    cluster.transfer_leader(middle, one);
    let before = cluster.store(one).peer(middle).unwrap().region();
    let merged = cluster
        .store(one)
        .merge_regions(middle, first, Duration::from_secs(20))
        .unwrap();
    assert_eq!(merged.id, first);
    assert!(merged.start_key.is_empty());
    assert_eq!(merged.end_key, key(40).into_bytes());
    assert!(
        region::epoch(&merged).version > region::epoch(&before).version,
        "the merged region's version passes the source's"
    );
    wait_merged_everywhere(&cluster, &stores, middle, &merged);
    let regions = cluster.wait_for("the scheduler to drop the source", || {
        let regions = cluster.regions();
        (regions.len() == 2).then_some(regions)
    });
    assert_eq!(regions[0].id, first);
    cluster.check_regions();
    // Everything written is there, through a client whose region cache still has the source
    // (its requests are refused by epoch and routed again) and through a fresh one.
    assert_holds(&read_all(&cluster.client), &keys);
    let more: Vec<String> = (20..40).map(|i| format!("{}-more", key(i))).collect();
    write_keys(&cluster.client, &more, 10).unwrap();
    let fresh = cluster.fresh_client();
    assert_holds(&read_all(&fresh), &keys);
    assert_holds(&read_all(&fresh), &more);
}

/// Three replicas of 40 keys split into two regions at `key(20)`, both led from store
/// `leader`, every replica caught up: (the left region, the right one, the keys).
fn two_regions_led_by(cluster: &TestCluster, leader: u64) -> (u64, u64, Vec<String>) {
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..40).map(key).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    let right = split_by_hand(cluster, &key(20));
    cluster.wait_for_regions(2);
    cluster.transfer_leader(first, leader);
    cluster.transfer_leader(right, leader);
    cluster.wait_all_caught_up(&cluster.store_ids());
    (first, right, keys)
}

/// Freezes region `source` for a merge into `target` through their leaders on store
/// `leader` (the PrepareMerge applied there; the target completes the merge).
fn freeze_into(cluster: &TestCluster, leader: u64, source: u64, target: u64) {
    let target = cluster.store(leader).peer(target).unwrap().region();
    cluster
        .store(leader)
        .peer(source)
        .unwrap()
        .prepare_merge(target)
        .unwrap();
}

#[test]
fn a_replica_down_during_the_merge_finishes_it_after_a_restart() {
    let mut cluster = TestCluster::new(3, 3);
    let stores = cluster.store_ids();
    let (one, three) = (stores[0], stores[2]);
    let (first, right, keys) = two_regions_led_by(&cluster, one);
    // The right region freezes; the third store goes down at once (it may or may not have
    // the PrepareMerge), stays down a while, and comes back.
    freeze_into(&cluster, one, right, first);
    cluster.stop(three);
    std::thread::sleep(Duration::from_millis(500));
    cluster.start(three);
    let merged = cluster.wait_for("the merged region", || {
        let region = cluster.store(one).peer(first)?.region();
        region.end_key.is_empty().then_some(region)
    });
    wait_merged_everywhere(&cluster, &stores, right, &merged);
    // A restart of every store finds the merged state.
    for &store in &stores {
        cluster.stop(store);
        cluster.start(store);
    }
    wait_merged_everywhere(&cluster, &stores, right, &merged);
    cluster.wait_for("the scheduler to drop the source", || {
        (cluster.regions().len() == 1).then_some(())
    });
    cluster.check_regions();
    assert_holds(&read_all(&cluster.fresh_client()), &keys);
}

/// The scheduler merges small neighbours back into fewer regions while a client keeps
/// writing, except across a key a split was asked for through it (sticky). With more stores
/// than replicas, neighbours whose replicas are on different stores are aligned first.
fn scheduler_merges(stores: usize, replicas: usize) {
    let cluster = TestCluster::with_scheduler(stores, replicas, store_config(1000), |config| {
        config.merge = MergeConfig {
            max_size: 64 << 10,
            max_keys: 1000,
            max_target_size: 1 << 20,
            split_merge_interval: Duration::ZERO,
            max_merges: 8,
        };
    });
    let first = cluster.region_id();
    cluster.wait_for_voters(first, replicas);
    let keys: Vec<String> = (0..50).map(key).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    // The sticky boundary, then boundaries of the raftstore's own.
    cluster.split_at(key(25).as_bytes());
    for i in [5, 10, 15, 20, 30, 35, 40, 45] {
        split_by_hand(&cluster, &key(i));
    }
    // Writes go on while the regions merge.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, stop) = (cluster.fresh_client(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("{}-later", key(i % 50));
                let mut txn = client.begin_txn().expect("begin");
                txn.put(key.clone().into_bytes(), value(&key));
                if txn.commit().is_ok() {
                    acknowledged.push(key);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            acknowledged
        })
    };
    let regions = cluster.wait_for("the merges", || {
        let regions = cluster.regions();
        (regions.len() == 2).then_some(regions)
    });
    stop.store(true, Ordering::Relaxed);
    let acknowledged = writer.join().expect("writer");
    assert!(!acknowledged.is_empty(), "no write went through");
    assert!(regions[0].start_key.is_empty() && regions[0].end_key == key(25).into_bytes());
    assert!(regions[1].end_key.is_empty());
    cluster.check_regions();
    let found = read_all(&cluster.fresh_client());
    assert_holds(&found, &keys);
    assert_holds(&found, &acknowledged);
}

#[test]
fn the_scheduler_merges_small_regions_of_one_store() {
    scheduler_merges(1, 1);
}

#[test]
fn the_scheduler_merges_small_regions_of_three_stores() {
    scheduler_merges(3, 3);
}

#[test]
fn the_scheduler_aligns_and_merges_small_regions_of_four_stores_with_three_replicas() {
    scheduler_merges(4, 3);
}

/// A replica that misses the end of a merge and the target's log (compacted meanwhile)
/// catches up by a snapshot of the merged region, whose range covers the source replica still
/// running on its store: that replica must end (keeping its data, which the snapshot replaces)
/// before the snapshot applies, or it would live on as a second owner of the range.
#[test]
fn a_replica_that_missed_the_merge_catches_up_by_snapshot_and_its_source_ends() {
    let cluster = TestCluster::with_config(3, 3, store_config(5));
    let stores = cluster.store_ids();
    let (one, three) = (stores[0], stores[2]);
    let (first, right, keys) = two_regions_led_by(&cluster, one);
    // The third store stops hearing the target region (the source's messages still flow):
    // its source replica takes part in the PrepareMerge, its target replica misses the
    // CommitMerge and what follows.
    cluster.network.cut_region(first, three);
    freeze_into(&cluster, one, right, first);
    let merged = cluster.wait_for("the merged region", || {
        let region = cluster.store(one).peer(first)?.region();
        region.end_key.is_empty().then_some(region)
    });
    let merged_at = cluster
        .store(one)
        .peer(first)
        .unwrap()
        .status()
        .unwrap()
        .raft
        .commit;
    // Enough writes to the merged region that its log is compacted past the CommitMerge.
    let later: Vec<String> = (0..40).map(|i| format!("{}-later", key(i))).collect();
    write_keys(&cluster.client, &later, 10).unwrap();
    cluster.wait_for("the target's log compacted", || {
        let status = cluster.store(one).peer(first)?.status()?;
        (status.truncated >= merged_at).then_some(())
    });
    assert!(
        cluster.store(three).peer(right).is_some(),
        "the cut-off store still runs its replica of the source"
    );
    cluster.heal();
    wait_merged_everywhere(&cluster, &stores, right, &merged);
    cluster.wait_caught_up(first, three);
    cluster.check_regions();
    // The third store's replica serves everything: make it the leader and read.
    cluster.transfer_leader(first, three);
    let found = read_all(&cluster.fresh_client());
    assert_holds(&found, &keys);
    assert_holds(&found, &later);
}
