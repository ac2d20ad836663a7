//! The leader balancer: which single region (if any) should hand its leadership from a store
//! leading many regions to one of its followers on a store leading fewer, so that every up
//! store leads about as many regions as the others.
//!
//! A pure function of the stores' leader counts and the regions' last reports, like
//! [`crate::replica_checker`]; the caller asks the region's leader to transfer leadership to
//! [`LeaderTransfer::to_peer`]. `choose` picks among equally good candidates, so tests are
//! deterministic and a real caller (passing a random choice) does not retry the same region
//! forever.
//!
//! # Rules
//!
//! 1. Only *up* stores give or take leaderships.
//! 2. The stores are *balanced* when the most and the fewest regions an up store leads differ
//!    by at most `tolerance`: then nothing is transferred.
//! 3. Otherwise a store may *give* a leadership if it leads more than `tolerance` regions more
//!    than the least loaded store, and *take* one if it leads more than `tolerance` fewer than
//!    the most loaded one. A transfer needs a giver or a taker (or both), and the source must
//!    lead at least 2 more regions than the target, so that the transfer never inverts them.
//! 4. Sources are tried from the store leading the most regions down (ties: the lower store
//!    id first). For each region the source leads, the candidate target is its voter (not a
//!    learner, not pending, on an up store, not the leader) on the store leading the fewest
//!    regions (ties: the lower store id). Of the source's regions allowed a transfer by rule 3,
//!    those whose target leads the fewest are the candidates; `choose` picks one. If the
//!    source has none, the next store is tried, and so on.
//!
//! Rule 3 rather than "the source leads more than `tolerance` more than the target": a
//! leadership can only go to a store holding a replica of its region, so the most and the
//! least loaded store may share no region at all. Then the excess has to flow through a store
//! in between, in steps that are each within the tolerance; with a purely pairwise rule the
//! cluster would stay out of balance.
//!
//! Every transfer lowers the sum of the squared leader counts (by at least 2), so repeated
//! transfers stop. They can stop short of a balance only if no region led by a giver has a
//! voter 2 or more below it and no region with a voter on a taker is led from 2 or more above
//! it: stores that share very few regions. A `tolerance` of 0 is taken as 1: counts one apart
//! are as close as a transfer can bring them.
//!
//! # Deliberately left out
//!
//! Balancing by leader size (bytes) instead of count, store leader weights, hot regions, and
//! any rate limit. Whether a region is busy with a membership change is the caller's concern:
//! it should not ask for a transfer while another operation of the region is under way.

use std::cmp::Reverse;
use std::collections::HashMap;

use proto::metapb::{Peer, Region};

/// A store as the leader balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLeaders {
    pub store_id: u64,
    /// Heard from recently. A store that is not up neither gives nor takes leaderships.
    pub up: bool,
    /// The number of regions it leads.
    pub leader_count: u64,
}

/// A region as the leader balancer sees it: its last accepted report.
#[derive(Clone, Copy, Debug)]
pub struct RegionLeadership<'a> {
    pub region: &'a Region,
    /// The last reported leader; `None` if the region has not reported since the scheduler
    /// started (such a region is left alone).
    pub leader: Option<Peer>,
    /// The peers its leader reported as far behind: they do not become leaders.
    pub pending_peers: &'a [Peer],
}

/// Transfer the leadership of `region_id` from its leader on `from_store` to `to_peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderTransfer {
    pub region_id: u64,
    pub from_store: u64,
    pub to_peer: Peer,
}

