//! [`TxnRequest`] and [`TxnResponse`]: the Percolator commands as values.
//!
//! Every layer that carries a command — the store that runs it ([`super::TxnStore`]), a
//! region replica that checks its keys first (`raftstore::store_commands`), the gRPC client and
//! service (`rpc` maps both directions), the routing client (`client::routing`) — handles one
//! request type in one place ([`super::TxnCommands::execute`]), so a new command is a new
//! variant here and its handling in each layer, not a new method in five trait
//! implementations. [`super::TxnCommandsExt`] gives callers a typed function per command.
//!
//! # Outcomes and errors
//!
//! A command that meets another transaction's lock *answers* it, it does not fail: a read
//! ([`TxnResponse::Get`], [`TxnResponse::Scan`]) answers [`ReadOutcome::Locked`] and a
//! prewrite answers `Prewrite { locked: Some(..) }` (having written nothing), because the
//! client reacts by resolving the lock and trying again. Everything else that goes wrong —
//! write conflicts, aborted transactions, region errors, an unreachable store — is a
//! [`crate::KvError`].
//!
//! # Routing
//!
//! A request tells the router where it runs ([`TxnRequest::route`]): at one key (the region
//! holding it), over several keys (split into one request per region, [`TxnRequest::part`],
//! whose answers are merged, [`TxnResponse::concludes`], [`TxnResponse::absorb`]), or over a key range (walked region by
//! region). [`TxnRequest::keys`] are the keys a region replica checks it holds.

use scheduler_api::Timestamp;

use super::actions::{LockMode, Mutation, TxnStatus};
use crate::mvcc::Lock;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::KvPair;

/// One Percolator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnRequest {
    /// The newest version of `key` visible at `ts`.
    Get { key: Vec<u8>, ts: Timestamp },
    /// The newest versions of `keys` visible at `ts` (the keys that have one).
    BatchGet { keys: Vec<Vec<u8>>, ts: Timestamp },
    /// At most `limit` pairs of `[start, end)` (`None`: unbounded) visible at `ts`.
    Scan {
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        ts: Timestamp,
        limit: usize,
    },
    /// Locks every mutation's key for transaction `start_ts` and stages its value.
    /// `pessimistic[i]` (empty: none): mutation `i`'s key holds the transaction's pessimistic
    /// lock already (see `actions`).
    Prewrite {
        mutations: Vec<Mutation>,
        pessimistic: Vec<bool>,
        primary: Vec<u8>,
        start_ts: Timestamp,
        ttl_ms: u64,
    },
    /// Takes the transaction's pessimistic lock on every key at `for_update_ts` (all or
    /// nothing within a region; a request split over regions may lock some regions' keys
    /// and meet a lock in another, and the caller then releases or retries).
    /// Meeting another transaction's lock, it waits up to `wait_ms` (at most a slice, see
    /// `TxnStore`) for that lock to go, woken when it does (`lock_waits`). `mode`: what a
    /// change newer than `for_update_ts` does, and whether values come back.
    AcquirePessimisticLock {
        keys: Vec<Vec<u8>>,
        primary: Vec<u8>,
        start_ts: Timestamp,
        for_update_ts: Timestamp,
        ttl_ms: u64,
        wait_ms: u64,
        mode: LockMode,
    },
    /// Releases the transaction's pessimistic locks on `keys` taken at or before
    /// `for_update_ts` (a statement undone; no rollback record).
    PessimisticRollback {
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        for_update_ts: Timestamp,
    },
    /// Replaces the transaction's locks on `keys` by write records at `commit_ts`.
    Commit {
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
        commit_ts: Timestamp,
    },
    /// BatchRollback: removes the transaction's locks on `keys`, leaving rollback records.
    Rollback {
        keys: Vec<Vec<u8>>,
        start_ts: Timestamp,
    },
    /// The status of transaction `lock_ts` at its primary; rolls it back if its lock expired
    /// by `current_ts`.
    CheckTxnStatus {
        primary: Vec<u8>,
        lock_ts: Timestamp,
        current_ts: Timestamp,
    },
    /// Commits (`Some`) or rolls back (`None`) every lock of the transaction in the region
    /// holding `key` (a lock of the transaction found there); a store without regions resolves
    /// every lock of the transaction it holds.
    ResolveLock {
        key: Vec<u8>,
        start_ts: Timestamp,
        commit_ts: Option<Timestamp>,
    },
    /// Extends the TTL of the transaction's primary lock to at least `ttl_ms`.
    TxnHeartbeat {
        primary: Vec<u8>,
        start_ts: Timestamp,
        ttl_ms: u64,
    },
    /// To the cluster's deadlock detector, on the leader of the region holding the empty key
    /// (see `txn::detector`): `txn` waits for `wait_for`'s lock on `key` — unless that closes
    /// a cycle of waits, answered `deadlock: true` — or, `clean_up`, no longer does.
    DetectDeadlock {
        txn: Timestamp,
        wait_for: Timestamp,
        key: Vec<u8>,
        clean_up: bool,
    },
}

