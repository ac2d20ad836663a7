//! The replica checker: which single membership change (if any) brings a region towards
//! `max_replicas` voters on distinct up stores.
//!
//! A pure function of what the region's leader reported and what the scheduler knows about
//! the stores; [`crate::cluster`] wraps its decisions in per-region *operators* so that a
//! decision is repeated, not re-made, until the leader has carried it out.
//!
//! # Rules, in order
//!
//! 0. A learner on a store that is not up is removed: it cannot catch up, and as a pending
//!    learner it would block every other change.
//! 1. A learner that is not pending (it has caught up) is promoted to a voter.
//! 2. A pending learner (still catching up, e.g. by snapshot) blocks every other change: the
//!    region waits for it, so that at most one new replica is in flight at a time.
//! 3. Fewer healthy peers than `min(max_replicas, up stores)`: add a learner on an up store
//!    holding no peer of the region — the one with the fewest regions, then the lowest id. A
//!    peer is healthy unless its store is *gone* (down for much longer than a restart takes:
//!    `replace_down_after`), so a gone store's replica is replaced. New replicas are always
//!    added as learners first, so an empty replica never counts towards a quorum.
//! 4. More peers than `max_replicas`: remove one peer that is not the leader, preferring one on
//!    a store that is not up (a replaced replica of a gone store), then a learner, then the
//!    highest peer id.
//!
//! # Deliberately left out
//!
//! A peer on a store that is down but not yet gone is left alone: a restart must not move
//! data around. Balancing (moving replicas or leaders between up stores) is not here.

use std::collections::{BTreeMap, BTreeSet};

use proto::metapb::{Peer, Region};

/// One membership change for the region's leader to propose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaChange {
    /// Add a learner on this store (the caller allocates the new peer's id).
    AddLearner { store_id: u64 },
    /// Promote this learner to a voter.
    Promote(Peer),
    /// Remove this peer.
    Remove(Peer),
}

