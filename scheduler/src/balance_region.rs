//! The region balancer: which single replica (if any) to move from a store holding much region
//! data to one holding little, so that the stores end up holding about the same amount.
//!
//! A pure function of the stores' sizes and the regions' last reports, like
//! [`crate::replica_checker`]; the caller turns a [`RegionMove`] into membership changes (add a
//! learner on the target, promote it, move the leadership away from the source if it is there,
//! remove the source's replica) and repeats it until done, as it does for the checker's
//! decisions. `choose` picks among equally good candidates, so tests are deterministic and a
//! real caller (passing a random choice) does not retry the same region forever.
//!
//! # Rules
//!
//! 1. Only *up* stores give or take replicas. Each has a size: the sum of the approximate sizes
//!    of the regions with a replica on it.
//! 2. Sources are tried from the largest store down (ties: the lower store id first). From a
//!    source, a region is taken whose replica there is *pending* (far behind: moving it costs
//!    the least), else one where it is a *follower*, else one where it *leads*. Among several
//!    regions of the first such kind, `choose` picks one.
//! 3. The target of a region is the smallest up store (ties: the lower id) holding no replica
//!    of it. The move is made only if `source size - target size > 2 * region size`, so that
//!    after the move the target is still smaller than the source: moves never overshoot, and
//!    repeated moves converge (the sum of the squared store sizes drops with every move).
//! 4. If no region of a source qualifies, the next largest store is tried, and so on.
//!
//! When every region qualifies, the moves stop only once the largest and the smallest up store
//! differ by at most twice the largest region: past that, the largest store holds a region the
//! smallest does not (else the smallest would be at least as large), and the smallest store is
//! that region's target.
//!
//! A region qualifies only if it is healthy and settled: its leader is known (it reported since
//! the scheduler started), it has exactly `max_replicas` peers and no learner (otherwise the
//! replica checker is still repairing it), every peer is on an up store (otherwise the replica
//! checker decides what happens to it, and removing a healthy replica could cost the quorum),
//! and its approximate size is not 0 (moving it would not change any store's size). A caller
//! that wants regions balanced by count while they are still empty passes a size of at least 1
//! for each.
//!
//! # Deliberately left out
//!
//! Store capacity and free space, store weights, labels (zones, racks), hot regions, and any
//! rate limit: one move at a time is decided, and how many run at once is the caller's choice.

use std::cmp::Reverse;
use std::collections::HashSet;

use proto::metapb::{Peer, Region};

/// A store as the region balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLoad {
    pub store_id: u64,
    /// Heard from recently. A store that is not up neither gives nor takes replicas.
    pub up: bool,
    /// The sum of the approximate sizes of the regions with a replica on the store.
    pub region_size: u64,
}

/// A region as the region balancer sees it: its last accepted report.
#[derive(Clone, Copy, Debug)]
pub struct RegionLoad<'a> {
    pub region: &'a Region,
    /// The last reported leader; `None` if the region has not reported since the scheduler
    /// started (such a region is left alone: its pending peers and size are unknown).
    pub leader: Option<Peer>,
    /// The peers its leader reported as far behind.
    pub pending_peers: &'a [Peer],
    /// Bytes, as last reported.
    pub approximate_size: u64,
}

/// Move the replica of `region_id` on `from_store` to `to_store` (which holds none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionMove {
    pub region_id: u64,
    pub from_store: u64,
    pub to_store: u64,
}

/// How the source's replica takes part in its region, in the order the balancer prefers to move
/// it: a pending replica is the cheapest to move, a leader the dearest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceRole {
    Pending,
    Follower,
    Leader,
}

const ROLES: usize = 3;

