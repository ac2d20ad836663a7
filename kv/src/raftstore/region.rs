//! Region metadata as the raftstore keeps it: the key range, the epoch and the replicas
//! (`metapb::Region`), how a membership change updates it, and the store-local record of it.
//!
//! The epoch's `conf_ver` goes up by one on every applied membership change (add learner,
//! promote, remove) and `version` on every range change (a split bumps it on both halves; a
//! merge's prepare bumps the source's `version` and `conf_ver`, its commit the target's
//! `version` past both). Requests and heartbeats carrying an older epoch are stale.

use prost::Message as _;
use proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use raft::{ConfChange, ConfState};

use super::command::{SplitRequest, split_u64};
use crate::error::{KvError, KvResult};

/// A new region's epoch.
pub fn initial_epoch() -> RegionEpoch {
    RegionEpoch {
        conf_ver: 1,
        version: 1,
    }
}

/// A region over the whole keyspace whose voters are `peer_ids`, peer `n` on store `n`
/// (tests and examples).
pub fn whole_keyspace(region_id: u64, peer_ids: impl IntoIterator<Item = u64>) -> Region {
    Region {
        id: region_id,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(initial_epoch()),
        peers: peer_ids
            .into_iter()
            .map(|id| PeerMeta {
                id,
                store_id: id,
                learner: false,
            })
            .collect(),
    }
}

pub fn epoch(region: &Region) -> RegionEpoch {
    region.epoch.unwrap_or_default()
}

/// Whether user key `key` lies in `[start_key, end_key)` (an empty end is unbounded).
pub fn contains_key(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice() && (region.end_key.is_empty() || key < &region.end_key[..])
}

/// Whether the key ranges `[a_start, a_end)` and `[b_start, b_end)` share a key (an empty end
/// is unbounded).
pub fn ranges_overlap(a_start: &[u8], a_end: &[u8], b_start: &[u8], b_end: &[u8]) -> bool {
    let a_before_b = !a_end.is_empty() && a_end <= b_start;
    let b_before_a = !b_end.is_empty() && b_end <= a_start;
    !(a_before_b || b_before_a)
}

pub fn find_peer(region: &Region, peer_id: u64) -> Option<&PeerMeta> {
    region.peers.iter().find(|p| p.id == peer_id)
}

pub fn peer_on_store(region: &Region, store_id: u64) -> Option<&PeerMeta> {
    region.peers.iter().find(|p| p.store_id == store_id)
}

/// The Raft membership the region's peers describe.
pub fn conf_state(region: &Region) -> ConfState {
    let mut conf = ConfState::default();
    for peer in &region.peers {
        if peer.learner {
            conf.learners.insert(peer.id);
        } else {
            conf.voters.insert(peer.id);
        }
    }
    conf
}

/// The two regions a split produces, or why the split does not apply to `region` (planned
/// against another version, or a key not strictly inside the range): the left keeps the
/// region's id and `[start, split_key)`, the right is the new region `[split_key, end)` with
/// one new peer per peer, on the same stores, learners staying learners; both get
/// `version + 1`, and the right the same `conf_ver`.
pub fn split(region: &Region, request: &SplitRequest) -> Result<(Region, Region), String> {
    let current = epoch(region);
    if request.version != current.version {
        return Err(format!(
            "planned against version {}, the region is at {}",
            request.version, current.version
        ));
    }
    let key = &request.split_key;
    if key.as_slice() <= region.start_key.as_slice()
        || (!region.end_key.is_empty() && key.as_slice() >= region.end_key.as_slice())
    {
        return Err("the split key is not strictly inside the region".into());
    }
    if request.new_peer_ids.len() != region.peers.len() {
        return Err(format!(
            "{} new peer ids for {} peers",
            request.new_peer_ids.len(),
            region.peers.len()
        ));
    }
    let next = RegionEpoch {
        conf_ver: current.conf_ver,
        version: current.version + 1,
    };
    let left = Region {
        end_key: key.clone(),
        epoch: Some(next),
        ..region.clone()
    };
    let right = Region {
        id: request.new_region_id,
        start_key: key.clone(),
        end_key: region.end_key.clone(),
        epoch: Some(next),
        peers: region
            .peers
            .iter()
            .zip(&request.new_peer_ids)
            .map(|(peer, &id)| PeerMeta { id, ..*peer })
            .collect(),
    };
    Ok((left, right))
}

