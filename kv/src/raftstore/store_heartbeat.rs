//! The store's side of the scheduler: a heartbeat thread that sends the store's heartbeat on
//! a timer and forwards each leader's region report, hands the scheduler's answer (one
//! membership change, a leader transfer or a split key) to the region's leader, and
//! destroys replicas the scheduler's view of their region no longer lists.

use std::sync::Weak;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use proto::metapb::{Peer as PeerMeta, Region};
use proto::scheduler::{ChangePeerType, RegionHeartbeatRequest, StoreHeartbeatRequest};
use tracing::{debug, info};

use super::driver::{PeerHandle, PeerMsg};
use super::region::{self, ChangePeer};
use super::store::{Event, Inner};
use crate::error::KvResult;
use crate::storage::Engine;

impl<E: Engine> Inner<E> {
    /// Asks the scheduler about the regions this store follows: a replica whose region has a
    /// newer membership that does not list it was removed while it heard nothing (a learner
    /// never campaigns, so no member ever answers it with a tombstone notice): destroy it.
    pub(super) fn destroy_stale_replicas(&self) {
        let followers: Vec<(u64, u64, Region)> = self
            .lock_peers()
            .iter()
            .filter(|(_, p)| p.is_alive() && !p.is_leader())
            .map(|(&id, p)| (id, p.peer_id(), p.region()))
            .collect();
        if followers.is_empty() {
            return;
        }
        // One call for all of them (a store may follow thousands of regions).
        let Ok(known) = self.cluster.scan_regions(b"", b"", 0) else {
            return;
        };
        let known: std::collections::HashMap<u64, Region> = known
            .into_iter()
            .filter_map(|info| info.region)
            .map(|r| (r.id, r))
            .collect();
        for (region_id, peer_id, local) in followers {
            let Some(known) = known.get(&region_id) else {
                continue;
            };
            let removed = region::epoch(known).conf_ver > region::epoch(&local).conf_ver
                && region::find_peer(known, peer_id).is_none();
            if !removed {
                continue;
            }
            let _lifecycle = self.lifecycle.lock().unwrap_or_else(|e| e.into_inner());
            let stale = {
                let mut peers = self.lock_peers();
                match peers.get(&region_id) {
                    Some(p) if p.peer_id() == peer_id => peers.remove(&region_id),
                    _ => None,
                }
            };
            if let Some(peer) = stale {
                info!(
                    region_id,
                    peer_id, "the scheduler's region no longer lists this replica"
                );
                peer.end(true);
            }
        }
    }

    /// Carries out the scheduler's answer to a region report.
    fn handle_scheduler_answer(&self, report: &RegionHeartbeatRequest, answer: ChangeAnswer) {
        let Some(region) = &report.region else { return };
        let change = match answer {
            ChangeAnswer::None => return,
            ChangeAnswer::Change(kind, peer) => match kind {
                ChangePeerType::ChangePeerAddLearner => ChangePeer::AddLearner(PeerMeta {
                    learner: true,
                    ..peer
                }),
                ChangePeerType::ChangePeerPromote => ChangePeer::AddVoter(PeerMeta {
                    learner: false,
                    ..peer
                }),
                ChangePeerType::ChangePeerRemove => ChangePeer::Remove(peer),
            },
        };
        info!(
            region_id = region.id,
            ?change,
            "scheduler asks for a membership change"
        );
        let region_id = region.id;
        if self.is_merge_target(region_id) {
            debug!(
                region_id,
                "no membership change while a region merges into it"
            );
            return;
        }
        let callback = Box::new(move |result: KvResult<()>| match result {
            Ok(()) => info!(region_id, "membership change applied"),
            Err(e) => debug!(region_id, error = %e, "membership change not applied"),
        });
        self.send_to_peer(region_id, PeerMsg::ChangePeer(change, callback));
    }
}

enum ChangeAnswer {
    None,
    Change(ChangePeerType, PeerMeta),
}

/// The store's heartbeat thread: store heartbeats on a timer, region reports as they come.
pub(super) fn heartbeat_loop<E: Engine>(store: Weak<Inner<E>>, events: Receiver<Event>) {
    let interval = match store.upgrade() {
        Some(inner) => inner.config.store_heartbeat,
        None => return,
    };
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            next = Instant::now() + interval;
            let Some(inner) = store.upgrade() else { return };
            // Replicas that ended (destroyed, or failed) leave the map here.
            let dead: Vec<PeerHandle> = {
                let mut peers = inner.lock_peers();
                let ids: Vec<u64> = peers
                    .iter()
                    .filter(|(_, p)| !p.is_alive())
                    .map(|(id, _)| *id)
                    .collect();
                ids.iter().filter_map(|id| peers.remove(id)).collect()
            };
            drop(dead);
            inner.destroy_stale_replicas();
            let (regions, leaders) = {
                let peers = inner.lock_peers();
                let leaders = peers.values().filter(|p| p.is_leader()).count();
                (peers.len() as u32, leaders as u32)
            };
            let request = StoreHeartbeatRequest {
                store_id: inner.store_id,
                region_count: regions,
                leader_count: leaders,
            };
            if let Err(e) = inner.cluster.store_heartbeat(request) {
                debug!(error = %e, "store heartbeat failed");
            }
        }
        let wait = next.saturating_duration_since(Instant::now());
        match events.recv_timeout(wait) {
            Ok(Event::RegionReport(report)) => {
                let Some(inner) = store.upgrade() else { return };
                match inner.cluster.region_heartbeat(report.clone()) {
                    Ok(response) => {
                        if !response.stale.is_empty() {
                            debug!(reason = %response.stale, "region report was stale");
                            continue;
                        }
                        if let (Some(to), Some(region)) =
                            (response.transfer_leader, report.region.as_ref())
                        {
                            info!(
                                region_id = region.id,
                                to = to.id,
                                "scheduler asks for a leader transfer"
                            );
                            inner.send_to_peer(region.id, PeerMsg::TransferLeader(to.id));
                        }
                        if let (Some(target), Some(source)) =
                            (response.merge_target.clone(), report.region.as_ref())
                        {
                            inner.ask_merge(source, target);
                        }
                        if !response.split_key.is_empty()
                            && let Some(region) = report.region.clone()
                        {
                            info!(region_id = region.id, "scheduler asks for a split");
                            inner.ask_split(region, response.split_key.clone());
                        }
                        let answer = match response.change_peer {
                            Some(change) => {
                                match (ChangePeerType::try_from(change.change_type), change.peer) {
                                    (Ok(kind), Some(peer)) => ChangeAnswer::Change(kind, peer),
                                    _ => ChangeAnswer::None,
                                }
                            }
                            None => ChangeAnswer::None,
                        };
                        inner.handle_scheduler_answer(&report, answer);
                    }
                    Err(e) => debug!(error = %e, "region heartbeat failed"),
                }
            }
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
