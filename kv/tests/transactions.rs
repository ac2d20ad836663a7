//! Behaviour of Percolator transactions through the client. Every test runs twice: with the
//! store in-process and with the store behind its gRPC service.

mod support;

use std::sync::Arc;
use std::time::Duration;

use kv::mvcc::reader::ReadOutcome;
use kv::storage::{Cf, Engine, MemoryEngine, Snapshot};
use kv::txn::{Mutation, TxnCommands, TxnCommandsExt, TxnStore};
use kv::{KvError, Transaction, TxnClient, TxnOptions};
use scheduler::{Timestamp, TimestampOracle};

struct Fixture {
    /// The commands the client uses (local or remote).
    store: Arc<dyn TxnCommands>,
    /// The store underneath, for inspection.
    local: Arc<TxnStore<MemoryEngine>>,
    tso: Arc<TimestampOracle>,
    client: TxnClient,
    _grpc: Option<support::GrpcStore>,
}

fn fixture_with(remote: bool) -> Fixture {
    let (local, store, grpc) = if remote {
        let grpc = support::GrpcStore::start();
        let remote: Arc<dyn TxnCommands> = grpc.remote.clone();
        (grpc.store.clone(), remote, Some(grpc))
    } else {
        let local = Arc::new(TxnStore::new(Arc::new(MemoryEngine::new())));
        let store: Arc<dyn TxnCommands> = local.clone();
        (local, store, None)
    };
    let tso = Arc::new(TimestampOracle::in_memory());
    let options = TxnOptions {
        lock_ttl: Duration::from_millis(50),
        max_lock_wait: Duration::from_secs(5),
    };
    let client = TxnClient::new(store.clone(), tso.clone(), options);
    Fixture {
        store,
        local,
        tso,
        client,
        _grpc: grpc,
    }
}

/// Declares each test for both the local and the remote store.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $name() { super::$name(super::fixture_with(false)); })*
        }
        mod over_grpc {
            $(#[test] fn $name() { super::$name(super::fixture_with(true)); })*
        }
    };
}

both!(
    reads_see_the_snapshot_at_start,
    writes_are_buffered_until_commit,
    rollback_discards_writes,
    second_committer_of_a_key_fails_and_applies_nothing,
    disjoint_writers_both_commit,
    lock_only_mutations_conflict_like_writes,
    a_crashed_clients_locks_are_rolled_back_after_their_ttl,
    a_crash_after_the_primary_committed_rolls_secondaries_forward,
    readers_wait_for_a_live_lock_then_see_the_commit,
    read_only_transactions_write_nothing,
    pessimistic_writers_wait_for_each_other_and_both_count,
    a_rolled_back_pessimistic_transaction_releases_its_locks_at_once,
    a_pessimistic_transaction_open_past_its_lock_ttl_keeps_its_locks_by_heartbeat,
    lock_waiters_are_woken_in_order_by_the_release_not_by_polling,
    of_two_transactions_locking_two_keys_in_opposite_orders_one_is_refused_as_a_deadlock,
);

impl Fixture {
    fn begin(&self) -> Box<dyn Transaction> {
        Box::new(self.client.begin_txn().unwrap())
    }

    fn write(&self, pairs: &[(&str, Option<&str>)]) {
        let mut txn = self.begin();
        for (k, v) in pairs {
            match v {
                Some(v) => txn.put(k.as_bytes().to_vec(), v.as_bytes().to_vec()),
                None => txn.delete(k.as_bytes().to_vec()),
            }
        }
        txn.commit().unwrap();
    }

    fn read(&self, key: &str) -> Option<String> {
        let mut txn = self.begin();
        txn.get(key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap())
    }

    fn ts(&self) -> Timestamp {
        self.tso.get_timestamp().unwrap()
    }
}