/// The answer to a [`TxnRequest`], the variant of the same name.
#[derive(Debug, PartialEq, Eq)]
pub enum TxnResponse {
    Get(ReadOutcome<Option<Vec<u8>>>),
    /// The pairs found, in no particular order.
    BatchGet(ReadOutcome<Vec<KvPair>>),
    Scan(ReadOutcome<Vec<KvPair>>),
    /// `locked`: another transaction's lock (and its key) stopped the prewrite, which wrote
    /// nothing.
    Prewrite {
        locked: Option<(Vec<u8>, Lock)>,
    },
    /// `locked`: another transaction's lock (and its key) stopped it, and nothing of this
    /// part was locked. Otherwise `values`: with `mode.return_values`, the newest committed
    /// values of the keys that have one, in no particular order.
    AcquirePessimisticLock {
        locked: Option<(Vec<u8>, Lock)>,
        values: Vec<KvPair>,
    },
    PessimisticRollback,
    Commit,
    Rollback,
    CheckTxnStatus(TxnStatus),
    /// How many keys were resolved.
    ResolveLock(usize),
    /// The primary lock's TTL now.
    TxnHeartbeat(u64),
    /// Whether the wait would close a cycle (and so was not recorded).
    DetectDeadlock {
        deadlock: bool,
    },
}

/// The key whose region's leader runs the cluster's deadlock detector: the first region's
/// (it keeps holding the empty key whatever splits and merges do).
pub const DETECTOR_KEY: &[u8] = b"";

/// Where a request runs, for the routing client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// In the region holding this key.
    Key(&'a [u8]),
    /// In every region holding some of [`TxnRequest::keys`]: one [`TxnRequest::part`] per
    /// region.
    Keys,
    /// Over the key range of a scan, region after region in key order.
    Range,
}

/// The keys of a request (see [`TxnRequest::keys`]).
pub enum Keys<'a> {
    One(std::option::IntoIter<&'a [u8]>),
    Mutations(std::slice::Iter<'a, Mutation>),
    Keys(std::slice::Iter<'a, Vec<u8>>),
}

impl<'a> Iterator for Keys<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Keys::One(key) => key.next(),
            Keys::Mutations(mutations) => mutations.next().map(Mutation::key),
            Keys::Keys(keys) => keys.next().map(Vec::as_slice),
        }
    }
}

