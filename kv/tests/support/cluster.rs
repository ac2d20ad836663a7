//! An in-process cluster for raftstore tests: N stores on RocksDB engines in temp dirs, an
//! in-process scheduler, a network with filters (isolate a store, partition the stores into
//! groups, drop a fraction of messages) and stop/restart of stores, plus a transaction client
//! routed through the scheduler like a real node's.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kv::client::{RoutedCommands, StoreConnector};
use kv::raftstore::driver::{DriverConfig, PeerStatus};
use kv::raftstore::region::ChangePeer;
use kv::raftstore::split_check::SplitConfig;
use kv::raftstore::store::ensure_store_id;
use kv::raftstore::store_commands::StoreCommands;
use kv::raftstore::{RaftEnvelope, RaftRouter, Store, StoreConfig, Transport};
use kv::storage::RocksEngine;
use kv::txn::{CommandRouter, TxnCommands};
use kv::{KvError, KvResult, TxnClient, TxnOptions};
use proto::metapb::{Peer as PeerMeta, Region, Store as StoreMeta};
use raft::Config as RaftConfig;
use scheduler::{Cluster, ClusterApi, ClusterConfig, IdAllocator, LocalCluster, TimestampOracle};
use tempfile::TempDir;

/// Generous: a loaded 2-core machine must meet it.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The network between stores, with filters.
#[derive(Default)]
pub struct Network {
    /// Per store, the queue of its delivery thread: like the gRPC transport, a store's
    /// incoming messages are delivered on threads of its own, never on the sender's.
    routers: RwLock<BTreeMap<u64, std::sync::mpsc::Sender<RaftEnvelope>>>,
    filters: Mutex<Filters>,
}

#[derive(Default)]
struct Filters {
    isolated: BTreeSet<u64>,
    /// Stores in different groups cannot talk (empty: no partition).
    groups: Vec<BTreeSet<u64>>,
    drop_percent: u64,
    rng: u64,
    /// (region, store): that region's messages to and from that store are dropped.
    cut_regions: BTreeSet<(u64, u64)>,
}

impl Filters {
    fn blocks(&mut self, region: u64, from: u64, to: u64) -> bool {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return true;
        }
        if self.cut_regions.contains(&(region, from)) || self.cut_regions.contains(&(region, to)) {
            return true;
        }
        if !self.groups.is_empty() {
            let group = |s: u64| self.groups.iter().position(|g| g.contains(&s));
            if group(from) != group(to) {
                return true;
            }
        }
        if self.drop_percent > 0 {
            return xorshift(&mut self.rng) % 100 < self.drop_percent;
        }
        false
    }
}

/// xorshift: deterministic per seed, good enough for fault schedules.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A seeded source of choices for a randomized test: the seed is `CLUSTER_SEED` or `default`,
/// printed so that a failure can be replayed. Returns `below(n)`, a number in `0..n`.
pub fn seeded_choices(default: u64) -> impl FnMut(u64) -> u64 {
    let seed: u64 = std::env::var("CLUSTER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    println!("cluster seed {seed} (CLUSTER_SEED=n replays the schedule)");
    let mut state = seed | 1;
    move |n| xorshift(&mut state) % n
}

impl Network {
    fn filters(&self) -> std::sync::MutexGuard<'_, Filters> {
        self.filters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn isolate(&self, store: u64) {
        self.filters().isolated.insert(store);
    }

    /// Drops region `region`'s messages to and from store `store` (other regions still talk).
    pub fn cut_region(&self, region: u64, store: u64) {
        self.filters().cut_regions.insert((region, store));
    }

    pub fn partition(&self, groups: &[&[u64]]) {
        self.filters().groups = groups.iter().map(|g| g.iter().copied().collect()).collect();
    }

    pub fn drop_percent(&self, percent: u64, seed: u64) {
        let mut filters = self.filters();
        filters.drop_percent = percent;
        filters.rng = seed | 1;
    }

    pub fn heal(&self) {
        let mut filters = self.filters();
        filters.isolated.clear();
        filters.groups.clear();
        filters.drop_percent = 0;
        filters.cut_regions.clear();
    }
}

impl Network {
    /// Starts delivering messages for store `id` to `router` (until the store is removed).
    fn attach(&self, id: u64, router: Arc<dyn RaftRouter>) {
        let (queue, incoming) = std::sync::mpsc::channel::<RaftEnvelope>();
        std::thread::spawn(move || {
            for envelope in incoming {
                router.deliver(envelope);
            }
        });
        self.routers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, queue);
    }
}

