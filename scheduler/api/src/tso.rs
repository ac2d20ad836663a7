//! [`TimestampSource`]: where transactions get their timestamps — the scheduler's oracle
//! in-process, a [`crate::SchedulerClient`] over gRPC, or [`MemoryTso`].
//!
//! [`MemoryTso`] is a counter in memory that follows the oracle's rule for the two parts of a
//! timestamp: the physical part is the wall clock in milliseconds, or the last one issued if
//! the clock is behind it; the logical part counts within one millisecond, and running out of
//! it moves the physical part one millisecond ahead of the clock. It persists nothing, so it
//! suits one process whose data does not outlive it (tests of the layers above, a throwaway
//! store); a store whose data persists needs the scheduler's oracle, which never goes
//! backwards across a restart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timestamp::Timestamp;

#[derive(Debug, thiserror::Error)]
pub enum TsoError {
    /// The oracle could not persist its high-water mark.
    #[error("timestamp oracle: {0}")]
    Persist(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a timestamp batch must ask for between 1 and {max} timestamps, not {count}")]
    BadCount { count: u32, max: u64 },
    #[error("timestamp oracle unavailable: {0}")]
    Unavailable(String),
}

/// Where transactions get their timestamps: each call returns a timestamp larger than every
/// one the source returned before.
pub trait TimestampSource: Send + Sync {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError>;
}

/// Timestamps from a counter in memory (see the module doc). Thread-safe.
#[derive(Debug, Default)]
pub struct MemoryTso {
    last: AtomicU64,
}

impl MemoryTso {
    pub fn new() -> MemoryTso {
        MemoryTso::default()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TimestampSource for MemoryTso {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        let clock = Timestamp::compose(now_ms(), 0);
        // The logical counter carries into the physical part when it runs out.
        let next = |last: u64| clock.0.max(last + 1);
        let last = self
            .last
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)))
            .unwrap_or_else(|last| last);
        Ok(Timestamp(next(last)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_strictly_increase_and_follow_the_clock() {
        let tso = MemoryTso::new();
        let before = now_ms();
        let mut last = Timestamp::ZERO;
        for _ in 0..100_000 {
            let ts = tso.get_timestamp().unwrap();
            assert!(ts > last, "{ts} after {last}");
            last = ts;
        }
        assert!(last.physical_ms() >= before);
    }

    #[test]
    fn concurrent_callers_get_distinct_timestamps() {
        let tso = MemoryTso::new();
        crate::testing::assert_concurrent_callers_get_unique_increasing_timestamps(&tso, 4, 5000);
    }

    #[test]
    fn a_clock_behind_the_last_timestamp_does_not_move_it_back() {
        let tso = MemoryTso::new();
        let ahead = Timestamp::compose(now_ms() + 3_600_000, 7);
        tso.last.store(ahead.0, Ordering::SeqCst);
        assert_eq!(tso.get_timestamp().unwrap(), ahead.next());
    }
}
