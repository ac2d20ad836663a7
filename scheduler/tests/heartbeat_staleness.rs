//! Region heartbeats against [`scheduler::Cluster`] in the spirit of TinyKV's
//! `TestHeartbeatSplit` and `TestRegionHeartbeat`: splits reported in either order and out of
//! order, stale reports, deposed leaders, and a randomized history of splits, membership
//! changes and elections whose reports arrive shuffled, some late and some twice.
//!
//! A split in RegionDB keeps the region's id on the left half and gives the right half a new
//! id; both halves get the parent's `version + 1` (see `kv::raftstore::region::split`). The
//! scheduler's rule (the module doc of `scheduler::cluster`): a report is stale if its epoch is
//! older than the one known for its id, or its version is lower than that of an overlapping
//! region, or, for an id it does not know, not higher; an accepted report drops every region
//! it overlaps.
//!
//! Only the public API is used: `bootstrap`, `region_heartbeat`, `get_region`,
//! `get_region_by_id` and `scan_regions`.

use std::collections::BTreeMap;
use std::time::Instant;

use proto::scheduler::{RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo};
use scheduler::{Cluster, ClusterConfig, IdAllocator, Peer, Region, RegionEpoch, Store};

fn store(id: u64) -> Store {
    Store {
        id,
        address: format!("127.0.0.1:{}", 40000 + id),
        pg_address: String::new(),
    }
}

fn peer(id: u64, store_id: u64) -> Peer {
    Peer {
        id,
        store_id,
        learner: false,
    }
}

fn region(
    id: u64,
    (start, end): (&[u8], &[u8]),
    (conf_ver, version): (u64, u64),
    peers: Vec<Peer>,
) -> Region {
    Region {
        id,
        start_key: start.to_vec(),
        end_key: end.to_vec(),
        epoch: Some(RegionEpoch { conf_ver, version }),
        peers,
    }
}

/// One report of a region by its leader.
#[derive(Clone, Debug)]
struct Report {
    region: Region,
    leader: Peer,
    term: u64,
    approximate_size: u64,
}

impl Report {
    /// A report led by the region's first peer, in term 1.
    fn of(region: &Region) -> Report {
        Report {
            region: region.clone(),
            leader: region.peers[0],
            term: 1,
            approximate_size: region.id * 1000,
        }
    }

    /// What the scheduler should answer for this region once this is its newest report.
    fn info(&self) -> RegionInfo {
        RegionInfo {
            region: Some(self.region.clone()),
            leader: Some(self.leader),
            approximate_size: self.approximate_size,
            approximate_keys: 0,
        }
    }
}

/// A cluster bootstrapped with store 1 and region 1 = `[, )` at epoch (1, 1) on peer 10,
/// wanting one replica (so that the replica checker leaves single-peer regions alone), with
/// stores 2 and 3 registered for regions with more peers.
struct Harness {
    cluster: Cluster,
    ids: IdAllocator,
    now: Instant,
}

impl Harness {
    fn new() -> Harness {
        let now = Instant::now();
        let cluster = Cluster::in_memory(ClusterConfig {
            max_replicas: 1,
            ..ClusterConfig::default()
        });
        let first = region(1, (b"", b""), (1, 1), vec![peer(10, 1)]);
        assert!(cluster.bootstrap(store(1), first, now).unwrap());
        for id in [2, 3] {
            cluster.put_store(store(id), now).unwrap();
        }
        Harness {
            cluster,
            ids: IdAllocator::in_memory(),
            now,
        }
    }

    fn send(&self, report: &Report) -> RegionHeartbeatResponse {
        let request = RegionHeartbeatRequest {
            region: Some(report.region.clone()),
            leader: Some(report.leader),
            pending_peers: vec![],
            approximate_size: report.approximate_size,
            term: report.term,
            approximate_keys: 0,
            size_measured: true,
            merging_into: 0,
        };
        let response = self
            .cluster
            .region_heartbeat(request, &self.ids, self.now)
            .unwrap();
        assert_eq!(response.region_id, report.region.id);
        response
    }

    /// Sends a report from a deposed leader: neither stale nor answered with anything.
    fn ignore(&self, report: &Report) {
        let before = self.regions();
        let response = self.send(report);
        assert_eq!(
            response,
            RegionHeartbeatResponse {
                region_id: report.region.id,
                ..RegionHeartbeatResponse::default()
            },
            "{report:?}"
        );
        assert_eq!(
            self.regions(),
            before,
            "the deposed {report:?} changed the regions"
        );
    }

