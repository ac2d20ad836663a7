//! How raft messages travel between the stores of a cluster: the [`RaftEnvelope`] (a raft
//! message addressed peer to peer, with the sender's view of the region), the [`Transport`]
//! that sends envelopes, the [`RaftRouter`] that takes delivered envelopes (and transport
//! failures) to the right peer on the receiving store, and the [`StoreResolver`] that maps a
//! store id to its address.
//!
//! Delivery is best effort: Raft tolerates lost, duplicated and reordered messages, so a
//! transport drops what it cannot send and tells the router (`report_unreachable`,
//! `report_snapshot`), which lets the sending peer probe again instead of waiting.

use proto::metapb::{Peer as PeerMeta, RegionEpoch};
use raft::Message;

/// A raft message of one region, addressed from one peer to another.
#[derive(Clone, Debug, PartialEq)]
pub struct RaftEnvelope {
    pub region_id: u64,
    pub from_peer: PeerMeta,
    pub to_peer: PeerMeta,
    /// The sender's region epoch and key range: a store that has no peer for the region yet
    /// creates one from them on the leader's first message (it then catches up by snapshot).
    pub epoch: RegionEpoch,
    pub start_key: Vec<u8>,
    pub end_key: Vec<u8>,
    pub message: Message,
    /// Not a raft message but a notice to `to_peer` that it was removed from the region (the
    /// sender's epoch is newer and does not list it): it should destroy itself. `message` is
    /// a placeholder then.
    pub is_tombstone: bool,
    /// Not a raft message but the leader's notice that it hibernates (stops ticking) with
    /// `message` a placeholder heartbeat whose `commit` is the leader's last log index; a
    /// follower holding that whole log may hibernate too. Repeated by a hibernating leader
    /// now and then, so its followers know it is alive.
    pub hibernate: bool,
}

/// Sends envelopes to other stores.
pub trait Transport: Send + Sync + 'static {
    /// Best effort and non-blocking: an envelope that cannot be sent is dropped, and the
    /// failure reported to the local router.
    fn send(&self, envelope: RaftEnvelope);
}

/// Takes envelopes to the peers of this store.
pub trait RaftRouter: Send + Sync + 'static {
    /// An envelope arrived for a peer of this store.
    fn deliver(&self, envelope: RaftEnvelope);
    /// A message from `region_id`'s local peer to peer `to_peer_id` could not be sent.
    fn report_unreachable(&self, region_id: u64, to_peer_id: u64);
    /// Sending a snapshot from `region_id`'s local peer to `to_peer_id` finished (or failed).
    fn report_snapshot(&self, region_id: u64, to_peer_id: u64, success: bool);
}

/// Finds a store's gRPC address (from the scheduler, usually through a cache).
pub trait StoreResolver: Send + Sync + 'static {
    fn address(&self, store_id: u64) -> Option<String>;
}