/// Decides at most one leadership transfer (see the module doc for the rules).
///
/// `tolerance`: by how many the leader counts of the up stores may differ and still count as
/// balanced (at least 1). `choose(n)` picks one of `n` equally good candidates (an answer of
/// `n` or more is taken modulo `n`).
pub fn balance_leader(
    stores: &[StoreLeaders],
    regions: &[RegionLeadership],
    tolerance: u64,
    choose: &mut impl FnMut(usize) -> usize,
) -> Option<LeaderTransfer> {
    let tolerance = tolerance.max(1);
    let leader_counts: HashMap<u64, u64> = stores
        .iter()
        .filter(|s| s.up)
        .map(|s| (s.store_id, s.leader_count))
        .collect();
    let most = leader_counts.values().copied().max()?;
    let fewest = leader_counts.values().copied().min()?;
    if most - fewest <= tolerance {
        return None;
    }
    let gives = |count: u64| count > fewest.saturating_add(tolerance);
    let takes = |count: u64| count.saturating_add(tolerance) < most;
    let allowed = |from: u64, to: u64| from >= to.saturating_add(2) && (gives(from) || takes(to));

    let mut sources: Vec<&StoreLeaders> = stores.iter().filter(|s| s.up).collect();
    sources.sort_by_key(|s| (Reverse(s.leader_count), s.store_id));

    for source in sources {
        // (the target's leader count, the transfer) for each region the source leads.
        let mut candidates: Vec<(u64, LeaderTransfer)> = regions
            .iter()
            .filter_map(|r| {
                let leader = r.leader?;
                if leader.store_id != source.store_id
                    || !r.region.peers.iter().any(|p| p.id == leader.id)
                {
                    return None;
                }
                let (count, to_peer) = r
                    .region
                    .peers
                    .iter()
                    .filter(|p| {
                        p.id != leader.id
                            && !p.learner
                            && !r.pending_peers.iter().any(|pending| pending.id == p.id)
                    })
                    .filter_map(|p| Some((*leader_counts.get(&p.store_id)?, *p)))
                    .min_by_key(|(count, p)| (*count, p.store_id))?;
                allowed(source.leader_count, count).then_some((
                    count,
                    LeaderTransfer {
                        region_id: r.region.id,
                        from_store: source.store_id,
                        to_peer,
                    },
                ))
            })
            .collect();
        let Some(least) = candidates.iter().map(|(count, _)| *count).min() else {
            continue;
        };
        candidates.retain(|(count, _)| *count == least);
        return Some(candidates[choose(candidates.len()) % candidates.len()].1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(store_id: u64, leader_count: u64) -> StoreLeaders {
        StoreLeaders {
            store_id,
            up: true,
            leader_count,
        }
    }

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            learner: false,
        }
    }

    /// Region `id` led by its first peer, on `stores[0]`; peer ids are `10 * id + position`.
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

    fn led<'a>(region: &'a Region, pending: &'a [Peer]) -> RegionLeadership<'a> {
        RegionLeadership {
            region,
            leader: region.peers.first().copied(),
            pending_peers: pending,
        }
    }

    fn decide(stores: &[StoreLeaders], regions: &[RegionLeadership]) -> Option<LeaderTransfer> {
        balance_leader(stores, regions, 1, &mut |_| 0)
    }

    /// The store the leadership goes to, if any.
    fn target(transfer: Option<LeaderTransfer>) -> Option<u64> {
        transfer.map(|t| t.to_peer.store_id)
    }

    #[test]
    fn no_transfer_while_the_counts_are_within_the_tolerance() {
        let r1 = region(1, &[1, 2, 3]);
        let regions = [led(&r1, &[])];
        assert_eq!(
            decide(&[store(1, 10), store(2, 9), store(3, 9)], &regions),
            None
        );
        assert_eq!(
            decide(&[store(1, 1), store(2, 0), store(3, 0)], &regions),
            None
        );
        // A tolerance of 0 is taken as 1: one apart is balanced.
        assert_eq!(
            balance_leader(
                &[store(1, 2), store(2, 1), store(3, 1)],
                &regions,
                0,
                &mut |_| 0
            ),
            None
        );
        // A wider tolerance: 5 and 2 are balanced with 3, not with 2.
        let stores = [store(1, 5), store(2, 2), store(3, 2)];
        assert_eq!(balance_leader(&stores, &regions, 3, &mut |_| 0), None);
        assert_eq!(
            target(balance_leader(&stores, &regions, 2, &mut |_| 0)),
            Some(2)
        );
    }

    #[test]
    fn the_leadership_goes_from_the_most_to_the_fewest_leaders() {
        // TinyKV's balance filter case: store 4 leads 16, its followers' stores 1, 2 and 3.
        let r1 = region(1, &[4, 1, 2, 3]);
        let stores = [store(1, 1), store(2, 2), store(3, 3), store(4, 16)];
        assert_eq!(
            decide(&stores, &[led(&r1, &[])]),
            Some(LeaderTransfer {
                region_id: 1,
                from_store: 4,
                to_peer: r1.peers[1],
            })
        );
        // Store 1 goes down: store 2 has the fewest leaders among the rest.
        let stores = [
            StoreLeaders {
                up: false,
                ..store(1, 1)
            },
            store(2, 2),
            store(3, 3),
            store(4, 16),
        ];
        assert_eq!(target(decide(&stores, &[led(&r1, &[])])), Some(2));
    }

    #[test]
    fn the_region_whose_target_leads_fewest_is_chosen_then_choose_picks() {
        let stores = [
            store(1, 10),
            store(2, 5),
            store(3, 6),
            store(4, 1),
            store(5, 1),
        ];
        let to_2_or_3 = region(1, &[1, 2, 3]);
        let to_4 = region(2, &[1, 3, 4]);
        let to_5 = region(3, &[1, 5, 2]);
        let regions = [led(&to_2_or_3, &[]), led(&to_4, &[]), led(&to_5, &[])];
        let first = decide(&stores, &regions).unwrap();
        assert_eq!((first.region_id, first.to_peer.store_id), (2, 4));
        let last = balance_leader(&stores, &regions, 1, &mut |n| n - 1).unwrap();
        assert_eq!((last.region_id, last.to_peer.store_id), (3, 5));
        // Without those two, the best left: store 2.
        assert_eq!(target(decide(&stores, &regions[..1])), Some(2));
    }

    #[test]
    fn learners_pending_peers_and_down_stores_never_receive_the_leadership() {
        // Store 1 leads 10; the region's other peers: a learner on store 4, a pending voter on
        // store 3, a voter on down store 5 — all leading nothing — and a voter on store 2.
        let mut r1 = region(1, &[1, 2, 3, 4, 5]);
        r1.peers[3].learner = true;
        let pending = [r1.peers[2]];
        let regions = [led(&r1, &pending)];
        let down_5 = StoreLeaders {
            up: false,
            ..store(5, 0)
        };
        let stores = [store(1, 10), store(2, 5), store(3, 0), store(4, 0), down_5];
        assert_eq!(
            decide(&stores, &regions).map(|t| t.to_peer),
            Some(r1.peers[1])
        );
        // With store 2 only one below store 1, no eligible peer is far enough below.
        let stores = [store(1, 10), store(2, 9), store(3, 0), store(4, 0), down_5];
        assert_eq!(decide(&stores, &regions), None);
        // A store missing from the list counts as down.
        let r2 = region(2, &[1, 7]);
        assert_eq!(decide(&[store(1, 10)], &[led(&r2, &[])]), None);
    }

    #[test]
    fn a_down_store_gives_no_leadership_and_unknown_leaders_are_left_alone() {
        let r1 = region(1, &[1, 2]);
        let down_1 = StoreLeaders {
            up: false,
            ..store(1, 20)
        };
        assert_eq!(decide(&[down_1, store(2, 0)], &[led(&r1, &[])]), None);

        let stores = [store(1, 20), store(2, 0)];
        let unknown = RegionLeadership {
            leader: None,
            ..led(&r1, &[])
        };
        assert_eq!(decide(&stores, &[unknown]), None);
        let foreign = RegionLeadership {
            leader: Some(peer(99, 1)),
            ..led(&r1, &[])
        };
        assert_eq!(decide(&stores, &[foreign]), None);
        assert_eq!(target(decide(&stores, &[led(&r1, &[])])), Some(2));
    }

    #[test]
    fn the_next_store_is_tried_when_the_most_loaded_has_no_far_enough_target() {
        // After TinyKV's balance selector case: store 4 leads 16 but its region's followers
        // lead 15 each; store 3 leads 15 too and has a follower on store 1, leading 1.
        let stores = [store(1, 1), store(2, 15), store(3, 15), store(4, 16)];
        let r1 = region(1, &[4, 2, 3]);
        let r2 = region(2, &[3, 1, 2]);
        let transfer = decide(&stores, &[led(&r1, &[]), led(&r2, &[])]).unwrap();
        assert_eq!(
            (
                transfer.region_id,
                transfer.from_store,
                transfer.to_peer.store_id
            ),
            (2, 3, 1)
        );
    }

    #[test]
    fn the_excess_flows_through_a_store_in_between() {
        // Stores 1 and 3 share no region. Store 1 leads 31 and store 2, its region's follower,
        // 29: within the tolerance of each other, but store 1 is 5 above the least loaded.
        let stores = [store(1, 31), store(2, 29), store(3, 26)];
        let mut r1 = region(1, &[1, 2]);
        let r2 = region(2, &[2, 3]);
        let transfer = balance_leader(&stores, &[led(&r1, &[]), led(&r2, &[])], 3, &mut |_| 0);
        assert_eq!(
            transfer,
            Some(LeaderTransfer {
                region_id: 1,
                from_store: 1,
                to_peer: r1.peers[1],
            })
        );
        // Applied: store 2 now leads 30, 4 more than store 3 (a pairwise gap over the
        // tolerance, too), and passes one on.
        r1.peers.reverse();
        let stores = [store(1, 30), store(2, 30), store(3, 26)];
        let regions = [led(&r1, &[]), led(&r2, &[])];
        let transfer = balance_leader(&stores, &regions, 3, &mut |_| 0).unwrap();
        assert_eq!((transfer.region_id, transfer.from_store), (2, 2));
        assert_eq!(transfer.to_peer.store_id, 3);
        // Balanced at last: 30, 29, 27.
        let stores = [store(1, 30), store(2, 29), store(3, 27)];
        assert_eq!(balance_leader(&stores, &regions, 3, &mut |_| 0), None);
    }

    /// SplitMix64: a seeded source of choices for the simulation.
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

    fn counts(store_count: u64, leaders: &[Peer]) -> Vec<StoreLeaders> {
        (1..=store_count)
            .map(|store_id| StoreLeaders {
                store_id,
                up: true,
                leader_count: leaders.iter().filter(|l| l.store_id == store_id).count() as u64,
            })
            .collect()
    }

    fn squares(stores: &[StoreLeaders]) -> u64 {
        stores.iter().map(|s| s.leader_count.pow(2)).sum()
    }

    /// Rule 3 of the module doc, restated: whether the leadership of a region may go from
    /// `from_store` to `to_store`.
    fn may_transfer(
        stores: &[StoreLeaders],
        tolerance: u64,
        from_store: u64,
        to_store: u64,
    ) -> bool {
        let count = |id: u64| {
            stores
                .iter()
                .find(|s| s.store_id == id)
                .unwrap()
                .leader_count
        };
        let most = stores.iter().map(|s| s.leader_count).max().unwrap();
        let fewest = stores.iter().map(|s| s.leader_count).min().unwrap();
        let (from, to) = (count(from_store), count(to_store));
        from >= to + 2 && (from - fewest > tolerance || most - to > tolerance)
    }

    fn spread(stores: &[StoreLeaders]) -> u64 {
        let counts = stores.iter().map(|s| s.leader_count);
        counts.clone().max().unwrap() - counts.min().unwrap()
    }

    /// A run of the balancer to its end: `regions_per_store` regions of three voters on
    /// distinct random stores, all led from their lowest store id (so the leaderships start
    /// piled up on the first stores), each transfer applied until there is none.
    struct Run {
        context: String,
        tolerance: u64,
        regions: Vec<Region>,
        leaders: Vec<Peer>,
        stores: Vec<StoreLeaders>,
    }

    fn run_to_the_end(seed: u64, regions_per_store: std::ops::Range<usize>) -> Run {
        let mut rng = SplitMix64(seed);
        let store_count = 3 + rng.below(8) as u64;
        let per_store = regions_per_store.start + rng.below(regions_per_store.len());
        let region_count = store_count * per_store as u64;
        let tolerance = 1 + rng.below(3) as u64;
        let context = format!(
            "seed {seed}: {store_count} stores, {region_count} regions, tolerance {tolerance}"
        );
        let regions: Vec<Region> = (1..=region_count)
            .map(|id| {
                let mut stores: Vec<u64> = Vec::new();
                while stores.len() < 3 {
                    let store_id = 1 + rng.below(store_count as usize) as u64;
                    if !stores.contains(&store_id) {
                        stores.push(store_id);
                    }
                }
                stores.sort_unstable();
                region(id, &stores)
            })
            .collect();
        let mut leaders: Vec<Peer> = regions.iter().map(|r| r.peers[0]).collect();

        let mut stores = counts(store_count, &leaders);
        let mut transfers = 0;
        loop {
            let views: Vec<RegionLeadership> = regions
                .iter()
                .zip(&leaders)
                .map(|(region, leader)| RegionLeadership {
                    region,
                    leader: Some(*leader),
                    pending_peers: &[],
                })
                .collect();
            let Some(transfer) = balance_leader(&stores, &views, tolerance, &mut |n| rng.below(n))
            else {
                break;
            };
            let index = (transfer.region_id - 1) as usize;
            assert_eq!(
                leaders[index].store_id, transfer.from_store,
                "{context}: {transfer:?}"
            );
            assert!(
                may_transfer(
                    &stores,
                    tolerance,
                    transfer.from_store,
                    transfer.to_peer.store_id
                ),
                "{context}: {transfer:?} between {stores:?}"
            );
            let before = squares(&stores);
            leaders[index] = transfer.to_peer;
            stores = counts(store_count, &leaders);
            assert!(
                squares(&stores) < before,
                "{context}: {transfer:?} did not help"
            );
            transfers += 1;
            // The sum of the squares bounds the number of transfers; in practice a leadership
            // moves about once.
            assert!(
                transfers <= region_count,
                "{context}: more transfers than regions, still spread {}",
                spread(&stores)
            );
        }
        Run {
            context: format!("{context}, {transfers} transfers"),
            tolerance,
            regions,
            leaders,
            stores,
        }
    }

    #[test]
    fn repeated_transfers_converge_to_within_the_tolerance() {
        // Enough regions per store that every two stores share many of them.
        for seed in 0..40 {
            let run = run_to_the_end(seed, 15..40);
            assert!(
                spread(&run.stores) <= run.tolerance,
                "{}: stuck at {:?}",
                run.context,
                run.stores
            );
        }
    }

    #[test]
    fn transfers_stop_only_when_no_region_may_transfer_its_leadership() {
        // Few regions per store: the stores may share too few regions to reach a balance, but
        // when the transfers stop no region is left whose leadership rule 3 lets go.
        for seed in 0..40 {
            let run = run_to_the_end(seed, 2..6);
            for (region, leader) in run.regions.iter().zip(&run.leaders) {
                for voter in &region.peers {
                    assert!(
                        !may_transfer(&run.stores, run.tolerance, leader.store_id, voter.store_id),
                        "{}: region {} led from store {} could still go to store {}: {:?}",
                        run.context,
                        region.id,
                        leader.store_id,
                        voter.store_id,
                        run.stores
                    );
                }
            }
        }
    }
}
