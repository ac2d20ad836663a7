//! Split checks: measuring a region and choosing where to split it.
//!
//! A region leader asks for a check when enough data was applied since the last one (or every
//! so many ticks, to keep its reported size fresh); the store's split-check thread scans the
//! region's data in an engine snapshot, off the Raft loop, and answers the peer with the
//! region's size and key count. If the region is over `max_size` (or `max_keys`), it also picks
//! a split key, asks the scheduler for the new region's and peers' ids, and hands the peer a
//! split proposal. Splits the scheduler asks for (a new table, `ALTER TABLE … SPLIT AT`) take
//! the same path with a given key.
//!
//! # Where to split
//!
//! At a *user-key* boundary, never between the versions or the lock of one key: the three data
//! column families are merged by user key, and the split key is the first user key at which
//! the bytes (or keys) before it reach `split_size` (or `split_keys`). So a region that grows
//! past `max_size` is cut into a left part of about `split_size` and the rest, as TiKV does.
//! The key is always strictly after the region's start. Since every SQL row is one user key
//! (`t{table}_r{pk}`), a split never cuts a row.
//!
//! Sizes are measured by a full scan of the region, which is exact but costs a read of the
//! region; RocksDB's table properties (TiKV's approximate sizes) are the way to avoid it and
//! are not used yet. A scan happens at most once per `split_check_diff` bytes written.

use proto::metapb::Region;

use super::command::SplitRequest;
use super::peer::RegionSize;
use crate::error::KvResult;
use crate::mvcc::key::{decode_user_key, encode_user_key, split_versioned};
use crate::storage::{Cf, Snapshot};

/// When regions split (see the module docs). Sizes are bytes of keys and values over the data
/// column families.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitConfig {
    /// The size of the left part cut off a region that is too big.
    pub split_size: u64,
    /// A region larger than this is split.
    pub max_size: u64,
    /// The key count of the left part cut off a region with too many keys.
    pub split_keys: u64,
    /// A region with more user keys than this is split.
    pub max_keys: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            split_size: 96 << 20,
            max_size: 144 << 20,
            split_keys: 960_000,
            max_keys: 1_440_000,
        }
    }
}

impl SplitConfig {
    /// A config splitting at `split_size` and `max_size`, with key limits scaled alike
    /// (TiKV's ratio: one key per 100 bytes).
    pub fn by_size(split_size: u64, max_size: u64) -> SplitConfig {
        SplitConfig {
            split_size,
            max_size,
            split_keys: (split_size / 100).max(1) * 1000,
            max_keys: (max_size / 100).max(1) * 1000,
        }
    }

    /// Bytes applied to a region after which its leader asks for a check.
    pub fn check_diff(&self) -> u64 {
        (self.split_size / 16).max(1)
    }
}

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SplitCheck {
    pub size: RegionSize,
    /// Where to split, if the region is too big.
    pub split_key: Option<Vec<u8>>,
}

/// One user key's entries in one column family, in the family's key order.
fn user_keys<'a, S: Snapshot>(
    snapshot: &'a S,
    cf: Cf,
    start: &[u8],
    end: Option<&[u8]>,
) -> impl Iterator<Item = KvResult<(Vec<u8>, u64)>> + 'a {
    snapshot.scan(cf, start, end).map(move |item| {
        let (key, value) = item?;
        let size = (key.len() + value.len()) as u64;
        let user = match cf {
            Cf::Lock => key,
            _ => split_versioned(&key)?.0.to_vec(),
        };
        Ok((user, size))
    })
}

/// Measures `region` in `snapshot` and picks a split key if it is too big.
pub fn check_region<S: Snapshot>(
    snapshot: &S,
    region: &Region,
    config: &SplitConfig,
) -> KvResult<SplitCheck> {
    let start = encode_user_key(&region.start_key);
    let end = (!region.end_key.is_empty()).then(|| encode_user_key(&region.end_key));
    let mut families: Vec<_> = [Cf::Default, Cf::Lock, Cf::Write]
        .into_iter()
        .map(|cf| user_keys(snapshot, cf, &start, end.as_deref()).peekable())
        .collect();
    let mut result = SplitCheck::default();
    let mut candidate: Option<Vec<u8>> = None;
    loop {
        // The smallest user key at the head of any family: one user key, all its entries.
        let mut smallest: Option<Vec<u8>> = None;
        for family in families.iter_mut() {
            match family.peek() {
                Some(Ok((user, _))) if smallest.as_ref().is_none_or(|s| user < s) => {
                    smallest = Some(user.clone());
                }
                Some(Ok(_)) => {}
                Some(Err(_)) => {
                    // Surface the error.
                    if let Some(Err(e)) = family.next() {
                        return Err(e);
                    }
                }
                None => {}
            }
        }
        let Some(user) = smallest else { break };
        let mut size = 0;
        for family in families.iter_mut() {
            while let Some(Ok((next, bytes))) = family.peek() {
                if *next != user {
                    break;
                }
                size += *bytes;
                family.next();
            }
        }
        if candidate.is_none()
            && user > start
            && (result.size.bytes >= config.split_size || result.size.keys >= config.split_keys)
        {
            candidate = Some(user);
        }
        result.size.bytes += size;
        result.size.keys += 1;
    }
    if result.size.bytes > config.max_size || result.size.keys > config.max_keys {
        result.split_key = candidate
            .map(|encoded| decode_user_key(&encoded))
            .transpose()?;
    }
    Ok(result)
}

