//! The scheduler as its users see it: the types and interfaces shared by the stores, the
//! transaction client and the scheduler server, without the server.
//!
//! - [`timestamp`]: [`Timestamp`], the hybrid timestamp (physical milliseconds and a logical
//!   counter in one `u64`);
//! - [`tso`]: [`TimestampSource`], where transactions get their timestamps, its error
//!   [`TsoError`], and [`MemoryTso`], a source in memory for a process with nothing to
//!   persist (tests of the layers above, throwaway stores);
//! - [`cluster_api`]: [`ClusterApi`], the synchronous interface to the cluster metadata (IDs,
//!   bootstrap, stores, regions and their heartbeats, splits, draining a store), and its
//!   error [`ClusterError`];
//! - [`client`]: [`SchedulerClient`], both interfaces over gRPC
//!   (`regiondb.scheduler.Scheduler`), batching concurrent timestamp requests into one call;
//! - [`testing`]: the checks every [`TimestampSource`]'s tests share.
//!
//! The `scheduler` crate implements the server side (the persisted oracle, ID allocation, the
//! cluster metadata, the schedulers, the gRPC service) and an in-process [`ClusterApi`] over
//! it; it re-exports everything here. Crates that only talk to a scheduler (the key-value
//! layer) depend on this crate alone, so they neither compile nor link the server.

pub mod client;
pub mod cluster_api;
pub mod testing;
pub mod timestamp;
pub mod tso;

pub use client::SchedulerClient;
pub use cluster_api::{ClusterApi, ClusterError};
pub use timestamp::Timestamp;
pub use tso::{MemoryTso, TimestampSource, TsoError};
