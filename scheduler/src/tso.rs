//! The timestamp oracle (TSO): hands out strictly increasing hybrid timestamps.
//!
//! # Protocol
//!
//! The oracle keeps `(physical, logical)` of the last timestamp it issued. A request for `n`
//! timestamps takes `physical = max(now, last physical)`; if the logical counter would pass
//! 2^18 within that millisecond, physical moves one millisecond ahead of the clock (it never
//! waits, and the clock catches up). The answer is the contiguous block ending at the last
//! timestamp issued, so clients can batch.
//!
//! # Never backwards, also across a restart
//!
//! Before issuing any timestamp whose physical part reaches the persisted *high-water mark*,
//! the oracle durably raises the mark (write to a temporary file, fsync, rename, fsync the
//! directory) to `physical + SAVE_AHEAD_MS`. Invariant: every issued timestamp has a physical
//! part strictly below the persisted mark. On start the oracle resumes at
//! `physical = max(now, mark)`, so every new timestamp is larger than every old one even if the
//! wall clock went backwards. The cost is one fsync per `SAVE_AHEAD_MS` of issued time.
//!
//! Served over gRPC by [`crate::service`]; clients batch concurrent requests
//! ([`scheduler_api::client`]). Not here yet: leader election among several scheduler replicas (a
//! single scheduler is the authority).

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use scheduler_api::timestamp::{LOGICAL_PER_MS, Timestamp};
use scheduler_api::{TimestampSource, TsoError};

use crate::high_water::{HighWater, HighWaterError};

/// How far ahead of the issued physical time the persisted high-water mark is kept.
pub const SAVE_AHEAD_MS: u64 = 3_000;

const MARK_FILE: &str = "tso-high-water";

impl From<HighWaterError> for TsoError {
    fn from(e: HighWaterError) -> TsoError {
        TsoError::Persist(Box::new(e))
    }
}

struct State {
    physical: u64,
    logical: u64,
    /// Persisted mark: every issued timestamp has physical < mark.
    mark: u64,
}

/// The timestamp oracle. Thread-safe; share it behind an `Arc`.
pub struct TimestampOracle {
    high_water: HighWater,
    state: Mutex<State>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl TimestampOracle {
    /// An oracle that persists its high-water mark in `dir` (created if missing).
    pub fn open(dir: &Path) -> Result<Self, TsoError> {
        let (high_water, mark) = HighWater::open(dir, MARK_FILE)?;
        Ok(Self {
            high_water,
            state: Mutex::new(State {
                physical: mark,
                logical: 0,
                mark,
            }),
        })
    }

    /// An oracle that persists nothing: for tests and throwaway clusters.
    pub fn in_memory() -> Self {
        Self {
            high_water: HighWater::in_memory(MARK_FILE),
            state: Mutex::new(State {
                physical: 0,
                logical: 0,
                mark: 0,
            }),
        }
    }

    /// One new timestamp, larger than every one issued before.
    pub fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        self.get_timestamps(1)
    }

    /// A block of `count` new timestamps; returns the last one. The block is
    /// `[last - count + 1, last]`, all within one physical millisecond.
    pub fn get_timestamps(&self, count: u32) -> Result<Timestamp, TsoError> {
        let count = count as u64;
        if count == 0 || count >= LOGICAL_PER_MS {
            return Err(TsoError::BadCount {
                count: count as u32,
                max: LOGICAL_PER_MS - 1,
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms();
        if now > state.physical {
            state.physical = now;
            state.logical = 0;
        }
        if state.logical + count >= LOGICAL_PER_MS {
            state.physical += 1;
            state.logical = 0;
        }
        if state.physical >= state.mark {
            let mark = state.physical + SAVE_AHEAD_MS;
            self.high_water.store(mark)?;
            state.mark = mark;
        }
        state.logical += count;
        Ok(Timestamp::compose(state.physical, state.logical))
    }
}

impl TimestampSource for TimestampOracle {
    fn get_timestamp(&self) -> Result<Timestamp, TsoError> {
        TimestampOracle::get_timestamp(self)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn timestamps_strictly_increase() {
        let tso = TimestampOracle::in_memory();
        let mut last = Timestamp::ZERO;
        for _ in 0..100_000 {
            let ts = tso.get_timestamp().unwrap();
            assert!(ts > last, "{ts} after {last}");
            last = ts;
        }
    }

    #[test]
    fn batches_are_contiguous_and_disjoint() {
        let tso = TimestampOracle::in_memory();
        let mut previous_last = tso.get_timestamp().unwrap();
        for count in [1u32, 7, 1000, 100_000, 262_000] {
            let last = tso.get_timestamps(count).unwrap();
            let first = Timestamp(last.0 - count as u64 + 1);
            assert!(first > previous_last);
            assert_eq!(first.physical_ms(), last.physical_ms());
            previous_last = last;
        }
        assert!(matches!(
            tso.get_timestamps(0),
            Err(TsoError::BadCount { .. })
        ));
        assert!(matches!(
            tso.get_timestamps(1 << 18),
            Err(TsoError::BadCount { .. })
        ));
    }

    #[test]
    fn concurrent_callers_get_distinct_timestamps() {
        let tso = TimestampOracle::in_memory();
        scheduler_api::testing::assert_concurrent_callers_get_unique_increasing_timestamps(
            &tso, 4, 5000,
        );
    }

    #[test]
    fn never_backwards_across_restart_even_if_clock_is_behind() {
        let dir = tempfile::tempdir().unwrap();
        let last = {
            let tso = TimestampOracle::open(dir.path()).unwrap();
            (0..10)
                .map(|_| tso.get_timestamp().unwrap())
                .last()
                .unwrap()
        };
        // Pretend the previous run issued timestamps an hour ahead of our clock: the mark on
        // disk must carry the restarted oracle past them.
        let future_mark = now_ms() + 3_600_000;
        fs::write(dir.path().join(MARK_FILE), future_mark.to_string()).unwrap();
        let tso = TimestampOracle::open(dir.path()).unwrap();
        let ts = tso.get_timestamp().unwrap();
        assert!(ts > last);
        assert!(ts.physical_ms() >= future_mark);
        // And the new mark is persisted ahead of what was just issued.
        let saved: u64 = fs::read_to_string(dir.path().join(MARK_FILE))
            .unwrap()
            .parse()
            .unwrap();
        assert!(saved > ts.physical_ms());
    }

    #[test]
    fn corrupt_mark_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(MARK_FILE), "not a number").unwrap();
        assert!(matches!(
            TimestampOracle::open(dir.path()),
            Err(TsoError::Persist(_))
        ));
    }
}
