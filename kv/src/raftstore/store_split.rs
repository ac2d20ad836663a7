//! The store's side of splits: the split-check thread, the peers that splits create, and the
//! raft messages that arrive for a new region before this store applied the split.
//!
//! - **Checks.** Leaders ask for checks ([`super::driver::StoreEvents::split_check`]); one
//!   thread per store runs them in order (several asks for one region collapse into one),
//!   answers the peer with the measured size, and plans a split when the region is too big:
//!   new ids from the scheduler, then a [`PeerMsg::ProposeSplit`] to the leader. Splits the
//!   scheduler asks for (an answer to a region heartbeat) are planned the same way.
//! - **New peers.** A replica that applied a split has already persisted the new region's
//!   initial state in the same batch; the store then starts its peer (and, if the splitting
//!   replica led, makes it campaign at once so the new region has a leader without waiting for
//!   an election timeout).
//! - **Early messages.** The new region's leader may talk to this store before this store's
//!   replica of the parent applied the split. Creating an empty replica for such a message
//!   would make a second replica of the same keys (the parent still serves them here); so a
//!   message for an unknown region whose range overlaps a local replica creates nothing. It is
//!   kept for a few seconds instead and delivered when the split creates the peer, which saves
//!   the new region an election timeout. If the parent replica never applies the split (it was
//!   removed, say), its range shrinks or it is destroyed, and a later message creates the peer
//!   empty, to be filled by a snapshot.

use std::collections::BTreeMap;
use std::sync::Weak;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use proto::metapb::Region;
use tracing::{debug, info, warn};

use super::driver::PeerMsg;
use super::region;
use super::split_check::{check_region, plan_split};
use super::store::{Inner, cluster_error};
use super::transport::RaftEnvelope;
use crate::error::KvResult;
use crate::storage::Engine;

/// Work for the split-check thread.
pub(super) enum SplitTask {
    /// Measure the region (as its leader knows it) and split it if it is too big.
    Check(Region),
    /// Split the region at this key (the scheduler asked).
    At(Region, Vec<u8>),
    Stop,
}

/// How long a message for a region that does not exist here yet is kept.
const EARLY_MESSAGE_TTL: Duration = Duration::from_secs(10);
/// At most this many such messages are kept (the oldest are dropped first).
const MAX_EARLY_MESSAGES: usize = 4096;

/// The split-check thread.
pub(super) fn split_loop<E: Engine>(store: Weak<Inner<E>>, tasks: Receiver<SplitTask>) {
    while let Ok(first) = tasks.recv() {
        // Collapse what queued up: the newest check per region, every explicit split.
        let mut checks: BTreeMap<u64, Region> = BTreeMap::new();
        let mut splits = Vec::new();
        for task in std::iter::once(first).chain(std::iter::from_fn(|| tasks.try_recv().ok())) {
            match task {
                SplitTask::Check(region) => {
                    checks.insert(region.id, region);
                }
                SplitTask::At(region, key) => splits.push((region, key)),
                SplitTask::Stop => return,
            }
        }
        let Some(inner) = store.upgrade() else { return };
        for (region, key) in splits {
            inner.propose_split(&region, key);
        }
        for region in checks.into_values() {
            inner.run_split_check(&region);
        }
    }
}

impl<E: Engine> Inner<E> {
    fn run_split_check(&self, region: &Region) {
        let snapshot = self.engine.snapshot();
        let check = match check_region(&snapshot, region, &self.config.split) {
            Ok(check) => check,
            Err(e) => {
                warn!(region_id = region.id, error = %e, "split check failed");
                return;
            }
        };
        drop(snapshot);
        let version = region::epoch(region).version;
        self.send_to_peer(region.id, PeerMsg::SplitChecked(version, check.size));
        if let Some(key) = check.split_key {
            info!(
                region_id = region.id,
                bytes = check.size.bytes,
                keys = check.size.keys,
                "region is too big: splitting"
            );
            self.propose_split(region, key);
        }
    }

    /// Plans a split of `region` at `key` (new ids from the scheduler) and hands it to the
    /// region's replica here, which proposes it if it still leads and the region is unchanged.
    pub(super) fn propose_split(&self, region: &Region, key: Vec<u8>) {
        if !region::contains_key(region, &key) || key == region.start_key {
            debug!(region_id = region.id, "split key is not inside the region");
            return;
        }
        if self.is_merge_target(region.id) {
            debug!(
                region_id = region.id,
                "no split while a region merges into it"
            );
            return;
        }
        let plan = match plan_split(region, key, || {
            self.cluster.alloc_id().map_err(cluster_error)
        }) {
            Ok(plan) => plan,
            Err(e) => {
                warn!(region_id = region.id, error = %e, "cannot plan a split");
                return;
            }
        };
        let region_id = region.id;
        let callback = Box::new(move |result: KvResult<()>| {
            if let Err(e) = result {
                debug!(region_id, error = %e, "split not applied");
            }
        });
        self.send_to_peer(region_id, PeerMsg::ProposeSplit(plan, callback));
    }

