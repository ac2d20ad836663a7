//! Region merge, as a replica takes part in it: a *source* region hands its range to an
//! adjacent *target* region whose replicas are on the same stores (TiKV's prepare/commit
//! merge, through both regions' logs).
//!
//! # Protocol
//!
//! 1. **Prepare** (source log). The scheduler asks the source's leader to merge into the
//!    target, once both leaders are on one store. The leader proposes `PrepareMerge(target as
//!    planned, its own epoch)` only when every replica holds its whole log and no membership
//!    change is pending or in its unapplied log. Every replica applies it alike: the source
//!    is *frozen* (`RegionLocalState::merging`), its `version` and `conf_ver` go up, and from
//!    then on it refuses reads, writes, splits and membership changes; write entries that were
//!    already in the log behind the PrepareMerge are skipped (EpochNotMatch) on every replica.
//! 2. **Commit** (target log). Once every source replica's log holds the PrepareMerge, the
//!    source leader hands `CommitMerge(source as frozen, merge state)` to the target's replica
//!    on its store, which proposes it if it leads. Every target replica applies it only if the
//!    target's epoch is still the planned one (so all decide alike); the merged region spans
//!    both ranges with the target's id and replicas and a `version` above both.
//! 3. **Hand-over on each store.** A target replica applies the CommitMerge only once the
//!    source replica on its store has ended as *merged*: a tombstone that keeps the source's
//!    data (now the target's) and records the merge. Until then the target stops applying at
//!    that entry (later entries wait) and asks the local source replica to finish: a source
//!    replica that has not applied the PrepareMerge yet but holds it in its log commits up to
//!    it on the target's word (the entry is committed: the source leader applied it), applies
//!    it, then ends as merged. The target then applies the CommitMerge, in the batch with its
//!    applied index; a crash in between finds the tombstone again on restart.
//! 4. **A replica that missed the commit.** A target replica that fell behind while the
//!    merge went on elsewhere, and whose leader compacted the log past the CommitMerge, gets
//!    a snapshot of the merged region, whose range covers the source replica still on its
//!    store (frozen, or never told). Before the snapshot applies, the store ends every
//!    replica overlapping it with an older epoch, keeping the data (the snapshot replaces
//!    it), so two replicas never claim one range (`Peer::widening_snapshot`,
//!    `StoreEvents::clear_range_for_snapshot`, `PeerMsg::Overtaken`).
//!
//! # Invariants
//!
//! - A key is served by one region: the source serves nothing from its PrepareMerge on, and
//!   the target serves the source's keys only after the source replica on its store ended.
//! - Both regions' replicas are the same set of stores: checked when the PrepareMerge applies
//!   (against the target as planned) and, as the CommitMerge requires the target's planned
//!   epoch, still true when it applies.
//!
//! # Not implemented
//!
//! Rolling a merge back. A source whose target changed (split, membership change) between the
//! PrepareMerge and the CommitMerge stays frozen: the store and the scheduler keep the
//! target from changing meanwhile (no split, no operator), but a target leader elected on
//! another store during the merge could still split it. TiKV rolls back once a majority of the
//! source's replicas see their target moved on.

use proto::metapb::Region;
use raft::EntryKind;

use super::Peer;
use crate::error::{KvError, KvResult};
use crate::raftstore::command::{CommitMergeRequest, PrepareMergeRequest, RaftCommand};
use crate::raftstore::keys;
use crate::raftstore::region::{self, MergeState, RegionLocalState};
use crate::storage::{Cf, Engine, Snapshot, WriteBatch};

/// What applying a CommitMerge came to.
pub(super) enum CommitApply {
    /// Applied (or skipped alike on every replica, with the proposer's answer).
    Done(KvResult<()>),
    /// The source replica on this store has not ended yet: stop applying here.
    Wait,
}

impl<E: Engine> Peer<E> {
    /// The merge this region is frozen for (its PrepareMerge applied), if any.
    pub fn merging(&self) -> Option<&MergeState> {
        self.node.storage().merging()
    }

    /// The answer to a request on a frozen source region: retry later (the merged region
    /// serves it once the merge is done).
    pub(super) fn merging_error(&self) -> KvError {
        KvError::ServerIsBusy(format!("region {} is merging", self.region_id))
    }

