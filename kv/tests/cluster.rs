//! Replicated regions on an in-process cluster (see `support/cluster.rs`): stores on RocksDB
//! engines, a scheduler that brings the region to its replica count, a network with filters,
//! and a routed transaction client. Each test checks what clients were told against what the
//! cluster holds.

#![cfg(feature = "rocksdb")]

#[path = "support/cluster.rs"]
mod support_cluster;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kv::raftstore::region::ChangePeer;
use kv::{KvError, KvResult, Transaction, TxnClient};
use support_cluster::{TestCluster, seeded_choices, store_config};

fn put(client: &TxnClient, key: &str, value: &str) -> KvResult<()> {
    let mut txn = client.begin_txn()?;
    txn.put(key.as_bytes().to_vec(), value.as_bytes().to_vec());
    txn.commit()
}

fn get(client: &TxnClient, key: &str) -> KvResult<Option<String>> {
    let mut txn = client.begin_txn()?;
    Ok(txn
        .get(key.as_bytes())?
        .map(|v| String::from_utf8(v).expect("utf-8")))
}

fn delete(client: &TxnClient, key: &str) -> KvResult<()> {
    let mut txn = client.begin_txn()?;
    txn.delete(key.as_bytes().to_vec());
    txn.commit()
}

/// Appends `n` to the comma-separated list under `key` (read-modify-write).
fn append(client: &TxnClient, key: &str, n: u64) -> KvResult<()> {
    let mut txn = client.begin_txn()?;
    let old = txn
        .get(key.as_bytes())?
        .map(|v| String::from_utf8(v).expect("utf-8"))
        .unwrap_or_default();
    let new = if old.is_empty() {
        n.to_string()
    } else {
        format!("{old},{n}")
    };
    txn.put(key.as_bytes().to_vec(), new.into_bytes());
    txn.commit()
}

fn list(client: &TxnClient, key: &str) -> Vec<u64> {
    match get(client, key).expect("read the list") {
        Some(v) if !v.is_empty() => v.split(',').map(|n| n.parse().expect("number")).collect(),
        _ => Vec::new(),
    }
}

/// Concurrent clients each append 0, 1, 2, … to their own list for `duration`, continuing
/// from what the list holds (a write whose outcome was unknown may or may not be in).
/// Afterwards every list is 0..n in order, once each, holding every acknowledged number.
fn run_appenders(cluster: &TestCluster, clients: usize, duration: Duration, round: usize) {
    let deadline = std::time::Instant::now() + duration;
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let client = cluster.client.clone();
            std::thread::spawn(move || {
                let key = format!("list-{c}");
                let mut acked = Vec::new();
                while std::time::Instant::now() < deadline {
                    let next = match get(&client, &key) {
                        Ok(Some(v)) => v.split(',').count() as u64,
                        Ok(None) => 0,
                        Err(_) => continue,
                    };
                    if append(&client, &key, next).is_ok() {
                        acked.push(next);
                    }
                }
                (key, acked)
            })
        })
        .collect();
    for thread in threads {
        let (key, acked) = thread.join().expect("client thread");
        let found = list(&cluster.client, &key);
        let expected: Vec<u64> = (0..found.len() as u64).collect();
        assert_eq!(found, expected, "round {round}: {key} is not 0..n in order");
        for n in &acked {
            assert!(
                found.contains(n),
                "round {round}: {key} lost acknowledged {n}"
            );
        }
    }
}

#[test]
fn a_region_is_replicated_to_three_stores_and_serves_reads_and_writes() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    let stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
    assert_eq!(stores.len(), 3);
    put(&cluster.client, "a", "1").unwrap();
    put(&cluster.client, "b", "2").unwrap();
    assert_eq!(get(&cluster.client, "a").unwrap().as_deref(), Some("1"));
    delete(&cluster.client, "a").unwrap();
    assert_eq!(get(&cluster.client, "a").unwrap(), None);
    // Every replica applied the same log.
    cluster.wait_for("every replica to apply", || {
        let statuses = cluster.statuses(region_id);
        let applied: Vec<u64> = statuses.values().map(|s| s.raft.applied).collect();
        (applied.len() == 3 && applied.iter().all(|&a| a == applied[0])).then_some(())
    });
}

