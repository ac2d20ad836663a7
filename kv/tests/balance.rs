//! Balancing on an in-process cluster (see `support/cluster.rs`): leaders spread over the
//! stores, and a store that joins receives replicas until the stores hold about the same
//! amount of data — with every write readable throughout and afterwards.

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;
#[path = "support/data.rs"]
mod support_data;

use std::collections::BTreeMap;

use kv::{Transaction, TxnClient};
use scheduler_api::ClusterApi;
use support_cluster::{TestCluster, split_config};
use support_data::{value, write_keys};

fn assert_readable(client: &TxnClient, keys: &[String]) {
    let mut txn = client.begin_txn().unwrap();
    let found: BTreeMap<Vec<u8>, Vec<u8>> = txn
        .scan(b"", None, usize::MAX)
        .unwrap()
        .into_iter()
        .collect();
    for key in keys {
        assert_eq!(found.get(key.as_bytes()), Some(&value(key)), "{key}");
    }
}

/// Per store: (bytes of the regions with a replica there, leaders there), from the scheduler.
fn store_loads(cluster: &TestCluster) -> BTreeMap<u64, (u64, u64)> {
    let mut loads: BTreeMap<u64, (u64, u64)> = cluster
        .store_ids()
        .into_iter()
        .map(|s| (s, (0, 0)))
        .collect();
    for info in cluster.scheduler.scan_regions(b"", b"", 0).unwrap() {
        let region = info.region.unwrap();
        for peer in &region.peers {
            loads.entry(peer.store_id).or_default().0 += info.approximate_size.max(1);
        }
        if let Some(leader) = info.leader {
            loads.entry(leader.store_id).or_default().1 += 1;
        }
    }
    loads
}

#[test]
fn leaders_spread_and_a_new_store_receives_regions_until_balanced() {
    let mut cluster = TestCluster::with_config(3, 3, split_config(1000, 4 << 10, 6 << 10));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..400).map(|i| format!("key-{i:05}")).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    let regions = cluster.wait_for_regions(8).len();
    // Splits happen on the leader's store, so at first it leads every region; the scheduler
    // spreads the leaders.
    cluster.wait_for("leaders spread over the stores", || {
        let leaders: Vec<u64> = store_loads(&cluster).values().map(|l| l.1).collect();
        let (min, max) = (*leaders.iter().min()?, *leaders.iter().max()?);
        (min > 0 && max <= 2 * min).then_some(())
    });
    // A fourth store joins: replicas move to it until the sizes are balanced.
    let newcomer = cluster.add_store();
    let largest_region = || {
        cluster
            .scheduler
            .scan_regions(b"", b"", 0)
            .unwrap()
            .iter()
            .map(|i| i.approximate_size.max(1))
            .max()
            .unwrap_or(1)
    };
    cluster.wait_for("the new store to get its share", || {
        let loads = store_loads(&cluster);
        let sizes: Vec<u64> = loads.values().map(|l| l.0).collect();
        let (min, max) = (*sizes.iter().min()?, *sizes.iter().max()?);
        (loads.get(&newcomer)?.0 > 0 && max - min <= 2 * largest_region()).then_some(())
    });
    // Every region still has three voters, the data is intact, and the new store serves.
    cluster.wait_for("every region at three voters", || {
        cluster
            .regions()
            .iter()
            .all(|r| r.peers.len() == 3 && r.peers.iter().all(|p| !p.learner))
            .then_some(())
    });
    assert!(cluster.regions().len() >= regions);
    assert_readable(&cluster.client, &keys);
    cluster.wait_all_caught_up(&[]);
    cluster.check_regions();
}

#[test]
fn a_removed_store_is_drained_and_the_others_keep_everything() {
    let cluster = TestCluster::with_config(4, 3, split_config(1000, 4 << 10, 6 << 10));
    let first = cluster.region_id();
    cluster.wait_for_voters(first, 3);
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i:05}")).collect();
    write_keys(&cluster.client, &keys, 10).unwrap();
    cluster.wait_for_regions(5);
    // Drain the store holding the most replicas (with 4 stores and 3 replicas, some).
    let victim = *store_loads(&cluster)
        .iter()
        .max_by_key(|(_, load)| load.0)
        .map(|(store, _)| store)
        .unwrap();
    let left = cluster.scheduler.remove_store(victim).unwrap();
    assert!(left > 0, "store {victim} held no region");
    cluster.wait_for("the store to be drained", || {
        (cluster.scheduler.remove_store(victim).ok()? == 0).then_some(())
    });
    // Nothing is placed there again, every region has three voters elsewhere, and the store's
    // own replicas are gone.
    cluster.wait_for("every region at three voters", || {
        cluster
            .regions()
            .iter()
            .all(|r| {
                r.peers.len() == 3 && r.peers.iter().all(|p| !p.learner && p.store_id != victim)
            })
            .then_some(())
    });
    cluster.wait_for("the drained store's replicas to be destroyed", || {
        cluster.store(victim).region_ids().is_empty().then_some(())
    });
    assert_readable(&cluster.client, &keys);
}
