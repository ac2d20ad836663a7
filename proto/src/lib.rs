//! Protocol buffer messages and gRPC services shared by RegionDB's processes.
//!
//! The `.proto` files under `proto/proto/` are the source of truth; `build.rs` compiles them
//! with protox (no `protoc` binary needed) into prost messages and tonic clients/servers.
//! Defined so far: the timestamp oracle and the transactional KV service; the raft-message
//! and scheduler services join them with replicated regions.

/// Timestamp oracle service (`regiondb.tso`).
pub mod tso {
    tonic::include_proto!("regiondb.tso");
}

/// Transactional KV service (`regiondb.kvrpc`): the Percolator commands.
pub mod kvrpc {
    tonic::include_proto!("regiondb.kvrpc");
}
