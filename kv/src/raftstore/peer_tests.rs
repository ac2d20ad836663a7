//! Replicas of one region, driven deterministically in-process: writes replicate and apply
//! everywhere, callbacks report the outcome, a replica that was down catches up by snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proto::metapb::Peer as PeerMeta;
use raft::{Config, Message};

use super::region::whole_keyspace;
use super::{Callback, Peer};
use crate::error::{KvError, KvResult};
use crate::storage::{Cf, Engine, MemoryEngine, Snapshot, WriteBatch};
use crate::txn::ReadFence;

struct Group {
    engines: BTreeMap<u64, Arc<MemoryEngine>>,
    peers: BTreeMap<u64, Peer<MemoryEngine>>,
    inbox: Vec<Message>,
    /// Peers whose messages are dropped both ways.
    isolated: BTreeSet<u64>,
}

fn config() -> Config {
    let mut config = Config::new(1);
    config.election_tick = 10;
    config.heartbeat_tick = 1;
    config
}

impl Group {
    fn new(ids: &[u64]) -> Group {
        let mut group = Group {
            engines: BTreeMap::new(),
            peers: BTreeMap::new(),
            inbox: Vec::new(),
            isolated: BTreeSet::new(),
        };
        for &id in ids {
            group.engines.insert(id, Arc::new(MemoryEngine::new()));
            group.open(id, ids);
        }
        group
    }

    /// (Re)opens peer `id` from its engine, as after a restart.
    fn open(&mut self, id: u64, voters: &[u64]) {
        let engine = Arc::clone(&self.engines[&id]);
        let region = whole_keyspace(1, voters.iter().copied());
        let me = PeerMeta {
            id,
            store_id: id,
            learner: false,
        };
        let peer = Peer::open(engine, &region, me, config()).unwrap();
        self.peers.insert(id, peer);
    }

    /// Proposes `batch` on peer `id` and settles the group; returns the proposal's outcome.
    fn write(&mut self, id: u64, batch: WriteBatch) -> Option<KvResult<()>> {
        let (callback, outcome) = recorder();
        self.peers
            .get_mut(&id)
            .unwrap()
            .propose_write(batch, ReadFence::default(), callback);
        self.settle();
        outcome.lock().unwrap().take()
    }

    fn settle(&mut self) {
        for _ in 0..1000 {
            for peer in self.peers.values_mut() {
                self.inbox.extend(peer.handle_ready().unwrap());
            }
            if self.inbox.is_empty() {
                return;
            }
            for message in std::mem::take(&mut self.inbox) {
                if self.isolated.contains(&message.from) || self.isolated.contains(&message.to) {
                    continue;
                }
                if let Some(peer) = self.peers.get_mut(&message.to) {
                    peer.step(message);
                }
            }
        }
        panic!("the group did not settle");
    }

    fn tick(&mut self, times: usize) {
        for _ in 0..times {
            for peer in self.peers.values_mut() {
                peer.tick();
            }
            self.settle();
        }
    }

    fn get(&self, id: u64, key: &[u8]) -> Option<Vec<u8>> {
        self.engines[&id].get(Cf::Default, key).unwrap()
    }
}

fn put(key: &str, value: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Default,
        key.as_bytes().to_vec(),
        value.as_bytes().to_vec(),
    );
    batch
}

/// A callback that records its outcome.
fn recorder() -> (Callback, Arc<Mutex<Option<KvResult<()>>>>) {
    let outcome = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&outcome);
    (
        Box::new(move |result| *slot.lock().unwrap() = Some(result)),
        outcome,
    )
}

