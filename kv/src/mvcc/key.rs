//! MVCC keys: a memcomparable user key followed by a descending timestamp.

use scheduler_api::Timestamp;

use crate::codec::memcomparable::{self, DecodeError};

/// The encoded user key alone: the `lock` family's key and the prefix of all its versions.
pub fn encode_user_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 10);
    memcomparable::encode_bytes(&mut out, key);
    out
}

pub fn decode_user_key(encoded: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let (key, rest) = memcomparable::decode_bytes(encoded)?;
    if !rest.is_empty() {
        return Err(DecodeError(format!(
            "{} trailing bytes after user key",
            rest.len()
        )));
    }
    Ok(key)
}

/// A versioned key for the `default` and `write` families.
pub fn encode_versioned(key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = encode_user_key(key);
    append_ts(&mut out, ts);
    out
}

pub fn append_ts(encoded_user_key: &mut Vec<u8>, ts: Timestamp) {
    memcomparable::encode_u64(encoded_user_key, !ts.0);
}

/// Splits a versioned key into the encoded user key and the timestamp.
pub fn split_versioned(versioned: &[u8]) -> Result<(&[u8], Timestamp), DecodeError> {
    if versioned.len() < 8 {
        return Err(DecodeError("versioned key shorter than a timestamp".into()));
    }
    let (user, ts) = versioned.split_at(versioned.len() - 8);
    let (inverted, _) = memcomparable::decode_u64(ts)?;
    Ok((user, Timestamp(!inverted)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_sorts_first_and_keys_stay_apart() {
        let old = encode_versioned(b"k", Timestamp(5));
        let new = encode_versioned(b"k", Timestamp(9));
        assert!(new < old);
        // Every version of "k" sorts before every version of "k\0".
        assert!(encode_versioned(b"k", Timestamp(0)) < encode_versioned(b"k\0", Timestamp::MAX));
        let (user, ts) = split_versioned(&old).unwrap();
        assert_eq!(decode_user_key(user).unwrap(), b"k");
        assert_eq!(ts, Timestamp(5));
    }
}
