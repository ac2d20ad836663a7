//! The balancing step of the scheduler: from the cluster state the scheduler keeps, build
//! the inputs of the pure balancing decisions ([`crate::balance_region`] by region size, then
//! [`crate::balance_leader`] by leader count) and return at most one decision, which
//! [`crate::cluster`] turns into an operator.
//!
//! Regions that already have an operator, that have no known leader yet, or whose stores are
//! not all up are left out: balancing never competes with repairs, and never moves data
//! towards or away from a store it cannot reach.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proto::metapb::{Peer, Region};

use crate::balance_leader;
use crate::balance_region;

/// One balancing decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Move the region's replica on `from_store` to `to_store`.
    MoveRegion {
        region_id: u64,
        from_store: u64,
        to_store: u64,
    },
    /// Hand the region's leadership to `to`.
    TransferLeader { region_id: u64, to: Peer },
}

/// Decides at most one balancing step. `leaders`, `pending` and `sizes` are by region id
/// (sizes as `(bytes, keys)`); `up` holds the up stores; `busy` the regions with an operator;
/// `round` counts the calls (it seeds the choice among equally good candidates).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    regions: &BTreeMap<u64, Region>,
    leaders: &HashMap<u64, Peer>,
    pending: &HashMap<u64, Vec<Peer>>,
    sizes: &HashMap<u64, (u64, u64)>,
    up: &BTreeMap<u64, u32>,
    busy: &BTreeSet<u64>,
    max_replicas: usize,
    leader_tolerance: u32,
    round: u64,
) -> Option<Decision> {
    let empty: Vec<Peer> = Vec::new();
    let candidates: Vec<&Region> = regions
        .values()
        .filter(|r| !busy.contains(&r.id) && leaders.contains_key(&r.id))
        .filter(|r| r.peers.iter().all(|p| up.contains_key(&p.store_id)))
        .collect();
    // A region never measured counts as one byte, so that a fresh cluster's regions spread
    // by count.
    let size_of = |id: u64| sizes.get(&id).map_or(1, |(bytes, _)| (*bytes).max(1));

    let mut store_sizes: BTreeMap<u64, u64> = up.keys().map(|&id| (id, 0)).collect();
    let mut leader_counts: BTreeMap<u64, u64> = up.keys().map(|&id| (id, 0)).collect();
    for region in regions.values() {
        for peer in &region.peers {
            if let Some(total) = store_sizes.get_mut(&peer.store_id) {
                *total += size_of(region.id);
            }
        }
        if let Some(leader) = leaders.get(&region.id)
            && let Some(count) = leader_counts.get_mut(&leader.store_id)
        {
            *count += 1;
        }
    }
    let stores: Vec<balance_region::StoreLoad> = store_sizes
        .iter()
        .map(|(&store_id, &region_size)| balance_region::StoreLoad {
            store_id,
            up: true,
            region_size,
        })
        .collect();
    let loads: Vec<balance_region::RegionLoad> = candidates
        .iter()
        .map(|region| balance_region::RegionLoad {
            region,
            leader: leaders.get(&region.id).copied(),
            pending_peers: pending.get(&region.id).unwrap_or(&empty),
            approximate_size: size_of(region.id),
        })
        .collect();
    // Varies with the round, so that a region that cannot move does not block the others,
    // and is replayable (no clock).
    let mut seed = round.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut choose = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    if let Some(moved) = balance_region::balance_region(&stores, &loads, max_replicas, &mut choose)
    {
        return Some(Decision::MoveRegion {
            region_id: moved.region_id,
            from_store: moved.from_store,
            to_store: moved.to_store,
        });
    }
    let store_leaders: Vec<balance_leader::StoreLeaders> = leader_counts
        .iter()
        .map(|(&store_id, &leader_count)| balance_leader::StoreLeaders {
            store_id,
            up: true,
            leader_count,
        })
        .collect();
    let leaderships: Vec<balance_leader::RegionLeadership> = candidates
        .iter()
        .map(|region| balance_leader::RegionLeadership {
            region,
            leader: leaders.get(&region.id).copied(),
            pending_peers: pending.get(&region.id).unwrap_or(&empty),
        })
        .collect();
    let transfer = balance_leader::balance_leader(
        &store_leaders,
        &leaderships,
        u64::from(leader_tolerance),
        &mut choose,
    )?;
    Some(Decision::TransferLeader {
        region_id: transfer.region_id,
        to: transfer.to_peer,
    })
}
