//! One behavioural suite, run against every engine.

use super::*;

fn put(engine: &impl Engine, cf: Cf, key: &[u8], value: &[u8]) {
    let mut batch = WriteBatch::new();
    batch.put(cf, key.to_vec(), value.to_vec());
    engine.write(batch).unwrap();
}

fn scan_all(snapshot: &impl Snapshot, cf: Cf, start: &[u8], end: Option<&[u8]>) -> Vec<KvPair> {
    snapshot
        .scan(cf, start, end)
        .collect::<StorageResult<_>>()
        .unwrap()
}

fn pair(k: &[u8], v: &[u8]) -> KvPair {
    (k.to_vec(), v.to_vec())
}

fn point_reads_and_deletes(engine: &impl Engine) {
    assert_eq!(engine.get(Cf::Default, b"a").unwrap(), None);
    put(engine, Cf::Default, b"a", b"1");
    assert_eq!(engine.get(Cf::Default, b"a").unwrap(), Some(b"1".to_vec()));
    put(engine, Cf::Default, b"a", b"2");
    assert_eq!(engine.get(Cf::Default, b"a").unwrap(), Some(b"2".to_vec()));
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Default, b"a".to_vec());
    engine.write(batch).unwrap();
    assert_eq!(engine.get(Cf::Default, b"a").unwrap(), None);
    // Deleting a missing key is not an error.
    let mut batch = WriteBatch::new();
    batch.delete(Cf::Default, b"missing".to_vec());
    engine.write(batch).unwrap();
}

fn families_are_separate(engine: &impl Engine) {
    for (i, cf) in Cf::ALL.iter().enumerate() {
        put(engine, *cf, b"k", &[i as u8]);
    }
    for (i, cf) in Cf::ALL.iter().enumerate() {
        assert_eq!(engine.get(*cf, b"k").unwrap(), Some(vec![i as u8]), "{cf}");
        let all = scan_all(&engine.snapshot(), *cf, b"", None);
        assert_eq!(all, vec![pair(b"k", &[i as u8])], "{cf}");
    }
}

fn batch_is_atomic_and_ordered(engine: &impl Engine) {
    let mut batch = WriteBatch::new();
    batch.put(Cf::Lock, b"x".to_vec(), b"first".to_vec());
    batch.put(Cf::Write, b"y".to_vec(), b"w".to_vec());
    batch.delete(Cf::Lock, b"x".to_vec());
    batch.put(Cf::Lock, b"z".to_vec(), b"last".to_vec());
    assert_eq!(batch.len(), 4);
    engine.write(batch).unwrap();
    // Later modifies in a batch win over earlier ones on the same key.
    assert_eq!(engine.get(Cf::Lock, b"x").unwrap(), None);
    assert_eq!(engine.get(Cf::Write, b"y").unwrap(), Some(b"w".to_vec()));
    assert_eq!(engine.get(Cf::Lock, b"z").unwrap(), Some(b"last".to_vec()));
}

