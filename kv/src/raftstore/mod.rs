//! The raftstore: one Raft peer per region replica on this store.
//!
//! - [`PeerStorage`]: the persistent state of one peer — its Raft log, hard state, membership,
//!   apply state and region in the store-local `raft` column family of the store's engine,
//!   written in the same batches as the data they describe; snapshot generation and
//!   application (the region's data range, deletes included, plus its metadata).
//! - [`Peer`]: a replica driven like a `RawNode`, whose log entries are write batches applied
//!   by every replica; proposals complete through callbacks after apply, with region errors;
//!   membership changes update the region and its epoch.
//! - [`driver`]: a peer's input, its handle, what it tells its store; [`batch_system`]: the
//!   fixed pool of pollers (and the clock) that runs every peer of a store, persisting the
//!   Readies of many peers in one write; [`apply`]: the apply workers that write committed
//!   writes apart from the pollers; `peer_fsm`: a peer as the pool drives it, and
//!   hibernation of quiet regions.
//! - [`store::Store`]: a node's peers — message routing, creation on demand, bootstrap,
//!   destruction; `store_heartbeat`: heartbeats to the scheduler, its membership changes,
//!   and the check for replicas the scheduler no longer lists.
//! - [`store_commands`]: the transactional commands of a store, dispatched to the region
//!   named by the request after checking its epoch and keys.
//! - [`transport`], [`wire`], [`grpc_transport`]: raft messages between stores.
//! - [`region`]: region metadata and how membership changes and splits update it.
//! - [`command`]: what a log entry carries (a write batch, a split, the two halves of a
//!   merge).
//! - [`split_check`]: measuring a region and choosing its split key; `store_split`: the
//!   store's split thread, the peers a split creates, messages that arrive before them.
//! - [`write_batcher`]: group commit of all the store's peers' batches (one write, one fsync).
//!
//! # Persistence order and crash recovery
//!
//! A Ready is persisted (entries, hard state, snapshot with its data) in one atomic, synced
//! batch before its messages are sent; each committed entry is applied in one batch together
//! with the new applied index (and, for membership changes, the new membership and region),
//! written without waiting for the disk. After a crash the engine holds a prefix of all those
//! batches, each whole (RocksDB's write-ahead log keeps them in order, and every synced batch
//! makes the ones before it durable), so a restarted peer resumes from exactly what it
//! persisted: it never re-applies an entry whose effects are in the data, re-applies from the
//! synced log any applied batch the crash took, never forgets a vote or an acknowledged entry,
//! and never acknowledged a message it had not persisted. A destroyed replica's data, log and states go in one batch with its tombstone;
//! when it applies its own removal, that is the batch of the removal entry itself, so no crash
//! leaves a replica that is neither running nor destroyed (a region state that no longer
//! lists its store, from before this was so, is destroyed at startup).
//!
//! Raft log GC: once more than a count or a size of applied entries is kept, the log is
//! compacted to the applied index — the truncation point is persisted, and the compacted
//! entries are deleted in the background (leftovers of a crash when the peer opens again).
//!
//! # Splits
//!
//! A split is a log entry of the parent region: each replica applies it at the same point of
//! its log, shrinking its region to the left part and writing the new region's initial state
//! (region, apply state at a fixed initial index, hard state, membership) in the same batch as
//! the applied index; both halves bump their epoch version. The new region's data is already
//! in the engine (it was the parent's). A write entry whose keys are no longer in the region
//! when it applies (it was computed before the split) is skipped on every replica alike, and
//! its proposer learns EpochNotMatch, so no key is ever written through two regions.
//!
//! # Merges
//!
//! A small region (the source) hands its range to an adjacent one (the target) whose
//! replicas are on the same stores: a PrepareMerge in the source's log freezes it, a
//! CommitMerge in the target's log extends the target once the source's replica on each
//! store has ended (its data stays, now the target's). See `peer::merge`.

pub mod apply;
pub mod batch_system;
#[cfg(test)]
mod batch_system_tests;
pub mod command;
pub mod driver;
pub mod grpc_transport;
mod keys;
#[cfg(test)]
mod merge_tests;
mod peer;
mod peer_fsm;
mod peer_storage;
#[cfg(test)]
mod peer_tests;
mod record;
pub mod region;
pub mod split_check;
pub mod store;
pub mod store_commands;
mod store_heartbeat;
mod store_split;
#[cfg(test)]
mod tests;
pub mod transport;
pub mod wire;
pub mod write_batcher;

pub use peer::{Callback, Peer, ReadCallback, RegionSize};
pub use peer_storage::PeerStorage;
pub use store::{Store, StoreConfig};
pub use transport::{RaftEnvelope, RaftRouter, StoreResolver, Transport};
