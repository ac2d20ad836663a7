//! A merge of two regions replicated on three stores, driven deterministically peer by peer
//! (`peer::merge`): writes queued behind the PrepareMerge are skipped everywhere, the frozen
//! source refuses reads, writes and membership changes, the CommitMerge waits until every
//! source replica holds the PrepareMerge, a source replica that holds it but never heard it
//! committed finishes on the target's word, and every store ends with the target serving both
//! ranges over the data both regions had.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use proto::metapb::{Peer as PeerMeta, Region};
use raft::{Config, Message};

use super::region::{self, ChangePeer};
use super::{Callback, Peer};
use crate::error::{KvError, KvResult};
use crate::storage::{Cf, Engine, MemoryEngine, WriteBatch};
use crate::txn::ReadFence;

/// Region 1 is `[.., m)` with peers 11, 12, 13; region 2 is `[m, ..)` with peers 21, 22, 23;
/// peer `10 * region + store` lives on store `store`.
struct Stores {
    engines: BTreeMap<u64, Arc<MemoryEngine>>,
    peers: BTreeMap<u64, Peer<MemoryEngine>>,
    /// Peers whose messages are dropped both ways.
    isolated: BTreeSet<u64>,
}

fn regions() -> (Region, Region) {
    let peers = |region: u64| {
        (1..=3)
            .map(|store| PeerMeta {
                id: 10 * region + store,
                store_id: store,
                learner: false,
            })
            .collect()
    };
    let left = Region {
        id: 1,
        start_key: Vec::new(),
        end_key: b"m".to_vec(),
        epoch: Some(region::initial_epoch()),
        peers: peers(1),
    };
    let right = Region {
        id: 2,
        start_key: b"m".to_vec(),
        end_key: Vec::new(),
        epoch: Some(region::initial_epoch()),
        peers: peers(2),
    };
    (left, right)
}

fn config() -> Config {
    let mut config = Config::new(1);
    config.election_tick = 10;
    config.heartbeat_tick = 1;
    config
}

fn recorder() -> (Callback, Arc<Mutex<Option<KvResult<()>>>>) {
    let outcome = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&outcome);
    (
        Box::new(move |result| *slot.lock().unwrap() = Some(result)),
        outcome,
    )
}

/// Data keys as the engine holds them (MVCC-encoded user keys are not needed here: the
/// writes are raw puts of keys inside the regions' ranges).
fn put(key: &str) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.put(
        Cf::Default,
        crate::mvcc::key::encode_user_key(key.as_bytes()),
        key.as_bytes().to_vec(),
    );
    batch
}

impl Stores {
    fn new() -> Stores {
        let (left, right) = regions();
        let mut stores = Stores {
            engines: BTreeMap::new(),
            peers: BTreeMap::new(),
            isolated: BTreeSet::new(),
        };
        for store in 1..=3 {
            let engine = Arc::new(MemoryEngine::new());
            for region in [&left, &right] {
                let me = *region::peer_on_store(region, store).unwrap();
                let peer = Peer::open(Arc::clone(&engine), region, me, config()).unwrap();
                stores.peers.insert(me.id, peer);
            }
            stores.engines.insert(store, engine);
        }
        stores.peer(11).campaign();
        stores.peer(21).campaign();
        stores.settle();
        stores
    }

    fn peer(&mut self, id: u64) -> &mut Peer<MemoryEngine> {
        self.peers.get_mut(&id).unwrap()
    }

    /// Handles every Ready and delivers messages until nothing moves.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let mut inbox = Vec::new();
            for peer in self.peers.values_mut() {
                inbox.extend(peer.handle_ready().unwrap());
            }
            if inbox.is_empty() {
                return;
            }
            self.deliver(inbox);
        }
        panic!("the stores did not settle");
    }

    fn deliver(&mut self, inbox: Vec<Message>) {
        for message in inbox {
            if self.isolated.contains(&message.from) || self.isolated.contains(&message.to) {
                continue;
            }
            if let Some(peer) = self.peers.get_mut(&message.to) {
                peer.step(message);
            }
        }
    }

    fn write(&mut self, id: u64, key: &str) -> KvResult<()> {
        let (callback, outcome) = recorder();
        self.peer(id)
            .propose_write(put(key), ReadFence::default(), callback);
        self.settle();
        let result = outcome.lock().unwrap().take();
        result.expect("the write was answered")
    }

    /// On every store, a target replica waiting at its CommitMerge has the local source
    /// replica finish (as the store does); repeated until nothing waits.
    fn finish_merges(&mut self) {
        for _ in 0..10 {
            let waiting: Vec<_> = self
                .peers
                .values()
                .filter_map(|p| {
                    p.merge_waiting_for_source()
                        .cloned()
                        .map(|r| (p.meta().store_id, r))
                })
                .collect();
            if waiting.is_empty() {
                return;
            }
            for (store, request) in waiting {
                let source = 10 * request.source.id + store;
                self.peer(source).finish_merge(&request).unwrap();
            }
            self.settle();
        }
        panic!("merges did not finish");
    }

    fn holds(&self, store: u64, key: &str) -> bool {
        self.engines[&store]
            .get(
                Cf::Default,
                &crate::mvcc::key::encode_user_key(key.as_bytes()),
            )
            .unwrap()
            .is_some()
    }
}