fn scans_respect_bounds_and_order(engine: &impl Engine) {
    let keys: [&[u8]; 6] = [b"b", b"a", b"ab", b"\x00", b"\xff\xff", b"c"];
    for k in keys {
        put(engine, Cf::Write, k, k);
    }
    let snapshot = engine.snapshot();
    let all: Vec<Vec<u8>> = scan_all(&snapshot, Cf::Write, b"", None)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let expected: Vec<Vec<u8>> = [&b"\x00"[..], b"a", b"ab", b"b", b"c", b"\xff\xff"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(all, expected);
    // [a, b): start inclusive, end exclusive.
    assert_eq!(
        scan_all(&snapshot, Cf::Write, b"a", Some(b"b")),
        vec![pair(b"a", b"a"), pair(b"ab", b"ab")]
    );
    // Start between keys.
    assert_eq!(
        scan_all(&snapshot, Cf::Write, b"aa", Some(b"c")),
        vec![pair(b"ab", b"ab"), pair(b"b", b"b")]
    );
    // Empty and inverted ranges yield nothing.
    assert!(scan_all(&snapshot, Cf::Write, b"b", Some(b"b")).is_empty());
    assert!(scan_all(&snapshot, Cf::Write, b"c", Some(b"a")).is_empty());
    // Past the end.
    assert_eq!(
        scan_all(&snapshot, Cf::Write, b"d", None),
        vec![pair(b"\xff\xff", b"\xff\xff")]
    );
}

fn snapshots_are_isolated(engine: &impl Engine) {
    put(engine, Cf::Default, b"s1", b"old");
    put(engine, Cf::Default, b"s2", b"old");
    let snapshot = engine.snapshot();
    let mut batch = WriteBatch::new();
    batch.put(Cf::Default, b"s1".to_vec(), b"new".to_vec());
    batch.delete(Cf::Default, b"s2".to_vec());
    batch.put(Cf::Default, b"s3".to_vec(), b"new".to_vec());
    engine.write(batch).unwrap();

    assert_eq!(
        snapshot.get(Cf::Default, b"s1").unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(
        snapshot.get(Cf::Default, b"s2").unwrap(),
        Some(b"old".to_vec())
    );
    assert_eq!(snapshot.get(Cf::Default, b"s3").unwrap(), None);
    assert_eq!(
        scan_all(&snapshot, Cf::Default, b"s", Some(b"t")),
        vec![pair(b"s1", b"old"), pair(b"s2", b"old")]
    );
    let fresh = engine.snapshot();
    assert_eq!(
        scan_all(&fresh, Cf::Default, b"s", Some(b"t")),
        vec![pair(b"s1", b"new"), pair(b"s3", b"new")]
    );
}

fn concurrent_writers(engine: &impl Engine) {
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            scope.spawn(move || {
                for i in 0..50u8 {
                    put(engine, Cf::Default, &[b'w', t, i], &[t, i]);
                }
            });
        }
    });
    let rows = scan_all(&engine.snapshot(), Cf::Default, b"w", Some(b"x"));
    assert_eq!(rows.len(), 200);
}

#[test]
fn write_batches_round_trip_through_their_encoding() {
    let mut batch = WriteBatch::new();
    batch.put(Cf::Default, b"k\0".to_vec(), vec![]);
    batch.delete(Cf::Lock, vec![]);
    batch.put(Cf::Raft, vec![0xFF; 300], vec![7; 70_000]);
    assert_eq!(WriteBatch::decode(&batch.encode()).unwrap(), batch);
    assert_eq!(WriteBatch::decode(&[]).unwrap(), WriteBatch::new());
    assert!(WriteBatch::decode(&[0, 0, 0, 0, 0, 9]).is_err());
    assert!(WriteBatch::decode(&[0, 7, 0, 0, 0, 0]).is_err());
    assert!(WriteBatch::decode(&[3]).is_err());
}

/// Runs the whole suite; `fresh` makes a new, empty engine for each case.
fn run_suite<E: Engine>(fresh: impl Fn() -> E) {
    point_reads_and_deletes(&fresh());
    families_are_separate(&fresh());
    batch_is_atomic_and_ordered(&fresh());
    scans_respect_bounds_and_order(&fresh());
    snapshots_are_isolated(&fresh());
    concurrent_writers(&fresh());
}

#[test]
fn memory_engine_suite() {
    run_suite(MemoryEngine::new);
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_engine_suite() {
    let dirs = std::sync::Mutex::new(Vec::new());
    run_suite(|| {
        let dir = tempfile::tempdir().unwrap();
        let engine = RocksEngine::open(dir.path()).unwrap();
        dirs.lock().unwrap().push(dir);
        engine
    });
}

#[cfg(feature = "rocksdb")]
#[test]
fn rocksdb_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = RocksEngine::open(dir.path()).unwrap();
        put(&engine, Cf::Write, b"durable", b"yes");
        put(&engine, Cf::Raft, b"applied", b"7");
    }
    let engine = RocksEngine::open(dir.path()).unwrap();
    assert_eq!(
        engine.get(Cf::Write, b"durable").unwrap(),
        Some(b"yes".to_vec())
    );
    assert_eq!(
        engine.get(Cf::Raft, b"applied").unwrap(),
        Some(b"7".to_vec())
    );
}
