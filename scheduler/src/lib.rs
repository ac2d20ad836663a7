//! The RegionDB scheduler: the cluster's single source of timestamps, IDs and region
//! metadata, and the replica checker that keeps every region at its wanted replica count.
//!
//! - [`tso`]: the timestamp oracle; [`id_alloc`]: unique IDs; both persist a high-water mark
//!   ([`high_water`], written with [`atomic_file`]) so they never go backwards across a restart.
//! - [`cluster`]: the cluster metadata — bootstrap, stores and their liveness, regions with an
//!   index by start key for lookup, region heartbeats with the epoch staleness rule, the
//!   per-region operators — persisted in one file in the data directory.
//! - [`replica_checker`]: the pure decision of one membership change for a region (promote a
//!   caught-up learner, add a learner on the least loaded up store, remove an extra replica).
//! - [`balance_region`] (by region size) and [`balance_leader`] (by leader count): pure
//!   balancing decisions; [`balance`] feeds them the cluster state.
//! - [`merge_checker`]: the pure decision to merge a small region into a neighbour.
//! - [`operator`]: what the scheduler decided for a region (a membership change, a replica
//!   move, a leader transfer, a merge), handed to its leader one step per heartbeat.
//! - [`local_cluster`]: [`LocalCluster`], the [`ClusterApi`] in-process (the single-node
//!   cluster, in-process cluster tests).
//! - [`service`]: all of it over gRPC (`regiondb.scheduler.Scheduler`), including draining a
//!   store for removal (`RemoveStore`: its replicas are placed elsewhere, its leaders moved
//!   away).
//!
//! What the scheduler's users need and nothing of the server — [`Timestamp`], the
//! [`TimestampSource`] and [`ClusterApi`] interfaces with their errors, and the gRPC client
//! [`SchedulerClient`] (batching concurrent timestamp requests into one call) — lives in the
//! `scheduler-api` crate (`scheduler/api/`), re-exported here, so that the key-value layer
//! depends on that crate alone.
//!
//! Deliberately not here (yet): a replicated scheduler (this one process is the authority).

pub mod atomic_file;
pub mod balance;
pub mod balance_leader;
pub mod balance_region;
pub mod cluster;
pub mod high_water;
pub mod id_alloc;
pub mod local_cluster;
pub mod merge_checker;
pub mod operator;
pub mod replica_checker;
pub mod service;
pub mod tso;

pub use cluster::{Cluster, ClusterConfig, StoreStats};
pub use id_alloc::{IdAllocator, IdError};
pub use local_cluster::LocalCluster;
pub use merge_checker::MergeConfig;
pub use proto::metapb::{Peer, Region, RegionEpoch, Store};
pub use replica_checker::ReplicaChange;
pub use scheduler_api::{
    ClusterApi, ClusterError, SchedulerClient, Timestamp, TimestampSource, TsoError,
};
pub use tso::TimestampOracle;