#[test]
fn a_merge_freezes_the_source_and_the_target_takes_over_on_every_store() {
    let mut stores = Stores::new();
    stores.write(11, "a").unwrap();
    stores.write(21, "x").unwrap();
    let target = stores.peer(11).region().clone();

    // PrepareMerge with a write right behind it in the log, and a membership change asked
    // for while it is not applied.
    let (prepared, prepare_outcome) = recorder();
    stores
        .peer(21)
        .propose_prepare_merge(target.clone(), prepared);
    let (written, write_outcome) = recorder();
    stores
        .peer(21)
        .propose_write(put("y"), ReadFence::default(), written);
    let (changed, change_outcome) = recorder();
    let learner = PeerMeta {
        id: 24,
        store_id: 4,
        learner: true,
    };
    stores
        .peer(21)
        .propose_change_peer(ChangePeer::AddLearner(learner), changed);
    assert!(matches!(
        change_outcome.lock().unwrap().take(),
        Some(Err(KvError::ServerIsBusy(_)))
    ));

    // Store 3's source replica gets the entries, then hears nothing more: it never learns
    // that the PrepareMerge committed.
    let messages = stores.peer(21).handle_ready().unwrap();
    stores.deliver(messages);
    for id in [22, 23] {
        let answers = stores.peer(id).handle_ready().unwrap();
        stores.deliver(answers);
    }
    stores.isolated.insert(23);
    stores.settle();
    assert!(matches!(
        prepare_outcome.lock().unwrap().take(),
        Some(Ok(()))
    ));
    assert!(
        matches!(
            write_outcome.lock().unwrap().take(),
            Some(Err(KvError::EpochNotMatch { .. }))
        ),
        "a write behind the PrepareMerge is skipped"
    );
    for store in 1..=3 {
        assert!(!stores.holds(store, "y"));
    }
    assert!(stores.peer(22).merging().is_some());
    assert!(stores.peer(23).merging().is_none());
    let prepare_index = stores.peer(22).merging().unwrap().prepare_index;
    let lagging = stores.peer(23).status();
    assert!(lagging.last_index >= prepare_index && lagging.commit < prepare_index);
    let frozen = stores.peer(21).region().clone();
    assert!(region::epoch(&frozen).version > 1 && region::epoch(&frozen).conf_ver > 1);

    // Frozen: no writes, reads, splits or membership changes.
    let (written, outcome) = recorder();
    stores
        .peer(21)
        .propose_write(put("z"), ReadFence::default(), written);
    assert!(matches!(
        outcome.lock().unwrap().take(),
        Some(Err(KvError::ServerIsBusy(_)))
    ));
    let read_outcome = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&read_outcome);
    stores
        .peer(21)
        .read_index(Box::new(move |r| *slot.lock().unwrap() = Some(r.is_ok())));
    assert_eq!(*read_outcome.lock().unwrap(), Some(false));

    // Every source replica's log holds the PrepareMerge, so the leader hands on the commit.
    let request = stores
        .peer(21)
        .commit_merge_request()
        .expect("every replica holds the PrepareMerge");
    let (committed, commit_outcome) = recorder();
    stores.peer(11).propose_commit_merge(request, committed);
    stores.settle();
    assert!(
        commit_outcome.lock().unwrap().is_none(),
        "waits for the source"
    );
    stores.finish_merges();
    assert!(matches!(
        commit_outcome.lock().unwrap().take(),
        Some(Ok(()))
    ));

    // Stores 1 and 2 are merged; store 3's source replica finishes once it hears from its
    // target replica, which is not isolated (only the source's peer 23 is).
    for store in 1..=3 {
        let merged = stores.peer(10 + store).region().clone();
        assert!(
            merged.start_key.is_empty() && merged.end_key.is_empty(),
            "store {store}"
        );
        assert!(region::epoch(&merged).version > region::epoch(&frozen).version);
        assert!(stores.peer(20 + store).is_merged(), "store {store}");
        assert!(stores.holds(store, "a") && stores.holds(store, "x"));
    }
    // The merged region takes writes on both sides of the old boundary.
    stores.write(11, "b").unwrap();
    stores.write(11, "w").unwrap();
    for store in 1..=3 {
        assert!(stores.holds(store, "b") && stores.holds(store, "w"));
    }
}

#[test]
fn a_commit_merge_against_a_changed_target_is_skipped_everywhere() {
    let mut stores = Stores::new();
    let planned = stores.peer(11).region().clone();
    let (prepared, _) = recorder();
    stores
        .peer(21)
        .propose_prepare_merge(planned.clone(), prepared);
    stores.settle();
    let mut request = stores.peer(21).commit_merge_request().unwrap();
    // Planned against an older epoch of the target: refused at proposal and, were it in
    // the log, at apply.
    request.merge.target.epoch = Some(proto::metapb::RegionEpoch {
        conf_ver: 1,
        version: 0,
    });
    let (committed, outcome) = recorder();
    stores.peer(11).propose_commit_merge(request, committed);
    assert!(matches!(
        outcome.lock().unwrap().take(),
        Some(Err(KvError::Server(_)))
    ));
    stores.settle();
    assert_eq!(stores.peer(11).region(), &planned);
}