fn data(engine: &MemoryEngine) -> Vec<(Vec<u8>, Vec<u8>)> {
    engine
        .snapshot()
        .scan(Cf::Default, b"", None)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn writes_replicate_apply_everywhere_and_report_back() {
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    assert!(group.peers[&1].is_leader());

    let (callback, outcome) = recorder();
    group
        .peers
        .get_mut(&1)
        .unwrap()
        .propose_write(put("a", "1"), ReadFence::default(), callback);
    group.settle();
    group.tick(1); // the commit index reaches the followers
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    for id in [1, 2, 3] {
        assert_eq!(group.get(id, b"a"), Some(b"1".to_vec()), "peer {id}");
    }

    // Linearizable reads, on the leader and on a follower (forwarded ReadIndex).
    for id in [1, 3] {
        let read = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&read);
        group
            .peers
            .get_mut(&id)
            .unwrap()
            .read_index(Box::new(move |r| *slot.lock().unwrap() = Some(r)));
        group.settle();
        group.tick(1);
        match *read.lock().unwrap() {
            Some(Ok(fence)) => assert_eq!(fence.term, group.peers[&id].status().term),
            ref other => panic!("peer {id}: {other:?}"),
        }
        // The read was answered once the write had been applied here.
        assert!(
            group.peers[&id].status().applied >= 2,
            "peer {id} read before the write applied"
        );
    }

    // A follower refuses, naming the leader.
    let (callback, outcome) = recorder();
    group
        .peers
        .get_mut(&2)
        .unwrap()
        .propose_write(put("b", "2"), ReadFence::default(), callback);
    assert!(matches!(
        *outcome.lock().unwrap(),
        Some(Err(KvError::NotLeader {
            leader: Some(1),
            ..
        }))
    ));
}

#[test]
fn a_replica_that_was_down_catches_up_by_snapshot_and_restarts_without_reapplying() {
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    group.peers.remove(&3); // down
    for i in 0..20 {
        group.write(1, put(&format!("k{i:02}"), "v"));
    }
    group.peers.get_mut(&1).unwrap().compact_log().unwrap();
    group.peers.get_mut(&2).unwrap().compact_log().unwrap();
    // Back up, from what its engine persisted: the leader needs a snapshot to catch it up.
    group.open(3, &[1, 2, 3]);
    group.tick(3);
    assert_eq!(data(&group.engines[&3]), data(&group.engines[&1]));
    assert_eq!(data(&group.engines[&3]).len(), 20);
    // A restart of every replica applies nothing twice and keeps serving writes.
    for id in [1, 2, 3] {
        group.open(id, &[]);
    }
    group.tick(30);
    let leader = *group
        .peers
        .iter()
        .find(|(_, p)| p.is_leader())
        .map(|(id, _)| id)
        .expect("a leader");
    let (callback, outcome) = recorder();
    group.peers.get_mut(&leader).unwrap().propose_write(
        put("after", "restart"),
        ReadFence::default(),
        callback,
    );
    group.settle();
    group.tick(1);
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    for id in [1, 2, 3] {
        assert_eq!(data(&group.engines[&id]).len(), 21, "peer {id}");
    }
}

#[test]
fn log_gc_bounds_the_log_and_lagging_replicas_still_catch_up() {
    let limit = 5;
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    group.isolated.insert(3);
    for i in 0..40 {
        group.write(1, put(&format!("g{i:02}"), "v"));
        for peer in group.peers.values_mut() {
            peer.maybe_compact_log(limit, u64::MAX).unwrap();
            let status = peer.status();
            let (truncated, _) = peer.truncated();
            assert!(
                status.applied - truncated <= 2 * limit,
                "applied {} truncated {truncated}",
                status.applied
            );
        }
    }
    group.isolated.clear();
    group.tick(3);
    assert_eq!(data(&group.engines[&3]), data(&group.engines[&1]));
}

