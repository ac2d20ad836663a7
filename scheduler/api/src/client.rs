//! [`SchedulerClient`]: timestamps and IDs from a scheduler over gRPC.
//!
//! Timestamp requests are batched: callers queue a request, and one background task takes
//! every request waiting at that moment and asks the scheduler for that many timestamps in
//! one call, then hands each caller one timestamp of the contiguous block. Under load this
//! turns N concurrent transactions' requests into one round trip; alone, a request costs one.
//!
//! The synchronous [`TimestampSource`] and [`ClusterApi`] impls block on the runtime, so they
//! must be called from a thread that is not driving that runtime (a `spawn_blocking` task or a
//! plain thread). Every [`ClusterApi`] call has a deadline of [`CALL_TIMEOUT`]: a dead or
//! unreachable scheduler is [`ClusterError::Unavailable`], not a hang.

use std::future::Future;
use std::time::Duration;

use proto::metapb::{Peer, Region, Store};
use proto::scheduler as pb;
use proto::scheduler::scheduler_client::SchedulerClient as GrpcClient;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::cluster_api::{ClusterApi, ClusterError};
use crate::timestamp::Timestamp;
use crate::tso::{TimestampSource, TsoError};

/// The deadline of one [`ClusterApi`] call, connecting included.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Requests answered by one call at most (the oracle's logical counter bounds a batch).
const MAX_BATCH: usize = 10_000;

type Waiter = oneshot::Sender<Result<Timestamp, TsoError>>;

pub struct SchedulerClient {
    rpc: GrpcClient<Channel>,
    requests: mpsc::UnboundedSender<Waiter>,
    runtime: Handle,
}

impl SchedulerClient {
    /// Connects lazily to the scheduler at `endpoint` (e.g. `http://127.0.0.1:2379`); the
    /// batching task runs on `runtime`.
    pub fn connect_lazy(endpoint: &str, runtime: Handle) -> Result<SchedulerClient, TsoError> {
        let _context = runtime.enter();
        let channel = Channel::from_shared(endpoint.to_string())
            .map_err(|e| TsoError::Unavailable(format!("bad endpoint {endpoint}: {e}")))?
            .connect_lazy();
        let rpc = GrpcClient::new(channel);
        let (requests, queue) = mpsc::unbounded_channel();
        runtime.spawn(batch_timestamps(queue, rpc.clone()));
        Ok(SchedulerClient {
            rpc,
            requests,
            runtime,
        })
    }

    pub async fn get_timestamp_async(&self) -> Result<Timestamp, TsoError> {
        let (waiter, answer) = oneshot::channel();
        self.requests
            .send(waiter)
            .map_err(|_| TsoError::Unavailable("the timestamp batcher stopped".into()))?;
        answer
            .await
            .map_err(|_| TsoError::Unavailable("the timestamp batcher stopped".into()))?
    }

    /// `count` new unique IDs: `[first, first + count)`; returns `first`.
    pub async fn alloc_ids(&self, count: u32) -> Result<u64, TsoError> {
        let mut rpc = self.rpc.clone();
        let response = rpc
            .alloc_ids(pb::AllocIdsRequest { count })
            .await
            .map_err(|s| TsoError::Unavailable(s.to_string()))?;
        Ok(response.into_inner().first)
    }
}

impl TimestampSource for SchedulerClient {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.runtime.block_on(self.get_timestamp_async())
    }
}

/// The cluster error for a gRPC status (the inverse of the service's mapping).
fn cluster_error(status: Status) -> ClusterError {
    match status.code() {
        Code::InvalidArgument => ClusterError::Invalid(status.message().to_string()),
        Code::Internal => ClusterError::Storage(status.message().to_string()),
        _ => ClusterError::Unavailable(status.to_string()),
    }
}

