//! Protocol buffer messages and gRPC services shared by RegionDB's processes.
//!
//! The `.proto` files under `proto/proto/` are the source of truth; `build.rs` compiles them
//! with protox (no `protoc` binary needed) into prost messages and tonic clients/servers.
//! Defined so far: the scheduler (timestamps, IDs) and the transactional KV service; raft
//! messages, heartbeats and region lookup join them with replicated regions.

/// Cluster metadata (`regiondb.metapb`): stores, peers, regions and their epochs.
pub mod metapb {
    tonic::include_proto!("regiondb.metapb");
}

/// Raft messages between stores (`regiondb.raftpb`).
pub mod raftpb {
    tonic::include_proto!("regiondb.raftpb");
}

/// Scheduler service (`regiondb.scheduler`): timestamp oracle and ID allocation.
pub mod scheduler {
    tonic::include_proto!("regiondb.scheduler");
}

/// Transactional KV service (`regiondb.kvrpc`): the Percolator commands.
pub mod kvrpc {
    tonic::include_proto!("regiondb.kvrpc");
}