impl TxnRequest {
    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            TxnRequest::Get { .. } => "get",
            TxnRequest::BatchGet { .. } => "batch_get",
            TxnRequest::Scan { .. } => "scan",
            TxnRequest::Prewrite { .. } => "prewrite",
            TxnRequest::AcquirePessimisticLock { .. } => "acquire_pessimistic_lock",
            TxnRequest::PessimisticRollback { .. } => "pessimistic_rollback",
            TxnRequest::Commit { .. } => "commit",
            TxnRequest::Rollback { .. } => "rollback",
            TxnRequest::CheckTxnStatus { .. } => "check_txn_status",
            TxnRequest::ResolveLock { .. } => "resolve_lock",
            TxnRequest::TxnHeartbeat { .. } => "txn_heartbeat",
            TxnRequest::DetectDeadlock { .. } => "detect_deadlock",
        }
    }

    /// The user keys the request acts on, which a region must hold for it to run there: a
    /// scan's start key (the scan itself stops at the region's end).
    pub fn keys(&self) -> Keys<'_> {
        match self {
            TxnRequest::Get { key, .. }
            | TxnRequest::ResolveLock { key, .. }
            | TxnRequest::Scan { start: key, .. }
            | TxnRequest::CheckTxnStatus { primary: key, .. }
            | TxnRequest::TxnHeartbeat { primary: key, .. } => {
                Keys::One(Some(key.as_slice()).into_iter())
            }
            TxnRequest::DetectDeadlock { .. } => Keys::One(Some(DETECTOR_KEY).into_iter()),
            TxnRequest::Prewrite { mutations, .. } => Keys::Mutations(mutations.iter()),
            TxnRequest::Commit { keys, .. }
            | TxnRequest::Rollback { keys, .. }
            | TxnRequest::AcquirePessimisticLock { keys, .. }
            | TxnRequest::PessimisticRollback { keys, .. }
            | TxnRequest::BatchGet { keys, .. } => Keys::Keys(keys.iter()),
        }
    }

    /// Where the request runs (see [`Route`]).
    pub fn route(&self) -> Route<'_> {
        match self {
            TxnRequest::Get { key, .. } | TxnRequest::ResolveLock { key, .. } => Route::Key(key),
            TxnRequest::CheckTxnStatus { primary, .. }
            | TxnRequest::TxnHeartbeat { primary, .. } => Route::Key(primary),
            TxnRequest::DetectDeadlock { .. } => Route::Key(DETECTOR_KEY),
            TxnRequest::Prewrite { .. }
            | TxnRequest::AcquirePessimisticLock { .. }
            | TxnRequest::PessimisticRollback { .. }
            | TxnRequest::Commit { .. }
            | TxnRequest::Rollback { .. }
            | TxnRequest::BatchGet { .. } => Route::Keys,
            TxnRequest::Scan { .. } => Route::Range,
        }
    }

    /// The same request over the items (mutations or keys) at `items`, in that order: the
    /// part of a [`Route::Keys`] request that one region holds. A request of one key has one
    /// part, itself.
    pub fn part(&self, items: &[usize]) -> TxnRequest {
        fn pick<T: Clone>(all: &[T], items: &[usize]) -> Vec<T> {
            items.iter().map(|&i| all[i].clone()).collect()
        }
        match self {
            TxnRequest::Prewrite {
                mutations,
                pessimistic,
                primary,
                start_ts,
                ttl_ms,
            } => TxnRequest::Prewrite {
                mutations: pick(mutations, items),
                pessimistic: if pessimistic.is_empty() {
                    Vec::new()
                } else {
                    pick(pessimistic, items)
                },
                primary: primary.clone(),
                start_ts: *start_ts,
                ttl_ms: *ttl_ms,
            },
            TxnRequest::AcquirePessimisticLock {
                keys,
                primary,
                start_ts,
                for_update_ts,
                ttl_ms,
                wait_ms,
                mode,
            } => TxnRequest::AcquirePessimisticLock {
                keys: pick(keys, items),
                primary: primary.clone(),
                start_ts: *start_ts,
                for_update_ts: *for_update_ts,
                ttl_ms: *ttl_ms,
                wait_ms: *wait_ms,
                mode: *mode,
            },
            TxnRequest::PessimisticRollback {
                keys,
                start_ts,
                for_update_ts,
            } => TxnRequest::PessimisticRollback {
                keys: pick(keys, items),
                start_ts: *start_ts,
                for_update_ts: *for_update_ts,
            },
            TxnRequest::Commit {
                keys,
                start_ts,
                commit_ts,
            } => TxnRequest::Commit {
                keys: pick(keys, items),
                start_ts: *start_ts,
                commit_ts: *commit_ts,
            },
            TxnRequest::Rollback { keys, start_ts } => TxnRequest::Rollback {
                keys: pick(keys, items),
                start_ts: *start_ts,
            },
            TxnRequest::BatchGet { keys, ts } => TxnRequest::BatchGet {
                keys: pick(keys, items),
                ts: *ts,
            },
            single => single.clone(),
        }
    }

    /// The answer of a [`Route::Keys`] request without keys: it has nothing to do. `None`
    /// for the other requests, which always name a key.
    pub fn answer_without_keys(&self) -> Option<TxnResponse> {
        match self {
            TxnRequest::Prewrite { .. } => Some(TxnResponse::Prewrite { locked: None }),
            TxnRequest::AcquirePessimisticLock { .. } => {
                Some(TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    values: Vec::new(),
                })
            }
            TxnRequest::PessimisticRollback { .. } => Some(TxnResponse::PessimisticRollback),
            TxnRequest::Commit { .. } => Some(TxnResponse::Commit),
            TxnRequest::Rollback { .. } => Some(TxnResponse::Rollback),
            TxnRequest::BatchGet { .. } => Some(TxnResponse::BatchGet(ReadOutcome::Value(vec![]))),
            _ => None,
        }
    }
}

