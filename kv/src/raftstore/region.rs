//! Region metadata as the raftstore keeps it: the key range, the epoch and the replicas
//! (`metapb::Region`), how a membership change updates it, and the store-local record of it.
//!
//! The epoch's `conf_ver` goes up by one on every applied membership change (add learner,
//! promote, remove) and `version` on every range change (a split bumps it on both halves).
//! Requests and heartbeats carrying an older epoch are stale.

use prost::Message as _;
use proto::metapb::{Peer as PeerMeta, Region, RegionEpoch};
use raft::{ConfChange, ConfState};

use super::command::SplitRequest;
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
    /// removal, so that stale messages from before it do not recreate the peer.
    pub tombstone: bool,
}

impl RegionLocalState {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.tombstone)];
        out.extend(self.region.encode_to_vec());
        out
    }

    pub fn decode(bytes: &[u8]) -> KvResult<RegionLocalState> {
        let (&state, region) = bytes
            .split_first()
            .ok_or_else(|| KvError::Corrupt("empty region state".into()))?;
        let region = Region::decode(region)
            .map_err(|e| KvError::Corrupt(format!("malformed region state: {e}")))?;
        Ok(RegionLocalState {
            region,
            tombstone: state == 1,
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
        };
        assert_eq!(RegionLocalState::decode(&state.encode()).unwrap(), state);
        assert!(RegionLocalState::decode(&[]).is_err());
    }
}
