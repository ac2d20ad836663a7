//! RegionDB's Raft: the consensus algorithm as a deterministic state machine.
//!
//! Raft (Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm", and
//! Ongaro's thesis "Consensus: Bridging Theory and Practice") keeps a replicated log identical
//! on a group of nodes as long as a majority of them is up and can talk. Every region of
//! RegionDB is one Raft group.
//!
//! # Shape
//!
//! This crate does no I/O, starts no threads, reads no clock and draws no randomness except
//! from a seeded generator it owns. The application drives a [`RawNode`]: it calls
//! [`RawNode::tick`] on a timer, [`RawNode::step`] with messages from other nodes, and the
//! request methods (`propose`, `propose_conf_change`, `transfer_leader`, `read_index`); it then
//! takes a [`Ready`] — entries and hard state to persist, messages to send, a snapshot and
//! committed entries to apply, read states to serve — does that work in that order, and calls
//! [`RawNode::advance`]. The state persists through the application's [`Storage`]. Because
//! every input is explicit, a cluster can be simulated with a seeded network, and a given seed
//! replays exactly.
//!
//! # Protocol and invariants (paper §5, thesis chapters 3–6)
//!
//! - **Election Safety**: at most one leader per term. A node votes once per term, first come
//!   first served, and only for a candidate whose log is at least as up to date as its own
//!   (last term, then last index; §5.4.1). Election timeouts are redrawn from
//!   `[election_tick, 2 × election_tick)` on every reset so split votes resolve.
//! - **Log Matching**: appends carry the index and term of the preceding entry; a follower
//!   accepts only if it has that entry, replaces a conflicting suffix, and never re-appends
//!   entries it has. Rejections carry a hint (the last index whose term could match) so the
//!   leader skips back a term at a time.
//! - **Leader Completeness**: an entry commits when a majority of voters has it and it is
//!   from the leader's current term (earlier entries commit with it, Figure 8). A new leader
//!   appends an empty entry to commit its term. Heartbeats carry a commit index capped by what
//!   the follower is known to have, so no node commits an entry it has not verified.
//! - **Persistence before messages**: term, vote and entries are persisted before any message
//!   that depends on them is sent (the `Ready` contract).
//!
//! # Beyond the basic protocol
//!
//! - **Pre-vote** (thesis §9.6) and **check-quorum** (§6.2): a node returning from a partition
//!   first asks whether it could win, so it does not bump the cluster's term; a leader that has
//!   not heard from a majority for an election timeout steps down; followers with a live
//!   leader ignore vote requests. Both on by default, both switchable in [`Config`].
//! - **Flow control**: per-follower progress in probe, replicate (pipelined, bounded in-flight
//!   messages) or snapshot state ([`progress`]).
//! - **Snapshots and compaction** (§7): a follower that needs compacted entries gets the
//!   storage's snapshot; a snapshot older than the follower's commit index is ignored.
//! - **Membership** (thesis §4.1): single-server changes, one pending at a time, applied when
//!   the application applies the entry; learners receive the log without voting and can be
//!   promoted. A removed leader keeps leading the new configuration (not counting itself)
//!   until the most up-to-date remaining voter has its whole log, hands off with `TimeoutNow`
//!   and steps down (thesis §4.2.2), so remaining voters that have not yet learned of the
//!   removal can still win. A node does not campaign while a committed membership change is
//!   unapplied, a non-voter never campaigns or wins, and removing the last voter is refused.
//! - **Leadership transfer** (thesis §3.10): the leader catches the target up, then sends it
//!   `TimeoutNow`; proposals are refused meanwhile; the transfer is abandoned after an election
//!   timeout (counted separately from the check-quorum window, which it must not stretch).
//! - **ReadIndex** (thesis §6.4) for linearizable reads without log writes, and an optional
//!   lease-based variant ([`read_only`]) that holds only within a check-quorum window in which
//!   a majority answered, and never after this leader sent `TimeoutNow` in its term.
//!
//! # Deliberately not here
//!
//! Joint consensus (multi-server membership changes), asynchronous storage writes, batching of
//! messages across groups, and snapshot streaming: those belong to the application (the
//! raftstore) or are not needed with single-server changes.

pub mod config;
pub mod log;
pub mod message;
pub mod progress;
pub mod raft;
pub mod raw_node;
pub mod read_only;
pub mod rng;
pub mod storage;
pub mod types;

pub use config::Config;
pub use message::{Message, MessageBody};
pub use raft::{Raft, RaftError, Role};
pub use raw_node::{RawNode, Ready, SoftState, Status};
pub use read_only::ReadState;
pub use storage::{MemStorage, Storage, StorageError};
pub use types::{
    ConfChange, ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, SnapshotMeta, Term,
};
