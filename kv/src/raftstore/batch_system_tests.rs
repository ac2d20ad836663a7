//! Peers on batch systems driven by hand: a virtual clock, a simulated transport that holds
//! every message until the test delivers it, and no thread but the test's. The runs are
//! deterministic (same seed, same messages); they check hibernation — quiet regions stop
//! ticking and talking, wake for work, elect a new leader when theirs is gone — and that a
//! woken leader serves no read by a lease it may have lost while it slept; and that a stalled
//! apply holds up no election, heartbeat or commit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proto::metapb::{Peer as PeerMeta, Region};
use proto::scheduler::RegionHeartbeatRequest;
use raft::MessageBody;

use super::Peer;
use super::batch_system::BatchSystem;
use super::command::CommitMergeRequest;
use super::driver::{DriverConfig, PeerHandle, PeerMsg, StoreEvents};
use super::peer::RegionSize;
use super::peer_fsm;
use super::region::{self, whole_keyspace};
use super::transport::{RaftEnvelope, Transport};
use super::write_batcher::DirectWriter;
use crate::error::KvResult;
use crate::storage::{Cf, Engine, MemoryEngine, Snapshot, WriteBatch};
use crate::txn::ReadFence;

#[derive(Default)]
struct SimTransport {
    in_flight: Mutex<Vec<RaftEnvelope>>,
}

impl Transport for SimTransport {
    fn send(&self, envelope: RaftEnvelope) {
        self.in_flight.lock().unwrap().push(envelope);
    }
}

/// What the peers of one store asked of it: split checks (answered by the test).
#[derive(Default)]
struct SimEvents {
    checks: Mutex<Vec<Region>>,
}

impl StoreEvents for SimEvents {
    fn region_heartbeat(&self, _report: RegionHeartbeatRequest) {}
    fn peer_destroyed(&self, _region_id: u64, _peer_id: u64) {}
    fn split_check(&self, region: Region) {
        self.checks.lock().unwrap().push(region);
    }
    fn region_split(&self, _region: Region, _campaign: bool) {}
    fn commit_merge(&self, _request: CommitMergeRequest) {}
    fn finish_merge(&self, _request: CommitMergeRequest) {}
    fn clear_range_for_snapshot(&self, _region: &Region) -> bool {
        true
    }
}

struct SimStore {
    engine: Arc<MemoryEngine>,
    system: BatchSystem,
    events: Arc<SimEvents>,
    peer: PeerHandle,
}

struct Sim {
    transport: Arc<SimTransport>,
    stores: BTreeMap<u64, SimStore>,
    /// Stores whose messages are dropped both ways, and which the clock skips.
    down: BTreeSet<u64>,
    /// Stores whose apply workers are stalled: their peers' committed writes wait.
    stalled_applies: BTreeSet<u64>,
    /// Every message delivered: (from store, to store, kind).
    trace: Vec<(u64, u64, &'static str)>,
}

fn driver_config() -> DriverConfig {
    DriverConfig {
        hibernate_after_ticks: 20,
        slow_tick_every: 5,
        keepalive_slow_ticks: 2,
        leader_missing_slow_ticks: 4,
        // Every committed write goes through the apply workers.
        apply_inline_max_bytes: 0,
        ..DriverConfig::default()
    }
}

fn kind(envelope: &RaftEnvelope) -> &'static str {
    if envelope.hibernate {
        return "hibernate";
    }
    match envelope.message.body {
        MessageBody::Heartbeat { .. } => "heartbeat",
        MessageBody::HeartbeatResponse { .. } => "heartbeat-response",
        MessageBody::Append { .. } => "append",
        MessageBody::AppendResponse { .. } => "append-response",
        _ => "election",
    }
}

impl Sim {
    /// A region with a replica on each of stores 1..=n.
    fn new(n: u64, seed: u64) -> Sim {
        let transport = Arc::new(SimTransport::default());
        let region = whole_keyspace(1, 1..=n);
        let mut stores = BTreeMap::new();
        for id in 1..=n {
            let engine = Arc::new(MemoryEngine::new());
            let config = driver_config();
            let system = BatchSystem::manual(
                Arc::new(DirectWriter(Arc::clone(&engine))),
                config.slow_tick_every,
            );
            let mut raft = raft::Config::new(0);
            raft.election_tick = 10;
            raft.heartbeat_tick = 2;
            raft.check_quorum = true;
            raft.pre_vote = true;
            raft.lease_read = true;
            raft.seed = seed;
            let me = PeerMeta {
                id,
                store_id: id,
                learner: false,
            };
            let peer = Peer::open(Arc::clone(&engine), &region, me, raft).unwrap();
            let events = Arc::new(SimEvents::default());
            let (mailbox, state, destroying) = peer_fsm::spawn(
                &system,
                peer,
                Arc::clone(&transport) as Arc<dyn Transport>,
                Arc::clone(&events) as Arc<dyn StoreEvents>,
                config.clone(),
                super::split_check::SplitConfig::default().check_diff(),
            );
            let peer = PeerHandle::new(id, state, destroying, mailbox, &config);
            stores.insert(
                id,
                SimStore {
                    engine,
                    system,
                    events,
                    peer,
                },
            );
        }
        Sim {
            transport,
            stores,
            down: BTreeSet::new(),
            stalled_applies: BTreeSet::new(),
            trace: Vec::new(),
        }
    }

