//! A store served over gRPC on an ephemeral loopback port, for tests of the remote path.

#![allow(dead_code)]

use std::sync::Arc;

use kv::client::RemoteTxnCommands;
use kv::server::TxnService;
use kv::storage::MemoryEngine;
use kv::txn::{TxnCommands, TxnStore};
use tokio::runtime::Runtime;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

pub struct GrpcStore {
    /// The store behind the service, for direct inspection.
    pub store: Arc<TxnStore<MemoryEngine>>,
    /// The client side: the same commands over gRPC.
    pub remote: Arc<RemoteTxnCommands>,
    // Dropped last: stops the server.
    runtime: Runtime,
}

impl GrpcStore {
    pub fn start() -> GrpcStore {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store = Arc::new(TxnStore::new(Arc::new(MemoryEngine::new())));
        let commands: Arc<dyn TxnCommands> = store.clone();
        let incoming = runtime
            .block_on(async { TcpIncoming::bind("127.0.0.1:0".parse().unwrap()) })
            .expect("bind");
        let address = incoming.local_addr().expect("address");
        runtime.spawn(
            Server::builder()
                .add_service(TxnService::new(commands).into_server())
                .serve_with_incoming(incoming),
        );
        let remote =
            RemoteTxnCommands::connect_lazy(&format!("http://{address}"), runtime.handle().clone())
                .expect("client");
        GrpcStore {
            store,
            remote: Arc::new(remote),
            runtime,
        }
    }
}
