//! The Percolator actions' edge cases, driven directly against a store.

use std::sync::Arc;

use scheduler::Timestamp;

use super::TxnStore;
use super::actions::{Mutation, PrewriteError, TxnStatus};
use crate::error::KvError;
use crate::mvcc::reader::ReadOutcome;
use crate::storage::MemoryEngine;

fn store() -> TxnStore<MemoryEngine> {
    TxnStore::new(Arc::new(MemoryEngine::new()))
}

fn put(key: &str, value: &str) -> Mutation {
    Mutation::Put {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
    }
}

fn ts(physical_ms: u64) -> Timestamp {
    Timestamp::compose(physical_ms, 0)
}

fn get(store: &TxnStore<MemoryEngine>, key: &str, at: Timestamp) -> Option<String> {
    match store.get(key.as_bytes(), at).unwrap() {
        ReadOutcome::Value(v) => v.map(|v| String::from_utf8(v).unwrap()),
        ReadOutcome::Locked { .. } => panic!("{key} is locked at {at}"),
    }
}

#[test]
fn reads_below_and_above_a_commit() {
    let s = store();
    s.prewrite(&[put("k", "v")], b"k", ts(10), 1000).unwrap();
    s.commit(&[b"k".to_vec()], ts(10), ts(20)).unwrap();
    assert_eq!(get(&s, "k", ts(19)), None);
    assert_eq!(get(&s, "k", ts(20)).as_deref(), Some("v"));
    assert_eq!(get(&s, "k", ts(30)).as_deref(), Some("v"));
}

#[test]
fn a_lock_blocks_reads_at_or_after_its_start_only() {
    let s = store();
    s.prewrite(&[put("k", "v")], b"k", ts(10), 1000).unwrap();
    assert_eq!(get(&s, "k", ts(9)), None);
    assert!(matches!(
        s.get(b"k", ts(10)).unwrap(),
        ReadOutcome::Locked { .. }
    ));
    assert!(matches!(
        s.scan(b"", None, ts(11), 10).unwrap(),
        ReadOutcome::Locked { .. }
    ));
}

#[test]
fn prewrite_and_commit_are_idempotent() {
    let s = store();
    s.prewrite(&[put("a", "1"), put("b", "1")], b"a", ts(10), 1000)
        .unwrap();
    s.prewrite(&[put("a", "1"), put("b", "1")], b"a", ts(10), 1000)
        .unwrap();
    s.commit(&[b"a".to_vec(), b"b".to_vec()], ts(10), ts(20))
        .unwrap();
    s.commit(&[b"a".to_vec(), b"b".to_vec()], ts(10), ts(20))
        .unwrap();
    // A retried prewrite after the commit changes nothing either.
    s.prewrite(&[put("a", "1")], b"a", ts(10), 1000).unwrap();
    assert!(matches!(
        s.get(b"a", ts(30)).unwrap(),
        ReadOutcome::Value(Some(_))
    ));
}

#[test]
fn prewrite_fails_on_newer_writes_and_foreign_locks_and_applies_nothing() {
    let s = store();
    s.prewrite(&[put("k", "v")], b"k", ts(10), 1000).unwrap();
    s.commit(&[b"k".to_vec()], ts(10), ts(20)).unwrap();
    // Started before the commit: write conflict, and "fresh" is not locked either.
    let err = s
        .prewrite(&[put("fresh", "x"), put("k", "x")], b"fresh", ts(15), 1000)
        .unwrap_err();
    assert!(matches!(
        err,
        PrewriteError::Failed(KvError::WriteConflict { .. })
    ));
    assert_eq!(get(&s, "fresh", ts(100)), None);
    // A foreign lock.
    s.prewrite(&[put("k", "y")], b"k", ts(30), 1000).unwrap();
    let err = s
        .prewrite(&[put("k", "z")], b"k", ts(31), 1000)
        .unwrap_err();
    assert!(matches!(err, PrewriteError::Locked { .. }));
}

#[test]
fn commit_after_rollback_and_rollback_after_commit_are_refused() {
    let s = store();
    s.prewrite(&[put("k", "v")], b"k", ts(10), 1000).unwrap();
    s.rollback(&[b"k".to_vec()], ts(10)).unwrap();
    assert!(matches!(
        s.commit(&[b"k".to_vec()], ts(10), ts(20)),
        Err(KvError::TxnAborted { .. })
    ));
    // The rollback record stops a late prewrite of the same transaction.
    assert!(s.prewrite(&[put("k", "v")], b"k", ts(10), 1000).is_err());

    s.prewrite(&[put("j", "v")], b"j", ts(30), 1000).unwrap();
    s.commit(&[b"j".to_vec()], ts(30), ts(40)).unwrap();
    assert!(s.rollback(&[b"j".to_vec()], ts(30)).is_err());
    // Commit without any lock or record of the transaction: not a silent success.
    assert!(matches!(
        s.commit(&[b"q".to_vec()], ts(50), ts(60)),
        Err(KvError::TxnAborted { .. })
    ));
}

#[test]
fn check_txn_status_decides_and_records() {
    let s = store();
    s.prewrite(&[put("p", "v")], b"p", ts(1000), 100).unwrap();
    assert_eq!(
        s.check_txn_status(b"p", ts(1000), ts(1050)).unwrap(),
        TxnStatus::Alive { ttl_ms: 100 }
    );
    assert_eq!(
        s.check_txn_status(b"p", ts(1000), ts(1100)).unwrap(),
        TxnStatus::RolledBack
    );
    assert_eq!(get(&s, "p", ts(2000)), None);

    s.prewrite(&[put("q", "v")], b"q", ts(3000), 100).unwrap();
    s.commit(&[b"q".to_vec()], ts(3000), ts(3001)).unwrap();
    assert_eq!(
        s.check_txn_status(b"q", ts(3000), ts(9000)).unwrap(),
        TxnStatus::Committed {
            commit_ts: ts(3001)
        }
    );

    // Nothing written at all: a rollback record is left so a late prewrite fails.
    assert_eq!(
        s.check_txn_status(b"r", ts(4000), ts(4001)).unwrap(),
        TxnStatus::RolledBack
    );
    assert!(
        s.prewrite(&[put("r", "late")], b"r", ts(4000), 100)
            .is_err()
    );
}

#[test]
fn scans_skip_deleted_and_rolled_back_versions() {
    let s = store();
    s.prewrite(
        &[put("a", "1"), put("b", "1"), put("c", "1")],
        b"a",
        ts(10),
        1000,
    )
    .unwrap();
    s.commit(
        &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()],
        ts(10),
        ts(11),
    )
    .unwrap();
    s.prewrite(
        &[Mutation::Delete { key: b"b".to_vec() }],
        b"b",
        ts(20),
        1000,
    )
    .unwrap();
    s.commit(&[b"b".to_vec()], ts(20), ts(21)).unwrap();
    s.prewrite(&[put("c", "2")], b"c", ts(30), 1000).unwrap();
    s.rollback(&[b"c".to_vec()], ts(30)).unwrap();
    let ReadOutcome::Value(rows) = s.scan(b"", None, ts(40), 10).unwrap() else {
        panic!()
    };
    let keys: Vec<(Vec<u8>, Vec<u8>)> = rows;
    assert_eq!(
        keys,
        vec![
            (b"a".to_vec(), b"1".to_vec()),
            (b"c".to_vec(), b"1".to_vec())
        ]
    );
    let ReadOutcome::Value(old) = s.scan(b"", None, ts(15), 10).unwrap() else {
        panic!()
    };
    assert_eq!(old.len(), 3);
}
