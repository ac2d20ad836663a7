//! Keys and values the in-process cluster tests write and check: each key's value is derived
//! from the key, so a read can tell a missing or wrong value.

#![allow(dead_code)]

use std::collections::BTreeMap;

use kv::{KvResult, Transaction, TxnClient};

/// The value written for `key`.
pub fn value(key: &str) -> Vec<u8> {
    format!("{key}:{}", "v".repeat(100)).into_bytes()
}

/// Writes `keys` in transactions of `per_txn` keys each.
pub fn write_keys(client: &TxnClient, keys: &[String], per_txn: usize) -> KvResult<()> {
    for chunk in keys.chunks(per_txn) {
        let mut txn = client.begin_txn()?;
        for key in chunk {
            txn.put(key.as_bytes().to_vec(), value(key));
        }
        txn.commit()?;
    }
    Ok(())
}

/// Every key of the cluster, read in one transaction (a scan across all regions).
pub fn read_all(client: &TxnClient) -> BTreeMap<String, Vec<u8>> {
    let mut txn = client.begin_txn().expect("begin");
    txn.scan(b"", None, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).expect("utf-8"), v))
        .collect()
}

/// Asserts that `found` holds every key of `keys` with its value.
pub fn assert_holds(found: &BTreeMap<String, Vec<u8>>, keys: &[String]) {
    for key in keys {
        assert_eq!(
            found.get(key).map(Vec::as_slice),
            Some(value(key).as_slice()),
            "{key} is missing or wrong"
        );
    }
}
