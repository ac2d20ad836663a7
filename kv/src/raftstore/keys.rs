//! Store-local keys, in the `raft` column family (where no data key can go): a peer's
//! `r{region_id}` followed by a kind byte (and for log entries the index), a region's state
//! `R{region_id}`, and the store's identity `S`.

use raft::Index;

const ENTRY: u8 = 0x01;
const HARD_STATE: u8 = 0x02;
const APPLY_STATE: u8 = 0x03;
const CONF_STATE: u8 = 0x04;

fn prefix(region_id: u64, kind: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(18);
    key.push(b'r');
    key.extend_from_slice(&region_id.to_be_bytes());
    key.push(kind);
    key
}

pub fn entry(region_id: u64, index: Index) -> Vec<u8> {
    let mut key = prefix(region_id, ENTRY);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub fn hard_state(region_id: u64) -> Vec<u8> {
    prefix(region_id, HARD_STATE)
}

pub fn apply_state(region_id: u64) -> Vec<u8> {
    prefix(region_id, APPLY_STATE)
}

pub fn conf_state(region_id: u64) -> Vec<u8> {
    prefix(region_id, CONF_STATE)
}

/// A region's state (`RegionLocalState`), under its own prefix `R{region_id}` so that a
/// store finds its regions at startup without scanning raft logs.
pub fn region_state(region_id: u64) -> Vec<u8> {
    let mut key = vec![b'R'];
    key.extend_from_slice(&region_id.to_be_bytes());
    key
}

/// The range holding every region state key.
pub fn region_state_range() -> (Vec<u8>, Vec<u8>) {
    (vec![b'R'], vec![b'R' + 1])
}

/// The store's identity (its id, once assigned by the scheduler).
pub fn store_ident() -> Vec<u8> {
    b"S".to_vec()
}

/// A user key for logs: printable ASCII as is, other bytes as `\xNN`.
pub fn printable(key: &[u8]) -> String {
    key.iter()
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect()
}
