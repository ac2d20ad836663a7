//! Configuration of a Raft node.

use crate::types::{Index, NodeId};

#[derive(Clone, Debug)]
pub struct Config {
    pub id: NodeId,
    /// Ticks without hearing from a leader before a follower campaigns. The actual timeout is
    /// drawn uniformly from `[election_tick, 2 * election_tick)` each time it is reset.
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats. Must be below `election_tick`.
    pub heartbeat_tick: usize,
    /// Pre-vote (thesis §9.6): a node asks whether it could win before bumping its term, so a
    /// node returning from a partition does not disrupt the cluster.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority for an election timeout, and
    /// followers ignore vote requests while they have a live leader (thesis §6.2, §4.2.3).
    pub check_quorum: bool,
    /// Serve reads on the leader's lease (requires `check_quorum`) instead of a heartbeat round.
    pub lease_read: bool,
    /// Unacknowledged appends allowed per follower in replicate mode.
    pub max_inflight: usize,
    /// Upper bound on the entry bytes in one append message (at least one entry is sent).
    pub max_size_per_msg: u64,
    /// The last index the application has applied (on restart), so nothing is re-applied.
    pub applied: Index,
    /// Seed for the election timeout randomisation.
    pub seed: u64,
}

impl Config {
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            lease_read: false,
            max_inflight: 256,
            max_size_per_msg: 1 << 20,
            applied: 0,
            seed: id,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("node id 0 is reserved for \"none\"".into());
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            return Err(
                "election_tick must be greater than heartbeat_tick, which must be positive".into(),
            );
        }
        if self.lease_read && !self.check_quorum {
            return Err("lease reads need check_quorum".into());
        }
        Ok(())
    }
}