#[test]
fn log_gc_by_size_compacts_a_few_large_entries() {
    let max_bytes = 64 << 10;
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    let big = "x".repeat(16 << 10);
    for i in 0..20 {
        group.write(1, put(&format!("big{i:02}"), &big));
        for peer in group.peers.values_mut() {
            // The entry-count limit alone would keep all twenty.
            peer.maybe_compact_log(1000, max_bytes).unwrap();
            let (truncated, _) = peer.truncated();
            let kept = peer.status().applied - truncated;
            assert!(
                kept * (16 << 10) <= 2 * max_bytes,
                "{kept} large entries kept"
            );
        }
    }
    let (truncated, _) = group.peers[&1].truncated();
    assert!(truncated > 0, "nothing was compacted");
}

#[test]
fn a_write_computed_in_an_earlier_term_is_refused() {
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    let term = group.peers[&1].status().term;
    // A batch whose inputs were read under another term (the leader lost and regained its
    // leadership in between) may be stale: refused, and nothing is proposed.
    let (callback, outcome) = recorder();
    let before = group.peers[&1].status().last_index;
    group.peers.get_mut(&1).unwrap().propose_write(
        put("stale", "x"),
        ReadFence { term: term + 1 },
        callback,
    );
    assert!(matches!(
        *outcome.lock().unwrap(),
        Some(Err(KvError::StaleCommand { .. }))
    ));
    assert_eq!(group.peers[&1].status().last_index, before);
    // The same batch read in the current term goes through.
    let (callback, outcome) = recorder();
    group
        .peers
        .get_mut(&1)
        .unwrap()
        .propose_write(put("fresh", "y"), ReadFence { term }, callback);
    group.settle();
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
}

#[test]
fn a_read_waiting_on_a_replica_that_applies_its_own_removal_fails() {
    use super::region::ChangePeer;
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    assert!(matches!(group.write(1, put("a", "1")), Some(Ok(()))));
    // Peer 3 asks for a read while its removal is proposed.
    let outcome: Arc<Mutex<Option<KvResult<ReadFence>>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&outcome);
    group
        .peers
        .get_mut(&3)
        .unwrap()
        .read_index(Box::new(move |r| *slot.lock().unwrap() = Some(r)));
    let (callback, _) = recorder();
    let victim = PeerMeta {
        id: 3,
        store_id: 3,
        learner: false,
    };
    group
        .peers
        .get_mut(&1)
        .unwrap()
        .propose_change_peer(ChangePeer::Remove(victim), callback);
    group.settle();
    let peer = group.peers.get_mut(&3).unwrap();
    assert!(peer.is_removed());
    // Its data went with the removal; the read must not be granted on it.
    assert!(
        outcome.lock().unwrap().is_none(),
        "a read was granted on destroyed data"
    );
    assert!(
        peer.destroy_flag()
            .load(std::sync::atomic::Ordering::SeqCst)
    );
    peer.destroy().unwrap();
    assert!(matches!(
        *outcome.lock().unwrap(),
        Some(Err(KvError::RegionNotFound { .. }))
    ));
    assert!(data(&group.engines[&3]).is_empty());
}

/// Writes to the engine until armed, then fails (a crash before the write).
struct FailingWriter {
    engine: Arc<MemoryEngine>,
    fail: std::sync::atomic::AtomicBool,
}

impl super::write_batcher::RaftWriter for FailingWriter {
    fn write(&self, batch: WriteBatch) -> KvResult<()> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(KvError::Unavailable("crashed".into()));
        }
        Ok(self.engine.write(batch)?)
    }

    fn write_unsynced(&self, batch: WriteBatch) -> KvResult<()> {
        self.write(batch)
    }

    fn write_in_background(&self, batch: WriteBatch) {
        let _ = self.write(batch);
    }
}

