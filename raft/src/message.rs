//! Messages between Raft nodes.

use crate::types::{Entry, Index, NodeId, Snapshot, Term};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    /// The sender's term. Local-only requests (forwarded proposals, transfer and read
    /// requests) carry 0 and are not subject to term checks.
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MessageBody {
    /// Pre-vote (thesis §9.6): would you vote for me in `term` (not yet adopted)?
    PreVote {
        last_index: Index,
        last_term: Term,
    },
    PreVoteResponse {
        reject: bool,
    },
    /// RequestVote (§5.2).
    Vote {
        last_index: Index,
        last_term: Term,
        leader_transfer: bool,
    },
    VoteResponse {
        reject: bool,
    },
    /// AppendEntries (§5.3).
    Append {
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
    },
    /// `index`: on success the follower's new last index covered by the message; on reject the
    /// index that did not match. `hint_index`/`hint_term`: where the follower's log could
    /// match (its last index, or the first index of the conflicting term), so the leader can
    /// skip back a whole term at a time (§5.3, "optimization").
    AppendResponse {
        reject: bool,
        index: Index,
        hint_index: Index,
        hint_term: Term,
    },
    /// Heartbeat: asserts leadership and carries the commit index, limited by the follower's
    /// known match so a follower never commits entries it has not verified. `context` is set
    /// for a read-index round.
    Heartbeat {
        commit: Index,
        context: Option<Vec<u8>>,
    },
    HeartbeatResponse {
        context: Option<Vec<u8>>,
    },
    /// InstallSnapshot (§7).
    Snapshot {
        snapshot: Snapshot,
    },
    /// Leader transfer (thesis §3.10): start an election now, ignoring the lease.
    TimeoutNow,
    /// A client request forwarded from a follower to its leader.
    Propose {
        data: Vec<u8>,
    },
    TransferLeader {
        target: NodeId,
    },
    ReadIndex {
        context: Vec<u8>,
    },
    /// The leader's answer to a forwarded read: read at `index` once applied.
    ReadIndexResponse {
        index: Index,
        context: Vec<u8>,
    },
}

impl MessageBody {
    /// A short name, for logs and test output.
    pub fn name(&self) -> &'static str {
        match self {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::Snapshot { .. } => "Snapshot",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::Propose { .. } => "Propose",
            MessageBody::TransferLeader { .. } => "TransferLeader",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }

    /// Whether this is a request forwarded between nodes of the same group, outside the term
    /// rules.
    pub fn is_local_request(&self) -> bool {
        matches!(
            self,
            MessageBody::Propose { .. }
                | MessageBody::TransferLeader { .. }
                | MessageBody::ReadIndex { .. }
                | MessageBody::ReadIndexResponse { .. }
        )
    }
}
