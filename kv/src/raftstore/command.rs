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
//!
//! Encoding: one tag byte, then the payload. Entries are written by this process and read back
//! from disk or from another store, so decoding refuses malformed input instead of panicking.

use crate::error::{KvError, KvResult};
use crate::storage::WriteBatch;

const TAG_WRITE: u8 = b'W';
const TAG_SPLIT: u8 = b'S';

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

#[derive(Clone, Debug, PartialEq)]
pub enum RaftCommand {
    Write(WriteBatch),
    Split(SplitRequest),
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
            other => Err(corrupt(&format!("unknown tag {other}"))),
        }
    }
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
    }
}