#[test]
fn a_single_voter_leader_tells_its_learner_to_commit_only_what_it_wrote() {
    let engine = Arc::new(MemoryEngine::new());
    let writer = Arc::new(FailingWriter {
        engine: Arc::clone(&engine),
        fail: std::sync::atomic::AtomicBool::new(false),
    });
    let mut region = whole_keyspace(1, [1]);
    region.peers.push(PeerMeta {
        id: 2,
        store_id: 2,
        learner: true,
    });
    let mut leader = Peer::open(engine, &region, region.peers[0], config())
        .unwrap()
        .with_writer(Arc::clone(&writer) as Arc<dyn super::write_batcher::RaftWriter>);
    let mut learner = Peer::open(
        Arc::new(MemoryEngine::new()),
        &region,
        region.peers[1],
        config(),
    )
    .unwrap();
    leader.campaign();
    // Exchange messages until the learner replicates (its progress streams appends).
    for _ in 0..20 {
        for message in leader.handle_ready().unwrap() {
            learner.step(message);
        }
        for message in learner.handle_ready().unwrap() {
            leader.step(message);
        }
    }
    assert!(leader.is_leader());
    assert_eq!(learner.status().applied, leader.status().applied);
    let (callback, _) = recorder();
    leader.propose_write(put("p", "1"), ReadFence::default(), callback);
    let last = leader.status().last_index;
    // The write of this Ready fails (the node crashes before its disk has the entry): the
    // learner must not have been told that the entry is committed.
    writer.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut sent = Vec::new();
    let result = leader.handle_ready_sending(&mut |_, messages| sent.extend(messages));
    assert!(result.is_err());
    assert!(
        sent.is_empty() || sent.iter().all(|m| m.to == 2),
        "messages went elsewhere"
    );
    for message in sent {
        if let raft::MessageBody::Append { commit, .. } = message.body {
            assert!(
                commit < last,
                "the learner was told to commit unwritten entry {last}"
            );
        }
    }
}

#[test]
fn a_proposal_overwritten_by_a_new_leader_reports_stale_command() {
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    // The leader is cut off; its proposal cannot commit.
    group.isolated.insert(1);
    let (callback, outcome) = recorder();
    group.peers.get_mut(&1).unwrap().propose_write(
        put("lost", "x"),
        ReadFence::default(),
        callback,
    );
    group.settle();
    // The others elect a new leader once their leases run out, and commit their own write.
    group.tick(30);
    let leader = [2, 3]
        .into_iter()
        .find(|id| group.peers[id].is_leader())
        .expect("a new leader");
    let (callback, _) = recorder();
    group.peers.get_mut(&leader).unwrap().propose_write(
        put("kept", "y"),
        ReadFence::default(),
        callback,
    );
    group.settle();
    group.isolated.clear();
    group.tick(3);
    assert!(
        matches!(
            *outcome.lock().unwrap(),
            Some(Err(KvError::StaleCommand { .. }))
        ),
        "{:?}",
        outcome.lock().unwrap()
    );
    assert_eq!(group.get(1, b"lost"), None);
    assert_eq!(group.get(1, b"kept"), Some(b"y".to_vec()));
}

#[test]
fn a_leader_transfer_to_a_peer_out_of_touch_is_refused_and_writes_go_on() {
    let mut group = Group::new(&[1, 2, 3]);
    group.peers.get_mut(&1).unwrap().campaign();
    group.settle();
    group.write(1, put("a", "1"));
    // Peer 3 is cut off for longer than a check-quorum window: no longer in touch.
    group.isolated.insert(3);
    group.tick(25);
    assert!(group.peers[&1].is_leader());
    group.peers.get_mut(&1).unwrap().transfer_leader(3);
    let (callback, outcome) = recorder();
    group
        .peers
        .get_mut(&1)
        .unwrap()
        .propose_write(put("b", "2"), ReadFence::default(), callback);
    group.settle();
    group.tick(1);
    assert!(
        matches!(*outcome.lock().unwrap(), Some(Ok(()))),
        "the write was not held up by a transfer"
    );
    // A transfer to a peer in touch goes through.
    group.isolated.clear();
    group.tick(25);
    group.peers.get_mut(&1).unwrap().transfer_leader(2);
    group.tick(5);
    assert!(group.peers[&2].is_leader());
}
