//! The raftstore: one Raft peer per region replica on this store (being built).
//!
//! Here so far:
//! - [`PeerStorage`]: the persistent state of one peer — its Raft log, hard state, membership
//!   and apply state in the store-local `raft` column family of the store's engine, written in
//!   the same batches as the data they describe; snapshot generation and application.
//! - [`Peer`]: a replica driven like a `RawNode`, whose log entries are write batches applied
//!   by every replica; proposals complete through callbacks after apply, with region errors.
//!
//! Not here yet (the replicated-regions issue): the store's driving loop and threading,
//! region epochs and the errors that need them, automatic raft log GC, the raft-message
//! transport and snapshot streaming over gRPC, peer creation/destruction on conf change, and
//! batching of many peers' Readies into one write.

pub mod driver;
mod keys;
mod peer;
mod peer_storage;
#[cfg(test)]
mod peer_tests;
mod record;
#[cfg(test)]
mod tests;

pub use peer::{Callback, Peer, ReadCallback};
pub use peer_storage::PeerStorage;
