//! The RegionDB scheduler: the cluster's single source of timestamps and IDs (and, with
//! replicated regions, of region metadata and balancing decisions).
//!
//! - [`tso`]: the timestamp oracle; [`id_alloc`]: unique IDs; both persist a high-water mark
//!   ([`high_water`]) so they never go backwards across a restart.
//! - [`service`]: both over gRPC (`regiondb.scheduler.Scheduler`).
//! - [`client`]: the client side, batching concurrent timestamp requests into one call.
//!
//! Not here yet (replicated regions): store and region heartbeats, region lookup by key, the
//! replica checker and balancing schedulers, and a replicated scheduler.

pub mod client;
pub mod high_water;
pub mod id_alloc;
pub mod service;
pub mod timestamp;
pub mod tso;

pub use client::SchedulerClient;
pub use id_alloc::{IdAllocator, IdError};
pub use timestamp::Timestamp;
pub use tso::{TimestampOracle, TimestampSource, TsoError};
