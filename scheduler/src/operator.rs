//! Operators: what the scheduler decided to do with one region, carried out by the region's
//! leader one step at a time, each step handed out in the answer to a region heartbeat.
//!
//! A decision is remembered as an operator so that it is repeated, not re-made, until it is
//! done: a fresh decision on every heartbeat would, for example, pick a new peer id for the
//! same new replica each time. Each step is derived from the region as its leader last
//! reported it, so a lost answer, a leader change or a restarted scheduler (which forgets its
//! operators) never leaves a half-done operator in a state it cannot continue from.
//!
//! - [`OperatorKind::ChangePeer`]: one membership change (the replica checker's); done once
//!   the region's `conf_ver` passes the one it was decided at, or dropped when it would remove
//!   the peer that now leads (the checker decides again).
//! - [`OperatorKind::MovePeer`]: move a replica between stores (balance-region): add a learner
//!   on the target, promote it once it caught up, hand leadership away from the source if it
//!   leads, remove the source. At most `max_replicas + 1` replicas exist meanwhile.
//! - [`OperatorKind::TransferLeader`]: move leadership to a given voter (balance-leader).
//! - [`OperatorKind::Merge`] (on the source region) and [`OperatorKind::MergeTarget`] (on the
//!   target, keeping every other operator off it): bring the source's leader to the store of
//!   the target's leader, then ask it to merge into the target as planned; done when the
//!   source is gone (the merged target's report drops it) or the target changed otherwise.
//!
//! Every operator has a deadline; one that has not finished by then is dropped. What it left
//! behind is repaired by the replica checker (an extra learner is removed, a missing replica
//! added).

use std::time::{Duration, Instant};

use proto::metapb::{Peer, Region, RegionEpoch};
use proto::scheduler::{ChangePeer, ChangePeerType, RegionHeartbeatResponse};

#[derive(Clone, Debug, PartialEq)]
pub enum OperatorKind {
    /// One membership change, decided when the region's `conf_ver` was `conf_ver`.
    ChangePeer { change: ChangePeer, conf_ver: u64 },
    /// Move the replica on `from_store` to the new peer `to` (on another store).
    MovePeer { from_store: u64, to: Peer },
    /// Make `to` (a voter of the region) its leader.
    TransferLeader { to: Peer },
    /// Merge this region into `target` (as it was when decided).
    Merge { target: Region },
    /// Region `source` merges into this one, decided at this region's epoch `version`.
    MergeTarget { source: u64, version: u64 },
}

/// The next thing the region's leader should do for an operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Propose this membership change.
    Change(ChangePeer),
    /// Hand leadership to this peer.
    TransferLeader(Peer),
    /// Merge into this region.
    Merge(Region),
    /// Nothing for now (a new replica is still catching up).
    Wait,
    /// The operator is finished, or can no longer apply: drop it.
    Done,
}

impl Step {
    /// Puts this step into the answer to the region's heartbeat (nothing for `Wait`/`Done`).
    pub fn answer(self, response: &mut RegionHeartbeatResponse) {
        match self {
            Step::Change(change) => response.change_peer = Some(change),
            Step::TransferLeader(to) => response.transfer_leader = Some(to),
            Step::Merge(target) => response.merge_target = Some(target),
            Step::Wait | Step::Done => {}
        }
    }
}

#[derive(Clone, Debug)]
pub struct Operator {
    pub kind: OperatorKind,
    pub created: Instant,
    /// Dropped if not done by `created + timeout`.
    pub timeout: Duration,
}

fn change(change_type: ChangePeerType, peer: Peer) -> Step {
    Step::Change(ChangePeer {
        change_type: change_type as i32,
        peer: Some(peer),
    })
}

impl Operator {
    pub fn new(kind: OperatorKind, now: Instant, timeout: Duration) -> Operator {
        Operator {
            kind,
            created: now,
            timeout,
        }
    }