    /// Sends a report that must be accepted.
    fn accept(&self, report: &Report) {
        let response = self.send(report);
        assert_eq!(response.stale, "", "{report:?} must be accepted");
    }

    /// Sends a report that must be rejected as stale, changing nothing.
    fn reject(&self, report: &Report) {
        let before = self.regions();
        let response = self.send(report);
        assert_ne!(response.stale, "", "{report:?} must be stale");
        // The reason and nothing else: no operation, no split.
        assert_eq!(
            response,
            RegionHeartbeatResponse {
                region_id: report.region.id,
                stale: response.stale.clone(),
                ..RegionHeartbeatResponse::default()
            },
            "{report:?}"
        );
        assert_eq!(
            self.regions(),
            before,
            "the stale {report:?} changed the regions"
        );
    }

    /// Every known region in key order, with its leader and size.
    fn regions(&self) -> Vec<RegionInfo> {
        self.cluster.scan_regions(b"", b"", 0)
    }

    fn id_at(&self, key: &[u8]) -> Option<u64> {
        self.cluster.get_region(key).map(|(r, _)| r.id)
    }

    /// The known regions do not overlap, and lookups by key, by id and by scan agree on each.
    fn assert_consistent(&self, context: &str) {
        let regions = self.regions();
        for pair in regions.windows(2) {
            let (left, right) = (pair[0].region.as_ref(), pair[1].region.as_ref());
            let (left, right) = (left.unwrap(), right.unwrap());
            assert!(
                !left.end_key.is_empty() && left.end_key <= right.start_key,
                "{context}: region {} overlaps or does not precede region {}: {regions:?}",
                left.id,
                right.id
            );
        }
        for info in &regions {
            let region = info.region.as_ref().unwrap();
            let known = Some((region.clone(), info.leader));
            assert_eq!(
                self.cluster.get_region_by_id(region.id),
                known,
                "{context}: by id"
            );
            assert_eq!(
                self.cluster.get_region(&region.start_key),
                known,
                "{context}: by start key"
            );
            let mut inside = region.start_key.clone();
            inside.push(0);
            if region.end_key.is_empty() || inside < region.end_key {
                assert_eq!(self.cluster.get_region(&inside), known, "{context}: inside");
            }
            if !region.end_key.is_empty() {
                assert_ne!(
                    self.id_at(&region.end_key),
                    Some(region.id),
                    "{context}: the end key is outside"
                );
            }
            assert_eq!(
                self.cluster
                    .scan_regions(&region.start_key, &region.end_key, 0),
                vec![info.clone()],
                "{context}: scanning the region's own range"
            );
            assert_eq!(
                self.cluster.scan_regions(&region.start_key, b"", 1),
                vec![info.clone()],
                "{context}: scanning one region from its start"
            );
        }
    }
}

/// The parent `[, )` at (1, 1) split at `m`: region 1 keeps `[, m)`, region 2 is `[m, )`.
fn split_halves() -> (Report, Report) {
    let left = region(1, (b"", b"m"), (1, 2), vec![peer(10, 1)]);
    let right = region(2, (b"m", b""), (1, 2), vec![peer(20, 1)]);
    (Report::of(&left), Report::of(&right))
}

#[test]
fn a_split_reported_left_first_then_right_ends_with_both_halves() {
    let h = Harness::new();
    let (left, right) = split_halves();
    h.accept(&left);
    assert_eq!(h.id_at(b"a"), Some(1));
    // [m, ) is missing until the right half reports.
    assert_eq!(h.id_at(b"z"), None);
    h.assert_consistent("after the left half");
    h.accept(&right);
    assert_eq!(h.id_at(b"z"), Some(2));
    assert_eq!(h.regions(), vec![left.info(), right.info()]);
    h.assert_consistent("after both halves");
}

#[test]
fn a_split_reported_right_first_then_left_ends_with_both_halves() {
    let h = Harness::new();
    let (left, right) = split_halves();
    h.accept(&right);
    // The right half is newer than the parent it overlaps: the parent is dropped, and [, m)
    // is missing until the left half reports.
    assert_eq!(h.id_at(b"z"), Some(2));
    assert_eq!(h.id_at(b"a"), None);
    assert_eq!(h.cluster.get_region_by_id(1), None);
    h.assert_consistent("after the right half");
    h.accept(&left);
    assert_eq!(h.id_at(b"a"), Some(1));
    assert_eq!(h.regions(), vec![left.info(), right.info()]);
    h.assert_consistent("after both halves");
}