/// Decides at most one replica move among `stores` (see the module doc for the rules).
///
/// `max_replicas`: the wanted replica count; a region with another peer count is being
/// repaired and is not moved. `choose(n)` picks one of `n` equally good candidates (an answer
/// of `n` or more is taken modulo `n`).
pub fn balance_region(
    stores: &[StoreLoad],
    regions: &[RegionLoad],
    max_replicas: usize,
    choose: &mut impl FnMut(usize) -> usize,
) -> Option<RegionMove> {
    let mut targets: Vec<&StoreLoad> = stores.iter().filter(|s| s.up).collect();
    targets.sort_by_key(|s| (s.region_size, s.store_id));
    let mut sources = targets.clone();
    sources.sort_by_key(|s| (Reverse(s.region_size), s.store_id));
    let up: HashSet<u64> = targets.iter().map(|s| s.store_id).collect();

    let movable: Vec<&RegionLoad> = regions
        .iter()
        .filter(|r| is_settled(r, &up, max_replicas))
        .collect();

    for source in sources {
        let mut candidates: [Vec<RegionMove>; ROLES] = Default::default();
        for load in &movable {
            let peers = &load.region.peers;
            let Some(replica) = peers.iter().find(|p| p.store_id == source.store_id) else {
                continue;
            };
            let Some(target) = targets
                .iter()
                .find(|t| !peers.iter().any(|p| p.store_id == t.store_id))
            else {
                continue;
            };
            if !worth_moving(
                source.region_size,
                target.region_size,
                load.approximate_size,
            ) {
                continue;
            }
            candidates[role(load, replica) as usize].push(RegionMove {
                region_id: load.region.id,
                from_store: source.store_id,
                to_store: target.store_id,
            });
        }
        if let Some(best) = candidates.iter().find(|c| !c.is_empty()) {
            return Some(best[choose(best.len()) % best.len()]);
        }
    }
    None
}

/// Whether the region is healthy and not being repaired, so that one of its replicas may move.
fn is_settled(load: &RegionLoad, up: &HashSet<u64>, max_replicas: usize) -> bool {
    let peers = &load.region.peers;
    load.leader
        .is_some_and(|leader| peers.iter().any(|p| p.id == leader.id))
        && load.approximate_size > 0
        && peers.len() == max_replicas
        && peers.iter().all(|p| !p.learner && up.contains(&p.store_id))
}

/// Whether moving a region of `region_size` from a store of `source_size` to one of
/// `target_size` leaves the target strictly smaller than the source.
fn worth_moving(source_size: u64, target_size: u64, region_size: u64) -> bool {
    source_size > target_size && source_size - target_size > region_size.saturating_mul(2)
}

