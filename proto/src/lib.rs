//! Protocol buffer messages and gRPC services shared by RegionDB's processes.
//!
//! The `.proto` files under `proto/proto/` are the source of truth; `build.rs` compiles them
//! with protox (no `protoc` binary needed) into prost messages and tonic clients/servers.
//! Today only the timestamp oracle is defined; the transactional KV, raft-message and
//! scheduler services join it as the cluster is built (issues 3 and 5).

/// Timestamp oracle service (`regiondb.tso`).
pub mod tso {
    tonic::include_proto!("regiondb.tso");
}
