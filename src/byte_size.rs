//! [`ByteSize`]: a size in bytes as flags and the TOML file give it: `96MiB`, `64KiB`, `1GiB`,
//! `512B` or a plain number of bytes. Suffixes are powers of 1024 and case-insensitive, and
//! `K`/`KB`, `M`/`MB`, `G`/`GB` mean the same as `KiB`, `MiB`, `GiB` (as in TiKV's
//! configuration). In TOML a size is a string (`"96MiB"`) or an integer (bytes).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<ByteSize, String> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (digits, unit) = trimmed.split_at(split);
        let bad = || format!("invalid size {text:?} (expected e.g. 64KiB, 96MiB, 1GiB or bytes)");
        let number: u64 = digits.parse().map_err(|_| bad())?;
        let shift = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            _ => return Err(bad()),
        };
        number
            .checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.0;
        for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
            if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", bytes >> shift);
            }
        }
        write!(f, "{bytes}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ByteSize, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(ByteSize(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_print_back() {
        assert_eq!("64KiB".parse(), Ok(ByteSize(64 << 10)));
        assert_eq!("96MiB".parse(), Ok(ByteSize(96 << 20)));
        assert_eq!("96mb".parse(), Ok(ByteSize(96 << 20)));
        assert_eq!("1 GiB".parse(), Ok(ByteSize(1 << 30)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
        assert_eq!("512B".parse(), Ok(ByteSize(512)));
        assert_eq!(ByteSize(96 << 20).to_string(), "96MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        for bad in [
            "",
            "MiB",
            "12XB",
            "-1KiB",
            "1.5MiB",
            "99999999999999999999GiB",
        ] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad:?} parsed");
        }
    }
}
