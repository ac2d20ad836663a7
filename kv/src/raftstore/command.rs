//! [`RaftCommand`]: what a normal Raft log entry of a region carries.
//!
//! - `Write`: a write batch computed by the leader (a Percolator command's effect). Every
//!   replica applies it only if all its data keys still lie in the region's range at that point
//!   of the log; otherwise the entry is skipped on every replica alike (the region split or
//!   merged between the command's key check and its place in the log) and the proposer learns
//!   `EpochNotMatch`. This check at apply time is what makes a split safe against commands
//!   computed just before it: a key never receives a write through two regions.
//! - `Split`: split the region at a user key (see [`SplitRequest`]). Applied only if the
//!   region's epoch `version` is still the one the split was planned against and the key lies
//!   strictly inside the range; otherwise skipped alike everywhere.
//! - `PrepareMerge`: the first half of a merge, in the *source* region's log (see
//!   [`PrepareMergeRequest`] and `raftstore::merge`).
//! - `CommitMerge`: the second half, in the *target* region's log (see [`CommitMergeRequest`]).
//!
//! Encoding: one tag byte, then the payload. Entries are written by this process and read back
//! from disk or from another store, so decoding refuses malformed input instead of panicking.

use prost::Message as _;
use proto::metapb::{Region, RegionEpoch};

use super::region::MergeState;
use crate::error::{KvError, KvResult};
use crate::storage::WriteBatch;

const TAG_WRITE: u8 = b'W';
const TAG_SPLIT: u8 = b'S';
const TAG_PREPARE_MERGE: u8 = b'P';
const TAG_COMMIT_MERGE: u8 = b'C';

/// A split of a region at `split_key`: the region keeps `[start, split_key)`, a new region
/// `new_region_id` takes `[split_key, end)`, with one new peer per existing peer, on the same
/// stores, in the same order (`new_peer_ids[i]` pairs with the region's `peers[i]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitRequest {
    pub split_key: Vec<u8>,
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
    /// The region's epoch `version` the split was planned against.
    pub version: u64,
}

/// Freeze this (source) region for a merge into `target`, an adjacent region whose replicas
/// are on the same stores. Applied only if the source's epoch is still `source_epoch`.
#[derive(Clone, Debug, PartialEq)]
pub struct PrepareMergeRequest {
    /// The target region as the merge was planned against (its epoch included).
    pub target: Region,
    pub source_epoch: RegionEpoch,
}

/// Take over the range of `source`, which applied its `PrepareMerge` at `prepare_index` (an
/// entry of `prepare_term`) with `target` as the target. Applied only if this (target)
/// region's epoch is still the one in `target`.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitMergeRequest {
    /// The source region as its PrepareMerge left it.
    pub source: Region,
    pub merge: MergeState,
}

#[derive(Clone, Debug, PartialEq)]
pub enum RaftCommand {
    Write(WriteBatch),
    Split(SplitRequest),
    PrepareMerge(PrepareMergeRequest),
    CommitMerge(CommitMergeRequest),
}