#[test]
fn stale_reports_are_answered_stale_and_change_nothing() {
    let h = Harness::new();
    let (left, right) = split_halves();
    h.accept(&left);
    h.accept(&right);
    // A membership change of region 1: conf_ver 2, a second peer, a new size.
    let mut changed = Report::of(&region(
        1,
        (b"", b"m"),
        (2, 2),
        vec![peer(10, 1), peer(11, 2)],
    ));
    changed.term = 2;
    changed.approximate_size = 100;
    h.accept(&changed);
    assert_eq!(h.regions(), vec![changed.info(), right.info()]);

    let stale = |id, range, epoch, peers| Report {
        term: 99,
        approximate_size: 555,
        ..Report::of(&region(id, range, epoch, peers))
    };
    let both = || vec![peer(10, 1), peer(11, 2)];
    let reports = [
        // Region 1 with a lower conf_ver, the same version.
        stale(1, (b"", b"m"), (1, 2), vec![peer(10, 1)]),
        // Region 1 as it was before the split: a lower version.
        stale(1, (b"", b""), (2, 1), both()),
        // A lower version with a higher conf_ver is stale too...
        stale(1, (b"", b"m"), (3, 1), both()),
        // ...and so is a higher version with a lower conf_ver.
        stale(1, (b"", b"f"), (1, 3), vec![peer(10, 1)]),
        // Region 2 with a lower version than known.
        stale(2, (b"m", b""), (1, 1), vec![peer(20, 1)]),
        // Unknown regions with a lower version than the overlapping regions 1 and 2, whatever
        // their conf_ver.
        stale(3, (b"k", b"p"), (1, 1), vec![peer(30, 1)]),
        stale(3, (b"a", b"b"), (9, 1), vec![peer(30, 1)]),
        // Region 2 at an older version, reaching into region 1.
        stale(2, (b"a", b""), (1, 1), vec![peer(20, 1)]),
    ];
    for report in &reports {
        h.reject(report);
    }
    assert_eq!(h.regions(), vec![changed.info(), right.info()]);
    h.assert_consistent("after the stale reports");
}

#[test]
fn an_unknown_region_with_the_version_of_an_overlapping_known_one_is_stale() {
    // Unlike TinyKV's scheduler: a region the scheduler does not know must be strictly newer
    // than what it overlaps (a split's result always is), so that a stray region (one a
    // losing bootstrap prepared, say) cannot displace a known one.
    let h = Harness::new();
    let bootstrapped = region(1, (b"", b""), (1, 1), vec![peer(10, 1)]);
    let strays = [
        Report::of(&region(9, (b"m", b""), (1, 1), vec![peer(90, 1)])),
        Report::of(&region(9, (b"", b""), (1, 1), vec![peer(90, 1)])),
        Report::of(&region(9, (b"a", b"b"), (7, 1), vec![peer(90, 1)])),
    ];
    for stray in &strays {
        h.reject(stray);
    }
    assert_eq!(h.id_at(b"z"), Some(1));
    assert_eq!(h.cluster.get_region_by_id(1), Some((bootstrapped, None)));
    assert_eq!(h.cluster.get_region_by_id(9), None);
    // One version newer, it is a split's result and wins over the region it overlaps.
    let newer = Report::of(&region(9, (b"m", b""), (1, 2), vec![peer(90, 1)]));
    h.accept(&newer);
    assert_eq!(h.id_at(b"z"), Some(9));
    assert_eq!(h.id_at(b"a"), None);
    h.assert_consistent("after the newer report");
}

