//! [`RemoteTxnCommands`]: the Percolator commands of a store reached over gRPC.
//!
//! The transaction client is synchronous (the SQL layer runs on blocking threads), so each
//! call blocks on the async gRPC request through a runtime handle. It must therefore be called
//! from a thread that is not driving that runtime (a `spawn_blocking` task or a plain thread).
//! A transport failure is reported as [`KvError::Unavailable`]; the transaction client decides
//! what it means for the transaction. What goes over the wire, both ways, is `crate::rpc`'s.

use proto::kvrpc as pb;
use proto::kvrpc::txn_kv_client::TxnKvClient;
use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::error::{KvError, KvResult};
use crate::rpc;
use crate::txn::{RegionContext, TxnCommands, TxnRequest, TxnResponse};

/// Largest gRPC message either side accepts. Scans and prewrites are not paged yet, so this
/// bounds the size of one read or one transaction's writes over the network.
pub const MAX_MESSAGE_SIZE: usize = 256 << 20;

/// How long connecting to a store may take, and how long one request may wait for its answer
/// (longer than a store's own wait for a write to apply, so that its answer gets through).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

#[derive(Clone)]
pub struct RemoteTxnCommands {
    client: TxnKvClient<Channel>,
    runtime: Handle,
    /// The region every request names (none for a store without regions).
    context: Option<pb::Context>,
}

fn unavailable(status: tonic::Status) -> KvError {
    KvError::Unavailable(format!("{}: {}", status.code(), status.message()))
}

impl RemoteTxnCommands {
    /// Connects lazily to the store at `endpoint` (e.g. `http://127.0.0.1:20160`); requests
    /// run on `runtime`.
    pub fn connect_lazy(endpoint: &str, runtime: Handle) -> KvResult<Self> {
        // The channel spawns its connection task on the runtime.
        let _context = runtime.enter();
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| KvError::Unavailable(format!("bad endpoint {endpoint}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            client: TxnKvClient::new(channel),
            runtime,
            context: None,
        })
    }

    /// The same store's commands, for the region `context` names (shares the connection).
    pub fn for_region(&self, context: RegionContext) -> RemoteTxnCommands {
        RemoteTxnCommands {
            context: Some(pb::Context {
                region_id: context.region_id,
                region_epoch: Some(proto::metapb::RegionEpoch {
                    conf_ver: context.conf_ver,
                    version: context.version,
                }),
            }),
            ..self.clone()
        }
    }
}

/// Each request is one call of its message ([`rpc::Call`]), within [`REQUEST_TIMEOUT`].
impl TxnCommands for RemoteTxnCommands {
    fn execute(&self, request: &TxnRequest) -> KvResult<TxnResponse> {
        let call = rpc::Call::new(request, self.context);
        let client = self.client.clone();
        match self.runtime.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, call.send(client, request)).await
        }) {
            Ok(Ok(answer)) => answer,
            Ok(Err(status)) => Err(unavailable(status)),
            Err(_) => Err(KvError::Unavailable(format!(
                "no answer within {REQUEST_TIMEOUT:?}"
            ))),
        }
    }
}