/// The stores of a region's replicas, in order.
pub fn stores(region: &Region) -> std::collections::BTreeSet<u64> {
    region.peers.iter().map(|p| p.store_id).collect()
}

/// Whether `left` ends exactly where `right` starts.
fn adjacent(left: &Region, right: &Region) -> bool {
    !left.end_key.is_empty() && left.end_key == right.start_key
}

/// The source region frozen for a merge into `target` (see `raftstore::merge`), or why it
/// may not be: planned against another epoch, not adjacent, replicas not on the same stores,
/// learners among them. Its `version` and `conf_ver` both go up by one, so requests and
/// membership changes planned before are refused.
pub fn prepare_merge(
    source: &Region,
    target: &Region,
    planned: RegionEpoch,
) -> Result<Region, String> {
    let current = epoch(source);
    if current != planned {
        return Err(format!(
            "planned against epoch ({}, {}), the source is at ({}, {})",
            planned.conf_ver, planned.version, current.conf_ver, current.version
        ));
    }
    if source.id == target.id || !(adjacent(source, target) || adjacent(target, source)) {
        return Err("the regions are not adjacent".into());
    }
    if stores(source) != stores(target) || source.peers.len() != target.peers.len() {
        return Err("the replicas are not on the same stores".into());
    }
    if source.peers.iter().chain(&target.peers).any(|p| p.learner) {
        return Err("a learner is among the replicas".into());
    }
    let mut frozen = source.clone();
    frozen.epoch = Some(RegionEpoch {
        conf_ver: current.conf_ver + 1,
        version: current.version + 1,
    });
    Ok(frozen)
}

/// The target region after taking over `source` (frozen by its PrepareMerge against
/// `planned`, the target as the merge was planned), or why it may not: the target changed
/// since (its epoch is not the planned one) or the ranges do not meet. The merged region
/// keeps the target's id and replicas, spans both ranges, and its `version` passes both.
pub fn commit_merge(target: &Region, source: &Region, planned: &Region) -> Result<Region, String> {
    if epoch(target) != epoch(planned) || target.id != planned.id {
        return Err(format!(
            "the target changed since the merge was planned (epoch {:?}, planned {:?})",
            epoch(target),
            epoch(planned)
        ));
    }
    let mut merged = target.clone();
    if adjacent(source, target) {
        merged.start_key = source.start_key.clone();
    } else if adjacent(target, source) {
        merged.end_key = source.end_key.clone();
    } else {
        return Err("the regions are not adjacent".into());
    }
    merged.epoch = Some(RegionEpoch {
        conf_ver: epoch(target).conf_ver,
        version: epoch(target).version.max(epoch(source).version) + 1,
    });
    Ok(merged)
}

/// A source region's merge under way, recorded when its PrepareMerge applies.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeState {
    /// The target as the merge was planned against.
    pub target: Region,
    /// Where the PrepareMerge entry is in the source's log.
    pub prepare_index: u64,
    pub prepare_term: u64,
}

impl MergeState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.prepare_index.to_be_bytes());
        out.extend_from_slice(&self.prepare_term.to_be_bytes());
        out.extend(self.target.encode_to_vec());
        out
    }

    pub fn decode(bytes: &[u8]) -> KvResult<MergeState> {
        let corrupt = || KvError::Corrupt("malformed merge state".into());
        let (prepare_index, rest) = split_u64(bytes).ok_or_else(corrupt)?;
        let (prepare_term, rest) = split_u64(rest).ok_or_else(corrupt)?;
        let target = Region::decode(rest).map_err(|_| corrupt())?;
        Ok(MergeState {
            target,
            prepare_index,
            prepare_term,
        })
    }
}

/// A membership change of a region, as the raftstore proposes it: the Raft change plus the
/// peer's location, carried in the entry's context so every replica updates its region alike.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangePeer {
    AddLearner(PeerMeta),
    /// Make a learner a voter (or add a voter directly).
    AddVoter(PeerMeta),
    Remove(PeerMeta),
}