#[test]
fn splits_of_splits_reported_out_of_order_leave_the_newest_tree() {
    let h = Harness::new();
    let one = |range, version| region(1, range, (1, version), vec![peer(10, 1)]);
    let two = |range, version| region(2, range, (1, version), vec![peer(20, 1)]);
    let three = |range, version| region(3, range, (1, version), vec![peer(30, 1)]);
    let four = |range, version| region(4, range, (1, version), vec![peer(40, 1)]);
    // [, ) v1 split at m; then [, m) at f and [m, ) at t; then [f, m) at h and [t, ) at w.
    let children = [one((b"", b"m"), 2), two((b"m", b""), 2)];
    let grandchildren = [
        one((b"", b"f"), 3),
        three((b"f", b"m"), 3),
        two((b"m", b"t"), 3),
        four((b"t", b""), 3),
    ];
    let five = region(5, (b"h", b"m"), (1, 4), vec![peer(50, 1)]);
    let six = region(6, (b"w", b""), (1, 4), vec![peer(60, 1)]);
    let newest = [
        one((b"", b"f"), 3),
        three((b"f", b"h"), 4),
        five.clone(),
        two((b"m", b"t"), 3),
        four((b"t", b"w"), 4),
        six.clone(),
    ];

    // The great-grandchildren first: 5 drops the parent [, ) it overlaps.
    let order: Vec<(Region, bool)> = vec![
        (five, true),
        (six, true),
        (newest[1].clone(), true),
        (newest[4].clone(), true),
        // The children, late: each overlaps a newer region.
        (children[0].clone(), false),
        (children[1].clone(), false),
        // The grandchildren that split again, late: their ids are known newer.
        (grandchildren[1].clone(), false),
        (grandchildren[3].clone(), false),
        // The newest of regions 1 and 2.
        (newest[3].clone(), true),
        (newest[0].clone(), true),
        // And the parent, very late.
        (one((b"", b""), 1), false),
    ];
    for (i, (r, fresh)) in order.iter().enumerate() {
        let report = Report::of(r);
        if *fresh {
            h.accept(&report);
        } else {
            h.reject(&report);
        }
        h.assert_consistent(&format!("after report {i}: {r:?}"));
    }
    let expected: Vec<RegionInfo> = newest.iter().map(|r| Report::of(r).info()).collect();
    assert_eq!(h.regions(), expected);
    assert_eq!(h.id_at(b""), Some(1));
    assert_eq!(h.id_at(b"g"), Some(3));
    assert_eq!(h.id_at(b"v"), Some(4));
    assert_eq!(h.id_at(b"\xff"), Some(6));
}

#[test]
fn a_lower_term_with_the_same_epoch_does_not_replace_the_leader() {
    let h = Harness::new();
    let three_peers = region(
        1,
        (b"", b""),
        (3, 1),
        vec![peer(10, 1), peer(11, 2), peer(12, 3)],
    );
    let by = |leader: Peer, term, approximate_size| Report {
        region: three_peers.clone(),
        leader,
        term,
        approximate_size,
    };

    let current = by(peer(11, 2), 5, 100);
    h.accept(&current);
    assert_eq!(h.regions(), vec![current.info()]);
    // The deposed leader of term 4 reports late: not stale, but neither its leadership nor
    // its size is taken, and it gets no operation.
    h.ignore(&by(peer(10, 1), 4, 999));
    assert_eq!(
        h.cluster.get_region_by_id(1),
        Some((three_peers.clone(), Some(peer(11, 2))))
    );
    // The same leader again, and a newer term, are taken.
    let again = by(peer(11, 2), 5, 101);
    h.accept(&again);
    assert_eq!(h.regions(), vec![again.info()]);
    let newer = by(peer(12, 3), 6, 102);
    h.accept(&newer);
    assert_eq!(h.regions(), vec![newer.info()]);
    h.ignore(&by(peer(11, 2), 5, 103));
    assert_eq!(h.regions(), vec![newer.info()]);

    // A newer epoch wins whatever its term.
    let split = Report {
        region: Region {
            end_key: b"m".to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 2,
            }),
            ..three_peers.clone()
        },
        leader: peer(10, 1),
        term: 1,
        approximate_size: 50,
    };
    h.accept(&split);
    assert_eq!(h.regions(), vec![split.info()]);
    h.assert_consistent("after the split");
}

/// SplitMix64: the seeded source of every random choice of the randomized test.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Keys are 4-byte big-endian numbers; the empty start and end are 0 and 2^32.
fn key(value: u64) -> Vec<u8> {
    (value as u32).to_be_bytes().to_vec()
}

fn key_value(key: &[u8], empty: u64) -> u64 {
    if key.is_empty() {
        empty
    } else {
        u64::from(u32::from_be_bytes(key.try_into().unwrap()))
    }
}

