//! Memcomparable encodings of byte strings and unsigned/signed integers.
//!
//! Byte strings: every `0x00` becomes `0x00 0xFF` and the string ends with `0x00 0x01`. The
//! encoding is prefix-free (no encoding is a prefix of another), so more fields or a timestamp
//! can follow it in a key without breaking the order:
//! `"a" → 61 00 01 < "a\0" → 61 00 FF 00 01 < "ab" → 61 62 00 01`.
//!
//! Integers: big-endian; signed integers with the sign bit flipped so negatives sort first.

use std::fmt;

/// Terminator after an encoded byte string.
const ESCAPE: u8 = 0x00;
const ESCAPED_ZERO: u8 = 0xFF;
const TERMINATOR: u8 = 0x01;

/// A decoding failure: the input was not produced by these encoders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed memcomparable encoding: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

pub fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    for &b in bytes {
        out.push(b);
        if b == ESCAPE {
            out.push(ESCAPED_ZERO);
        }
    }
    out.push(ESCAPE);
    out.push(TERMINATOR);
}

/// Decodes a byte string from the front of `input`; returns it and the rest of the input.
pub fn decode_bytes(input: &[u8]) -> Result<(Vec<u8>, &[u8]), DecodeError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b != ESCAPE {
            out.push(b);
            i += 1;
            continue;
        }
        match input.get(i + 1) {
            Some(&ESCAPED_ZERO) => {
                out.push(ESCAPE);
                i += 2;
            }
            Some(&TERMINATOR) => return Ok((out, &input[i + 2..])),
            other => return Err(DecodeError(format!("bad escape {other:?} at byte {i}"))),
        }
    }
    Err(DecodeError("byte string has no terminator".into()))
}

/// The length of the encoded byte string at the front of `input`, without decoding it.
pub fn encoded_bytes_len(input: &[u8]) -> Result<usize, DecodeError> {
    let mut i = 0;
    while i < input.len() {
        if input[i] == ESCAPE {
            match input.get(i + 1) {
                Some(&ESCAPED_ZERO) => i += 2,
                Some(&TERMINATOR) => return Ok(i + 2),
                other => return Err(DecodeError(format!("bad escape {other:?} at byte {i}"))),
            }
        } else {
            i += 1;
        }
    }
    Err(DecodeError("byte string has no terminator".into()))
}

pub fn encode_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub fn decode_u64(input: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    if input.len() < 8 {
        return Err(DecodeError(format!(
            "need 8 bytes for an integer, have {}",
            input.len()
        )));
    }
    let (head, rest) = input.split_at(8);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(head);
    Ok((u64::from_be_bytes(bytes), rest))
}

pub fn encode_i64(out: &mut Vec<u8>, v: i64) {
    encode_u64(out, (v as u64) ^ (1 << 63));
}

pub fn decode_i64(input: &[u8]) -> Result<(i64, &[u8]), DecodeError> {
    let (v, rest) = decode_u64(input)?;
    Ok(((v ^ (1 << 63)) as i64, rest))
}

/// The smallest key greater than every key that starts with `prefix`, or `None` if there is
/// none (the prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_bytes(&mut out, b);
        out
    }

    #[test]
    fn bytes_round_trip_and_order() {
        let samples: Vec<Vec<u8>> = vec![
            vec![],
            vec![0],
            vec![0, 0],
            vec![0, 1],
            vec![0, 0xFF],
            vec![1],
            b"a".to_vec(),
            b"a\0".to_vec(),
            b"a\0b".to_vec(),
            b"ab".to_vec(),
            vec![0xFF],
            vec![0xFF, 0],
            vec![0xFF, 0xFF],
        ];
        for a in &samples {
            let encoded = enc(a);
            let (decoded, rest) = decode_bytes(&encoded).unwrap();
            assert_eq!(&decoded, a);
            assert!(rest.is_empty());
            assert_eq!(encoded_bytes_len(&enc(a)).unwrap(), enc(a).len());
            for b in &samples {
                assert_eq!(a.cmp(b), enc(a).cmp(&enc(b)), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn bytes_are_prefix_free_with_suffix() {
        // A field after the string does not disturb ordering between strings.
        let mut a = enc(b"a");
        a.push(0xFF);
        let mut b = enc(b"a\0");
        b.push(0x00);
        assert!(a < b);
    }

    #[test]
    fn malformed_bytes_are_errors() {
        assert!(decode_bytes(b"abc").is_err());
        assert!(decode_bytes(&[b'a', 0, 7]).is_err());
        assert!(encoded_bytes_len(&[0]).is_err());
    }

    #[test]
    fn integers_round_trip_and_order() {
        let values = [i64::MIN, -1_000_000, -1, 0, 1, 42, i64::MAX];
        for &a in &values {
            let mut ea = Vec::new();
            encode_i64(&mut ea, a);
            assert_eq!(decode_i64(&ea).unwrap().0, a);
            for &b in &values {
                let mut eb = Vec::new();
                encode_i64(&mut eb, b);
                assert_eq!(a.cmp(&b), ea.cmp(&eb));
            }
        }
        assert!(decode_u64(&[1, 2, 3]).is_err());
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
    }
}