impl SchedulerClient {
    /// Runs one cluster call to completion, within [`CALL_TIMEOUT`].
    fn call<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ClusterError>
    where
        F: FnOnce(GrpcClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let rpc = self.rpc.clone();
        self.runtime.block_on(async move {
            match tokio::time::timeout(CALL_TIMEOUT, f(rpc)).await {
                Ok(Ok(response)) => Ok(response.into_inner()),
                Ok(Err(status)) => Err(cluster_error(status)),
                Err(_) => Err(ClusterError::Unavailable(format!(
                    "{what}: no answer from the scheduler within {CALL_TIMEOUT:?}"
                ))),
            }
        })
    }
}

impl ClusterApi for SchedulerClient {
    fn alloc_id(&self) -> Result<u64, ClusterError> {
        let response = self.call("alloc_ids", |mut rpc| async move {
            rpc.alloc_ids(pb::AllocIdsRequest { count: 1 }).await
        })?;
        Ok(response.first)
    }

    fn is_bootstrapped(&self) -> Result<bool, ClusterError> {
        let response = self.call("is_bootstrapped", |mut rpc| async move {
            rpc.is_bootstrapped(pb::IsBootstrappedRequest {}).await
        })?;
        Ok(response.bootstrapped)
    }

    fn bootstrap(&self, store: Store, region: Region) -> Result<bool, ClusterError> {
        let request = pb::BootstrapRequest {
            store: Some(store),
            region: Some(region),
        };
        let response = self.call("bootstrap", |mut rpc| async move {
            rpc.bootstrap(request).await
        })?;
        Ok(!response.already_bootstrapped)
    }

    fn put_store(&self, store: Store) -> Result<(), ClusterError> {
        let request = pb::PutStoreRequest { store: Some(store) };
        self.call("put_store", |mut rpc| async move {
            rpc.put_store(request).await
        })?;
        Ok(())
    }

    fn get_store(&self, store_id: u64) -> Result<Option<Store>, ClusterError> {
        let response = self.call("get_store", |mut rpc| async move {
            rpc.get_store(pb::GetStoreRequest { store_id }).await
        })?;
        Ok(response.store)
    }

    fn store_heartbeat(&self, request: pb::StoreHeartbeatRequest) -> Result<(), ClusterError> {
        self.call("store_heartbeat", |mut rpc| async move {
            rpc.store_heartbeat(request).await
        })?;
        Ok(())
    }

    fn region_heartbeat(
        &self,
        request: pb::RegionHeartbeatRequest,
    ) -> Result<pb::RegionHeartbeatResponse, ClusterError> {
        self.call("region_heartbeat", |mut rpc| async move {
            rpc.region_heartbeat(request).await
        })
    }

