//! The RegionDB scheduler: the cluster's single source of timestamps and (later) IDs, region
//! metadata and balancing decisions.
//!
//! Today it holds the timestamp oracle ([`tso`]), used in-process by the single-node cluster.
//! The gRPC service, ID allocation, store/region heartbeats and the replica checker arrive with
//! the replicated-regions issue; they will sit beside the oracle in files of their own.

pub mod timestamp;
pub mod tso;

pub use timestamp::Timestamp;
pub use tso::{TimestampOracle, TsoError};