/// A split of `region` at `split_key` with fresh ids from `alloc_id` (one for the new region,
/// one per peer).
pub fn plan_split(
    region: &Region,
    split_key: Vec<u8>,
    mut alloc_id: impl FnMut() -> KvResult<u64>,
) -> KvResult<SplitRequest> {
    let new_region_id = alloc_id()?;
    let new_peer_ids = region
        .peers
        .iter()
        .map(|_| alloc_id())
        .collect::<KvResult<Vec<u64>>>()?;
    Ok(SplitRequest {
        split_key,
        new_region_id,
        new_peer_ids,
        version: super::region::epoch(region).version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::key::encode_versioned;
    use crate::storage::{Engine, MemoryEngine, WriteBatch};
    use scheduler_api::Timestamp;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Some(super::super::region::initial_epoch()),
            peers: Vec::new(),
        }
    }

    /// Keys k00..k{n}, each with `versions` committed versions of a 100-byte value.
    fn engine(n: usize, versions: u64) -> MemoryEngine {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for i in 0..n {
            let key = format!("k{i:03}").into_bytes();
            for v in 1..=versions {
                batch.put(
                    Cf::Default,
                    encode_versioned(&key, Timestamp(v)),
                    vec![7; 100],
                );
                batch.put(
                    Cf::Write,
                    encode_versioned(&key, Timestamp(v + 1)),
                    vec![1; 9],
                );
            }
        }
        // A lock on a key with versions: counted with that key.
        batch.put(Cf::Lock, encode_user_key(b"k005"), vec![2; 20]);
        engine.write(batch).unwrap();
        engine
    }

    #[test]
    fn small_regions_are_measured_and_not_split() {
        let engine = engine(10, 2);
        let config = SplitConfig::by_size(1 << 20, 2 << 20);
        let check = check_region(&engine.snapshot(), &region(b"", b""), &config).unwrap();
        assert_eq!(check.size.keys, 10);
        assert!(check.size.bytes > 10 * 2 * 100);
        assert_eq!(check.split_key, None);
        // Only the region's range counts.
        let part = check_region(&engine.snapshot(), &region(b"k002", b"k004"), &config).unwrap();
        assert_eq!(part.size.keys, 2);
    }

    #[test]
    fn big_regions_split_at_a_user_key_after_split_size() {
        let engine = engine(100, 3);
        let per_key = check_region(
            &engine.snapshot(),
            &region(b"k050", b"k051"),
            &SplitConfig::default(),
        )
        .unwrap()
        .size
        .bytes;
        let config = SplitConfig {
            split_size: 10 * per_key,
            max_size: 50 * per_key,
            ..SplitConfig::default()
        };
        let check = check_region(&engine.snapshot(), &region(b"", b""), &config).unwrap();
        // The first ten keys (a lock adds to k005) make split_size: the split is at k010 or
        // k011, never inside a key's versions.
        let key = check.split_key.unwrap();
        assert!(key == b"k010" || key == b"k011", "{key:?}");
        // Not over max_size: measured, no split.
        let within = check_region(&engine.snapshot(), &region(b"k000", b"k040"), &config).unwrap();
        assert_eq!(within.split_key, None);
        // By key count.
        let by_keys = SplitConfig {
            split_keys: 30,
            max_keys: 40,
            ..SplitConfig::default()
        };
        let check = check_region(&engine.snapshot(), &region(b"k020", b""), &by_keys).unwrap();
        assert_eq!(check.split_key.as_deref(), Some(&b"k050"[..]));
    }

    #[test]
    fn a_region_of_one_huge_key_is_not_split() {
        let engine = MemoryEngine::new();
        let mut batch = WriteBatch::new();
        for v in 1..50 {
            batch.put(
                Cf::Default,
                encode_versioned(b"only", Timestamp(v)),
                vec![0; 1000],
            );
        }
        engine.write(batch).unwrap();
        let config = SplitConfig::by_size(1000, 2000);
        let check = check_region(&engine.snapshot(), &region(b"", b""), &config).unwrap();
        assert_eq!(check.split_key, None);
        assert_eq!(check.size.keys, 1);
    }

    #[test]
    fn plans_take_one_id_per_peer() {
        let mut r = region(b"a", b"z");
        r.peers = vec![Default::default(); 3];
        let mut next = 100;
        let plan = plan_split(&r, b"m".to_vec(), || {
            next += 1;
            Ok(next)
        })
        .unwrap();
        assert_eq!(plan.new_region_id, 101);
        assert_eq!(plan.new_peer_ids, vec![102, 103, 104]);
        assert_eq!(plan.version, 1);
    }
}