    /// Whether the unapplied part of this replica's log holds an entry `matches` recognises.
    fn unapplied_log_has(&self, matches: impl Fn(&RaftCommand) -> bool) -> bool {
        let log = &self.node.raft.log;
        let Ok(entries) = log.entries(log.applied + 1, u64::MAX) else {
            return true; // Cannot tell: assume it does.
        };
        entries.iter().any(|entry| {
            entry.kind == EntryKind::Normal
                && !entry.data.is_empty()
                && RaftCommand::decode(&entry.data).is_ok_and(|c| matches(&c))
        })
    }

    /// Whether a PrepareMerge is in the log and not applied yet (no membership change may
    /// be proposed behind it).
    pub(super) fn prepare_merge_pending(&self) -> bool {
        self.unapplied_log_has(|c| matches!(c, RaftCommand::PrepareMerge(_)))
    }

    /// Proposes to freeze this region for a merge into `target` (leader only; see the module
    /// docs for when it refuses).
    pub fn propose_prepare_merge(&mut self, target: Region, callback: super::Callback) {
        if !self.is_leader() {
            callback(Err(self.not_leader()));
            return;
        }
        let refuse = |why: String| Err(KvError::Server(format!("cannot merge: {why}")));
        if self.merging().is_some() {
            return callback(refuse("already merging".into()));
        }
        let raft = &self.node.raft;
        let last = raft.log.last_index();
        if raft.has_pending_conf() || raft.lead_transferee.is_some() {
            return callback(refuse(
                "a membership change or transfer is under way".into(),
            ));
        }
        let behind = raft
            .tracker
            .progress
            .iter()
            .any(|(id, p)| *id != self.meta.id && (p.matched < last || !p.recent_active));
        if behind {
            return callback(refuse("a replica does not hold the whole log".into()));
        }
        if self.unapplied_log_has(|c| !matches!(c, RaftCommand::Write(_))) {
            return callback(refuse("a split or merge is not applied yet".into()));
        }
        let source_epoch = region::epoch(self.region());
        if let Err(why) = region::prepare_merge(self.region(), &target, source_epoch) {
            return callback(refuse(why));
        }
        let data = RaftCommand::PrepareMerge(PrepareMergeRequest {
            target,
            source_epoch,
        })
        .encode();
        self.propose_entry(|node| node.propose(data), callback);
    }

    /// Proposes to take over a frozen source region (leader of the target only).
    pub fn propose_commit_merge(&mut self, request: CommitMergeRequest, callback: super::Callback) {
        if !self.is_leader() {
            callback(Err(self.not_leader()));
            return;
        }
        if self.merging().is_some() {
            return callback(Err(self.merging_error()));
        }
        if let Err(why) =
            region::commit_merge(self.region(), &request.source, &request.merge.target)
        {
            return callback(Err(KvError::Server(format!("cannot merge: {why}"))));
        }
        let source_id = request.source.id;
        if self.unapplied_log_has(
            |c| matches!(c, RaftCommand::CommitMerge(other) if other.source.id == source_id),
        ) {
            return callback(Ok(())); // Proposed already; it applies once the source is done.
        }
        let data = RaftCommand::CommitMerge(request).encode();
        self.propose_entry(|node| node.propose(data), callback);
    }

    /// The CommitMerge the target should propose, from this source leader: once its
    /// PrepareMerge applied and every replica's log holds it (each can then finish the merge
    /// on its store with no further word from this group).
    pub fn commit_merge_request(&self) -> Option<CommitMergeRequest> {
        let merge = self.merging()?;
        let raft = &self.node.raft;
        let all_hold_it = self.is_leader()
            && raft
                .tracker
                .progress
                .iter()
                .all(|(id, p)| *id == self.meta.id || p.matched >= merge.prepare_index);
        all_hold_it.then(|| CommitMergeRequest {
            source: self.region().clone(),
            merge: merge.clone(),
        })
    }

    /// The CommitMerge this target replica waits on (the source replica on this store has
    /// not ended yet), to pass on to that replica.
    pub fn merge_waiting_for_source(&self) -> Option<&CommitMergeRequest> {
        self.merge_wait.as_ref()
    }

    /// Whether this source replica ended as merged (its driver ends it).
    pub fn is_merged(&self) -> bool {
        self.merged
    }