impl RaftCommand {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RaftCommand::Write(batch) => {
                let mut out = vec![TAG_WRITE];
                out.extend(batch.encode());
                out
            }
            RaftCommand::Split(split) => {
                let mut out = vec![TAG_SPLIT];
                out.extend_from_slice(&split.version.to_be_bytes());
                out.extend_from_slice(&split.new_region_id.to_be_bytes());
                out.extend_from_slice(&(split.new_peer_ids.len() as u32).to_be_bytes());
                for id in &split.new_peer_ids {
                    out.extend_from_slice(&id.to_be_bytes());
                }
                out.extend_from_slice(&split.split_key);
                out
            }
            RaftCommand::PrepareMerge(prepare) => {
                let mut out = vec![TAG_PREPARE_MERGE];
                out.extend_from_slice(&prepare.source_epoch.conf_ver.to_be_bytes());
                out.extend_from_slice(&prepare.source_epoch.version.to_be_bytes());
                out.extend(prepare.target.encode_to_vec());
                out
            }
            RaftCommand::CommitMerge(commit) => {
                let mut out = vec![TAG_COMMIT_MERGE];
                let merge = commit.merge.encode();
                out.extend_from_slice(&(merge.len() as u32).to_be_bytes());
                out.extend(merge);
                out.extend(commit.source.encode_to_vec());
                out
            }
        }
    }

    pub fn decode(data: &[u8]) -> KvResult<RaftCommand> {
        let corrupt = |what: &str| KvError::Corrupt(format!("malformed raft command: {what}"));
        let (&tag, rest) = data.split_first().ok_or_else(|| corrupt("empty"))?;
        match tag {
            TAG_WRITE => Ok(RaftCommand::Write(WriteBatch::decode(rest)?)),
            TAG_SPLIT => {
                let mut input = rest;
                let u64_field = |input: &mut &[u8]| -> KvResult<u64> {
                    let bytes: [u8; 8] = input
                        .get(..8)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| corrupt("short split"))?;
                    *input = &input[8..];
                    Ok(u64::from_be_bytes(bytes))
                };
                let version = u64_field(&mut input)?;
                let new_region_id = u64_field(&mut input)?;
                let count: [u8; 4] = input
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("short split"))?;
                input = &input[4..];
                let count = u32::from_be_bytes(count) as usize;
                if count > input.len() / 8 {
                    return Err(corrupt("peer count beyond the entry"));
                }
                let mut new_peer_ids = Vec::with_capacity(count);
                for _ in 0..count {
                    new_peer_ids.push(u64_field(&mut input)?);
                }
                Ok(RaftCommand::Split(SplitRequest {
                    split_key: input.to_vec(),
                    new_region_id,
                    new_peer_ids,
                    version,
                }))
            }
            TAG_PREPARE_MERGE => {
                let (conf_ver, rest) = split_u64(rest).ok_or_else(|| corrupt("short merge"))?;
                let (version, rest) = split_u64(rest).ok_or_else(|| corrupt("short merge"))?;
                let target =
                    Region::decode(rest).map_err(|e| corrupt(&format!("merge target: {e}")))?;
                Ok(RaftCommand::PrepareMerge(PrepareMergeRequest {
                    target,
                    source_epoch: RegionEpoch { conf_ver, version },
                }))
            }
            TAG_COMMIT_MERGE => {
                let len: [u8; 4] = rest
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| corrupt("short commit merge"))?;
                let len = u32::from_be_bytes(len) as usize;
                let merge = rest
                    .get(4..4 + len)
                    .ok_or_else(|| corrupt("short commit merge"))?;
                let merge = MergeState::decode(merge)?;
                let source = Region::decode(&rest[4 + len..])
                    .map_err(|e| corrupt(&format!("merge source: {e}")))?;
                Ok(RaftCommand::CommitMerge(CommitMergeRequest {
                    source,
                    merge,
                }))
            }
            other => Err(corrupt(&format!("unknown tag {other}"))),
        }
    }
}

/// A big-endian u64 off the front of `input`, and the rest.
pub(super) fn split_u64(input: &[u8]) -> Option<(u64, &[u8])> {
    let bytes: [u8; 8] = input.get(..8)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes), &input[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Cf;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let mut batch = WriteBatch::new();
        batch.put(Cf::Default, b"k".to_vec(), b"v".to_vec());
        let write = RaftCommand::Write(batch);
        assert_eq!(RaftCommand::decode(&write.encode()).unwrap(), write);
        let split = RaftCommand::Split(SplitRequest {
            split_key: b"t\x01m".to_vec(),
            new_region_id: 9,
            new_peer_ids: vec![10, 11, 12],
            version: 3,
        });
        assert_eq!(RaftCommand::decode(&split.encode()).unwrap(), split);
        assert!(RaftCommand::decode(&[]).is_err());
        assert!(RaftCommand::decode(b"X").is_err());
        assert!(RaftCommand::decode(&split.encode()[..10]).is_err());
        let mut huge = vec![TAG_SPLIT];
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(RaftCommand::decode(&huge).is_err());

        let target = crate::raftstore::region::whole_keyspace(4, [1, 2]);
        let prepare = RaftCommand::PrepareMerge(PrepareMergeRequest {
            target: target.clone(),
            source_epoch: RegionEpoch {
                conf_ver: 2,
                version: 7,
            },
        });
        assert_eq!(RaftCommand::decode(&prepare.encode()).unwrap(), prepare);
        let commit = RaftCommand::CommitMerge(CommitMergeRequest {
            source: crate::raftstore::region::whole_keyspace(3, [5]),
            merge: MergeState {
                target,
                prepare_index: 42,
                prepare_term: 6,
            },
        });
        let encoded = commit.encode();
        assert_eq!(RaftCommand::decode(&encoded).unwrap(), commit);
        for cut in [1, 3, 9, 20] {
            assert!(
                RaftCommand::decode(&encoded[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        assert!(RaftCommand::decode(&[TAG_PREPARE_MERGE, 0, 0]).is_err());
    }
}
