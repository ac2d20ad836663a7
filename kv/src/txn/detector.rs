//! [`Detector`]: deadlock detection for the whole cluster — where lock waits are reported,
//! and where the one wait-for graph ([`WaitForGraph`]) lives.
//!
//! # Protocol
//!
//! - A lock wait (`TxnStore`) that lasts longer than [`DETECT_AFTER`] is reported
//!   ([`Detector::report_wait`]), as PostgreSQL checks for deadlocks only once a wait has
//!   lasted `deadlock_timeout`: most waits end sooner, and cost no report. If the wait would
//!   close a cycle, the waiter is refused with a deadlock error (SQLSTATE 40P01) and the
//!   others of the cycle go on. A reported wait that ends is withdrawn
//!   ([`Detector::report_wait_end`], best effort: edges also expire).
//! - The graph of a cluster is kept by one store: the one whose replica leads the region
//!   holding [`DETECTOR_KEY`](super::request::DETECTOR_KEY) (TiKV's placement). Reports are [`TxnRequest::DetectDeadlock`]
//!   commands sent through the cluster's routing client ([`Detector::send_reports_to`]), so
//!   they follow that region's leader as it moves, like any command. A report is answered
//!   only after a read barrier: by a replica that still leads.
//! - A store that takes over the role starts from an empty graph (the graph is tagged with
//!   the leader term it was built in, and reset when a report comes with another term).
//!   Waiters report again every slice of their wait (`MAX_LOCK_WAIT_SLICE`), so a cycle
//!   whose edges were lost with the old leader is found again within a slice.
//! - A store that has no routing client (a store without regions, or tests) keeps its own
//!   graph: then it is the whole cluster.
//! - The detector unreachable, a wait goes on (bounded by its slice and `lock_timeout`) and
//!   reports again in its next slice. The routing client reports go through gives up soon
//!   ([`REPORT_TIMEOUT`]), well within a slice; withdrawals are sent in the background.
//!
//! Deliberately not here: choosing a victim other than the transaction whose wait closes the
//! cycle, and batching reports.

use std::sync::{Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use scheduler_api::Timestamp;

use super::commands::TxnCommands;
use super::deadlock::{WaitFor, WaitForGraph};
use super::request::{TxnRequest, TxnResponse};
use crate::error::{KvError, KvResult};

/// How long a lock wait lasts before it is reported to the detector.
pub const DETECT_AFTER: Duration = Duration::from_millis(300);

/// How long the routing client that carries reports keeps trying to reach the detector.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Detector {
    /// The graph this store keeps while it runs the detector, with the leader term it was
    /// built in (0 for a store without replication).
    graph: Mutex<(u64, WaitForGraph)>,
    /// Where this store's reports go: the cluster's routing client (weak: the client holds
    /// the store). Unset or gone: to `graph`.
    reports_to: OnceLock<Weak<dyn TxnCommands>>,
}

impl Detector {
    /// Sends this store's reports through `commands` (the cluster's routing client), to the
    /// store that runs the detector.
    pub fn send_reports_to(&self, commands: Weak<dyn TxnCommands>) {
        let _ = self.reports_to.set(commands);
    }

    /// `wait.txn` is waiting for `wait.wait_for`: whether that closes a cycle of waits (then
    /// it is not recorded, and the waiter must give up).
    pub fn report_wait(&self, wait: &WaitFor) -> KvResult<bool> {
        let Some(detector) = self.reports_to.get().and_then(Weak::upgrade) else {
            return Ok(self.handle(None, wait, false));
        };
        let request = TxnRequest::DetectDeadlock {
            txn: wait.txn,
            wait_for: wait.wait_for,
            key: wait.key.clone(),
            clean_up: false,
        };
        match detector.execute(&request)? {
            TxnResponse::DetectDeadlock { deadlock } => Ok(deadlock),
            other => Err(KvError::Server(format!(
                "detect_deadlock answered {}",
                other.name()
            ))),
        }
    }

    /// A reported wait ended. Sent in the background (the waiter goes on at once), best
    /// effort: a lost withdrawal expires.
    pub fn report_wait_end(&self, txn: Timestamp, wait_for: Timestamp) {
        let wait = WaitFor {
            txn,
            wait_for,
            key: Vec::new(),
        };
        let Some(detector) = self.reports_to.get().and_then(Weak::upgrade) else {
            self.handle(None, &wait, true);
            return;
        };
        let request = TxnRequest::DetectDeadlock {
            txn,
            wait_for,
            key: Vec::new(),
            clean_up: true,
        };
        let sent = std::thread::Builder::new()
            .name("deadlock-withdraw".into())
            .spawn(move || {
                if let Err(e) = detector.execute(&request) {
                    tracing::debug!(error = %e, "withdrawing a lock wait from the deadlock detector failed");
                }
            });
        if let Err(e) = sent {
            tracing::debug!(error = %e, "could not start a thread to withdraw a lock wait");
        }
    }

    /// Runs a report at this store, as the detector: `term` is the leader term in which this
    /// store's replica of the detector's region confirmed its leadership (`None`: no
    /// confirmation — a withdrawal, or a store that is its own detector). Answers whether the
    /// wait closes a cycle.
    pub fn handle(&self, term: Option<u64>, wait: &WaitFor, clean_up: bool) -> bool {
        let mut guard = self.graph.lock().unwrap_or_else(|e| e.into_inner());
        let (graph_term, graph) = &mut *guard;
        // Only a newer term resets: a report whose barrier passed before a re-election must
        // not wipe the graph the new term built.
        if let Some(term) = term
            && term > *graph_term
        {
            // A new leadership: the old graph may hold waits long withdrawn elsewhere.
            *graph_term = term;
            *graph = WaitForGraph::new();
        }
        if clean_up {
            graph.clean_up_wait_for(wait.txn, wait.wait_for);
            return false;
        }
        graph.detect(wait.clone(), Instant::now()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(txn: u64, wait_for: u64) -> WaitFor {
        WaitFor {
            txn: Timestamp(txn),
            wait_for: Timestamp(wait_for),
            key: b"k".to_vec(),
        }
    }

    #[test]
    fn a_new_leader_term_starts_an_empty_graph_and_withdrawals_need_no_term() {
        let detector = Detector::default();
        assert!(!detector.handle(Some(5), &wait(1, 2), false));
        assert!(detector.handle(Some(5), &wait(2, 1), false), "a cycle");
        // A newer term: the wait 1 -> 2 is forgotten, 2 -> 1 is recorded.
        assert!(!detector.handle(Some(6), &wait(2, 1), false));
        // A report from an older term does not reset the graph.
        assert!(
            detector.handle(Some(5), &wait(1, 2), false),
            "still a cycle"
        );
        detector.handle(None, &wait(2, 1), true);
        assert!(!detector.handle(Some(6), &wait(1, 2), false), "withdrawn");
    }

    #[test]
    fn without_a_routing_client_the_store_keeps_its_own_graph() {
        let detector = Detector::default();
        assert!(!detector.report_wait(&wait(1, 2)).unwrap());
        assert!(detector.report_wait(&wait(2, 1)).unwrap());
        detector.report_wait_end(Timestamp(1), Timestamp(2));
        // (Without a routing client the withdrawal is immediate.)
        assert!(!detector.report_wait(&wait(2, 1)).unwrap());
    }
}
