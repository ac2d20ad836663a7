//! The values Raft works with: log entries, persistent state, membership, snapshots.

use std::collections::BTreeSet;

pub type NodeId = u64;
pub type Term = u64;
pub type Index = u64;

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// Application data (empty for the entry a new leader appends to commit its term).
    Normal,
    /// An encoded [`ConfChange`].
    ConfChange,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    pub fn normal(term: Term, index: Index, data: Vec<u8>) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        }
    }

    /// Approximate size in bytes, for message size limits.
    pub fn size(&self) -> u64 {
        self.data.len() as u64 + 24
    }
}

/// State that must be persisted before any message that depends on it is sent (§5.1, Figure 2:
/// "updated on stable storage before responding to RPCs").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Cluster membership: voters decide elections and commits, learners only receive the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: BTreeSet<NodeId>,
    pub learners: BTreeSet<NodeId>,
}

impl ConfState {
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> ConfState {
        ConfState {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }

    /// Every member, voters and learners.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }
}

/// A single-step membership change (§4.1 of Ongaro's thesis: one server at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChange {
    /// Add a voter, or promote a learner to voter.
    AddVoter(NodeId),
    /// Add a learner (a voter cannot be demoted this way).
    AddLearner(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

impl ConfChange {
    pub fn encode(&self) -> Vec<u8> {
        let (tag, id) = match self {
            ConfChange::AddVoter(id) => (1u8, id),
            ConfChange::AddLearner(id) => (2, id),
            ConfChange::Remove(id) => (3, id),
        };
        let mut out = vec![tag];
        out.extend_from_slice(&id.to_be_bytes());
        out
    }

    pub fn decode(data: &[u8]) -> Option<ConfChange> {
        Self::decode_with_context(data).map(|(change, _)| change)
    }

    /// Decodes a conf change entry's data: the change, then the application's context (for
    /// example, where the new member lives), as proposed with
    /// [`crate::RawNode::propose_conf_change_with_context`].
    pub fn decode_with_context(data: &[u8]) -> Option<(ConfChange, &[u8])> {
        const LEN: usize = 1 + std::mem::size_of::<NodeId>();
        if data.len() < LEN {
            return None;
        }
        let (change, context) = data.split_at(LEN);
        let (&tag, id) = change.split_first()?;
        let id = NodeId::from_be_bytes(id.try_into().ok()?);
        let change = match tag {
            1 => ConfChange::AddVoter(id),
            2 => ConfChange::AddLearner(id),
            3 => ConfChange::Remove(id),
            _ => return None,
        };
        Some((change, context))
    }

    pub fn node(&self) -> NodeId {
        match *self {
            ConfChange::AddVoter(id) | ConfChange::AddLearner(id) | ConfChange::Remove(id) => id,
        }
    }

    /// The membership after this change. Harmless changes (adding a member again, removing a
    /// non-member) leave it as it is.
    pub fn apply_to(&self, conf: &ConfState) -> ConfState {
        let mut next = conf.clone();
        match *self {
            ConfChange::AddVoter(id) => {
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            ConfChange::AddLearner(id) => {
                if !next.voters.contains(&id) {
                    next.learners.insert(id);
                }
            }
            ConfChange::Remove(id) => {
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
        }
        next
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last entry the snapshot covers, and its term.
    pub index: Index,
    pub term: Term,
    /// Membership as of `index`.
    pub conf_state: ConfState,
}

/// The application's state as of `meta.index`, replacing the log up to there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.meta.index == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_changes_round_trip_and_apply() {
        for cc in [
            ConfChange::AddVoter(7),
            ConfChange::AddLearner(u64::MAX),
            ConfChange::Remove(1),
        ] {
            assert_eq!(ConfChange::decode(&cc.encode()), Some(cc));
        }
        assert_eq!(ConfChange::decode(&[9, 0]), None);
        let with_context = [ConfChange::Remove(4).encode(), b"ctx".to_vec()].concat();
        assert_eq!(
            ConfChange::decode_with_context(&with_context),
            Some((ConfChange::Remove(4), &b"ctx"[..]))
        );
        assert_eq!(
            ConfChange::decode(&with_context),
            Some(ConfChange::Remove(4))
        );
        let mut bad_tag = with_context.clone();
        bad_tag[0] = 0;
        assert_eq!(ConfChange::decode_with_context(&bad_tag), None);
        let conf = ConfState::with_voters([1, 2]);
        let with_learner = ConfChange::AddLearner(3).apply_to(&conf);
        assert!(with_learner.learners.contains(&3));
        let promoted = ConfChange::AddVoter(3).apply_to(&with_learner);
        assert!(promoted.voters.contains(&3) && promoted.learners.is_empty());
        // A voter is not demoted by AddLearner; removing a non-member changes nothing.
        assert_eq!(ConfChange::AddLearner(1).apply_to(&conf), conf);
        assert_eq!(ConfChange::Remove(9).apply_to(&conf), conf);
    }
}