    /// Applies a PrepareMerge (see the module docs); refused alike on every replica if the
    /// source changed since it was planned.
    pub(super) fn apply_prepare_merge(
        &mut self,
        apply: &mut WriteBatch,
        request: &PrepareMergeRequest,
        index: u64,
        term: u64,
    ) -> KvResult<()> {
        let frozen =
            match region::prepare_merge(self.region(), &request.target, request.source_epoch) {
                Ok(frozen) if self.merging().is_none() => frozen,
                Ok(_) => return Err(self.merging_error()),
                Err(why) => {
                    tracing::info!(region_id = self.region_id, why, "prepare merge skipped");
                    return Err(KvError::EpochNotMatch {
                        region_id: self.region_id,
                        current: Some(Box::new(self.region().clone())),
                    });
                }
            };
        tracing::info!(
            store_id = self.meta.store_id,
            region_id = self.region_id,
            target = request.target.id,
            "region frozen to merge"
        );
        let merge = MergeState {
            target: request.target.clone(),
            prepare_index: index,
            prepare_term: term,
        };
        self.node.storage_mut().set_merging(apply, frozen, merge);
        Ok(())
    }

    /// Applies a CommitMerge if the source replica on this store has ended as merged (see
    /// the module docs), else asks to wait.
    pub(super) fn apply_commit_merge(
        &mut self,
        apply: &mut WriteBatch,
        request: &CommitMergeRequest,
    ) -> KvResult<CommitApply> {
        let merged =
            match region::commit_merge(self.region(), &request.source, &request.merge.target) {
                Ok(merged) if self.merging().is_none() => merged,
                Ok(_) => return Ok(CommitApply::Done(Err(self.merging_error()))),
                Err(why) => {
                    tracing::info!(region_id = self.region_id, why, "commit merge skipped");
                    return Ok(CommitApply::Done(Err(KvError::EpochNotMatch {
                        region_id: self.region_id,
                        current: Some(Box::new(self.region().clone())),
                    })));
                }
            };
        let source_state = self
            .node
            .storage()
            .engine()
            .snapshot()
            .get(Cf::Raft, &keys::region_state(request.source.id))?
            .map(|bytes| RegionLocalState::decode(&bytes))
            .transpose()?;
        let source_done = source_state.is_some_and(|state| {
            state.is_merged()
                && state
                    .merging
                    .is_some_and(|m| m.prepare_index == request.merge.prepare_index)
        });
        if !source_done {
            if self.merge_wait.is_none() {
                tracing::info!(
                    region_id = self.region_id,
                    source = request.source.id,
                    "merge waits for the source replica on this store"
                );
            }
            self.merge_wait = Some(request.clone());
            return Ok(CommitApply::Wait);
        }
        tracing::info!(
            store_id = self.meta.store_id,
            region_id = self.region_id,
            source = request.source.id,
            "regions merged"
        );
        self.merge_wait = None;
        self.node.storage_mut().set_region(apply, merged);
        // The merged region is measured again by the next split check.
        self.approximate = None;
        self.written_since_check = u64::MAX / 2;
        Ok(CommitApply::Done(Ok(())))
    }

    /// The target replica on this store reached `request`'s CommitMerge: this source replica
    /// finishes. Frozen by that merge, it ends as merged (its Raft state goes, its data and a
    /// tombstone stay); not frozen yet, it commits up to the PrepareMerge (committed, since
    /// the target got the request from the source's leader that applied it) if its log holds
    /// that very entry, and ends at a later call.
    pub fn finish_merge(&mut self, request: &CommitMergeRequest) -> KvResult<()> {
        if self.merged || self.destroyed {
            return Ok(());
        }
        let merge = &request.merge;
        match self.merging() {
            Some(mine) if mine.prepare_index == merge.prepare_index => {
                self.write_end(|storage, batch| storage.destroy_merged(batch))?;
                self.merged = true;
                tracing::info!(
                    store_id = self.meta.store_id,
                    region_id = self.region_id,
                    target = merge.target.id,
                    "merged into its target"
                );
            }
            Some(_) => tracing::warn!(
                region_id = self.region_id,
                "asked to finish a merge other than the one it prepared"
            ),
            None => {
                if !self
                    .node
                    .raft
                    .log
                    .maybe_commit(merge.prepare_index, merge.prepare_term)
                    && self.node.raft.log.committed < merge.prepare_index
                {
                    tracing::debug!(
                        region_id = self.region_id,
                        "the merge's PrepareMerge is not in this replica's log yet"
                    );
                }
            }
        }
        Ok(())
    }
}