    fn get_region(&self, key: &[u8]) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        let request = pb::GetRegionRequest { key: key.to_vec() };
        let response = self.call("get_region", |mut rpc| async move {
            rpc.get_region(request).await
        })?;
        Ok(response.region.map(|region| (region, response.leader)))
    }

    fn get_region_by_id(
        &self,
        region_id: u64,
    ) -> Result<Option<(Region, Option<Peer>)>, ClusterError> {
        let response = self.call("get_region_by_id", |mut rpc| async move {
            rpc.get_region_by_id(pb::GetRegionByIdRequest { region_id })
                .await
        })?;
        Ok(response.region.map(|region| (region, response.leader)))
    }

    fn scan_regions(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<pb::RegionInfo>, ClusterError> {
        let request = pb::ScanRegionsRequest {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let response = self.call("scan_regions", |mut rpc| async move {
            rpc.scan_regions(request).await
        })?;
        Ok(response.regions)
    }

    fn split_regions(&self, keys: Vec<Vec<u8>>) -> Result<(), ClusterError> {
        self.call("split_regions", |mut rpc| async move {
            rpc.split_regions(pb::SplitRegionsRequest { keys }).await
        })?;
        Ok(())
    }

    fn unsplit_regions(&self, start: &[u8], end: &[u8]) -> Result<Vec<Vec<u8>>, ClusterError> {
        let request = pb::UnsplitRegionsRequest {
            start_key: start.to_vec(),
            end_key: end.to_vec(),
        };
        let response = self.call("unsplit_regions", |mut rpc| async move {
            rpc.unsplit_regions(request).await
        })?;
        Ok(response.keys)
    }

    fn remove_store(&self, store_id: u64) -> Result<u64, ClusterError> {
        let response = self.call("remove_store", |mut rpc| async move {
            rpc.remove_store(pb::RemoveStoreRequest { store_id }).await
        })?;
        Ok(response.regions_left)
    }
}

/// The batching loop: one call for every request waiting when the previous call returned.
async fn batch_timestamps(
    mut queue: mpsc::UnboundedReceiver<Waiter>,
    mut rpc: GrpcClient<Channel>,
) {
    while let Some(first) = queue.recv().await {
        let mut waiters = vec![first];
        while waiters.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(waiter) => waiters.push(waiter),
                Err(_) => break,
            }
        }
        let count = waiters.len() as u32;
        match rpc.get_timestamps(pb::TimestampRequest { count }).await {
            Ok(response) => {
                let first_ts = response.into_inner().last + 1 - u64::from(count);
                for (i, waiter) in waiters.into_iter().enumerate() {
                    let _ = waiter.send(Ok(Timestamp(first_ts + i as u64)));
                }
            }
            Err(status) => {
                for waiter in waiters {
                    let _ = waiter.send(Err(TsoError::Unavailable(status.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use tonic::transport::Server;
    use tonic::transport::server::TcpIncoming;
    use tonic::{Request, Response};

    use super::*;

    /// A scheduler that hands out timestamps and IDs from counters, counting timestamp calls;
    /// the real service is tested through this client in the `scheduler` crate.
    #[derive(Default)]
    struct Counters {
        timestamps: AtomicU64,
        ids: AtomicU64,
        calls: Arc<AtomicUsize>,
    }

    fn unimplemented<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    #[tonic::async_trait]
    impl proto::scheduler::scheduler_server::Scheduler for Counters {
        async fn get_timestamps(
            &self,
            request: Request<pb::TimestampRequest>,
        ) -> Result<Response<pb::TimestampResponse>, Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let count = request.into_inner().count;
            let last = self
                .timestamps
                .fetch_add(u64::from(count), Ordering::SeqCst)
                + u64::from(count);
            Ok(Response::new(pb::TimestampResponse { last, count }))
        }

        async fn alloc_ids(
            &self,
            request: Request<pb::AllocIdsRequest>,
        ) -> Result<Response<pb::AllocIdsResponse>, Status> {
            let count = request.into_inner().count;
            let first = self.ids.fetch_add(u64::from(count), Ordering::SeqCst) + 1;
            Ok(Response::new(pb::AllocIdsResponse { first, count }))
        }

        async fn is_bootstrapped(
            &self,
            _: Request<pb::IsBootstrappedRequest>,
        ) -> Result<Response<pb::IsBootstrappedResponse>, Status> {
            unimplemented()
        }

        async fn bootstrap(
            &self,
            _: Request<pb::BootstrapRequest>,
        ) -> Result<Response<pb::BootstrapResponse>, Status> {
            unimplemented()
        }

        async fn put_store(
            &self,
            _: Request<pb::PutStoreRequest>,
        ) -> Result<Response<pb::PutStoreResponse>, Status> {
            unimplemented()
        }

        async fn get_store(
            &self,
            _: Request<pb::GetStoreRequest>,
        ) -> Result<Response<pb::GetStoreResponse>, Status> {
            unimplemented()
        }

        async fn get_all_stores(
            &self,
            _: Request<pb::GetAllStoresRequest>,
        ) -> Result<Response<pb::GetAllStoresResponse>, Status> {
            unimplemented()
        }

        async fn store_heartbeat(
            &self,
            _: Request<pb::StoreHeartbeatRequest>,
        ) -> Result<Response<pb::StoreHeartbeatResponse>, Status> {
            unimplemented()
        }

        async fn region_heartbeat(
            &self,
            _: Request<pb::RegionHeartbeatRequest>,
        ) -> Result<Response<pb::RegionHeartbeatResponse>, Status> {
            unimplemented()
        }

        async fn get_region(
            &self,
            _: Request<pb::GetRegionRequest>,
        ) -> Result<Response<pb::GetRegionResponse>, Status> {
            unimplemented()
        }

        async fn get_region_by_id(
            &self,
            _: Request<pb::GetRegionByIdRequest>,
        ) -> Result<Response<pb::GetRegionResponse>, Status> {
            unimplemented()
        }

        async fn scan_regions(
            &self,
            _: Request<pb::ScanRegionsRequest>,
        ) -> Result<Response<pb::ScanRegionsResponse>, Status> {
            unimplemented()
        }

        async fn split_regions(
            &self,
            _: Request<pb::SplitRegionsRequest>,
        ) -> Result<Response<pb::SplitRegionsResponse>, Status> {
            unimplemented()
        }

        async fn unsplit_regions(
            &self,
            _: Request<pb::UnsplitRegionsRequest>,
        ) -> Result<Response<pb::UnsplitRegionsResponse>, Status> {
            unimplemented()
        }

        async fn remove_store(
            &self,
            _: Request<pb::RemoveStoreRequest>,
        ) -> Result<Response<pb::RemoveStoreResponse>, Status> {
            unimplemented()
        }
    }

    fn serve(runtime: &tokio::runtime::Runtime) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let service = Counters {
            calls: Arc::clone(&calls),
            ..Counters::default()
        };
        let incoming = runtime
            .block_on(async { TcpIncoming::bind("127.0.0.1:0".parse().unwrap()) })
            .unwrap();
        let address = incoming.local_addr().unwrap();
        runtime.spawn(
            Server::builder()
                .add_service(proto::scheduler::scheduler_server::SchedulerServer::new(
                    service,
                ))
                .serve_with_incoming(incoming),
        );
        (format!("http://{address}"), calls)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn queued_requests_share_one_call_and_get_distinct_timestamps() {
        let runtime = runtime();
        let (endpoint, calls) = serve(&runtime);
        let channel = {
            let _context = runtime.enter();
            Channel::from_shared(endpoint).unwrap().connect_lazy()
        };
        // Queue 50 requests before the batcher runs: they must go out as one call.
        let (requests, queue) = mpsc::unbounded_channel();
        let answers: Vec<_> = (0..50)
            .map(|_| {
                let (waiter, answer) = oneshot::channel();
                requests.send(waiter).unwrap();
                answer
            })
            .collect();
        runtime.spawn(batch_timestamps(queue, GrpcClient::new(channel)));
        let mut timestamps: Vec<u64> = runtime.block_on(async {
            let mut out = Vec::new();
            for answer in answers {
                out.push(answer.await.unwrap().unwrap().0);
            }
            out
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let n = timestamps.len();
        timestamps.dedup();
        assert_eq!(timestamps.len(), n);
        assert!(
            timestamps.windows(2).all(|w| w[1] == w[0] + 1),
            "one contiguous block, in order"
        );
    }

    #[test]
    fn concurrent_callers_get_increasing_unique_timestamps_and_ids() {
        let runtime = runtime();
        let (endpoint, _) = serve(&runtime);
        let client =
            Arc::new(SchedulerClient::connect_lazy(&endpoint, runtime.handle().clone()).unwrap());
        crate::testing::assert_concurrent_callers_get_unique_increasing_timestamps(
            client.as_ref(),
            4,
            200,
        );
        let first = runtime.block_on(client.alloc_ids(10)).unwrap();
        let second = runtime.block_on(client.alloc_ids(1)).unwrap();
        assert!(second >= first + 10);
    }

    #[test]
    fn an_unreachable_scheduler_is_an_error_not_a_hang() {
        let runtime = runtime();
        // Nothing listens on port 1.
        let client =
            SchedulerClient::connect_lazy("http://127.0.0.1:1", runtime.handle().clone()).unwrap();
        assert!(matches!(
            client.get_timestamp(),
            Err(TsoError::Unavailable(_))
        ));
    }
}
