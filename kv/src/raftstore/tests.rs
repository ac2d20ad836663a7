//! PeerStorage on both engines: the log, compaction, snapshots, and a Raft group driven over
//! it across a restart.

use std::sync::Arc;

use raft::{Config, Entry, HardState, RawNode, Storage, StorageError};

use super::PeerStorage;
use super::region::whole_keyspace;
use crate::storage::{Cf, Engine, MemoryEngine, Snapshot, WriteBatch};

fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    range
        .map(|i| Entry::normal(term, i, format!("e{i}").into_bytes()))
        .collect()
}

fn open<E: Engine>(engine: &Arc<E>) -> PeerStorage<E> {
    PeerStorage::open(Arc::clone(engine), &whole_keyspace(1, [1])).unwrap()
}

fn log_and_compaction<E: Engine>(engine: Arc<E>) {
    let mut peer = open(&engine);
    assert_eq!(
        (peer.first_index().unwrap(), peer.last_index().unwrap()),
        (1, 0)
    );
    let mut batch = WriteBatch::new();
    peer.append(&mut batch, &entries(1..=5, 1));
    peer.set_hard_state(
        &mut batch,
        HardState {
            term: 1,
            vote: Some(1),
            commit: 3,
        },
    );
    engine.write(batch).unwrap();
    // An overlapping append of a newer term replaces the suffix.
    let mut batch = WriteBatch::new();
    peer.append(&mut batch, &entries(4..=4, 2));
    engine.write(batch).unwrap();
    assert_eq!(peer.last_index().unwrap(), 4);
    assert_eq!(peer.term(4).unwrap(), 2);
    assert_eq!(peer.term(5), Err(StorageError::Unavailable));
    assert_eq!(peer.entries(2, 5, u64::MAX).unwrap().len(), 3);
    assert_eq!(peer.entries(2, 5, 1).unwrap().len(), 1);

    // Everything survives reopening.
    let mut peer = open(&engine);
    assert_eq!(peer.last_index().unwrap(), 4);
    assert_eq!(
        peer.initial_state().unwrap().0,
        HardState {
            term: 1,
            vote: Some(1),
            commit: 3
        }
    );

    // Compaction needs the entries applied, then drops them.
    let (mut batch, mut deletes) = (WriteBatch::new(), WriteBatch::new());
    assert!(peer.compact(&mut batch, &mut deletes, 2).is_err());
    peer.set_applied(&mut batch, 3);
    peer.compact(&mut batch, &mut deletes, 2).unwrap();
    assert!(!deletes.is_empty());
    engine.write(batch).unwrap();
    // The entries' deletes are never written (a crash before the background writer got to
    // them): opening the peer again removes the leftovers.
    let compacted = |engine: &E| {
        let (from, to) = (super::keys::entry(1, 0), super::keys::entry(1, 3));
        engine.snapshot().scan(Cf::Raft, &from, Some(&to)).count()
    };
    assert_eq!(compacted(&engine), 2);
    let peer = open(&engine);
    assert_eq!(compacted(&engine), 0);
    assert_eq!(peer.first_index().unwrap(), 3);
    assert_eq!(peer.term(2).unwrap(), 1);
    assert_eq!(peer.term(1), Err(StorageError::Compacted));
    assert_eq!(peer.entries(2, 4, u64::MAX), Err(StorageError::Compacted));
    assert_eq!(peer.applied(), 3);
}