    /// Polls every store and delivers what is in flight until nothing moves.
    fn settle(&mut self) {
        loop {
            for (id, store) in &self.stores {
                if self.down.contains(id) {
                    continue;
                }
                if self.stalled_applies.contains(id) {
                    store.system.poll_raft_until_idle();
                } else {
                    store.system.poll_until_idle();
                }
                // Split checks measure an empty region at once.
                for region in std::mem::take(&mut *store.events.checks.lock().unwrap()) {
                    let version = region::epoch(&region).version;
                    store
                        .peer
                        .send(PeerMsg::SplitChecked(version, RegionSize::default()));
                }
            }
            let in_flight = std::mem::take(&mut *self.transport.in_flight.lock().unwrap());
            if in_flight.is_empty() {
                return;
            }
            for envelope in in_flight {
                let (from, to) = (envelope.from_peer.store_id, envelope.to_peer.store_id);
                if self.down.contains(&from) || self.down.contains(&to) {
                    continue;
                }
                self.trace.push((from, to, kind(&envelope)));
                let message = match envelope.message.body {
                    MessageBody::Heartbeat { commit, .. } if envelope.hibernate => {
                        PeerMsg::LeaderHibernates {
                            from: envelope.from_peer,
                            term: envelope.message.term,
                            last_index: commit,
                        }
                    }
                    _ => PeerMsg::Raft(envelope.from_peer, envelope.message),
                };
                self.stores[&to].peer.send(message);
            }
        }
    }

    /// `n` periods of the virtual clock, everything settled after each.
    fn tick(&mut self, n: usize) {
        for _ in 0..n {
            for (id, store) in &self.stores {
                if !self.down.contains(id) {
                    store.system.tick();
                }
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .stores
            .iter()
            .filter(|(id, s)| !self.down.contains(id) && s.peer.is_leader())
            .map(|(id, _)| *id)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn elect(&mut self, id: u64) {
        self.stores[&id].peer.send(PeerMsg::Campaign);
        self.settle();
        assert_eq!(self.leader(), Some(id));
    }

    fn asleep(&self, id: u64) -> bool {
        self.stores[&id].peer.is_hibernating()
    }

    /// Proposes a write of `key` on store `id`; the outcome lands in the returned slot.
    fn write(&mut self, id: u64, key: &[u8]) -> Arc<Mutex<Option<KvResult<()>>>> {
        let outcome = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&outcome);
        let mut batch = WriteBatch::new();
        batch.put(
            Cf::Default,
            crate::mvcc::key::encode_user_key(key),
            b"v".to_vec(),
        );
        self.stores[&id].peer.send(PeerMsg::Write(
            batch,
            ReadFence::default(),
            Box::new(move |r| *slot.lock().unwrap() = Some(r)),
        ));
        self.settle();
        outcome
    }

    fn holds(&self, id: u64, key: &[u8]) -> bool {
        self.stores[&id]
            .engine
            .snapshot()
            .get(Cf::Default, &crate::mvcc::key::encode_user_key(key))
            .unwrap()
            .is_some()
    }

    /// The Raft status of store `id`'s replica (its apply workers are not run meanwhile).
    fn raft_status(&self, id: u64) -> raft::Status {
        let slot = Arc::new(Mutex::new(None));
        let answer = Arc::clone(&slot);
        self.stores[&id]
            .peer
            .send(PeerMsg::Status(Box::new(move |status| {
                *answer.lock().unwrap() = Some(status.raft)
            })));
        self.stores[&id].system.poll_raft_until_idle();
        slot.lock().unwrap().take().expect("the peer answers")
    }

    fn sent_since(&self, mark: usize) -> Vec<&'static str> {
        self.trace[mark..].iter().map(|(_, _, k)| *k).collect()
    }
}

#[test]
fn a_quiet_region_hibernates_and_wakes_for_a_write() {
    let mut sim = Sim::new(3, 7);
    sim.elect(1);
    let outcome = sim.write(1, b"a");
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    // Quiet for `hibernate_after_ticks`: the leader sleeps and its followers with it.
    sim.tick(25);
    assert!((1..=3).all(|id| sim.asleep(id)), "all replicas hibernate");
    // Asleep, the group sends nothing but the leader's occasional keepalive notice.
    let mark = sim.trace.len();
    sim.tick(100);
    let sent = sim.sent_since(mark);
    assert!(sent.iter().all(|k| *k == "hibernate"), "{sent:?}");
    // 100 periods = 20 slow ticks = 10 keepalives to each of 2 followers.
    assert_eq!(sent.len(), 20, "{sent:?}");
    assert_eq!(sim.leader(), Some(1));
    // A write wakes the leader; its append wakes the followers; it applies everywhere.
    let outcome = sim.write(1, b"b");
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    assert!((1..=3).all(|id| !sim.asleep(id) && sim.holds(id, b"b")));
    // And the region goes back to sleep.
    sim.tick(25);
    assert!((1..=3).all(|id| sim.asleep(id)));
}

#[test]
fn followers_of_a_vanished_hibernating_leader_wake_and_elect_another() {
    let mut sim = Sim::new(3, 11);
    sim.elect(1);
    sim.tick(25);
    assert!((1..=3).all(|id| sim.asleep(id)));
    sim.down.insert(1);
    // No keepalive for `leader_missing_slow_ticks` slow ticks (20 periods): the followers
    // wake, time out, and one of them is elected.
    let mut ticks = 0;
    while sim.leader().is_none_or(|l| l == 1) {
        sim.tick(1);
        ticks += 1;
        assert!(ticks < 200, "no new leader after {ticks} periods");
    }
    let leader = sim.leader().unwrap();
    assert_ne!(leader, 1);
    let outcome = sim.write(leader, b"after");
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
}

#[test]
fn a_woken_leader_reads_nothing_by_a_lease_it_may_have_lost() {
    let mut sim = Sim::new(3, 5);
    sim.elect(1);
    sim.tick(25);
    assert!((1..=3).all(|id| sim.asleep(id)));
    // The sleeping leader is cut off; its followers stop hearing its keepalives, wake, elect
    // another leader, and commit a write the old leader never sees.
    sim.down.insert(1);
    while sim.leader().is_none_or(|l| l == 1) {
        sim.tick(1);
    }
    let leader = sim.leader().unwrap();
    let outcome = sim.write(leader, b"new");
    assert!(matches!(*outcome.lock().unwrap(), Some(Ok(()))));
    // The old leader, still asleep and cut off, still believes it leads. A read wakes it: it
    // must not answer from its stale state by lease.
    assert!(sim.stores[&1].peer.is_leader());
    let read = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&read);
    sim.stores[&1]
        .peer
        .send(PeerMsg::ReadIndex(Box::new(move |r| {
            *slot.lock().unwrap() = Some(r.is_ok())
        })));
    sim.stores[&1].system.poll_until_idle();
    assert!(!sim.asleep(1));
    for _ in 0..30 {
        sim.stores[&1].system.tick();
        sim.stores[&1].system.poll_until_idle();
    }
    assert_ne!(*read.lock().unwrap(), Some(true), "a stale lease read");
}

