//! Hybrid logical timestamps.
//!
//! A timestamp is `physical milliseconds << 18 | logical counter`, as a `u64`. Ordering the
//! integers orders the timestamps; the physical part lets a reader tell roughly when a
//! timestamp was issued (lock TTLs are measured on it), the logical part lets the oracle issue
//! 2^18 distinct timestamps within one millisecond.

/// Bits of the logical counter.
pub const LOGICAL_BITS: u32 = 18;
/// Logical counter values per millisecond.
pub const LOGICAL_PER_MS: u64 = 1 << LOGICAL_BITS;

/// A hybrid timestamp. `Timestamp(0)` is "before everything".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    pub fn compose(physical_ms: u64, logical: u64) -> Timestamp {
        debug_assert!(logical < LOGICAL_PER_MS);
        Timestamp((physical_ms << LOGICAL_BITS) | logical)
    }

    /// Milliseconds since the Unix epoch at which the oracle issued this timestamp.
    pub fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    pub fn logical(self) -> u64 {
        self.0 & (LOGICAL_PER_MS - 1)
    }

    pub fn next(self) -> Timestamp {
        Timestamp(self.0 + 1)
    }

    pub fn prev(self) -> Timestamp {
        Timestamp(self.0.saturating_sub(1))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_and_split() {
        let ts = Timestamp::compose(1_700_000_000_123, 5);
        assert_eq!(ts.physical_ms(), 1_700_000_000_123);
        assert_eq!(ts.logical(), 5);
        assert!(Timestamp::compose(10, LOGICAL_PER_MS - 1) < Timestamp::compose(11, 0));
    }
}