impl ChangePeer {
    pub fn peer(&self) -> &PeerMeta {
        match self {
            ChangePeer::AddLearner(p) | ChangePeer::AddVoter(p) | ChangePeer::Remove(p) => p,
        }
    }

    pub fn raft_change(&self) -> ConfChange {
        match self {
            ChangePeer::AddLearner(p) => ConfChange::AddLearner(p.id),
            ChangePeer::AddVoter(p) => ConfChange::AddVoter(p.id),
            ChangePeer::Remove(p) => ConfChange::Remove(p.id),
        }
    }

    /// The entry context: the peer (id, store), encoded.
    pub fn context(&self) -> Vec<u8> {
        self.peer().encode_to_vec()
    }

    /// Rebuilds the change from a committed conf change entry.
    pub fn from_entry(data: &[u8]) -> KvResult<ChangePeer> {
        let (change, context) = ConfChange::decode_with_context(data)
            .ok_or_else(|| KvError::Corrupt("malformed conf change entry".into()))?;
        let mut peer = PeerMeta::decode(context)
            .map_err(|e| KvError::Corrupt(format!("malformed conf change context: {e}")))?;
        if peer.id != change.node() {
            return Err(KvError::Corrupt(format!(
                "conf change for peer {} carries peer {}",
                change.node(),
                peer.id
            )));
        }
        Ok(match change {
            ConfChange::AddLearner(_) => {
                peer.learner = true;
                ChangePeer::AddLearner(peer)
            }
            ConfChange::AddVoter(_) => {
                peer.learner = false;
                ChangePeer::AddVoter(peer)
            }
            ConfChange::Remove(_) => ChangePeer::Remove(peer),
        })
    }

    /// The region after this change: peers updated like Raft's membership (adding a voter
    /// again or a learner that is a voter changes nothing, removing a non-member neither), and
    /// `conf_ver` bumped.
    pub fn apply_to(&self, region: &Region) -> Region {
        let mut next = region.clone();
        match self {
            ChangePeer::AddLearner(peer) => {
                if find_peer(&next, peer.id).is_none() {
                    next.peers.push(*peer);
                }
            }
            ChangePeer::AddVoter(peer) => match next.peers.iter_mut().find(|p| p.id == peer.id) {
                Some(existing) => existing.learner = false,
                None => next.peers.push(*peer),
            },
            ChangePeer::Remove(peer) => next.peers.retain(|p| p.id != peer.id),
        }
        let mut epoch = epoch(&next);
        epoch.conf_ver += 1;
        next.epoch = Some(epoch);
        next
    }
}

/// What a store persists about one of its regions.
#[derive(Clone, Debug, PartialEq)]
pub struct RegionLocalState {
    pub region: Region,
    /// The peer was removed and its data destroyed; the region and epoch are those at
    /// removal, so that stale messages from before it do not recreate the peer. With
    /// `merging` set: the replica was merged into its target (its data stays, the target's).
    pub tombstone: bool,
    /// The region applied a PrepareMerge: it serves nothing until the target takes it over.
    pub merging: Option<MergeState>,
}

const STATE_TOMBSTONE: u8 = 1;
const STATE_MERGING: u8 = 2;

impl RegionLocalState {
    pub fn new(region: Region) -> RegionLocalState {
        RegionLocalState {
            region,
            tombstone: false,
            merging: None,
        }
    }

    /// Whether this is what a merged source leaves (see `tombstone`).
    pub fn is_merged(&self) -> bool {
        self.tombstone && self.merging.is_some()
    }