/// A client on the fixture's store whose locks outlive any pause of a loaded machine, and
/// that waits for live locks up to `max_lock_wait`.
fn client_waiting(f: &Fixture, max_lock_wait: Duration) -> TxnClient {
    let options = TxnOptions {
        lock_ttl: Duration::from_secs(20),
        max_lock_wait,
    };
    TxnClient::new(f.store.clone(), f.tso.clone(), options)
}

fn keys(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<String> {
    pairs
        .into_iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                String::from_utf8(k).unwrap(),
                String::from_utf8(v).unwrap()
            )
        })
        .collect()
}

fn reads_see_the_snapshot_at_start(f: Fixture) {
    f.write(&[("a", Some("1"))]);
    let mut old = f.begin();
    f.write(&[("a", Some("2")), ("b", Some("new"))]);
    assert_eq!(old.get(b"a").unwrap(), Some(b"1".to_vec()));
    assert_eq!(old.get(b"b").unwrap(), None);
    assert_eq!(keys(old.scan(b"", None, 10).unwrap()), ["a=1"]);
    assert_eq!(f.read("a").as_deref(), Some("2"));
    f.write(&[("a", None)]);
    assert_eq!(f.read("a"), None);
    assert_eq!(old.get(b"a").unwrap(), Some(b"1".to_vec()));
}

fn writes_are_buffered_until_commit(f: Fixture) {
    f.write(&[("a", Some("1")), ("b", Some("1")), ("c", Some("1"))]);
    let mut txn = f.begin();
    txn.put(b"b".to_vec(), b"mine".to_vec());
    txn.delete(b"a".to_vec());
    txn.put(b"d".to_vec(), b"mine".to_vec());
    // Own writes are visible to the transaction, merged into scans.
    assert_eq!(txn.get(b"b").unwrap(), Some(b"mine".to_vec()));
    assert_eq!(txn.get(b"a").unwrap(), None);
    assert_eq!(
        keys(txn.scan(b"", None, 10).unwrap()),
        ["b=mine", "c=1", "d=mine"]
    );
    assert_eq!(keys(txn.scan(b"a", Some(b"c"), 1).unwrap()), ["b=mine"]);
    // Not to anyone else.
    assert_eq!(f.read("b").as_deref(), Some("1"));
    assert_eq!(f.read("d"), None);
    txn.commit().unwrap();
    assert_eq!(f.read("b").as_deref(), Some("mine"));
    assert_eq!(f.read("a"), None);
    assert!(
        txn.get(b"a").is_err(),
        "a finished transaction cannot be used"
    );
}

fn rollback_discards_writes(f: Fixture) {
    let mut txn = f.begin();
    txn.put(b"k".to_vec(), b"v".to_vec());
    txn.rollback().unwrap();
    assert_eq!(f.read("k"), None);
}

fn second_committer_of_a_key_fails_and_applies_nothing(f: Fixture) {
    f.write(&[("k", Some("0"))]);
    let mut first = f.begin();
    let mut second = f.begin();
    first.put(b"k".to_vec(), b"first".to_vec());
    second.put(b"other".to_vec(), b"second".to_vec());
    second.put(b"k".to_vec(), b"second".to_vec());
    first.commit().unwrap();
    let err = second.commit().unwrap_err();
    assert!(matches!(err, KvError::WriteConflict { .. }), "{err}");
    assert!(err.is_retryable_transaction());
    assert_eq!(f.read("k").as_deref(), Some("first"));
    assert_eq!(f.read("other"), None);
}

fn disjoint_writers_both_commit(f: Fixture) {
    let mut a = f.begin();
    let mut b = f.begin();
    a.put(b"x".to_vec(), b"a".to_vec());
    b.put(b"y".to_vec(), b"b".to_vec());
    a.commit().unwrap();
    b.commit().unwrap();
    assert_eq!(
        (f.read("x").as_deref(), f.read("y").as_deref()),
        (Some("a"), Some("b"))
    );
}

