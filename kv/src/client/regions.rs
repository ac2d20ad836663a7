//! [`RegionAdmin`]: what the SQL layer may see and ask of the cluster's regions — the list of
//! regions over a key range (`SHOW REGIONS`), splits at given keys (a new table's first
//! key, `ALTER TABLE … SPLIT AT`) and forgetting them again (`… UNSPLIT`). [`SchedulerRegions`] implements it over the scheduler's
//! cluster metadata, which is where region leaders report.
//!
//! Keys here are the key-value layer's user keys (the SQL layer's encoded row keys).

use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler_api::ClusterApi;

use crate::error::{KvError, KvResult};

/// One region as the scheduler last heard of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionSummary {
    pub id: u64,
    pub start_key: Vec<u8>,
    /// Empty: unbounded (the last region).
    pub end_key: Vec<u8>,
    /// The store of the last reported leader, if any.
    pub leader_store: Option<u64>,
    /// The stores holding a replica, voters and learners, by store id.
    pub peer_stores: Vec<u64>,
    /// Bytes and user keys as last measured by the region's leader (0 before a measurement).
    pub approximate_size: u64,
    pub approximate_keys: u64,
}

pub trait RegionAdmin: Send + Sync {
    /// The regions overlapping `[start, end)` (an empty `end`: unbounded), in key order.
    fn regions(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<RegionSummary>>;
    /// Asks for splits at `keys`. With `wait`, returns once a region starts at every key
    /// (or fails with `Unavailable` when `wait` passes); without, returns at once (the
    /// splits happen with the regions' next heartbeats).
    fn split_at(&self, keys: Vec<Vec<u8>>, wait: Option<Duration>) -> KvResult<()>;
    /// Forgets the splits asked for at keys in `[start, end)` (an empty `end`: unbounded):
    /// those boundaries may merge away when their regions are small. Returns the keys.
    fn unsplit(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<Vec<u8>>>;
}

/// [`RegionAdmin`] over the scheduler.
pub struct SchedulerRegions {
    cluster: Arc<dyn ClusterApi>,
}

impl SchedulerRegions {
    pub fn new(cluster: Arc<dyn ClusterApi>) -> Self {
        SchedulerRegions { cluster }
    }
}

fn scheduler_error(e: scheduler_api::ClusterError) -> KvError {
    KvError::Unavailable(format!("scheduler: {e}"))
}

impl RegionAdmin for SchedulerRegions {
    fn unsplit(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<Vec<u8>>> {
        self.cluster
            .unsplit_regions(start, end)
            .map_err(scheduler_error)
    }

    fn regions(&self, start: &[u8], end: &[u8]) -> KvResult<Vec<RegionSummary>> {
        let infos = self
            .cluster
            .scan_regions(start, end, 0)
            .map_err(scheduler_error)?;
        Ok(infos
            .into_iter()
            .filter_map(|info| {
                let region = info.region?;
                Some(RegionSummary {
                    id: region.id,
                    leader_store: info.leader.map(|p| p.store_id),
                    peer_stores: {
                        let mut stores: Vec<u64> =
                            region.peers.iter().map(|p| p.store_id).collect();
                        stores.sort_unstable();
                        stores
                    },
                    start_key: region.start_key,
                    end_key: region.end_key,
                    approximate_size: info.approximate_size,
                    approximate_keys: info.approximate_keys,
                })
            })
            .collect())
    }

    fn split_at(&self, keys: Vec<Vec<u8>>, wait: Option<Duration>) -> KvResult<()> {
        let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| !k.is_empty()).collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.cluster
            .split_regions(keys.clone())
            .map_err(scheduler_error)?;
        let Some(wait) = wait else { return Ok(()) };
        let deadline = Instant::now() + wait;
        let mut pending = keys;
        loop {
            let mut still = Vec::new();
            for key in pending {
                let starts_here = self
                    .cluster
                    .get_region(&key)
                    .map_err(scheduler_error)?
                    .is_some_and(|(region, _)| region.start_key == key);
                if !starts_here {
                    still.push(key);
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(KvError::Unavailable(format!(
                    "{} of the requested splits did not happen within {wait:?}",
                    still.len()
                )));
            }
            // A split asked for is forgotten after a while; asking again is harmless.
            self.cluster
                .split_regions(still.clone())
                .map_err(scheduler_error)?;
            pending = still;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