#[test]
fn concurrent_clients_on_an_unreliable_network_lose_nothing() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    cluster.network.drop_percent(10, 42);
    run_appenders(&cluster, 4, Duration::from_secs(3), 0);
    cluster.heal();
    run_appenders(&cluster, 2, Duration::from_millis(500), 1);
}

#[test]
fn a_minority_leader_never_acknowledges_and_catches_up_after_healing() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "before", "1").unwrap();
    let old_leader = cluster.leader_store(region_id);
    cluster.isolate(old_leader);
    // The old leader alone cannot commit: a write proposed on it directly fails.
    let handle = cluster.store(old_leader).peer(region_id).unwrap();
    let mut batch = kv::storage::WriteBatch::new();
    batch.put(
        kv::storage::Cf::Default,
        b"zz-minority".to_vec(),
        b"x".to_vec(),
    );
    let result = kv::txn::Replication::write(&handle, batch, kv::txn::ReadFence::default());
    assert!(result.is_err(), "a minority leader acknowledged a write");
    // Nor does it serve a read: it cannot confirm its leadership with a majority.
    let read = kv::txn::Replication::read_barrier(&handle);
    assert!(read.is_err(), "a minority leader confirmed a read");
    // The majority elects a new leader and goes on.
    put(&cluster.client, "during", "2").unwrap();
    let new_leader = cluster.leader_store(region_id);
    assert_ne!(new_leader, old_leader);
    assert_eq!(
        get(&cluster.client, "before").unwrap().as_deref(),
        Some("1")
    );
    cluster.heal();
    // The old leader steps down and catches up.
    cluster.wait_for("the old leader to catch up", || {
        let statuses = cluster.statuses(region_id);
        let leader_applied = statuses.get(&new_leader)?.raft.applied;
        let old = statuses.get(&old_leader)?;
        (old.raft.role == raft::Role::Follower && old.raft.applied >= leader_applied).then_some(())
    });
    // Its engine never held the write it could not commit.
    let engine = cluster.store(old_leader).engine();
    let snapshot = kv::storage::Engine::snapshot(engine.as_ref());
    let minority = kv::storage::Snapshot::get(&snapshot, kv::storage::Cf::Default, b"zz-minority");
    assert_eq!(minority.unwrap(), None);
}

#[test]
fn random_partitions_and_restarts_keep_every_acknowledged_write() {
    let mut cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    let stores = cluster.store_ids();
    let mut next = seeded_choices(7);
    for round in 0..4 {
        match next(3) {
            0 => {
                let victim = stores[next(3) as usize];
                cluster.isolate(victim);
            }
            1 => {
                let lonely = stores[next(3) as usize];
                let others: Vec<u64> = stores.iter().copied().filter(|&s| s != lonely).collect();
                cluster.network.partition(&[&[lonely], &others]);
            }
            _ => cluster.network.drop_percent(20, next(u64::MAX)),
        }
        run_appenders(&cluster, 3, Duration::from_millis(1500), round as usize);
        cluster.heal();
        // Between rounds, every store restarts.
        for &id in &stores {
            cluster.stop(id);
        }
        for &id in &stores {
            cluster.start(id);
        }
        run_appenders(
            &cluster,
            2,
            Duration::from_millis(300),
            round as usize + 100,
        );
    }
}