    pub fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.created) >= self.timeout
    }

    /// Whether this operator came from a balancing scheduler (they are limited in number).
    pub fn is_balance(&self) -> bool {
        matches!(
            self.kind,
            OperatorKind::MovePeer { .. } | OperatorKind::TransferLeader { .. }
        )
    }

    pub fn is_merge(&self) -> bool {
        matches!(self.kind, OperatorKind::Merge { .. })
    }

    /// The stores this operator moves data or load to or from.
    pub fn stores(&self) -> Vec<u64> {
        match &self.kind {
            OperatorKind::ChangePeer { change, .. } => {
                change.peer.iter().map(|p| p.store_id).collect()
            }
            OperatorKind::MovePeer { from_store, to } => vec![*from_store, to.store_id],
            OperatorKind::TransferLeader { to } => vec![to.store_id],
            OperatorKind::Merge { target } => target.peers.iter().map(|p| p.store_id).collect(),
            OperatorKind::MergeTarget { .. } => Vec::new(),
        }
    }

    /// The next step, given the region as its leader (`leader`) just reported it and, for a
    /// merge, the target region as last reported with its leader (`None`: no longer known).
    pub fn step_with_target(
        &self,
        region: &Region,
        leader: &Peer,
        pending_peers: &[Peer],
        target_now: Option<(&Region, Option<Peer>)>,
    ) -> Step {
        let OperatorKind::Merge { target } = &self.kind else {
            return self.step(region, leader, pending_peers);
        };
        let Some((now, target_leader)) = target_now else {
            return Step::Done;
        };
        if now.epoch != target.epoch {
            return Step::Done;
        }
        let Some(target_leader) = target_leader else {
            return Step::Wait;
        };
        if target_leader.store_id == leader.store_id {
            return Step::Merge(target.clone());
        }
        match region
            .peers
            .iter()
            .find(|p| p.store_id == target_leader.store_id)
        {
            Some(peer) => Step::TransferLeader(*peer),
            None => Step::Done,
        }
    }

    /// The next step, given the region as its leader (`leader`) just reported it.
    pub fn step(&self, region: &Region, leader: &Peer, pending_peers: &[Peer]) -> Step {
        let epoch: RegionEpoch = region.epoch.unwrap_or_default();
        match &self.kind {
            OperatorKind::ChangePeer { change, conf_ver } => {
                let removes_leader = change.change_type == ChangePeerType::ChangePeerRemove as i32
                    && change.peer.as_ref().is_some_and(|p| p.id == leader.id);
                if epoch.conf_ver > *conf_ver || removes_leader {
                    Step::Done
                } else {
                    Step::Change(*change)
                }
            }
            OperatorKind::MovePeer { from_store, to } => {
                let on_target = region.peers.iter().find(|p| p.store_id == to.store_id);
                match on_target {
                    // Another replica took the target store meanwhile: give up.
                    Some(peer) if peer.id != to.id => return Step::Done,
                    None => {
                        return change(
                            ChangePeerType::ChangePeerAddLearner,
                            Peer {
                                learner: true,
                                ..*to
                            },
                        );
                    }
                    Some(peer) if peer.learner => {
                        return if pending_peers.iter().any(|p| p.id == peer.id) {
                            Step::Wait
                        } else {
                            change(
                                ChangePeerType::ChangePeerPromote,
                                Peer {
                                    learner: false,
                                    ..*peer
                                },
                            )
                        };
                    }
                    Some(_) => {}
                }
                match region.peers.iter().find(|p| p.store_id == *from_store) {
                    None => Step::Done,
                    Some(source) if source.id == leader.id => Step::TransferLeader(Peer {
                        learner: false,
                        ..*to
                    }),
                    Some(source) => change(ChangePeerType::ChangePeerRemove, *source),
                }
            }
            OperatorKind::TransferLeader { to } => {
                let still_voter = region.peers.iter().any(|p| p.id == to.id && !p.learner);
                if leader.id == to.id || !still_voter {
                    Step::Done
                } else {
                    Step::TransferLeader(*to)
                }
            }
            // Needs the target: see `step_with_target`.
            OperatorKind::Merge { .. } => Step::Wait,
            OperatorKind::MergeTarget { version, .. } => {
                if epoch.version == *version {
                    Step::Wait
                } else {
                    Step::Done
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: u64, store_id: u64) -> Peer {
        Peer {
            id,
            store_id,
            learner: false,
        }
    }

    fn region(conf_ver: u64, peers: Vec<Peer>) -> Region {
        Region {
            id: 1,
            epoch: Some(RegionEpoch {
                conf_ver,
                version: 1,
            }),
            peers,
            ..Region::default()
        }
    }

    fn kind(step: &Step) -> Option<(ChangePeerType, Peer)> {
        match step {
            Step::Change(c) => Some((ChangePeerType::try_from(c.change_type).ok()?, c.peer?)),
            _ => None,
        }
    }

    #[test]
    fn a_move_adds_promotes_hands_over_and_removes_in_turn() {
        let now = Instant::now();
        let target = peer(40, 4);
        let op = Operator::new(
            OperatorKind::MovePeer {
                from_store: 1,
                to: target,
            },
            now,
            Duration::from_secs(60),
        );
        let (p1, p2, p3) = (peer(10, 1), peer(20, 2), peer(30, 3));
        // Leader on the source store: add the learner first.
        let r = region(1, vec![p1, p2, p3]);
        let (t, p) = kind(&op.step(&r, &p1, &[])).unwrap();
        assert_eq!(t, ChangePeerType::ChangePeerAddLearner);
        assert_eq!(
            p,
            Peer {
                learner: true,
                ..target
            }
        );
        // Catching up: wait; caught up: promote.
        let learner = Peer {
            learner: true,
            ..target
        };
        let r = region(2, vec![p1, p2, p3, learner]);
        assert_eq!(op.step(&r, &p1, &[learner]), Step::Wait);
        let (t, p) = kind(&op.step(&r, &p1, &[])).unwrap();
        assert_eq!((t, p), (ChangePeerType::ChangePeerPromote, target));
        // The source leads: hand leadership to the new voter, then remove the source.
        let r = region(3, vec![p1, p2, p3, target]);
        assert_eq!(op.step(&r, &p1, &[]), Step::TransferLeader(target));
        let (t, p) = kind(&op.step(&r, &target, &[])).unwrap();
        assert_eq!((t, p), (ChangePeerType::ChangePeerRemove, p1));
        let r = region(4, vec![p2, p3, target]);
        assert_eq!(op.step(&r, &target, &[]), Step::Done);
        // Another replica on the target store (not ours): give up.
        let r = region(2, vec![p1, p2, p3, peer(99, 4)]);
        assert_eq!(op.step(&r, &p1, &[]), Step::Done);
    }

    #[test]
    fn change_and_transfer_operators_finish_when_applied_and_all_expire() {
        let now = Instant::now();
        let (p1, p2) = (peer(10, 1), peer(20, 2));
        let remove = ChangePeer {
            change_type: ChangePeerType::ChangePeerRemove as i32,
            peer: Some(p2),
        };
        let op = Operator::new(
            OperatorKind::ChangePeer {
                change: remove,
                conf_ver: 3,
            },
            now,
            Duration::from_secs(5),
        );
        assert_eq!(
            op.step(&region(3, vec![p1, p2]), &p1, &[]),
            Step::Change(remove)
        );
        assert_eq!(op.step(&region(4, vec![p1]), &p1, &[]), Step::Done);
        // Its target became the leader: dropped, to be decided again.
        assert_eq!(op.step(&region(3, vec![p1, p2]), &p2, &[]), Step::Done);
        assert!(!op.expired(now + Duration::from_secs(4)));
        assert!(op.expired(now + Duration::from_secs(5)));

        let transfer = Operator::new(
            OperatorKind::TransferLeader { to: p2 },
            now,
            Duration::from_secs(5),
        );
        let r = region(3, vec![p1, p2]);
        assert_eq!(transfer.step(&r, &p1, &[]), Step::TransferLeader(p2));
        assert_eq!(transfer.step(&r, &p2, &[]), Step::Done);
        let gone = region(4, vec![p1]);
        assert_eq!(transfer.step(&gone, &p1, &[]), Step::Done);
        assert!(transfer.is_balance() && !op.is_balance());
    }

    #[test]
    fn a_merge_brings_the_leaders_together_then_asks_for_it() {
        let (s1, s2) = (peer(1, 1), peer(2, 2));
        let source = region(1, vec![s1, s2]);
        let target = Region {
            id: 9,
            peers: vec![peer(91, 1), peer(92, 2)],
            ..region(1, vec![])
        };
        let now = Instant::now();
        let op = Operator::new(
            OperatorKind::Merge {
                target: target.clone(),
            },
            now,
            Duration::from_secs(10),
        );
        // The target's leader is on store 2: the source's leader moves there first.
        let step = op.step_with_target(&source, &s1, &[], Some((&target, Some(peer(92, 2)))));
        assert_eq!(step, Step::TransferLeader(s2));
        let step = op.step_with_target(&source, &s2, &[], Some((&target, Some(peer(92, 2)))));
        assert_eq!(step, Step::Merge(target.clone()));
        // No target leader known yet: wait; the target gone or changed: done.
        assert_eq!(
            op.step_with_target(&source, &s2, &[], Some((&target, None))),
            Step::Wait
        );
        assert_eq!(op.step_with_target(&source, &s2, &[], None), Step::Done);
        let split = Region {
            epoch: Some(RegionEpoch {
                conf_ver: 1,
                version: 2,
            }),
            ..target.clone()
        };
        assert_eq!(
            op.step_with_target(&source, &s2, &[], Some((&split, Some(peer(92, 2))))),
            Step::Done
        );
        // The target's own operator holds it until its version moves.
        let held = Operator::new(
            OperatorKind::MergeTarget {
                source: 1,
                version: 1,
            },
            now,
            Duration::from_secs(10),
        );
        assert_eq!(held.step(&target, &peer(91, 1), &[]), Step::Wait);
        assert_eq!(held.step(&split, &peer(91, 1), &[]), Step::Done);
        assert!(!held.is_balance() && op.is_merge());
    }
}
