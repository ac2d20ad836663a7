//! RegionDB's Raft consensus library.
//!
//! This crate will hold the consensus algorithm as a pure, deterministic state machine: no
//! I/O, no threads, no clock, randomness only from a seeded source it is given. The
//! application feeds it ticks, messages and proposals and takes back the work to do (entries
//! and hard state to persist, messages to send, committed entries to apply). It depends on no
//! other crate of the workspace.
//!
//! Nothing is implemented yet: the single-node cluster needs no replication. The Raft issue
//! builds the library here; the replicated-regions issue puts it under every region.