#[test]
fn log_gc_bounds_the_log_and_a_lagging_store_catches_up_by_snapshot_with_deletes() {
    let limit = 20;
    let cluster = TestCluster::with_config(3, 3, store_config(limit));
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    for i in 0..10 {
        put(&cluster.client, &format!("k{i:03}"), "old").unwrap();
    }
    let leader = cluster.leader_store(region_id);
    let lagging = *cluster.store_ids().iter().find(|&&s| s != leader).unwrap();
    cluster.isolate(lagging);
    // Enough writes for the others to compact past what the isolated store has, including
    // deletes of keys it holds.
    for i in 0..5 {
        delete(&cluster.client, &format!("k{i:03}")).unwrap();
    }
    for i in 10..60 {
        put(&cluster.client, &format!("k{i:03}"), "new").unwrap();
    }
    for (store, status) in cluster.statuses(region_id) {
        if store != lagging {
            let kept = status.raft.applied - status.truncated;
            assert!(
                kept <= 2 * limit,
                "store {store} keeps {kept} applied entries"
            );
        }
    }
    cluster.heal();
    let applied = |store: u64| {
        cluster
            .statuses(region_id)
            .get(&store)
            .map(|s| s.raft.applied)
    };
    cluster.wait_for("the lagging store to catch up", || {
        let leader_applied = applied(cluster.leader_store(region_id))?;
        (applied(lagging)? >= leader_applied).then_some(())
    });
    // Its data is exactly the leader's: deleted keys are gone there too.
    let dump = |store: u64| -> BTreeMap<Vec<u8>, Vec<u8>> {
        let engine = cluster.store(store).engine();
        let snapshot = kv::storage::Engine::snapshot(engine.as_ref());
        [
            kv::storage::Cf::Default,
            kv::storage::Cf::Write,
            kv::storage::Cf::Lock,
        ]
        .into_iter()
        .flat_map(|cf| {
            kv::storage::Snapshot::scan(&snapshot, cf, b"", None)
                .map(|item| item.unwrap())
                .map(move |(k, v)| ([vec![cf as u8], k].concat(), v))
                .collect::<Vec<_>>()
        })
        .collect()
    };
    let leader = cluster.leader_store(region_id);
    cluster.wait_for("identical data", || {
        (dump(lagging) == dump(leader)).then_some(())
    });
    for i in 0..5 {
        assert_eq!(get(&cluster.client, &format!("k{i:03}")).unwrap(), None);
    }
}

#[test]
fn membership_changes_remove_the_leader_and_add_a_store_back() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "x", "1").unwrap();
    // Removing the leader: it hands over first, then the new leader removes it.
    let leader = cluster.leader_store(region_id);
    let peer = TestCluster::peer_on(&region, leader).unwrap();
    cluster.change_peer(region_id, ChangePeer::Remove(peer));
    assert_ne!(cluster.leader_store(region_id), leader);
    put(&cluster.client, "y", "2").unwrap();
    // The removed replica destroyed itself (a new one may already be in its place)...
    cluster.wait_for("the removed replica to go", || {
        let current = cluster.store(leader).peer(region_id);
        current
            .is_none_or(|p| p.peer_id() != peer.id || p.status().is_none())
            .then_some(())
    });
    // ...and the scheduler's replica checker adds the store back (a new peer, by snapshot).
    let region = cluster.wait_for_voters(region_id, 3);
    let back = TestCluster::peer_on(&region, leader).expect("store added back");
    assert_ne!(back.id, peer.id);
    cluster.wait_caught_up(region_id, leader);
    assert_eq!(get(&cluster.client, "x").unwrap().as_deref(), Some("1"));
    assert_eq!(get(&cluster.client, "y").unwrap().as_deref(), Some("2"));
}

#[test]
fn a_two_replica_region_loses_its_leader_by_removal_and_goes_on() {
    let cluster = TestCluster::new(2, 2);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 2);
    put(&cluster.client, "a", "1").unwrap();
    let leader = cluster.leader_store(region_id);
    let peer = TestCluster::peer_on(&region, leader).unwrap();
    cluster.change_peer(region_id, ChangePeer::Remove(peer));
    let survivor = cluster.leader_store(region_id);
    assert_ne!(survivor, leader);
    put(&cluster.client, "b", "2").unwrap();
    assert_eq!(get(&cluster.client, "a").unwrap().as_deref(), Some("1"));
}