#[test]
fn runs_are_deterministic_from_their_seed() {
    let run = |seed| {
        let mut sim = Sim::new(3, seed);
        sim.tick(40); // Elections by timeout: the seed decides who wins.
        let leader = sim.leader().expect("a leader");
        sim.write(leader, b"x");
        sim.tick(40);
        sim.trace
    };
    assert_eq!(run(3), run(3));
}

#[test]
fn a_stalled_apply_holds_up_no_election_and_no_commit() {
    let mut sim = Sim::new(3, 13);
    sim.elect(1);
    let term = sim.raft_status(1).term;
    // The leader's apply workers stall: its Raft loop goes on. Writes commit (the followers
    // apply them) but wait to apply on the leader, whose proposers wait with them.
    sim.stalled_applies.insert(1);
    let b = sim.write(1, b"b");
    let c = sim.write(1, b"c");
    let mark = sim.trace.len();
    sim.tick(100); // Ten election timeouts.
    assert!(b.lock().unwrap().is_none() && c.lock().unwrap().is_none());
    assert!(!sim.holds(1, b"b") && !sim.holds(1, b"c"));
    assert!((2..=3).all(|id| sim.holds(id, b"b") && sim.holds(id, b"c")));
    let status = sim.raft_status(1);
    assert_eq!((sim.leader(), status.term), (Some(1), term), "no election");
    assert!(
        status.commit > status.applied,
        "committed, not applied: {status:?}"
    );
    let sent = sim.sent_since(mark);
    assert!(sent.iter().all(|k| *k != "election"), "{sent:?}");
    assert!(
        sent.contains(&"heartbeat"),
        "the leader keeps heartbeating: {sent:?}"
    );
    // The apply workers resume: the writes apply and their proposers learn so.
    sim.stalled_applies.clear();
    sim.settle();
    assert!(matches!(*b.lock().unwrap(), Some(Ok(()))));
    assert!(matches!(*c.lock().unwrap(), Some(Ok(()))));
    assert!(sim.holds(1, b"b") && sim.holds(1, b"c"));
    let status = sim.raft_status(1);
    assert_eq!(status.commit, status.applied);
}