    /// One flags byte; with a merge, its length-prefixed state; then the region.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.tombstone {
            flags |= STATE_TOMBSTONE;
        }
        if self.merging.is_some() {
            flags |= STATE_MERGING;
        }
        let mut out = vec![flags];
        if let Some(merge) = &self.merging {
            let merge = merge.encode();
            out.extend_from_slice(&(merge.len() as u32).to_be_bytes());
            out.extend(merge);
        }
        out.extend(self.region.encode_to_vec());
        out
    }

    pub fn decode(bytes: &[u8]) -> KvResult<RegionLocalState> {
        let corrupt = |what: &str| KvError::Corrupt(format!("malformed region state: {what}"));
        let (&flags, mut rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
        if flags & !(STATE_TOMBSTONE | STATE_MERGING) != 0 {
            return Err(corrupt(&format!("unknown flags {flags}")));
        }
        let mut merging = None;
        if flags & STATE_MERGING != 0 {
            let len: [u8; 4] = rest
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| corrupt("short merge state"))?;
            let len = u32::from_be_bytes(len) as usize;
            let merge = rest
                .get(4..4 + len)
                .ok_or_else(|| corrupt("short merge state"))?;
            merging = Some(MergeState::decode(merge)?);
            rest = &rest[4 + len..];
        }
        let region = Region::decode(rest).map_err(|e| corrupt(&e.to_string()))?;
        Ok(RegionLocalState {
            region,
            tombstone: flags & STATE_TOMBSTONE != 0,
            merging,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> PeerMeta {
        PeerMeta {
            id,
            store_id,
            learner: false,
        }
    }

    fn region() -> Region {
        Region {
            id: 7,
            start_key: b"b".to_vec(),
            end_key: b"d".to_vec(),
            epoch: Some(initial_epoch()),
            peers: vec![peer(1, 1)],
        }
    }

    #[test]
    fn key_ranges() {
        let r = region();
        assert!(contains_key(&r, b"b") && contains_key(&r, b"c\xff"));
        assert!(!contains_key(&r, b"a") && !contains_key(&r, b"d"));
        let unbounded = Region {
            end_key: Vec::new(),
            ..r
        };
        assert!(contains_key(&unbounded, b"\xff\xff"));
    }

    #[test]
    fn changes_update_peers_and_bump_conf_ver() {
        let r = region();
        let learner = PeerMeta {
            learner: true,
            ..peer(2, 5)
        };
        let add = ChangePeer::AddLearner(learner);
        let entry = [add.raft_change().encode(), add.context()].concat();
        assert_eq!(ChangePeer::from_entry(&entry).unwrap(), add);
        let r2 = add.apply_to(&r);
        assert_eq!(epoch(&r2).conf_ver, 2);
        assert_eq!(conf_state(&r2).learners.len(), 1);
        let r3 = ChangePeer::AddVoter(peer(2, 5)).apply_to(&r2);
        assert_eq!(conf_state(&r3).voters.len(), 2);
        assert_eq!(r3.peers.len(), 2);
        let r4 = ChangePeer::Remove(peer(1, 1)).apply_to(&r3);
        assert_eq!(r4.peers, vec![peer(2, 5)]);
        assert_eq!(epoch(&r4).conf_ver, 4);
        // A context naming another peer than the change is corrupt.
        let bad = [ConfChange::Remove(9).encode(), peer(1, 1).encode_to_vec()].concat();
        assert!(ChangePeer::from_entry(&bad).is_err());
    }

    #[test]
    fn a_split_bumps_the_version_of_both_halves() {
        let r = Region {
            peers: vec![
                peer(1, 1),
                PeerMeta {
                    learner: true,
                    ..peer(2, 2)
                },
            ],
            ..region()
        };
        let request = SplitRequest {
            split_key: b"c".to_vec(),
            new_region_id: 8,
            new_peer_ids: vec![11, 12],
            version: 1,
        };
        let (left, right) = split(&r, &request).unwrap();
        assert_eq!(
            (left.start_key.as_slice(), left.end_key.as_slice()),
            (&b"b"[..], &b"c"[..])
        );
        assert_eq!(
            (right.start_key.as_slice(), right.end_key.as_slice()),
            (&b"c"[..], &b"d"[..])
        );
        assert_eq!((left.id, right.id), (7, 8));
        assert_eq!(epoch(&left).version, 2);
        assert_eq!(epoch(&right), epoch(&left));
        assert_eq!(right.peers[0], peer(11, 1));
        assert!(right.peers[1].learner && right.peers[1].store_id == 2);
        // Stale plans, keys on or outside the boundary, wrong peer counts: refused.
        for bad in [
            SplitRequest {
                version: 2,
                ..request.clone()
            },
            SplitRequest {
                split_key: b"b".to_vec(),
                ..request.clone()
            },
            SplitRequest {
                split_key: b"d".to_vec(),
                ..request.clone()
            },
            SplitRequest {
                split_key: b"a".to_vec(),
                ..request.clone()
            },
            SplitRequest {
                new_peer_ids: vec![11],
                ..request.clone()
            },
        ] {
            assert!(split(&r, &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn local_state_round_trips() {
        let state = RegionLocalState {
            region: region(),
            tombstone: true,
            merging: None,
        };
        assert_eq!(RegionLocalState::decode(&state.encode()).unwrap(), state);
        let merged = RegionLocalState {
            merging: Some(MergeState {
                target: whole_keyspace(9, [1]),
                prepare_index: 12,
                prepare_term: 3,
            }),
            ..state
        };
        let encoded = merged.encode();
        assert_eq!(RegionLocalState::decode(&encoded).unwrap(), merged);
        assert!(merged.is_merged());
        assert!(RegionLocalState::decode(&[]).is_err());
        assert!(RegionLocalState::decode(&encoded[..6]).is_err());
        assert!(RegionLocalState::decode(&[8]).is_err());
    }

    #[test]
    fn a_merge_freezes_the_source_then_the_target_takes_its_range() {
        let left = Region {
            id: 7,
            start_key: b"b".to_vec(),
            end_key: b"d".to_vec(),
            epoch: Some(RegionEpoch {
                conf_ver: 3,
                version: 5,
            }),
            peers: vec![peer(1, 1), peer(2, 2)],
        };
        let right = Region {
            id: 8,
            start_key: b"d".to_vec(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch {
                conf_ver: 2,
                version: 9,
            }),
            peers: vec![peer(11, 2), peer(12, 1)],
        };
        // The left merges into the right.
        let frozen = prepare_merge(&left, &right, epoch(&left)).unwrap();
        assert_eq!(
            epoch(&frozen),
            RegionEpoch {
                conf_ver: 4,
                version: 6
            }
        );
        let merged = commit_merge(&right, &frozen, &right).unwrap();
        assert_eq!((merged.id, merged.start_key.as_slice()), (8, &b"b"[..]));
        assert!(merged.end_key.is_empty());
        assert_eq!(
            epoch(&merged),
            RegionEpoch {
                conf_ver: 2,
                version: 10
            }
        );
        assert_eq!(merged.peers, right.peers);
        // The right merges into the left: the left's end moves to the right's (unbounded).
        let frozen = prepare_merge(&right, &left, epoch(&right)).unwrap();
        let merged = commit_merge(&left, &frozen, &left).unwrap();
        assert_eq!(merged.start_key, b"b".to_vec());
        assert!(merged.end_key.is_empty());
        assert_eq!(epoch(&merged).version, 11);
        // Refused: a stale plan, ranges that do not meet, other stores, learners, a target
        // that changed since the plan.
        assert!(prepare_merge(&left, &right, initial_epoch()).is_err());
        let far = Region {
            start_key: b"x".to_vec(),
            ..right.clone()
        };
        assert!(prepare_merge(&left, &far, epoch(&left)).is_err());
        let elsewhere = Region {
            peers: vec![peer(11, 2), peer(12, 3)],
            ..right.clone()
        };
        assert!(prepare_merge(&left, &elsewhere, epoch(&left)).is_err());
        let with_learner = Region {
            peers: vec![
                peer(11, 2),
                PeerMeta {
                    learner: true,
                    ..peer(12, 1)
                },
            ],
            ..right.clone()
        };
        assert!(prepare_merge(&left, &with_learner, epoch(&left)).is_err());
        let frozen = prepare_merge(&left, &right, epoch(&left)).unwrap();
        let split_since = Region {
            epoch: Some(RegionEpoch {
                conf_ver: 2,
                version: 10,
            }),
            ..right.clone()
        };
        assert!(commit_merge(&split_since, &frozen, &right).is_err());
    }
}