impl TxnResponse {
    /// Adds the answer of another part of the same split request (see [`concludes`]
    /// for which part's answer wins otherwise): a batch get's parts found different keys,
    /// so their pairs are put together; the parts of a write answer alike.
    ///
    /// [`concludes`]: TxnResponse::concludes
    pub fn absorb(self, other: TxnResponse) -> TxnResponse {
        match (self, other) {
            (
                TxnResponse::BatchGet(ReadOutcome::Value(mut pairs)),
                TxnResponse::BatchGet(ReadOutcome::Value(more)),
            ) => {
                pairs.extend(more);
                TxnResponse::BatchGet(ReadOutcome::Value(pairs))
            }
            (
                TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    mut values,
                },
                TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    values: more,
                },
            ) => {
                values.extend(more);
                TxnResponse::AcquirePessimisticLock {
                    locked: None,
                    values,
                }
            }
            (_, other) => other,
        }
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            TxnResponse::Get(_) => "get",
            TxnResponse::BatchGet(_) => "batch_get",
            TxnResponse::Scan(_) => "scan",
            TxnResponse::Prewrite { .. } => "prewrite",
            TxnResponse::AcquirePessimisticLock { .. } => "acquire_pessimistic_lock",
            TxnResponse::PessimisticRollback => "pessimistic_rollback",
            TxnResponse::Commit => "commit",
            TxnResponse::Rollback => "rollback",
            TxnResponse::CheckTxnStatus(_) => "check_txn_status",
            TxnResponse::ResolveLock(_) => "resolve_lock",
            TxnResponse::TxnHeartbeat(_) => "txn_heartbeat",
            TxnResponse::DetectDeadlock { .. } => "detect_deadlock",
        }
    }

    /// Whether this answer of one part of a request split by region is the answer of the
    /// whole: it met a lock, so the client resolves it before anything else. The parts of a
    /// multi-key write answer nothing else, so otherwise any part's answer is the whole's.
    pub fn concludes(&self) -> bool {
        matches!(
            self,
            TxnResponse::Get(ReadOutcome::Locked { .. })
                | TxnResponse::BatchGet(ReadOutcome::Locked { .. })
                | TxnResponse::Scan(ReadOutcome::Locked { .. })
                | TxnResponse::Prewrite { locked: Some(_) }
                | TxnResponse::AcquirePessimisticLock {
                    locked: Some(_),
                    ..
                }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str) -> Mutation {
        Mutation::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        }
    }

    #[test]
    fn a_multi_key_request_splits_into_parts_over_its_items() {
        let prewrite = TxnRequest::Prewrite {
            mutations: vec![put("a"), put("b"), put("c")],
            pessimistic: vec![true, false, true],
            primary: b"a".to_vec(),
            start_ts: Timestamp(5),
            ttl_ms: 10,
        };
        assert_eq!(prewrite.route(), Route::Keys);
        assert_eq!(
            prewrite.keys().collect::<Vec<_>>(),
            [b"a".as_slice(), b"b", b"c"]
        );
        // A part keeps the primary, even when the primary's key is in another part.
        assert_eq!(
            prewrite.part(&[2, 1]),
            TxnRequest::Prewrite {
                mutations: vec![put("c"), put("b")],
                pessimistic: vec![true, false],
                primary: b"a".to_vec(),
                start_ts: Timestamp(5),
                ttl_ms: 10,
            }
        );
        let commit = TxnRequest::Commit {
            keys: vec![b"a".to_vec(), b"b".to_vec()],
            start_ts: Timestamp(5),
            commit_ts: Timestamp(7),
        };
        assert_eq!(
            commit.part(&[1]),
            TxnRequest::Commit {
                keys: vec![b"b".to_vec()],
                start_ts: Timestamp(5),
                commit_ts: Timestamp(7),
            }
        );
        assert_eq!(commit.answer_without_keys(), Some(TxnResponse::Commit));
    }

    #[test]
    fn single_key_requests_route_by_their_key_and_scans_by_range() {
        let status = TxnRequest::CheckTxnStatus {
            primary: b"p".to_vec(),
            lock_ts: Timestamp(5),
            current_ts: Timestamp(6),
        };
        assert_eq!(status.route(), Route::Key(b"p"));
        assert_eq!(status.keys().collect::<Vec<_>>(), [b"p".as_slice()]);
        assert_eq!(status.answer_without_keys(), None);
        let scan = TxnRequest::Scan {
            start: b"s".to_vec(),
            end: None,
            ts: Timestamp(5),
            limit: 1,
        };
        assert_eq!(scan.route(), Route::Range);
        assert_eq!(scan.keys().collect::<Vec<_>>(), [b"s".as_slice()]);
    }

    #[test]
    fn only_a_lock_met_concludes_a_split_request() {
        let lock = Lock {
            kind: crate::mvcc::LockKind::Put,
            primary: b"p".to_vec(),
            start_ts: Timestamp(3),
            ttl_ms: 100,
            for_update_ts: Timestamp(0),
        };
        assert!(
            TxnResponse::Prewrite {
                locked: Some((b"k".to_vec(), lock))
            }
            .concludes()
        );
        assert!(!TxnResponse::Prewrite { locked: None }.concludes());
        assert!(!TxnResponse::Commit.concludes());
    }
}
