//! [`ClusterApi`]: the scheduler's cluster metadata as the stores and clients see it, as a
//! synchronous trait. Implemented in-process by the scheduler crate (`LocalCluster`, over its
//! cluster metadata) and remotely by [`crate::SchedulerClient`] (over gRPC, see
//! [`crate::client`]).
//!
//! Errors are grouped by what the caller does about them: [`ClusterError::Unavailable`] — retry
//! later (network, timeout); [`ClusterError::Invalid`] — a bug in the caller, do not retry;
//! [`ClusterError::Storage`] — the scheduler could not persist, retry later or alert.

use proto::metapb::{Peer, Region, Store};
use proto::scheduler::{
    RegionHeartbeatRequest, RegionHeartbeatResponse, RegionInfo, StoreHeartbeatRequest,
};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The scheduler could not be reached or did not answer in time: retry.
    #[error("scheduler unavailable: {0}")]
    Unavailable(String),
    /// The request is malformed or does not fit the cluster's state.
    #[error("invalid cluster request: {0}")]
    Invalid(String),
    /// The scheduler could not persist its state.
    #[error("scheduler storage error: {0}")]
    Storage(String),
}

/// The cluster metadata operations of the scheduler. Synchronous: remote implementations block,
/// so call them from plain threads (or `spawn_blocking`), not from inside an async runtime.
pub trait ClusterApi: Send + Sync + 'static {
    fn alloc_id(&self) -> Result<u64, ClusterError>;
    fn is_bootstrapped(&self) -> Result<bool, ClusterError>;
    /// Ok(true) if this call bootstrapped the cluster, Ok(false) if it already was.
    fn bootstrap(&self, store: Store, region: Region) -> Result<bool, ClusterError>;
    fn put_store(&self, store: Store) -> Result<(), ClusterError>;
    fn get_store(&self, store_id: u64) -> Result<Option<Store>, ClusterError>;
    fn store_heartbeat(&self, request: StoreHeartbeatRequest) -> Result<(), ClusterError>;
    fn region_heartbeat(
        &self,
        request: RegionHeartbeatRequest,
    ) -> Result<RegionHeartbeatResponse, ClusterError>;
    /// The region containing `key`, with its last reported leader.
    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError>;
    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> Result<Option<(Region, Option<Peer>)>, ClusterError>;
    /// The regions overlapping `[start, end)` (empty `end`: unbounded) in key order, at most
    /// `limit` (0: all), with leaders and sizes.
    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<RegionInfo>, ClusterError>;
    /// Asks for the regions to be split at `keys` (carried out by their leaders, later).
    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError>;
    /// Forgets the split keys asked for in `[start, end)` (empty `end`: unbounded), so their
    /// boundaries may merge away; returns them.
    fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError>;
    /// Drains a store (see `RemoveStore` in scheduler.proto); returns the regions left on it.
    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError>;
}