impl Transport for Network {
    fn send(&self, envelope: RaftEnvelope) {
        let (from, to) = (envelope.from_peer.store_id, envelope.to_peer.store_id);
        if self.filters().blocks(envelope.region_id, from, to) {
            return;
        }
        if let Some(queue) = self
            .routers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&to)
        {
            let _ = queue.send(envelope);
        }
    }
}

/// The stores' command routers, for the client (a stopped store is unreachable).
#[derive(Default)]
pub struct InProcessStores {
    stores: RwLock<BTreeMap<u64, Arc<dyn CommandRouter>>>,
    /// Stores the client cannot reach (isolated from clients too).
    unreachable: RwLock<BTreeSet<u64>>,
}

impl StoreConnector for InProcessStores {
    fn store(&self, store_id: u64) -> KvResult<Arc<dyn CommandRouter>> {
        if self
            .unreachable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&store_id)
        {
            return Err(KvError::Unavailable(format!(
                "store {store_id} unreachable"
            )));
        }
        self.stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&store_id)
            .cloned()
            .ok_or_else(|| KvError::Unavailable(format!("store {store_id} is down")))
    }
}

pub struct TestCluster {
    pub scheduler: Arc<LocalCluster>,
    pub network: Arc<Network>,
    pub client: TxnClient,
    /// The routing client the stores report their lock waits through (to the cluster's
    /// deadlock detector), as a node's stores do.
    detector_client: Arc<dyn TxnCommands>,
    pub tso: Arc<TimestampOracle>,
    connector: Arc<InProcessStores>,
    /// Store id -> its data dir (kept across restarts).
    dirs: BTreeMap<u64, TempDir>,
    stores: BTreeMap<u64, Option<Arc<Store<RocksEngine>>>>,
    config: StoreConfig,
}

static SEEDS: AtomicU64 = AtomicU64::new(1);

pub fn store_config(log_gc_limit: u64) -> StoreConfig {
    let mut raft = RaftConfig::new(0);
    raft.election_tick = 10;
    raft.heartbeat_tick = 2;
    raft.seed = SEEDS.fetch_add(1000, Ordering::Relaxed);
    StoreConfig {
        raft,
        driver: DriverConfig {
            tick: Duration::from_millis(20),
            timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            log_gc_limit,
            log_gc_size_limit: 64 << 20,
            heartbeat_ticks: 5,
            split_check_ticks: 10,
            // Every committed write goes through the apply workers (the binary's default
            // applies small runs in the peer; the process tests run that).
            apply_inline_max_bytes: 0,
            // Quiet regions hibernate here too (sooner, at this tick), so every scenario
            // also runs through falling asleep and waking.
            ..DriverConfig::default()
        },
        store_heartbeat: Duration::from_millis(100),
        split: SplitConfig::default(),
    }
}

/// `store_config` with regions that split past `max_size` bytes into parts of `split_size`.
pub fn split_config(log_gc_limit: u64, split_size: u64, max_size: u64) -> StoreConfig {
    StoreConfig {
        split: SplitConfig::by_size(split_size, max_size),
        ..store_config(log_gc_limit)
    }
}

impl TestCluster {
    /// `count` stores, bootstrapped by the first; the scheduler brings the region to
    /// `max_replicas`.
    pub fn new(count: usize, max_replicas: usize) -> TestCluster {
        Self::with_config(count, max_replicas, store_config(1000))
    }

    pub fn with_config(count: usize, max_replicas: usize, config: StoreConfig) -> TestCluster {
        Self::with_scheduler(count, max_replicas, config, |_| {})
    }

