//! The merge checker: whether a small region should merge into one of its neighbours (PD's
//! merge checker), as a pure decision over what the scheduler knows of the three regions.
//!
//! A region is merged away (the *source*) when
//! - it is small: measured at most `max_size` bytes and `max_keys` keys;
//! - it is settled: its leader is known, no replica is far behind, no operator is under way,
//!   and this scheduler has known it for `split_merge_interval` (a region just split off is
//!   not merged back at once, and after a restart nothing merges before the sizes are fresh);
//! - a neighbour (the region ending where it starts, or starting where it ends) is settled
//!   too, measured, has its replicas on the same stores, no learner on either side, and would
//!   not exceed `max_target_size` with the source in it;
//! - the boundary between them is not *sticky*: a key a split was asked for (a table's start,
//!   `ALTER TABLE … SPLIT AT`) stays a region boundary, so tables never share a region.
//!
//! Of two such neighbours the smaller one is the target. When the only neighbours that
//! qualify have their replicas on other stores (a cluster with more stores than replicas),
//! the source's replicas are moved onto the smaller one's stores first, one replica move at a
//! time ([`choose_alignment`], as PD does), and it merges once they match.

use std::collections::BTreeSet;
use std::time::Duration;

use proto::metapb::Region;

/// When regions merge.
#[derive(Clone, Debug)]
pub struct MergeConfig {
    /// A region of at most this many bytes may merge into a neighbour (0: never merge).
    pub max_size: u64,
    /// … and of at most this many keys.
    pub max_keys: u64,
    /// A merged region may be at most this big.
    pub max_target_size: u64,
    /// How long a region must be known before it merges.
    pub split_merge_interval: Duration,
    /// At most this many merges at once.
    pub max_merges: usize,
}

impl Default for MergeConfig {
    fn default() -> MergeConfig {
        MergeConfig {
            max_size: 20 << 20,
            max_keys: 200_000,
            max_target_size: 60 << 20,
            split_merge_interval: Duration::from_secs(60 * 60),
            max_merges: 8,
        }
    }
}

/// What the checker needs to know of a region.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub region: &'a Region,
    /// Measured (bytes, keys), `None` if not measured since its last split or merge.
    pub size: Option<(u64, u64)>,
    /// Leader known, nothing far behind, no operator, known for `split_merge_interval`.
    pub settled: bool,
}

fn stores(region: &Region) -> BTreeSet<u64> {
    region.peers.iter().map(|p| p.store_id).collect()
}

/// The neighbour `source` should merge into, if any (see the module docs). `sticky` tells
/// whether a key must stay a region boundary.
pub fn choose_target<'a>(
    source: Candidate<'_>,
    neighbours: [Option<Candidate<'a>>; 2],
    sticky: impl Fn(&[u8]) -> bool,
    config: &MergeConfig,
) -> Option<&'a Region> {
    eligible_neighbours(source, neighbours, sticky, config)
        .into_iter()
        .filter(|(_, n)| stores(n) == stores(source.region))
        .min_by_key(|(target_bytes, _)| *target_bytes)
        .map(|(_, target)| target)
}

/// A replica move that brings a small region's replicas onto its neighbour's stores, so that
/// it can merge into it afterwards.
#[derive(Clone, Debug, PartialEq)]
pub struct Alignment<'a> {
    pub target: &'a Region,
    /// The source's replica on this store (not one of the target's) moves …
    pub from_store: u64,
    /// … to this store (one of the target's, not the source's).
    pub to_store: u64,
}

/// When `source` would merge into a neighbour but for their replicas being on different
/// stores (PD's merge checker does the same): one replica move of the source towards the
/// smaller such neighbour's stores. `usable` tells whether a store may take a replica.
pub fn choose_alignment<'a>(
    source: Candidate<'_>,
    neighbours: [Option<Candidate<'a>>; 2],
    sticky: impl Fn(&[u8]) -> bool,
    usable: impl Fn(u64) -> bool,
    config: &MergeConfig,
) -> Option<Alignment<'a>> {
    let mine = stores(source.region);
    eligible_neighbours(source, neighbours, sticky, config)
        .into_iter()
        .filter(|(_, n)| stores(n) != mine)
        .min_by_key(|(target_bytes, _)| *target_bytes)
        .and_then(|(_, target)| {
            let theirs = stores(target);
            let from_store = *mine.difference(&theirs).next()?;
            let to_store = theirs.difference(&mine).copied().find(|&s| usable(s))?;
            Some(Alignment {
                target,
                from_store,
                to_store,
            })
        })
}

