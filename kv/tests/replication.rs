//! Percolator transactions over a replicated region: three replicas on three engines, each
//! peer driven by its own thread over an in-process transport. Writes commit through Raft,
//! reads on any replica are linearizable (ReadIndex), and losing the leader loses no
//! acknowledged write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::raftstore::Peer;
use kv::raftstore::driver::{LocalTransport, PeerMsg, PeerThread, spawn_peer};
use kv::storage::MemoryEngine;
use kv::txn::{TxnCommands, TxnStore};
use kv::{KvResult, Transaction, TxnClient, TxnOptions};
use raft::{ConfState, Config};
use scheduler::TimestampOracle;

const TICK: Duration = Duration::from_millis(10);
/// Generous: a loaded 2-core machine must meet it.
const DEADLINE: Duration = Duration::from_secs(20);

struct Region {
    engines: Vec<Arc<MemoryEngine>>,
    threads: Vec<Option<PeerThread>>,
    stores: Vec<Option<Arc<TxnStore<MemoryEngine>>>>,
    transport: Arc<LocalTransport>,
    tso: Arc<TimestampOracle>,
}

impl Region {
    fn new() -> Region {
        let mut region = Region {
            engines: (0..3).map(|_| Arc::new(MemoryEngine::new())).collect(),
            threads: vec![None, None, None],
            stores: vec![None, None, None],
            transport: Arc::new(LocalTransport::default()),
            tso: Arc::new(TimestampOracle::in_memory()),
        };
        for i in 0..3 {
            region.start(i);
        }
        region
    }

    /// (Re)starts replica `i` (peer id `i + 1`) from what its engine persisted.
    fn start(&mut self, i: usize) {
        let engine = Arc::clone(&self.engines[i]);
        let mut config = Config::new(1);
        config.election_tick = 10;
        let peer = Peer::open(
            Arc::clone(&engine),
            1,
            i as u64 + 1,
            (b"", None),
            ConfState::with_voters([1, 2, 3]),
            config,
        )
        .expect("open peer");
        let thread = spawn_peer(
            peer,
            1,
            self.transport.clone(),
            TICK,
            Duration::from_secs(5),
        );
        self.transport.register(i as u64 + 1, &thread.handle);
        self.stores[i] = Some(Arc::new(TxnStore::with_replication(
            engine,
            Arc::new(thread.handle.clone()),
        )));
        self.threads[i] = Some(thread);
    }

    fn stop(&mut self, i: usize) {
        self.transport.unregister(i as u64 + 1);
        self.stores[i] = None;
        if let Some(thread) = self.threads[i].take() {
            thread.stop();
        }
    }

    fn client(&self, i: usize) -> TxnClient {
        let store: Arc<dyn TxnCommands> = self.stores[i].clone().expect("replica running");
        TxnClient::new(store, self.tso.clone(), TxnOptions::default())
    }

    /// Runs `work` in a transaction through replica `i`, retrying (as a client facing a
    /// leader change would) until it succeeds or the deadline passes.
    fn transact<T>(
        &self,
        i: usize,
        mut work: impl FnMut(&mut dyn Transaction) -> KvResult<T>,
    ) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let attempt = self.client(i).begin_txn().and_then(|mut txn| {
                let value = work(&mut txn)?;
                txn.commit()?;
                Ok(value)
            });
            match attempt {
                Ok(value) => return value,
                Err(_) if Instant::now() < deadline => std::thread::sleep(TICK * 5),
                Err(e) => panic!("replica {i}: no success before the deadline: {e}"),
            }
        }
    }

    /// The replica whose writes succeed: the leader.
    fn leader(&self) -> usize {
        let deadline = Instant::now() + DEADLINE;
        loop {
            for i in 0..3 {
                if self.stores[i].is_some()
                    && self
                        .client(i)
                        .begin_txn()
                        .and_then(|mut t| {
                            t.put(b"probe".to_vec(), b"x".to_vec());
                            t.commit()
                        })
                        .is_ok()
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader elected in time");
            std::thread::sleep(TICK * 5);
        }
    }
}

fn read_all(txn: &mut dyn Transaction) -> KvResult<Vec<String>> {
    Ok(txn
        .scan(b"row", Some(b"rox"), usize::MAX)?
        .into_iter()
        .map(|(k, _)| String::from_utf8(k).unwrap())
        .collect())
}

#[test]
fn transactions_survive_the_loss_of_the_leader() {
    let mut region = Region::new();
    region.threads[0]
        .as_ref()
        .unwrap()
        .handle
        .send(PeerMsg::Campaign);
    let leader = region.leader();
    for n in 0..10 {
        region.transact(leader, |txn| {
            txn.put(format!("row{n:02}").into_bytes(), b"v".to_vec());
            Ok(())
        });
    }
    // Every replica reads every acknowledged row (a follower read is a ReadIndex round).
    for i in 0..3 {
        assert_eq!(region.transact(i, read_all).len(), 10, "replica {i}");
    }

    // The leader dies; the other two elect a new one and keep committing.
    region.stop(leader);
    let new_leader = region.leader();
    assert_ne!(new_leader, leader);
    for n in 10..15 {
        region.transact(new_leader, |txn| {
            txn.put(format!("row{n:02}").into_bytes(), b"v".to_vec());
            Ok(())
        });
    }
    // The old leader comes back and catches up.
    region.start(leader);
    let rows = region.transact(leader, read_all);
    assert_eq!(rows.len(), 15, "{rows:?}");
    for i in 0..3 {
        region.stop(i);
    }
}