    /// Starts this store's replica of `region`, created by a split applied here.
    pub(super) fn start_split_peer(self: &std::sync::Arc<Self>, region: Region, campaign: bool) {
        if self.stopped.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let Some(me) = region::peer_on_store(&region, self.store_id).copied() else {
            return;
        };
        if self
            .lock_peers()
            .get(&region.id)
            .is_some_and(|p| p.is_alive())
        {
            return; // Already running (a restart reopened it, say).
        }
        match self.start_peer(&region, me) {
            Ok(handle) => {
                if campaign {
                    handle.send(PeerMsg::Campaign);
                }
                for envelope in self.take_early_messages(region.id) {
                    handle.send(PeerMsg::Raft(envelope.from_peer, envelope.message));
                }
            }
            Err(e) => warn!(region_id = region.id, error = %e, "cannot start a split's peer"),
        }
    }

    /// Whether `envelope`'s range overlaps another region this store holds: a replica
    /// running here, or a region state persisted here. The persisted states matter for the
    /// moment between a split's apply (the parent's range shrinks in the same batch that
    /// persists the new region's state) and the start of the new region's peer: the running
    /// replicas alone would show a hole there.
    pub(super) fn overlaps_local_region(&self, envelope: &RaftEnvelope) -> bool {
        let overlaps = |local: &Region| {
            another_overlapping(
                local,
                envelope.region_id,
                &envelope.start_key,
                &envelope.end_key,
            )
        };
        let running = self
            .lock_peers()
            .values()
            .any(|p| p.is_alive() && p.with_region(overlaps));
        running
            || match self.local_regions() {
                Ok(persisted) => persisted.iter().any(overlaps),
                // Cannot tell: do not create a replica that might overlap.
                Err(_) => true,
            }
    }

    /// Whether no replica here but `region`'s own overlaps `region`'s range, about to be
    /// taken by a snapshot of it. Running replicas of older epochs (merge sources it took
    /// over whose merge never finished here) are asked to end, keeping their data; a newer
    /// one, or a persisted region not running, keeps the snapshot waiting.
    pub(super) fn clear_range_for_snapshot(&self, region: &Region) -> bool {
        let overlaps = |local: &Region| {
            another_overlapping(local, region.id, &region.start_key, &region.end_key)
        };
        let version = region::epoch(region).version;
        let mut clear = true;
        for peer in self.lock_peers().values() {
            if !peer.is_alive() {
                continue;
            }
            let local = peer.region();
            if !overlaps(&local) {
                continue;
            }
            clear = false;
            if region::epoch(&local).version < version {
                info!(
                    store_id = self.store_id,
                    region_id = local.id,
                    by = region.id,
                    "replica overtaken by a snapshot of a region that took over its range"
                );
                peer.send(PeerMsg::Overtaken);
            }
        }
        clear
            && match self.local_regions() {
                Ok(persisted) => !persisted.iter().any(overlaps),
                Err(_) => false,
            }
    }

    /// Keeps a message for a region whose peer a split here will create.
    pub(super) fn keep_early_message(&self, envelope: RaftEnvelope) {
        let mut kept = self
            .early_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        kept.retain(|(at, _)| now.duration_since(*at) < EARLY_MESSAGE_TTL);
        if kept.len() >= MAX_EARLY_MESSAGES {
            kept.remove(0);
        }
        kept.push((now, envelope));
    }

    fn take_early_messages(&self, region_id: u64) -> Vec<RaftEnvelope> {
        let mut kept = self
            .early_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *kept)
            .into_iter()
            .partition(|(_, e)| e.region_id == region_id);
        *kept = rest;
        mine.into_iter().map(|(_, e)| e).collect()
    }
}

/// Whether `local` is another region than `region_id` and overlaps `[start, end)`.
fn another_overlapping(local: &Region, region_id: u64, start: &[u8], end: &[u8]) -> bool {
    local.id != region_id && region::ranges_overlap(&local.start_key, &local.end_key, start, end)
}