/// The neighbours `source` could merge into but for where their replicas are, with their
/// sizes in bytes.
fn eligible_neighbours<'a>(
    source: Candidate<'_>,
    neighbours: [Option<Candidate<'a>>; 2],
    sticky: impl Fn(&[u8]) -> bool,
    config: &MergeConfig,
) -> Vec<(u64, &'a Region)> {
    if config.max_size == 0 || !source.settled {
        return Vec::new();
    }
    let Some((bytes, keys)) = source.size else {
        return Vec::new();
    };
    if bytes > config.max_size || keys > config.max_keys {
        return Vec::new();
    }
    let has_learner = |r: &Region| r.peers.iter().any(|p| p.learner);
    if has_learner(source.region) {
        return Vec::new();
    }
    neighbours
        .into_iter()
        .flatten()
        .filter(|n| n.settled && !has_learner(n.region))
        .filter(|n| n.region.peers.len() == source.region.peers.len())
        .filter_map(|n| {
            let (target_bytes, _) = n.size?;
            (target_bytes + bytes <= config.max_target_size).then_some((target_bytes, n.region))
        })
        .filter(|(_, target)| {
            // The key between them. (Compare the bounded ends: an empty key is the start of
            // the keyspace as a start and its end as an end.)
            let target_follows =
                !source.region.end_key.is_empty() && target.start_key == source.region.end_key;
            let boundary = if target_follows {
                &source.region.end_key
            } else {
                &source.region.start_key
            };
            !sticky(boundary)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::metapb::{Peer, RegionEpoch};

    fn region(id: u64, start: &[u8], end: &[u8], stores: &[u64]) -> Region {
        Region {
            id,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 1,
            }),
            peers: stores
                .iter()
                .map(|&s| Peer {
                    id: id * 10 + s,
                    store_id: s,
                    learner: false,
                })
                .collect(),
        }
    }

    fn candidate(region: &Region, bytes: u64) -> Candidate<'_> {
        Candidate {
            region,
            size: Some((bytes, bytes / 100)),
            settled: true,
        }
    }

    fn config() -> MergeConfig {
        MergeConfig {
            max_size: 1000,
            max_keys: 100,
            max_target_size: 5000,
            ..MergeConfig::default()
        }
    }

    #[test]
    fn a_small_region_merges_into_its_smaller_neighbour() {
        let left = region(1, b"", b"b", &[1, 2, 3]);
        let middle = region(2, b"b", b"d", &[3, 2, 1]);
        let right = region(3, b"d", b"", &[1, 2, 3]);
        let never = |_: &[u8]| false;
        let chosen = choose_target(
            candidate(&middle, 10),
            [Some(candidate(&left, 3000)), Some(candidate(&right, 200))],
            never,
            &config(),
        );
        assert_eq!(chosen.map(|r| r.id), Some(3));
        let chosen = choose_target(
            candidate(&middle, 10),
            [Some(candidate(&left, 100)), Some(candidate(&right, 200))],
            never,
            &config(),
        );
        assert_eq!(chosen.map(|r| r.id), Some(1));
        // The right neighbour's boundary is sticky: the left one it is, even though bigger.
        let chosen = choose_target(
            candidate(&middle, 10),
            [Some(candidate(&left, 3000)), Some(candidate(&right, 200))],
            |key: &[u8]| key == b"d",
            &config(),
        );
        assert_eq!(chosen.map(|r| r.id), Some(1));
    }

    #[test]
    fn a_sticky_boundary_holds_between_the_first_and_the_last_region() {
        // Two regions over the whole keyspace: the first's start and the last's end are
        // both the empty key, which must not be mistaken for their boundary.
        let first = region(1, b"", b"t", &[1]);
        let last = region(2, b"t", b"", &[1]);
        let sticky = |key: &[u8]| key == b"t";
        assert!(
            choose_target(
                candidate(&first, 10),
                [None, Some(candidate(&last, 10))],
                sticky,
                &config()
            )
            .is_none()
        );
        assert!(
            choose_target(
                candidate(&last, 10),
                [Some(candidate(&first, 10)), None],
                sticky,
                &config()
            )
            .is_none()
        );
    }

    #[test]
    fn big_unsettled_unmeasured_or_misplaced_regions_stay() {
        let middle = region(2, b"b", b"d", &[1, 2, 3]);
        let right = region(3, b"d", b"", &[1, 2, 3]);
        let never = |_: &[u8]| false;
        let choose = |source: Candidate<'_>, target: Candidate<'_>| {
            choose_target(source, [None, Some(target)], never, &config()).map(|r| r.id)
        };
        assert_eq!(
            choose(candidate(&middle, 10), candidate(&right, 10)),
            Some(3)
        );
        // Too big a source (bytes or keys), or too big a result.
        assert_eq!(
            choose(candidate(&middle, 1001), candidate(&right, 10)),
            None
        );
        let many_keys = Candidate {
            size: Some((10, 101)),
            ..candidate(&middle, 10)
        };
        assert_eq!(choose(many_keys, candidate(&right, 10)), None);
        assert_eq!(
            choose(candidate(&middle, 900), candidate(&right, 4500)),
            None
        );
        // Not measured, not settled (either side).
        let unmeasured = Candidate {
            size: None,
            ..candidate(&middle, 10)
        };
        assert_eq!(choose(unmeasured, candidate(&right, 10)), None);
        let unsettled = Candidate {
            settled: false,
            ..candidate(&right, 10)
        };
        assert_eq!(choose(candidate(&middle, 10), unsettled), None);
        // Replicas on other stores, or a learner.
        let elsewhere = region(3, b"d", b"", &[1, 2, 4]);
        assert_eq!(
            choose(candidate(&middle, 10), candidate(&elsewhere, 10)),
            None
        );
        let mut learner = right.clone();
        learner.peers[0].learner = true;
        assert_eq!(
            choose(candidate(&middle, 10), candidate(&learner, 10)),
            None
        );
        // Merging disabled.
        let off = MergeConfig {
            max_size: 0,
            ..config()
        };
        assert!(
            choose_target(
                candidate(&middle, 0),
                [None, Some(candidate(&right, 0))],
                never,
                &off
            )
            .is_none()
        );
    }

    #[test]
    fn a_small_region_on_other_stores_moves_a_replica_towards_its_neighbour() {
        let middle = region(2, b"b", b"d", &[1, 2, 3]);
        let left = region(1, b"", b"b", &[2, 3, 4]);
        let right = region(3, b"d", b"", &[3, 4, 5]);
        let never = |_: &[u8]| false;
        let any_store = |_: u64| true;
        let neighbours = [Some(candidate(&left, 300)), Some(candidate(&right, 200))];
        // No neighbour on the same stores: no merge yet, but a move towards the smaller one.
        assert_eq!(
            choose_target(candidate(&middle, 10), neighbours, never, &config()),
            None
        );
        let alignment = choose_alignment(
            candidate(&middle, 10),
            neighbours,
            never,
            any_store,
            &config(),
        )
        .unwrap();
        assert_eq!(
            (
                alignment.target.id,
                alignment.from_store,
                alignment.to_store
            ),
            (3, 1, 4)
        );
        // A store that cannot take the replica is skipped.
        let alignment = choose_alignment(
            candidate(&middle, 10),
            neighbours,
            never,
            |s| s != 4,
            &config(),
        )
        .unwrap();
        assert_eq!((alignment.from_store, alignment.to_store), (1, 5));
        // Once aligned, the merge.
        let moved = region(2, b"b", b"d", &[3, 4, 5]);
        assert_eq!(
            choose_target(candidate(&moved, 10), neighbours, never, &config()).map(|r| r.id),
            Some(3)
        );
        // A neighbour already on the same stores is merged into, nothing moves.
        let aligned_left = region(1, b"", b"b", &[1, 2, 3]);
        let neighbours = [
            Some(candidate(&aligned_left, 300)),
            Some(candidate(&right, 200)),
        ];
        assert_eq!(
            choose_target(candidate(&middle, 10), neighbours, never, &config()).map(|r| r.id),
            Some(1)
        );
        // Nothing moves for a neighbour that could not take the source anyway (sticky
        // boundary, too big, unsettled).
        let sticky_d = |key: &[u8]| key == b"d";
        assert_eq!(
            choose_alignment(
                candidate(&middle, 10),
                [None, Some(candidate(&right, 200))],
                sticky_d,
                any_store,
                &config()
            ),
            None
        );
        assert_eq!(
            choose_alignment(
                candidate(&middle, 10),
                [None, Some(candidate(&right, 4999))],
                never,
                any_store,
                &config()
            ),
            None
        );
    }
}