    /// Like `with_config`, with the scheduler's settings changed by `tweak`.
    pub fn with_scheduler(
        count: usize,
        max_replicas: usize,
        config: StoreConfig,
        tweak: impl FnOnce(&mut ClusterConfig),
    ) -> TestCluster {
        // RUST_LOG=info (or debug, …) shows the stores' logs on a failing test's output.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
        let mut scheduler_config = ClusterConfig {
            max_replicas,
            store_down_after: Duration::from_secs(2),
            operator_timeout: Duration::from_secs(5),
            // Long enough for the restarts the tests do; short enough to test replacement.
            replace_down_after: Duration::from_secs(6),
            balance_interval: Duration::from_millis(200),
            ..ClusterConfig::default()
        };
        tweak(&mut scheduler_config);
        let scheduler = Arc::new(LocalCluster::new(
            Arc::new(Cluster::in_memory(scheduler_config)),
            Arc::new(IdAllocator::in_memory()),
        ));
        let connector = Arc::new(InProcessStores::default());
        let tso = Arc::new(TimestampOracle::in_memory());
        let routed = RoutedCommands::new(
            Arc::clone(&scheduler) as Arc<dyn ClusterApi>,
            Arc::clone(&connector) as Arc<dyn StoreConnector>,
            Duration::from_secs(20),
        );
        let client = TxnClient::new(Arc::new(routed), tso.clone(), TxnOptions::default());
        let detector_client: Arc<dyn TxnCommands> = Arc::new(RoutedCommands::new(
            Arc::clone(&scheduler) as Arc<dyn ClusterApi>,
            Arc::clone(&connector) as Arc<dyn StoreConnector>,
            kv::txn::detector::REPORT_TIMEOUT,
        ));
        let mut cluster = TestCluster {
            scheduler,
            network: Arc::new(Network::default()),
            client,
            detector_client,
            tso,
            connector,
            dirs: BTreeMap::new(),
            stores: BTreeMap::new(),
            config,
        };
        for _ in 0..count {
            cluster.add_store();
        }
        cluster
    }

    /// Adds and starts a new store; returns its id.
    pub fn add_store(&mut self) -> u64 {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = RocksEngine::open(dir.path()).expect("open engine");
        let id = ensure_store_id(&engine, self.scheduler.as_ref()).expect("store id");
        drop(engine);
        self.dirs.insert(id, dir);
        self.start(id);
        id
    }

    /// Adds a store whose `Store::start` talks to `api` instead of the scheduler (to inject
    /// scheduler failures); returns its id and the start's outcome. The store is not kept
    /// running: `start(id)` restarts it normally.
    pub fn try_add_store_with(&mut self, api: Arc<dyn ClusterApi>) -> (u64, KvResult<()>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = RocksEngine::open(dir.path()).expect("open engine");
        let id = ensure_store_id(&engine, self.scheduler.as_ref()).expect("store id");
        drop(engine);
        self.dirs.insert(id, dir);
        let engine = Arc::new(RocksEngine::open(self.dirs[&id].path()).expect("open engine"));
        let meta = StoreMeta {
            id,
            address: format!("store-{id}"),
            pg_address: String::new(),
        };
        let network = Arc::clone(&self.network) as Arc<dyn Transport>;
        let result = Store::start(engine, meta, api, network, self.config.clone());
        (id, result.map(drop))
    }

    /// A new client with an empty region cache.
    pub fn fresh_client(&self) -> TxnClient {
        self.client_with(TxnOptions::default())
    }

    /// A new client with an empty region cache and these options.
    pub fn client_with(&self, options: TxnOptions) -> TxnClient {
        let routed = RoutedCommands::new(
            Arc::clone(&self.scheduler) as Arc<dyn ClusterApi>,
            Arc::clone(&self.connector) as Arc<dyn StoreConnector>,
            Duration::from_secs(20),
        );
        TxnClient::new(Arc::new(routed), self.tso.clone(), options)
    }

    /// A store's data directory.
    pub fn dir(&self, id: u64) -> std::path::PathBuf {
        self.dirs[&id].path().to_path_buf()
    }

    pub fn store_ids(&self) -> Vec<u64> {
        self.stores.keys().copied().collect()
    }