fn lock_only_mutations_conflict_like_writes(f: Fixture) {
    f.write(&[("x", Some("0")), ("y", Some("0"))]);
    let mut a = f.begin();
    let mut b = f.begin();
    a.lock(b"x".to_vec());
    a.put(b"y".to_vec(), b"a".to_vec());
    b.lock(b"x".to_vec());
    b.put(b"z".to_vec(), b"b".to_vec());
    a.commit().unwrap();
    assert!(matches!(
        b.commit().unwrap_err(),
        KvError::WriteConflict { .. }
    ));
    assert_eq!(
        f.read("x").as_deref(),
        Some("0"),
        "a lock-only mutation changes nothing"
    );
}

fn a_crashed_clients_locks_are_rolled_back_after_their_ttl(f: Fixture) {
    f.write(&[("p", Some("old")), ("s", Some("old"))]);
    // A client prewrites two keys and dies before committing.
    let start = f.ts();
    let mutations = [
        Mutation::Put {
            key: b"p".to_vec(),
            value: b"new".to_vec(),
        },
        Mutation::Put {
            key: b"s".to_vec(),
            value: b"new".to_vec(),
        },
    ];
    f.store.prewrite(&mutations, b"p", start, 50).unwrap();
    // A reader is not blocked past the TTL and sees the old values.
    assert_eq!(f.read("s").as_deref(), Some("old"));
    assert_eq!(f.read("p").as_deref(), Some("old"));
    // The dead transaction can no longer commit.
    let err = f.store.commit(&[b"p".to_vec()], start, f.ts()).unwrap_err();
    assert!(matches!(err, KvError::TxnAborted { .. }), "{err}");
    // And a writer can take the keys.
    f.write(&[("s", Some("later"))]);
    assert_eq!(f.read("s").as_deref(), Some("later"));
}

fn a_crash_after_the_primary_committed_rolls_secondaries_forward(f: Fixture) {
    f.write(&[("p", Some("old")), ("s", Some("old"))]);
    let start = f.ts();
    let mutations = [
        Mutation::Put {
            key: b"p".to_vec(),
            value: b"new".to_vec(),
        },
        Mutation::Delete { key: b"s".to_vec() },
    ];
    f.store.prewrite(&mutations, b"p", start, 60_000).unwrap();
    f.store.commit(&[b"p".to_vec()], start, f.ts()).unwrap();
    // The client died before committing "s"; its lock is still alive by TTL, but the primary
    // says the transaction committed: readers roll it forward at once.
    assert_eq!(f.read("s"), None);
    assert_eq!(f.read("p").as_deref(), Some("new"));
    let mut txn = f.begin();
    assert_eq!(keys(txn.scan(b"", None, 10).unwrap()), ["p=new"]);
}

fn readers_wait_for_a_live_lock_then_see_the_commit(f: Fixture) {
    f.write(&[("k", Some("old"))]);
    let start = f.ts();
    let mutation = Mutation::Put {
        key: b"k".to_vec(),
        value: b"new".to_vec(),
    };
    f.store.prewrite(&[mutation], b"k", start, 60_000).unwrap();
    let commit_ts = f.ts();
    // A reader that starts after commit_ts was drawn must see the new value, so it cannot read
    // past the lock: the store reports it...
    let mut reader = f.begin();
    let at = Timestamp(reader.start_ts());
    assert!(matches!(
        f.store.get(b"k", at),
        Ok(ReadOutcome::Locked { .. })
    ));
    // ...and the client waits until the lock's owner commits.
    let store = Arc::clone(&f.store);
    let committer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(30));
        store.commit(&[b"k".to_vec()], start, commit_ts).unwrap();
    });
    assert_eq!(reader.get(b"k").unwrap(), Some(b"new".to_vec()));
    committer.join().unwrap();
}

fn read_only_transactions_write_nothing(f: Fixture) {
    f.write(&[("k", Some("v"))]);
    let before = f.local.engine().snapshot();
    let mut txn = f.begin();
    txn.get(b"k").unwrap();
    txn.commit().unwrap();
    let after = f.local.engine().snapshot();
    for cf in Cf::ALL {
        assert_eq!(
            before.scan(cf, b"", None).count(),
            after.scan(cf, b"", None).count(),
            "{cf}"
        );
    }
}

