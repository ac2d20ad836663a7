//! [`WaitForGraph`]: the deadlock detector's state — which transaction waits for which —
//! as a pure structure (TiKV's detector: one per cluster, on the leader of a fixed region,
//! that every store reports its lock waits to; the placement and the reports are not here).
//!
//! # Protocol
//!
//! - A transaction about to wait for another's lock asks [`WaitForGraph::detect`]: if the
//!   holder already waits, directly or through others, for the waiter, the new edge would
//!   close a cycle, and the answer is the cycle (the waiter is then refused with a deadlock
//!   error, and the others go on). Otherwise the edge is recorded.
//! - A waiter that stops waiting (woken, timed out, gone) removes its edge
//!   ([`WaitForGraph::clean_up_wait_for`]); a transaction that ends removes every edge from
//!   and to it ([`WaitForGraph::clean_up`]).
//! - Edges expire after a TTL ([`WaitForGraph::expire`]), so a report lost with a crashed
//!   store does not leave a phantom wait behind for long.
//!
//! Time is passed in, never read, so the graph is deterministic in tests.
//!
//! Deliberately not here: which transaction of a cycle is the victim beyond "the one whose
//! wait would close it" (TiKV does the same), and any sharding of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use scheduler_api::Timestamp;

/// One wait: `txn` waits for `wait_for` on the key `key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitFor {
    pub txn: Timestamp,
    pub wait_for: Timestamp,
    pub key: Vec<u8>,
}

/// How long an edge lives without being reported again.
pub const EDGE_TTL: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct WaitForGraph {
    /// Per waiting transaction: the transactions it waits for, each with the key and when
    /// the wait was reported.
    edges: BTreeMap<Timestamp, BTreeMap<Timestamp, (Vec<u8>, Instant)>>,
}

impl WaitForGraph {
    pub fn new() -> WaitForGraph {
        WaitForGraph::default()
    }

    /// Records that `wait.txn` waits for `wait.wait_for`, unless that closes a cycle: then
    /// nothing is recorded and the answer is the cycle, starting with the new wait.
    pub fn detect(&mut self, wait: WaitFor, now: Instant) -> Option<Vec<WaitFor>> {
        self.expire(now);
        if let Some(mut path) = self.path(wait.wait_for, wait.txn) {
            path.insert(0, wait);
            return Some(path);
        }
        self.edges
            .entry(wait.txn)
            .or_default()
            .insert(wait.wait_for, (wait.key, now));
        None
    }

    /// The waits from `from` leading to `to`, if `from` waits for `to` through some chain.
    fn path(&self, from: Timestamp, to: Timestamp) -> Option<Vec<WaitFor>> {
        // Depth-first, remembering how each transaction was reached.
        let mut reached: BTreeMap<Timestamp, Option<Timestamp>> = BTreeMap::new();
        reached.insert(from, None);
        let mut stack = vec![from];
        let mut seen = BTreeSet::new();
        while let Some(txn) = stack.pop() {
            if !seen.insert(txn) {
                continue;
            }
            for &next in self.edges.get(&txn).into_iter().flat_map(|e| e.keys()) {
                reached.entry(next).or_insert(Some(txn));
                if next == to {
                    return Some(self.chain(&reached, to));
                }
                stack.push(next);
            }
        }
        None
    }

    /// The waits along the reached chain ending at `end`.
    fn chain(
        &self,
        reached: &BTreeMap<Timestamp, Option<Timestamp>>,
        end: Timestamp,
    ) -> Vec<WaitFor> {
        let mut waits = Vec::new();
        let mut at = end;
        while let Some(&Some(before)) = reached.get(&at) {
            let key = self.edges[&before][&at].0.clone();
            waits.push(WaitFor {
                txn: before,
                wait_for: at,
                key,
            });
            at = before;
        }
        waits.reverse();
        waits
    }

    /// `txn` no longer waits for `wait_for`.
    pub fn clean_up_wait_for(&mut self, txn: Timestamp, wait_for: Timestamp) {
        if let Some(waits) = self.edges.get_mut(&txn) {
            waits.remove(&wait_for);
            if waits.is_empty() {
                self.edges.remove(&txn);
            }
        }
    }

    /// `txn` ended: no wait from or to it is left.
    pub fn clean_up(&mut self, txn: Timestamp) {
        self.edges.remove(&txn);
        self.edges.retain(|_, waits| {
            waits.remove(&txn);
            !waits.is_empty()
        });
    }

    /// Drops the waits reported more than [`EDGE_TTL`] before `now`.
    pub fn expire(&mut self, now: Instant) {
        self.edges.retain(|_, waits| {
            waits.retain(|_, (_, at)| now.saturating_duration_since(*at) < EDGE_TTL);
            !waits.is_empty()
        });
    }

    /// How many waits are recorded.
    pub fn len(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(txn: u64, wait_for: u64, key: &str) -> WaitFor {
        WaitFor {
            txn: Timestamp(txn),
            wait_for: Timestamp(wait_for),
            key: key.as_bytes().to_vec(),
        }
    }

    #[test]
    fn two_transactions_waiting_for_each_other_are_a_deadlock() {
        let now = Instant::now();
        let mut graph = WaitForGraph::new();
        assert_eq!(graph.detect(wait(1, 2, "a"), now), None);
        let cycle = graph.detect(wait(2, 1, "b"), now).expect("a deadlock");
        assert_eq!(cycle, vec![wait(2, 1, "b"), wait(1, 2, "a")]);
        // The refused wait was not recorded.
        assert_eq!(graph.len(), 1);
    }

    #[test]
    fn a_cycle_of_three_is_found_with_its_keys_and_a_chain_is_not_a_cycle() {
        let now = Instant::now();
        let mut graph = WaitForGraph::new();
        assert_eq!(graph.detect(wait(1, 2, "a"), now), None);
        assert_eq!(graph.detect(wait(2, 3, "b"), now), None);
        // 4 waits for 1: a longer chain, no cycle.
        assert_eq!(graph.detect(wait(4, 1, "d"), now), None);
        let cycle = graph.detect(wait(3, 1, "c"), now).expect("a deadlock");
        assert_eq!(
            cycle,
            vec![wait(3, 1, "c"), wait(1, 2, "a"), wait(2, 3, "b")]
        );
    }

    #[test]
    fn waits_that_ended_or_expired_close_no_cycle() {
        let now = Instant::now();
        let mut graph = WaitForGraph::new();
        graph.detect(wait(1, 2, "a"), now);
        graph.clean_up_wait_for(Timestamp(1), Timestamp(2));
        assert_eq!(graph.detect(wait(2, 1, "b"), now), None);
        // Transaction 2 ends: its waits and the waits for it go.
        graph.detect(wait(3, 2, "c"), now);
        graph.clean_up(Timestamp(2));
        assert!(graph.is_empty());
        // A wait reported long ago has expired.
        graph.detect(wait(5, 6, "e"), now);
        let later = now + EDGE_TTL + Duration::from_millis(1);
        assert_eq!(graph.detect(wait(6, 5, "f"), later), None);
        assert_eq!(graph.len(), 1);
    }
}