    /// (Re)starts store `id` from its data dir.
    pub fn start(&mut self, id: u64) {
        let engine = Arc::new(RocksEngine::open(self.dirs[&id].path()).expect("open engine"));
        let meta = StoreMeta {
            id,
            address: format!("store-{id}"),
            pg_address: String::new(),
        };
        let store = Arc::new(
            Store::start(
                engine,
                meta,
                Arc::clone(&self.scheduler) as Arc<dyn ClusterApi>,
                Arc::clone(&self.network) as Arc<dyn Transport>,
                self.config.clone(),
            )
            .expect("start store"),
        );
        self.network.attach(id, store.router());
        let commands = StoreCommands::new(Arc::clone(&store));
        commands.report_deadlocks_through(Arc::downgrade(&self.detector_client));
        self.connector
            .stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, Arc::new(commands));
        self.stores.insert(id, Some(store));
    }

    /// Stops store `id` (its data stays), like a crash of its process.
    pub fn stop(&mut self, id: u64) {
        self.network
            .routers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.connector
            .stores
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(Some(store)) = self.stores.insert(id, None) {
            store.stop();
        }
    }

    pub fn store(&self, id: u64) -> &Arc<Store<RocksEngine>> {
        self.stores[&id].as_ref().expect("store is running")
    }

    /// Cuts store `id` off from the other stores and from clients.
    pub fn isolate(&self, id: u64) {
        self.network.isolate(id);
        self.connector
            .unreachable
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }

    pub fn heal(&self) {
        self.network.heal();
        self.connector
            .unreachable
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// The status of every running replica of `region_id`, by store.
    pub fn statuses(&self, region_id: u64) -> BTreeMap<u64, PeerStatus> {
        self.stores
            .iter()
            .filter_map(|(&id, s)| {
                let status = s.as_ref()?.peer(region_id)?.status()?;
                Some((id, status))
            })
            .collect()
    }

    /// The region's id (the cluster has one).
    pub fn region_id(&self) -> u64 {
        self.wait_for("the bootstrap region", || {
            self.scheduler
                .get_region(b"")
                .ok()
                .flatten()
                .map(|(r, _)| r.id)
        })
    }

    /// The store whose replica leads the region, once exactly one running replica does and
    /// its term is the highest.
    pub fn leader_store(&self, region_id: u64) -> u64 {
        self.wait_for("a leader", || {
            let statuses = self.statuses(region_id);
            let leaders: Vec<_> = statuses
                .iter()
                .filter(|(_, s)| s.raft.role == raft::Role::Leader)
                .collect();
            let max_term = statuses.values().map(|s| s.raft.term).max()?;
            match leaders.as_slice() {
                [(store, s)] if s.raft.term == max_term => Some(**store),
                _ => None,
            }
        })
    }

    /// Waits until the region has `voters` voters (and no learner) on distinct stores, as
    /// applied by the leader.
    pub fn wait_for_voters(&self, region_id: u64, voters: usize) -> Region {
        self.wait_for("the region's membership", || {
            let leader = self.leader_store(region_id);
            let status = self.statuses(region_id).remove(&leader)?;
            let region = status.region;
            (region.peers.len() == voters && region.peers.iter().all(|p| !p.learner))
                .then_some(region)
        })
    }

    /// Waits until `store`'s replica of the region has applied all the leader has.
    pub fn wait_caught_up(&self, region_id: u64, store: u64) {
        self.wait_for("a replica to catch up", || {
            let statuses = self.statuses(region_id);
            let leader_applied = statuses.get(&self.leader_store(region_id))?.raft.applied;
            (statuses.get(&store)?.raft.applied >= leader_applied).then_some(())
        })
    }

    /// A replica of `region` that is not on the leader's store.
    pub fn follower(&self, region: &Region) -> PeerMeta {
        let leader = self.leader_store(region.id);
        *region
            .peers
            .iter()
            .find(|p| p.store_id != leader)
            .expect("a follower")
    }

    /// Polls `check` until it returns something or the deadline passes (then panics).
    pub fn wait_for<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(value) = check() {
                return value;
            }
            if start.elapsed() > DEADLINE {
                panic!("timed out after {DEADLINE:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Proposes a membership change on the region's leader, retrying on a new leader.
    pub fn change_peer(&self, region_id: u64, change: ChangePeer) {
        self.wait_for("the membership change", || {
            let leader = self.leader_store(region_id);
            let handle = self.store(leader).peer(region_id)?;
            match handle.change_peer(change.clone()) {
                Ok(()) => Some(()),
                Err(_) => None,
            }
        })
    }

    pub fn transfer_leader(&self, region_id: u64, to_store: u64) {
        self.wait_for("the leader transfer", || {
            let leader = self.leader_store(region_id);
            if leader == to_store {
                return Some(());
            }
            let region = self.statuses(region_id).remove(&leader)?.region;
            let target = region.peers.iter().find(|p| p.store_id == to_store)?;
            self.store(leader)
                .peer(region_id)?
                .transfer_leader(target.id);
            std::thread::sleep(Duration::from_millis(50));
            None
        })
    }

    pub fn peer_on(region: &Region, store: u64) -> Option<PeerMeta> {
        region.peers.iter().find(|p| p.store_id == store).copied()
    }

    /// The regions as the scheduler knows them, in key order.
    pub fn regions(&self) -> Vec<Region> {
        self.scheduler
            .scan_regions(b"", b"", 0)
            .expect("scan regions")
            .into_iter()
            .filter_map(|info| info.region)
            .collect()
    }

    /// Waits until the scheduler knows at least `count` regions; returns them.
    pub fn wait_for_regions(&self, count: usize) -> Vec<Region> {
        self.wait_for(&format!("{count} regions"), || {
            let regions = self.regions();
            (regions.len() >= count).then_some(regions)
        })
    }

    /// Asks the scheduler to split at `key` and waits until a region starts there.
    pub fn split_at(&self, key: &[u8]) -> Region {
        self.scheduler
            .split_regions(vec![key.to_vec()])
            .expect("split regions");
        self.wait_for("the split", || {
            self.regions().into_iter().find(|r| r.start_key == key)
        })
    }

    /// Checks the regions: the scheduler's cover the keyspace without gaps or overlaps, and
    /// on every running store the initialised replicas' ranges do not overlap (no key is
    /// served by two replicas of one store).
    pub fn check_regions(&self) {
        let regions = self.regions();
        let mut expected_start: Vec<u8> = Vec::new();
        for (i, region) in regions.iter().enumerate() {
            assert_eq!(
                region.start_key, expected_start,
                "the scheduler's regions have a gap or an overlap before region {}",
                region.id
            );
            if i + 1 == regions.len() {
                assert!(region.end_key.is_empty(), "the last region is bounded");
            }
            expected_start = region.end_key.clone();
        }
        for (&id, store) in &self.stores {
            let Some(store) = store else { continue };
            let mut ranges: Vec<(Vec<u8>, Vec<u8>, u64)> = store
                .region_ids()
                .into_iter()
                .filter_map(|region_id| {
                    let status = store.peer(region_id)?.status()?;
                    let r = status.region;
                    (!r.peers.is_empty()).then_some((r.start_key, r.end_key, r.id))
                })
                .collect();
            ranges.sort();
            for pair in ranges.windows(2) {
                let (left, right) = (&pair[0], &pair[1]);
                assert!(
                    !left.1.is_empty() && left.1 <= right.0,
                    "store {id}: regions {} and {} overlap",
                    left.2,
                    right.2
                );
            }
        }
    }

    /// Waits until every region the scheduler knows has a replica on each of `stores` that
    /// applied all its leader has.
    pub fn wait_all_caught_up(&self, stores: &[u64]) {
        self.wait_for("every replica to catch up", || {
            for region in self.regions() {
                let statuses = self.statuses(region.id);
                let leader = statuses
                    .values()
                    .filter(|s| s.raft.role == raft::Role::Leader)
                    .max_by_key(|s| s.raft.term)?;
                for store in stores {
                    if statuses.get(store)?.raft.applied < leader.raft.applied {
                        return None;
                    }
                }
            }
            Some(())
        })
    }

    pub fn stop_all(&mut self) {
        for id in self.store_ids() {
            self.stop(id);
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