fn role(load: &RegionLoad, replica: &Peer) -> SourceRole {
    if load.leader.is_some_and(|leader| leader.id == replica.id) {
        SourceRole::Leader
    } else if load.pending_peers.iter().any(|p| p.id == replica.id) {
        SourceRole::Pending
    } else {
        SourceRole::Follower
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TinyKV's test unit: a region is 10 bytes, a store with `n` regions holds `10 * n`.
    const REGION_SIZE: u64 = 10;

    fn store(store_id: u64, region_count: u64) -> StoreLoad {
        StoreLoad {
            store_id,
            up: true,
            region_size: region_count * REGION_SIZE,
        }
    }

    fn down(store_id: u64, region_count: u64) -> StoreLoad {
        StoreLoad {
            up: false,
            ..store(store_id, region_count)
        }
    }

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            learner: false,
        }
    }

    /// Region `id` with its first peer (the leader) on `stores[0]`; peer ids are
    /// `10 * id + position`.
    fn region(id: u64, stores: &[u64]) -> Region {
        Region {
            id,
            peers: stores
                .iter()
                .zip(0..)
                .map(|(store_id, i)| peer(10 * id + i, *store_id))
                .collect(),
            ..Region::default()
        }
    }

    fn load<'a>(region: &'a Region, pending: &'a [Peer]) -> RegionLoad<'a> {
        RegionLoad {
            region,
            leader: region.peers.first().copied(),
            pending_peers: pending,
            approximate_size: REGION_SIZE,
        }
    }

    fn decide(
        stores: &[StoreLoad],
        regions: &[RegionLoad],
        max_replicas: usize,
    ) -> Option<RegionMove> {
        balance_region(stores, regions, max_replicas, &mut |_| 0)
    }

    fn moved(region_id: u64, from_store: u64, to_store: u64) -> Option<RegionMove> {
        Some(RegionMove {
            region_id,
            from_store,
            to_store,
        })
    }

    #[test]
    fn tinykv_replicas_1_the_leader_moves_to_the_smallest_up_store() {
        let r1 = region(1, &[4]);
        let regions = [load(&r1, &[])];
        let mut stores = vec![store(1, 6), store(2, 8), store(3, 8), store(4, 16)];
        assert_eq!(decide(&stores, &regions, 1), moved(1, 4, 1));

        // Store 1 is not up any more and store 2 shrank: store 2 is the smallest up store.
        stores[0].up = false;
        stores[1] = store(2, 6);
        assert_eq!(decide(&stores, &regions, 1), moved(1, 4, 2));
        // With 3 replicas wanted, the single-peer region is being repaired: not moved.
        assert_eq!(decide(&stores, &regions, 3), None);
        assert_eq!(decide(&stores, &regions, 1), moved(1, 4, 2));
    }

    #[test]
    fn tinykv_replicas_3_the_target_is_the_smallest_up_store_without_a_replica() {
        let r1 = region(1, &[1, 2, 3]);
        let regions = [load(&r1, &[])];
        let mut stores = vec![store(1, 16), store(2, 15), store(3, 14)];
        // Every store holds a replica: nowhere to move to.
        assert_eq!(decide(&stores, &regions, 3), None);

        stores.push(store(4, 2));
        assert_eq!(decide(&stores, &regions, 3), moved(1, 1, 4));
        stores.push(store(5, 1));
        assert_eq!(decide(&stores, &regions, 3), moved(1, 1, 5));
        stores.push(store(6, 0));
        assert_eq!(decide(&stores, &regions, 3), moved(1, 1, 6));
        stores[5].up = false;
        assert_eq!(decide(&stores, &regions, 3), moved(1, 1, 5));

        // Stores 4, 5, 6 down; store 7 is the largest but holds no region, and as a target
        // it is larger than every source.
        for s in &mut stores[3..] {
            s.up = false;
        }
        stores.push(store(7, 20));
        assert_eq!(decide(&stores, &regions, 3), None);
    }

    #[test]
    fn tinykv_replicas_5() {
        let mut stores = vec![
            store(1, 4),
            store(2, 5),
            store(3, 6),
            store(4, 7),
            store(5, 28),
        ];
        let r1 = region(1, &[1, 2, 3, 4, 5]);
        stores.push(store(6, 1));
        assert_eq!(decide(&stores, &[load(&r1, &[])], 5), moved(1, 5, 6));
        // Store 7 is larger than store 6: still store 6.
        stores.push(store(7, 5));
        assert_eq!(decide(&stores, &[load(&r1, &[])], 5), moved(1, 5, 6));

        // Now store 6 holds a replica and store 1 does not: store 1 is the smallest without one.
        let r1 = region(1, &[2, 3, 4, 5, 6]);
        assert_eq!(decide(&stores, &[load(&r1, &[])], 5), moved(1, 5, 1));

        // Store 11 is the largest and holds a replica; store 6 is the smallest without one.
        stores.extend([store(11, 29), store(12, 8), store(13, 7)]);
        let r1 = region(1, &[2, 3, 11, 12, 13]);
        assert_eq!(decide(&stores, &[load(&r1, &[])], 5), moved(1, 11, 6));
    }

    #[test]
    fn tinykv_replace_pending_region_a_pending_replica_moves_first() {
        let stores = [store(1, 16), store(2, 7), store(3, 15), store(4, 10)];
        let r1 = region(1, &[1, 2, 3]);
        let r2 = region(2, &[1, 2, 3]);
        let r3 = region(3, &[2, 1, 3]);
        // Region 3's replica on store 1 (peer 31) is pending.
        let pending = [r3.peers[1]];
        let regions = [load(&r1, &[]), load(&r2, &[]), load(&r3, &pending)];
        // Store 4 is the only store without a replica of region 3.
        assert_eq!(decide(&stores, &regions, 3), moved(3, 1, 4));
        // Whatever `choose` says: there is one pending candidate.
        assert_eq!(
            balance_region(&stores, &regions, 3, &mut |n| n - 1),
            moved(3, 1, 4)
        );
    }

    #[test]
    fn a_follower_moves_before_a_leader_and_choose_picks_among_equals() {
        let stores = [store(1, 30), store(2, 20), store(3, 20), store(4, 0)];
        let led = region(1, &[1, 2, 3]);
        let follows_a = region(2, &[2, 1, 3]);
        let follows_b = region(3, &[3, 1, 2]);
        let regions = [
            load(&led, &[]),
            load(&follows_a, &[]),
            load(&follows_b, &[]),
        ];
        assert_eq!(decide(&stores, &regions, 3), moved(2, 1, 4));
        assert_eq!(
            balance_region(&stores, &regions, 3, &mut |n| n - 1),
            moved(3, 1, 4)
        );
        // An out-of-range choice wraps around instead of panicking.
        assert_eq!(
            balance_region(&stores, &regions, 3, &mut |n| n + 1),
            moved(3, 1, 4)
        );
        // Only the led region left: the leader's replica moves.
        assert_eq!(decide(&stores, &regions[..1], 3), moved(1, 1, 4));
    }

    #[test]
    fn a_down_store_is_neither_source_nor_target() {
        let r1 = region(1, &[1]);
        let r2 = region(2, &[2]);
        let regions = [load(&r1, &[]), load(&r2, &[])];
        // Store 1 is the largest but down; store 3 is the smallest but down.
        let stores = [down(1, 50), store(2, 30), down(3, 0), store(4, 5)];
        assert_eq!(decide(&stores, &regions, 1), moved(2, 2, 4));
        // Only down stores are far apart: nothing.
        let stores = [down(1, 50), store(2, 10), down(3, 0), store(4, 9)];
        assert_eq!(decide(&stores, &regions, 1), None);
        // A store missing from the list counts as down, for the region's peers too.
        let r3 = region(3, &[2, 9]);
        let stores = [store(2, 30), store(4, 0)];
        assert_eq!(decide(&stores, &[load(&r3, &[])], 2), None);
    }

    #[test]
    fn a_region_with_a_replica_on_a_down_store_is_left_to_the_replica_checker() {
        let r1 = region(1, &[1, 2, 3]);
        let regions = [load(&r1, &[])];
        let stores = [store(1, 30), store(2, 20), down(3, 20), store(4, 0)];
        assert_eq!(decide(&stores, &regions, 3), None);
    }

    #[test]
    fn a_region_already_on_the_smallest_store_goes_to_the_next_smallest() {
        let r1 = region(1, &[1, 2]);
        let regions = [load(&r1, &[])];
        let stores = [store(1, 20), store(2, 0), store(3, 5), store(4, 15)];
        assert_eq!(decide(&stores, &regions, 2), moved(1, 1, 3));
        // From store 2 nothing moves (it is the smallest); from store 1 the only store without a
        // replica is too close in size.
        let stores = [store(1, 20), store(2, 0), store(3, 18)];
        assert_eq!(decide(&stores, &regions, 2), None);
    }

    #[test]
    fn no_move_unless_the_sizes_differ_by_more_than_twice_the_region() {
        let r1 = region(1, &[1]);
        let regions = [load(&r1, &[])];
        let apart = |difference: u64| {
            [
                StoreLoad {
                    store_id: 1,
                    up: true,
                    region_size: 100 + difference,
                },
                StoreLoad {
                    store_id: 2,
                    up: true,
                    region_size: 100,
                },
            ]
        };
        assert_eq!(decide(&apart(2 * REGION_SIZE), &regions, 1), None);
        assert_eq!(
            decide(&apart(2 * REGION_SIZE + 1), &regions, 1),
            moved(1, 1, 2)
        );
        // Equal stores and a target larger than the source never move anything.
        assert_eq!(decide(&apart(0), &regions, 1), None);
        let reversed = [store(1, 0), store(2, 10)];
        assert_eq!(decide(&reversed, &regions, 1), None);
    }

    #[test]
    fn the_next_largest_store_is_tried_when_the_largest_has_nothing_to_move() {
        // Store 1 holds region 1 only, which is being repaired (2 peers of 3); store 2 holds
        // region 2, which can go to store 4.
        let repairing = region(1, &[1, 3]);
        let settled = region(2, &[2, 3, 5]);
        let regions = [load(&repairing, &[]), load(&settled, &[])];
        let stores = [
            store(1, 40),
            store(2, 30),
            store(3, 20),
            store(4, 0),
            store(5, 10),
        ];
        assert_eq!(decide(&stores, &regions, 3), moved(2, 2, 4));
    }

    #[test]
    fn unsettled_regions_are_not_moved() {
        let stores = [store(1, 40), store(2, 10), store(3, 10), store(4, 0)];
        // A learner: a membership change is under way.
        let mut with_learner = region(1, &[1, 2, 3]);
        with_learner.peers[2].learner = true;
        assert_eq!(decide(&stores, &[load(&with_learner, &[])], 3), None);
        // Too many peers.
        let extra = region(2, &[1, 2, 3, 4]);
        assert_eq!(decide(&stores, &[load(&extra, &[])], 3), None);

        let r3 = region(3, &[1, 2, 3]);
        // No leader known, or a leader that is not one of its peers.
        let unknown_leader = RegionLoad {
            leader: None,
            ..load(&r3, &[])
        };
        assert_eq!(decide(&stores, &[unknown_leader], 3), None);
        let foreign_leader = RegionLoad {
            leader: Some(peer(99, 1)),
            ..load(&r3, &[])
        };
        assert_eq!(decide(&stores, &[foreign_leader], 3), None);
        // Empty: moving it changes no store's size.
        let empty = RegionLoad {
            approximate_size: 0,
            ..load(&r3, &[])
        };
        assert_eq!(decide(&stores, &[empty], 3), None);
        // The same region, settled, moves.
        assert_eq!(decide(&stores, &[load(&r3, &[])], 3), moved(3, 1, 4));
    }

    /// SplitMix64: a seeded source of choices for the simulations.
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
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    struct Simulation {
        regions: Vec<Region>,
        pending: Vec<Vec<Peer>>,
        sizes: Vec<u64>,
        store_ids: Vec<u64>,
    }

    impl Simulation {
        /// `store_count` stores; `region_count` regions of `replicas` peers each, placed with a
        /// strong skew towards the low store ids, sized 1..=100, some with a pending follower.
        fn skewed(
            rng: &mut SplitMix64,
            store_count: usize,
            region_count: u64,
            replicas: usize,
        ) -> Simulation {
            let store_ids: Vec<u64> = (1..=store_count as u64).collect();
            let mut next_peer_id = 1000;
            let mut regions = Vec::new();
            let mut pending = Vec::new();
            let mut sizes = Vec::new();
            for id in 1..=region_count {
                let mut stores: Vec<u64> = Vec::new();
                while stores.len() < replicas {
                    // The minimum of three draws: store 1 is picked far more often than the last.
                    let pick = (0..3).map(|_| rng.below(store_count)).min().unwrap();
                    let store_id = store_ids[pick];
                    if !stores.contains(&store_id) {
                        stores.push(store_id);
                    }
                }
                let peers: Vec<Peer> = stores
                    .iter()
                    .map(|store_id| {
                        next_peer_id += 1;
                        peer(next_peer_id, *store_id)
                    })
                    .collect();
                let behind = if replicas > 1 && rng.below(4) == 0 {
                    vec![peers[1]]
                } else {
                    vec![]
                };
                regions.push(Region {
                    id,
                    peers,
                    ..Region::default()
                });
                pending.push(behind);
                sizes.push(1 + rng.below(100) as u64);
            }
            Simulation {
                regions,
                pending,
                sizes,
                store_ids,
            }
        }

        fn stores(&self) -> Vec<StoreLoad> {
            self.store_ids
                .iter()
                .map(|&store_id| StoreLoad {
                    store_id,
                    up: true,
                    region_size: self
                        .regions
                        .iter()
                        .zip(&self.sizes)
                        .filter(|(r, _)| r.peers.iter().any(|p| p.store_id == store_id))
                        .map(|(_, size)| size)
                        .sum(),
                })
                .collect()
        }

        fn loads(&self) -> Vec<RegionLoad<'_>> {
            self.regions
                .iter()
                .zip(&self.pending)
                .zip(&self.sizes)
                .map(|((region, pending), size)| RegionLoad {
                    region,
                    leader: region.peers.first().copied(),
                    pending_peers: pending,
                    approximate_size: *size,
                })
                .collect()
        }

        /// Moves the replica (keeping its peer id, as if the new one had caught up).
        fn apply(&mut self, step: RegionMove) {
            let index = self
                .regions
                .iter()
                .position(|r| r.id == step.region_id)
                .unwrap();
            let replica = self.regions[index]
                .peers
                .iter_mut()
                .find(|p| p.store_id == step.from_store)
                .unwrap();
            replica.store_id = step.to_store;
            let moved_id = replica.id;
            self.pending[index].retain(|p| p.id != moved_id);
        }
    }

    fn squares(stores: &[StoreLoad]) -> u128 {
        stores
            .iter()
            .map(|s| u128::from(s.region_size).pow(2))
            .sum()
    }

    fn spread(stores: &[StoreLoad]) -> u64 {
        let sizes = stores.iter().map(|s| s.region_size);
        sizes.clone().max().unwrap() - sizes.min().unwrap()
    }

    #[test]
    fn repeated_moves_converge_to_within_twice_the_largest_region() {
        for seed in 0..40 {
            let mut rng = SplitMix64(seed);
            let replicas = [1, 3, 5][rng.below(3)];
            let store_count = replicas + 1 + rng.below(8);
            let region_count = 20 + rng.below(100) as u64;
            let mut sim = Simulation::skewed(&mut rng, store_count, region_count, replicas);
            let largest_region = *sim.sizes.iter().max().unwrap();
            let total_replicas = sim.regions.len() * replicas;
            let context = format!(
                "seed {seed}: {store_count} stores, {region_count} regions of {replicas} replicas"
            );

            let mut stores = sim.stores();
            let initial_spread = spread(&stores);
            let mut moves = 0;
            loop {
                let loads = sim.loads();
                let Some(step) = balance_region(&stores, &loads, replicas, &mut |n| rng.below(n))
                else {
                    break;
                };
                let region = &sim.regions[(step.region_id - 1) as usize];
                assert!(
                    region.peers.iter().any(|p| p.store_id == step.from_store)
                        && !region.peers.iter().any(|p| p.store_id == step.to_store),
                    "{context}: {step:?} of {region:?}"
                );
                let before = squares(&stores);
                let size = sim.sizes[(step.region_id - 1) as usize];
                sim.apply(step);
                stores = sim.stores();
                let size_of = |id| {
                    stores
                        .iter()
                        .find(|s| s.store_id == id)
                        .unwrap()
                        .region_size
                };
                assert!(
                    size_of(step.to_store) < size_of(step.from_store),
                    "{context}: moving {size} bytes with {step:?} overshot"
                );
                assert!(
                    squares(&stores) < before,
                    "{context}: {step:?} did not reduce the imbalance"
                );
                moves += 1;
                // The sum of the squares bounds the number of moves; in practice a replica
                // moves at most about once.
                assert!(
                    moves <= total_replicas,
                    "{context}: more moves than replicas ({moves}), still spread {}",
                    spread(&stores)
                );
            }
            assert!(
                spread(&stores) <= 2 * largest_region,
                "{context}: stuck after {moves} moves with spread {} > 2 * {largest_region}: {stores:?}",
                spread(&stores)
            );
            println!(
                "{context}: {moves} moves, spread {initial_spread} -> {}",
                spread(&stores)
            );
        }
    }
}