/// A random history starting from the bootstrapped region 1: splits, membership changes
/// (a second peer on store 2 comes and goes) and elections, each leaving a report of every
/// region it changed. Returns every report, oldest first, and the index of each region's
/// newest.
fn random_history(rng: &mut SplitMix64, steps: usize) -> (Vec<Report>, BTreeMap<u64, usize>) {
    let mut reports = vec![Report {
        term: 1,
        approximate_size: 1,
        ..Report::of(&region(1, (b"", b""), (1, 1), vec![peer(10, 1)]))
    }];
    let mut newest: BTreeMap<u64, usize> = BTreeMap::from([(1, 0)]);
    let mut next_id = 100;
    let mut next_size = 2;
    for _ in 0..steps {
        let ids: Vec<u64> = newest.keys().copied().collect();
        let id = ids[rng.below(ids.len() as u64) as usize];
        let mut report = reports[newest[&id]].clone();
        let epoch = report.region.epoch.unwrap();
        let mut changed = Vec::new();
        match rng.below(10) {
            0..=5 => {
                let low = key_value(&report.region.start_key, 0);
                let high = key_value(&report.region.end_key, 1 << 32);
                if high - low < 2 {
                    continue;
                }
                let split_at = key(low + 1 + rng.below(high - low - 1));
                let next = RegionEpoch {
                    conf_ver: epoch.conf_ver,
                    version: epoch.version + 1,
                };
                next_id += 1;
                let new_region_id = next_id;
                let mut right = report.clone();
                right.region.id = new_region_id;
                right.region.start_key = split_at.clone();
                right.region.epoch = Some(next);
                for p in &mut right.region.peers {
                    next_id += 1;
                    p.id = next_id;
                }
                let leader_at = report
                    .region
                    .peers
                    .iter()
                    .position(|p| p.id == report.leader.id)
                    .unwrap();
                right.leader = right.region.peers[leader_at];
                right.term = 1;
                report.region.end_key = split_at;
                report.region.epoch = Some(next);
                changed.extend([report, right]);
            }
            6 | 7 => {
                let peers = &mut report.region.peers;
                if peers.len() == 1 {
                    next_id += 1;
                    let store_id = if peers[0].store_id == 1 { 2 } else { 1 };
                    peers.push(peer(next_id, store_id));
                } else {
                    let leader = report.leader.id;
                    peers.retain(|p| p.id == leader);
                }
                report.region.epoch = Some(RegionEpoch {
                    conf_ver: epoch.conf_ver + 1,
                    version: epoch.version,
                });
                changed.push(report);
            }
            _ => {
                let others: Vec<Peer> = report
                    .region
                    .peers
                    .iter()
                    .copied()
                    .filter(|p| p.id != report.leader.id)
                    .collect();
                if let Some(other) = others.first() {
                    report.leader = *other;
                }
                report.term += 1;
                changed.push(report);
            }
        }
        for mut report in changed {
            report.approximate_size = next_size;
            next_size += 1;
            newest.insert(report.region.id, reports.len());
            reports.push(report);
        }
    }
    (reports, newest)
}

#[test]
fn shuffled_reports_of_a_random_history_leave_exactly_the_newest_regions() {
    let seeds: Vec<u64> = match std::env::var("STALENESS_SEED") {
        Ok(seed) => vec![seed.parse().expect("STALENESS_SEED must be a number")],
        Err(_) => (0..30).collect(),
    };
    for seed in seeds {
        let context = format!("seed {seed} (STALENESS_SEED={seed} replays it)");
        let mut rng = SplitMix64(seed);
        let steps = 20 + rng.below(60) as usize;
        let (reports, newest) = random_history(&mut rng, steps);
        // Every region's newest report is delivered; each older one is lost, delivered once or
        // delivered twice; all in a random order.
        let mut deliveries: Vec<usize> = Vec::new();
        for (i, report) in reports.iter().enumerate() {
            let copies = if newest[&report.region.id] == i {
                1 + rng.below(2)
            } else {
                rng.below(3)
            };
            deliveries.extend(std::iter::repeat_n(i, copies as usize));
        }
        rng.shuffle(&mut deliveries);

        let h = Harness::new();
        for (n, &i) in deliveries.iter().enumerate() {
            let report = &reports[i];
            let response = h.send(report);
            if newest[&report.region.id] == i {
                assert_eq!(
                    response.stale, "",
                    "{context}: the newest report of region {} was rejected: {report:?}",
                    report.region.id
                );
            }
            h.assert_consistent(&format!("{context}, delivery {n} (report {i})"));
        }
        let mut expected: Vec<RegionInfo> = newest.values().map(|&i| reports[i].info()).collect();
        expected.sort_by(|a, b| {
            let start = |info: &RegionInfo| info.region.as_ref().unwrap().start_key.clone();
            start(a).cmp(&start(b))
        });
        assert_eq!(
            h.regions(),
            expected,
            "{context}: {} reports, {} deliveries",
            reports.len(),
            deliveries.len()
        );
    }
}

#[test]
fn a_reversed_scan_range_holds_no_region() {
    let h = Harness::new();
    let (left, right) = split_halves();
    h.accept(&left);
    h.accept(&right);
    assert_eq!(h.cluster.scan_regions(b"z", b"a", 0), vec![]);
    assert_eq!(h.cluster.scan_regions(b"n", b"b", 1), vec![]);
}
