//! Linearizable reads without writing to the log: ReadIndex (thesis §6.4).
//!
//! The leader records its commit index for the request and confirms it is still leader by a
//! heartbeat round acknowledged by a majority (the heartbeats carry the request's context).
//! Once confirmed, the request — and every earlier one, confirmed by the same round — may read
//! state applied up to that index. A new leader serves reads only after an entry of its own
//! term commits, since only then does its commit index cover every committed entry.

use std::collections::{BTreeSet, VecDeque};

use crate::types::{Index, NodeId};

/// A read that may proceed once the application has applied `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub index: Index,
    pub context: Vec<u8>,
}

#[derive(Clone, Debug)]
pub struct ReadRequest {
    pub context: Vec<u8>,
    pub index: Index,
    /// The follower that forwarded it; `None` for the leader's own requests.
    pub from: Option<NodeId>,
    acks: BTreeSet<NodeId>,
}

#[derive(Clone, Debug, Default)]
pub struct ReadOnly {
    pending: VecDeque<ReadRequest>,
}

impl ReadOnly {
    /// Starts a confirmation round; `leader_ack` is the leader itself when it is a voter (a
    /// leader handing off after its own removal does not count toward the quorum).
    pub fn add(
        &mut self,
        context: Vec<u8>,
        index: Index,
        from: Option<NodeId>,
        leader_ack: Option<NodeId>,
    ) {
        if self.pending.iter().any(|r| r.context == context) {
            return;
        }
        let acks = leader_ack.into_iter().collect::<BTreeSet<_>>();
        self.pending.push_back(ReadRequest {
            context,
            index,
            from,
            acks,
        });
    }

    /// Records `from`'s acknowledgement of the round for `context`; returns how many nodes have
    /// acknowledged it.
    pub fn ack(&mut self, context: &[u8], from: NodeId) -> usize {
        match self.pending.iter_mut().find(|r| r.context == context) {
            Some(request) => {
                request.acks.insert(from);
                request.acks.len()
            }
            None => 0,
        }
    }

    /// Releases the request for `context` and every request before it.
    pub fn release_to(&mut self, context: &[u8]) -> Vec<ReadRequest> {
        let Some(position) = self.pending.iter().position(|r| r.context == context) else {
            return Vec::new();
        };
        self.pending.drain(..=position).collect()
    }

    pub fn last_context(&self) -> Option<Vec<u8>> {
        self.pending.back().map(|r| r.context.clone())
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }
}