#[test]
fn leadership_moves_to_each_replica_in_turn() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    for (i, store) in cluster.store_ids().into_iter().enumerate() {
        cluster.transfer_leader(region_id, store);
        assert_eq!(cluster.leader_store(region_id), store);
        put(&cluster.client, &format!("t{i}"), "v").unwrap();
        assert_eq!(
            get(&cluster.client, &format!("t{i}")).unwrap().as_deref(),
            Some("v")
        );
    }
}

#[test]
fn requests_to_the_wrong_store_get_region_errors() {
    let cluster = TestCluster::new(3, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    let store = cluster.store_ids()[0];
    let commands =
        kv::raftstore::store_commands::StoreCommands::new(Arc::clone(cluster.store(store)));
    let route = |region_id, version| {
        kv::txn::CommandRouter::route(
            &commands,
            Some(kv::txn::RegionContext {
                region_id,
                conf_ver: 1,
                version,
            }),
        )
    };
    assert!(matches!(
        route(region_id + 1000, 1),
        Err(KvError::RegionNotFound { .. })
    ));
    assert!(matches!(
        route(region_id, 7),
        Err(KvError::EpochNotMatch { .. })
    ));
    assert!(route(region_id, 1).is_ok());
}

#[test]
fn a_removed_replica_that_missed_its_removal_is_told_and_destroys_its_data() {
    let cluster = TestCluster::new(4, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "k", "v").unwrap();
    let victim = cluster.follower(&region);
    // The victim does not hear about its removal (nor anything after it) while isolated.
    cluster.isolate(victim.store_id);
    cluster.change_peer(region_id, ChangePeer::Remove(victim));
    // The replica checker replaces it on the fourth store.
    let region = cluster.wait_for_voters(region_id, 3);
    assert!(TestCluster::peer_on(&region, victim.store_id).is_none());
    cluster.heal();
    // Back on the network, it campaigns with its old membership and is told it was removed.
    cluster.wait_for("the removed replica to be destroyed", || {
        let gone = cluster
            .store(victim.store_id)
            .peer(region_id)
            .is_none_or(|p| p.status().is_none());
        gone.then_some(())
    });
    let engine = cluster.store(victim.store_id).engine();
    let snapshot = kv::storage::Engine::snapshot(engine.as_ref());
    for cf in [
        kv::storage::Cf::Default,
        kv::storage::Cf::Write,
        kv::storage::Cf::Lock,
    ] {
        let left = kv::storage::Snapshot::scan(&snapshot, cf, b"", None).count();
        assert_eq!(left, 0, "the destroyed replica left data in {cf:?}");
    }
    assert_eq!(get(&cluster.client, "k").unwrap().as_deref(), Some("v"));
}

#[test]
fn a_removed_replica_that_hears_nothing_learns_its_removal_from_the_scheduler() {
    let cluster = TestCluster::new(4, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "k", "v").unwrap();
    let victim = cluster.follower(&region);
    cluster.wait_caught_up(region_id, victim.store_id);
    // Cut off for good from the other stores: no message, no tombstone notice reaches it
    // (the scheduler still does).
    cluster.network.isolate(victim.store_id);
    cluster.change_peer(region_id, ChangePeer::Remove(victim));
    cluster.wait_for("the isolated removed replica to be destroyed", || {
        cluster
            .store(victim.store_id)
            .peer(region_id)
            .is_none()
            .then_some(())
    });
    let engine = cluster.store(victim.store_id).engine();
    let snapshot = kv::storage::Engine::snapshot(engine.as_ref());
    let left = kv::storage::Snapshot::scan(&snapshot, kv::storage::Cf::Write, b"", None).count();
    assert_eq!(left, 0, "the destroyed replica left data");
}

#[test]
fn membership_changes_and_transfers_under_load_keep_every_acknowledged_write() {
    let mut cluster = TestCluster::new(5, 3);
    let region_id = cluster.region_id();
    cluster.wait_for_voters(region_id, 3);
    let mut next = seeded_choices(11);
    for round in 0..4 {
        // Clients write while the membership changes under them.
        let appenders = {
            let client = cluster.client.clone();
            std::thread::spawn(move || {
                let key = format!("churn-{round}");
                let mut acked = Vec::new();
                let deadline = std::time::Instant::now() + Duration::from_millis(2500);
                while std::time::Instant::now() < deadline {
                    let next = match get(&client, &key) {
                        Ok(Some(v)) => v.split(',').count() as u64,
                        Ok(None) => 0,
                        Err(_) => continue,
                    };
                    if append(&client, &key, next).is_ok() {
                        acked.push(next);
                    }
                }
                (key, acked)
            })
        };
        let region = cluster.wait_for_voters(region_id, 3);
        match next(3) {
            0 => {
                // Remove a random voter (the leader included: it hands over first); the
                // replica checker replaces it.
                let victim = region.peers[next(region.peers.len() as u64) as usize];
                println!("round {round}: remove {victim:?}");
                cluster.change_peer(region_id, ChangePeer::Remove(victim));
            }
            1 => {
                let target = region.peers[next(region.peers.len() as u64) as usize];
                println!(
                    "round {round}: transfer the leadership to store {}",
                    target.store_id
                );
                cluster.transfer_leader(region_id, target.store_id);
            }
            _ => {
                // Restart a random store holding a replica.
                let store = region.peers[next(region.peers.len() as u64) as usize].store_id;
                println!("round {round}: restart store {store}");
                cluster.stop(store);
                std::thread::sleep(Duration::from_millis(300));
                cluster.start(store);
            }
        }
        let (key, acked) = appenders.join().expect("appender");
        let found = list(&cluster.client, &key);
        let expected: Vec<u64> = (0..found.len() as u64).collect();
        assert_eq!(found, expected, "round {round}: {key} is not 0..n in order");
        for n in &acked {
            assert!(
                found.contains(n),
                "round {round}: {key} lost acknowledged {n}"
            );
        }
        assert!(!acked.is_empty(), "round {round}: no write went through");
        println!("round {round}: {} writes acknowledged", acked.len());
    }
    // In the end every replica of the region holds the same data.
    let region = cluster.wait_for_voters(region_id, 3);
    for peer in &region.peers {
        cluster.wait_caught_up(region_id, peer.store_id);
    }
}

#[test]
fn the_replica_of_a_store_that_is_gone_is_replaced_on_another_store() {
    let mut cluster = TestCluster::new(4, 3);
    let region_id = cluster.region_id();
    let region = cluster.wait_for_voters(region_id, 3);
    put(&cluster.client, "k", "v").unwrap();
    let victim = cluster.follower(&region);
    // The store dies for good: after `replace_down_after` its replica is rebuilt elsewhere.
    cluster.stop(victim.store_id);
    let region = cluster.wait_for("the replica to move", || {
        let region = cluster.wait_for_voters(region_id, 3);
        TestCluster::peer_on(&region, victim.store_id)
            .is_none()
            .then_some(region)
    });
    // The three replicas are on the three stores still running.
    let holders: std::collections::BTreeSet<u64> =
        region.peers.iter().map(|p| p.store_id).collect();
    let running: std::collections::BTreeSet<u64> = cluster
        .store_ids()
        .into_iter()
        .filter(|&s| s != victim.store_id)
        .collect();
    assert_eq!(holders, running);
    for peer in &region.peers {
        cluster.wait_caught_up(region_id, peer.store_id);
    }
    assert_eq!(get(&cluster.client, "k").unwrap().as_deref(), Some("v"));
}