fn snapshots_move_data_and_replace_the_log<E: Engine>(
    leader_engine: Arc<E>,
    follower_engine: Arc<E>,
) {
    // The leader applied 3 entries whose effects are two data keys.
    let mut leader = open(&leader_engine);
    let mut batch = WriteBatch::new();
    leader.append(&mut batch, &entries(1..=3, 1));
    batch.put(
        Cf::Default,
        crate::mvcc::key::encode_versioned(b"k1", scheduler_api::Timestamp(5)),
        b"v1".to_vec(),
    );
    batch.put(
        Cf::Write,
        crate::mvcc::key::encode_versioned(b"k1", scheduler_api::Timestamp(6)),
        b"w1".to_vec(),
    );
    leader.set_applied(&mut batch, 3);
    leader_engine.write(batch).unwrap();

    // The follower has stale data and log that the snapshot must replace.
    let mut follower = open(&follower_engine);
    let mut batch = WriteBatch::new();
    follower.append(&mut batch, &entries(1..=1, 1));
    batch.put(
        Cf::Lock,
        crate::mvcc::key::encode_user_key(b"stale"),
        b"lock".to_vec(),
    );
    follower_engine.write(batch).unwrap();

    let snapshot = leader.snapshot().unwrap();
    assert_eq!((snapshot.meta.index, snapshot.meta.term), (3, 1));
    let mut batch = WriteBatch::new();
    follower.apply_snapshot(&mut batch, &snapshot).unwrap();
    follower_engine.write(batch).unwrap();

    for cf in [Cf::Default, Cf::Lock, Cf::Write] {
        use crate::storage::Snapshot as _;
        let (a, b) = (leader_engine.snapshot(), follower_engine.snapshot());
        let leader_pairs: Vec<_> = a.scan(cf, b"", None).collect::<Result<_, _>>().unwrap();
        let follower_pairs: Vec<_> = b.scan(cf, b"", None).collect::<Result<_, _>>().unwrap();
        assert_eq!(leader_pairs, follower_pairs, "{cf}");
    }
    let follower = open(&follower_engine);
    assert_eq!(
        (
            follower.first_index().unwrap(),
            follower.last_index().unwrap()
        ),
        (4, 3)
    );
    assert_eq!(follower.applied(), 3);
    assert_eq!(follower.initial_state().unwrap().0.commit, 3);
}

/// A one-peer Raft group persisting through PeerStorage: what it commits survives a restart,
/// and nothing is applied twice.
fn raft_group_over_peer_storage<E: Engine>(engine: Arc<E>) {
    let drive = |node: &mut RawNode<PeerStorage<E>>, applied: &mut Vec<Vec<u8>>| {
        while node.has_ready() {
            let ready = node.ready();
            let mut batch = WriteBatch::new();
            node.storage_mut().append(&mut batch, &ready.entries);
            if let Some(hs) = &ready.hard_state {
                node.storage_mut().set_hard_state(&mut batch, hs.clone());
            }
            for entry in &ready.committed_entries {
                if !entry.data.is_empty() {
                    applied.push(entry.data.clone());
                }
                node.storage_mut().set_applied(&mut batch, entry.index);
            }
            engine.write(batch).unwrap();
            node.advance(ready);
        }
    };
    let mut applied = Vec::new();
    let mut node = RawNode::new(Config::new(1), open(&engine)).unwrap();
    node.campaign();
    drive(&mut node, &mut applied);
    node.propose(b"a".to_vec()).unwrap();
    node.propose(b"b".to_vec()).unwrap();
    drive(&mut node, &mut applied);
    assert_eq!(applied, [b"a".to_vec(), b"b".to_vec()]);

    let storage = open(&engine);
    let mut config = Config::new(1);
    config.applied = storage.applied();
    let mut node = RawNode::new(config, storage).unwrap();
    let mut reapplied = Vec::new();
    drive(&mut node, &mut reapplied);
    assert!(
        reapplied.is_empty(),
        "nothing is applied twice: {reapplied:?}"
    );
    assert_eq!(node.status().commit, 3);
    node.campaign();
    node.propose(b"c".to_vec()).unwrap();
    drive(&mut node, &mut reapplied);
    assert_eq!(reapplied, [b"c".to_vec()]);
}

#[test]
fn memory_engine() {
    log_and_compaction(Arc::new(MemoryEngine::new()));
    snapshots_move_data_and_replace_the_log(
        Arc::new(MemoryEngine::new()),
        Arc::new(MemoryEngine::new()),
    );
    raft_group_over_peer_storage(Arc::new(MemoryEngine::new()));
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_engine() {
    use crate::storage::RocksEngine;
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let engine = |i: usize| Arc::new(RocksEngine::open(dirs[i].path()).unwrap());
    log_and_compaction(engine(0));
    snapshots_move_data_and_replace_the_log(engine(1), engine(2));
    raft_group_over_peer_storage(engine(3));
}
