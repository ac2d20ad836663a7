//! The raftstore: one Raft peer per region replica on this store (being built).
//!
//! Here so far: [`PeerStorage`], the persistent state of one peer — its Raft log, hard state,
//! membership and apply state in the store-local `raft` column family of the store's engine,
//! written in the same batches as the data they describe, plus snapshot generation from the
//! engine and snapshot application.
//!
//! Not here yet (the replicated-regions issue): the peer driving loop and its threading,
//! proposals with callbacks, apply with region epochs and region errors, raft log GC, the
//! raft-message transport and snapshot streaming over gRPC, conf change handling and peer
//! creation/destruction, and batching of many peers' Readies into one write.

mod keys;
mod peer_storage;
mod record;
#[cfg(test)]
mod tests;

pub use peer_storage::PeerStorage;