/// Decides at most one change for `region`, led by `leader`.
///
/// `pending_peers`: peers the leader reports as far behind. `up_stores`: the stores that are
/// up, each with the number of regions it reported. `gone_stores`: stores down for so long
/// that their replicas are replaced. `max_replicas`: the wanted replica count.
pub fn check(
    region: &Region,
    leader: &Peer,
    pending_peers: &[Peer],
    up_stores: &BTreeMap<u64, u32>,
    gone_stores: &BTreeSet<u64>,
    max_replicas: usize,
) -> Option<ReplicaChange> {
    let is_pending = |peer: &Peer| pending_peers.iter().any(|p| p.id == peer.id);

    if let Some(stranded) = region
        .peers
        .iter()
        .find(|p| p.learner && !up_stores.contains_key(&p.store_id))
    {
        return Some(ReplicaChange::Remove(*stranded));
    }

    if let Some(learner) = region.peers.iter().find(|p| p.learner && !is_pending(p)) {
        return Some(ReplicaChange::Promote(*learner));
    }
    if region.peers.iter().any(|p| p.learner) {
        return None;
    }

    let peers = region.peers.len();
    let healthy = region
        .peers
        .iter()
        .filter(|p| !gone_stores.contains(&p.store_id))
        .count();
    if healthy < max_replicas.min(up_stores.len()) {
        return up_stores
            .iter()
            .filter(|(store_id, _)| !region.peers.iter().any(|p| p.store_id == **store_id))
            .min_by_key(|(store_id, region_count)| (**region_count, **store_id))
            .map(|(store_id, _)| ReplicaChange::AddLearner {
                store_id: *store_id,
            });
    }

    if peers > max_replicas {
        return region
            .peers
            .iter()
            .filter(|p| p.id != leader.id)
            .max_by_key(|p| (!up_stores.contains_key(&p.store_id), p.learner, p.id))
            .map(|p| ReplicaChange::Remove(*p));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            learner: false,
        }
    }

    fn learner(id: u64, store_id: u64) -> Peer {
        Peer {
            learner: true,
            ..peer(id, store_id)
        }
    }

    fn region(peers: Vec<Peer>) -> Region {
        Region {
            id: 1,
            peers,
            ..Region::default()
        }
    }

    /// Up stores with their region counts.
    fn up(stores: &[(u64, u32)]) -> BTreeMap<u64, u32> {
        stores.iter().copied().collect()
    }

    #[test]
    fn a_caught_up_learner_is_promoted() {
        let r = region(vec![peer(10, 1), learner(11, 2)]);
        let stores = up(&[(1, 0), (2, 0), (3, 0)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::Promote(learner(11, 2)))
        );
        // Promotion comes before removal, even with too many peers.
        let r = region(vec![peer(10, 1), peer(12, 3), learner(11, 2)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 1),
            Some(ReplicaChange::Promote(learner(11, 2)))
        );
    }

    #[test]
    fn a_pending_learner_blocks_every_other_change() {
        let r = region(vec![peer(10, 1), learner(11, 2)]);
        let stores = up(&[(1, 0), (2, 0), (3, 0), (4, 0)]);
        // Without the pending learner the region would get another replica.
        assert_eq!(
            check(
                &r,
                &r.peers[0],
                &[learner(11, 2)],
                &stores,
                &BTreeSet::new(),
                3
            ),
            None
        );
        // A pending voter does not block.
        let r = region(vec![peer(10, 1), peer(11, 2)]);
        assert_eq!(
            check(
                &r,
                &r.peers[0],
                &[peer(11, 2)],
                &stores,
                &BTreeSet::new(),
                3
            ),
            Some(ReplicaChange::AddLearner { store_id: 3 })
        );
    }

    #[test]
    fn a_missing_replica_goes_to_the_least_loaded_up_store_without_one() {
        let r = region(vec![peer(10, 1)]);
        // Store 1 holds the region already; store 2 has more regions than 3 and 4; 3 < 4 by id.
        let stores = up(&[(1, 0), (2, 7), (3, 5), (4, 5)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::AddLearner { store_id: 3 })
        );
        // Only up stores count: with one up store besides the leader's, one more replica.
        let r = region(vec![peer(10, 1), peer(11, 9)]);
        let stores = up(&[(1, 0), (2, 3)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            None
        );
        let stores = up(&[(1, 0), (2, 3), (5, 4)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::AddLearner { store_id: 2 })
        );
        // Enough replicas for max_replicas: nothing even with more up stores.
        let r = region(vec![peer(10, 1)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 1),
            None
        );
    }

    #[test]
    fn an_extra_replica_is_removed_down_store_first_then_highest_id_never_the_leader() {
        let stores = up(&[(1, 0), (2, 0), (3, 0), (4, 0)]);
        // All up: the highest non-leader id.
        let r = region(vec![peer(13, 1), peer(10, 2), peer(12, 3), peer(11, 4)]);
        assert_eq!(
            check(&r, &r.peers[2], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::Remove(peer(13, 1)))
        );
        // The leader is never removed, even with the highest id.
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::Remove(peer(12, 3)))
        );
        // A peer on a store that is not up goes first.
        let r = region(vec![peer(13, 1), peer(10, 2), peer(12, 3), peer(11, 9)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            Some(ReplicaChange::Remove(peer(11, 9)))
        );
    }

    #[test]
    fn a_healthy_region_and_a_down_peer_within_max_replicas_are_left_alone() {
        let stores = up(&[(1, 0), (2, 0), (3, 0), (4, 0)]);
        let r = region(vec![peer(10, 1), peer(11, 2), peer(12, 3)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            None
        );
        // Store 9 is down (not gone): its peer is neither removed nor replaced.
        let r = region(vec![peer(10, 1), peer(11, 2), peer(12, 9)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &BTreeSet::new(), 3),
            None
        );
    }

    #[test]
    fn a_learner_on_a_down_store_is_removed_instead_of_blocking() {
        // The learner was added just before its store went down: it stays pending forever.
        let r = region(vec![peer(10, 1), peer(11, 2), learner(12, 3)]);
        let stores = up(&[(1, 0), (2, 0), (4, 0)]);
        assert_eq!(
            check(
                &r,
                &r.peers[0],
                &[learner(12, 3)],
                &stores,
                &BTreeSet::new(),
                3
            ),
            Some(ReplicaChange::Remove(learner(12, 3)))
        );
    }

    #[test]
    fn the_replica_of_a_gone_store_is_replaced_then_removed() {
        let stores = up(&[(1, 0), (2, 0), (3, 5), (4, 1)]);
        let gone = BTreeSet::from([9]);
        // Two healthy peers of three: a learner on the least loaded up store without a peer.
        let r = region(vec![peer(10, 1), peer(11, 2), peer(12, 9)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &gone, 3),
            Some(ReplicaChange::AddLearner { store_id: 4 })
        );
        // Once the replacement is a voter, the gone store's peer goes.
        let r = region(vec![peer(10, 1), peer(11, 2), peer(12, 9), peer(13, 4)]);
        assert_eq!(
            check(&r, &r.peers[0], &[], &stores, &gone, 3),
            Some(ReplicaChange::Remove(peer(12, 9)))
        );
        // With no up store left to move to, nothing happens.
        let few = up(&[(1, 0), (2, 0)]);
        let r = region(vec![peer(10, 1), peer(11, 2), peer(12, 9)]);
        assert_eq!(check(&r, &r.peers[0], &[], &few, &gone, 3), None);
    }
}