/// Two read-modify-write transactions of one key, the second begun before the first commits:
/// optimistically the second would fail with a write conflict; locking the key first, it
/// waits for the first, reads its value, and both increments count.
fn pessimistic_writers_wait_for_each_other_and_both_count(f: Fixture) {
    use std::sync::atomic::{AtomicBool, Ordering};
    f.write(&[("n", Some("0"))]);
    let client = client_waiting(&f, Duration::from_secs(30));
    let mut first = client.begin_txn().unwrap();
    let mut second = client.begin_txn().unwrap();
    let seen = first.lock_for_update(&[b"n".to_vec()]).unwrap();
    assert_eq!(seen, vec![Some(b"0".to_vec())]);
    let first_committing = Arc::new(AtomicBool::new(false));
    let waiter = {
        let first_committing = Arc::clone(&first_committing);
        std::thread::spawn(move || {
            let seen = second.lock_for_update(&[b"n".to_vec()]).unwrap();
            // It holds the lock now, so the first transaction has ended.
            let waited = first_committing.load(Ordering::SeqCst);
            let value: u64 = String::from_utf8(seen[0].clone().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            second.put(b"n".to_vec(), (value + 1).to_string().into_bytes());
            second.commit().unwrap();
            (waited, value)
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    first.put(b"n".to_vec(), b"1".to_vec());
    first_committing.store(true, Ordering::SeqCst);
    first.commit().unwrap();
    let (waited, value) = waiter.join().unwrap();
    assert!(
        waited,
        "the second transaction locked the key while the first held it"
    );
    assert_eq!(value, 1, "the second read the first's committed value");
    assert_eq!(f.read("n").as_deref(), Some("2"));
}

/// A rollback releases the transaction's pessimistic locks at once; a key locked but never
/// written commits as lock-only and keeps no lock either.
fn a_rolled_back_pessimistic_transaction_releases_its_locks_at_once(f: Fixture) {
    let client = client_waiting(&f, Duration::from_secs(30));
    // Waits for no live lock at all: a lock left behind fails it.
    let impatient = client_waiting(&f, Duration::ZERO);
    let mut first = client.begin_txn().unwrap();
    first
        .lock_for_update(&[b"a".to_vec(), b"b".to_vec()])
        .unwrap();
    first.rollback().unwrap();
    let mut second = impatient.begin_txn().unwrap();
    second
        .lock_for_update(&[b"a".to_vec(), b"b".to_vec()])
        .unwrap();
    second.put(b"a".to_vec(), b"x".to_vec());
    second.commit().unwrap();
    assert_eq!(f.read("a").as_deref(), Some("x"));
    assert_eq!(f.read("b"), None);
    let mut third = impatient.begin_txn().unwrap();
    third.put(b"b".to_vec(), b"y".to_vec());
    third.commit().unwrap();
    assert_eq!(f.read("b").as_deref(), Some("y"));
}

/// A transaction that holds its pessimistic locks three times as long as their TTL keeps
/// them (its heartbeat extends the primary's TTL): another one that meets them waits (here:
/// gives up at once) instead of rolling it back, and it commits.
fn a_pessimistic_transaction_open_past_its_lock_ttl_keeps_its_locks_by_heartbeat(f: Fixture) {
    let options = TxnOptions {
        lock_ttl: Duration::from_secs(1),
        max_lock_wait: Duration::ZERO,
    };
    let client = TxnClient::new(f.store.clone(), f.tso.clone(), options);
    let mut holder = client.begin_txn().unwrap();
    holder.lock_for_update(&[b"k".to_vec()]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let mut other = client.begin_txn().unwrap();
    match other.lock_for_update(&[b"k".to_vec()]) {
        Err(KvError::LockTimeout { .. }) => {}
        other => panic!("the lock should be alive, got {other:?}"),
    }
    holder.put(b"k".to_vec(), b"held".to_vec());
    holder.commit().unwrap();
    assert_eq!(f.read("k").as_deref(), Some("held"));
}

/// The store's commands, counting the status checks a client makes (a client that polls a
/// live lock checks its holder's status again and again).
struct CountingStatusChecks {
    inner: Arc<dyn TxnCommands>,
    checks: std::sync::atomic::AtomicUsize,
}

impl TxnCommands for CountingStatusChecks {
    fn execute(&self, request: &kv::txn::TxnRequest) -> kv::KvResult<kv::txn::TxnResponse> {
        if matches!(request, kv::txn::TxnRequest::CheckTxnStatus { .. }) {
            self.checks
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.execute(request)
    }
}

/// Two transactions wait for a third's lock: the store holds their requests and wakes the
/// first one when the lock goes, and the second when the first's goes; neither polls.
fn lock_waiters_are_woken_in_order_by_the_release_not_by_polling(f: Fixture) {
    use std::sync::Mutex;
    let counting = Arc::new(CountingStatusChecks {
        inner: f.store.clone(),
        checks: Default::default(),
    });
    let options = TxnOptions {
        lock_ttl: Duration::from_secs(20),
        max_lock_wait: Duration::from_secs(30),
    };
    let client = TxnClient::new(counting.clone(), f.tso.clone(), options);
    let mut holder = client.begin_txn().unwrap();
    holder.lock_for_update(&[b"k".to_vec()]).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for name in ["first", "second"] {
        let (client, order) = (client.clone(), Arc::clone(&order));
        waiters.push(std::thread::spawn(move || {
            let mut txn = client.begin_txn().unwrap();
            txn.lock_for_update(&[b"k".to_vec()]).unwrap();
            order.lock().unwrap().push(name);
            // Holds the lock a while: the other waiter must not get it meanwhile.
            std::thread::sleep(Duration::from_millis(200));
            txn.put(b"k".to_vec(), name.as_bytes().to_vec());
            txn.commit().unwrap();
        }));
        // The first waiter queues before the second.
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(order.lock().unwrap().is_empty(), "nobody got the held lock");
    holder.commit().unwrap();
    for waiter in waiters {
        waiter.join().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    assert_eq!(f.read("k").as_deref(), Some("second"));
    let checks = counting.checks.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(checks, 0, "a waiter checked its holder's status: it polled");
}

/// Two transactions each lock a key, then each wants the other's: one of them is refused
/// with a deadlock at once (which one depends on which waits first), rolls back, and the
/// other gets the key and commits.
fn of_two_transactions_locking_two_keys_in_opposite_orders_one_is_refused_as_a_deadlock(
    f: Fixture,
) {
    let client = client_waiting(&f, Duration::from_secs(30));
    let run = |mine: &'static str, theirs: &'static str| {
        let client = client.clone();
        let mut txn = client.begin_txn().unwrap();
        txn.lock_for_update(&[mine.as_bytes().to_vec()]).unwrap();
        move || {
            let outcome = txn.lock_for_update(&[theirs.as_bytes().to_vec()]);
            match outcome {
                Ok(_) => {
                    txn.put(theirs.as_bytes().to_vec(), mine.as_bytes().to_vec());
                    txn.commit().unwrap();
                    "committed"
                }
                Err(KvError::Deadlock { .. }) => {
                    txn.rollback().unwrap();
                    "deadlock"
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    };
    let one = run("a", "b");
    let two = run("b", "a");
    let one = std::thread::spawn(one);
    std::thread::sleep(Duration::from_millis(200));
    let two = std::thread::spawn(two);
    let mut outcomes = [one.join().unwrap(), two.join().unwrap()];
    outcomes.sort();
    assert_eq!(outcomes, ["committed", "deadlock"]);
}
