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
//! Not here yet: serving over gRPC (the `Tso` service in `proto/`), and leader election among
//! several scheduler replicas (a single scheduler is the authority).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::timestamp::{LOGICAL_PER_MS, Timestamp};

/// How far ahead of the issued physical time the persisted high-water mark is kept.
pub const SAVE_AHEAD_MS: u64 = 3_000;

const MARK_FILE: &str = "tso-high-water";

#[derive(Debug, thiserror::Error)]
pub enum TsoError {
    #[error("timestamp oracle I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timestamp oracle state in {path} is corrupt: {content:?}")]
    Corrupt { path: PathBuf, content: String },
    #[error("a timestamp batch must ask for between 1 and {max} timestamps, not {count}")]
    BadCount { count: u32, max: u64 },
}

struct State {
    physical: u64,
    logical: u64,
    /// Persisted mark: every issued timestamp has physical < mark.
    mark: u64,
}

/// The timestamp oracle. Thread-safe; share it behind an `Arc`.
pub struct TimestampOracle {
    /// Where the high-water mark lives; `None` for a purely in-memory oracle (tests).
    dir: Option<PathBuf>,
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
        let io = |source| TsoError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(MARK_FILE);
        let mark = match fs::read_to_string(&path) {
            Ok(content) => content
                .trim()
                .parse::<u64>()
                .map_err(|_| TsoError::Corrupt {
                    path: path.clone(),
                    content: content.clone(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(TsoError::Io { path, source }),
        };
        Ok(Self {
            dir: Some(dir.to_path_buf()),
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
            dir: None,
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
            self.persist_mark(mark)?;
            state.mark = mark;
        }
        state.logical += count;
        Ok(Timestamp::compose(state.physical, state.logical))
    }

    fn persist_mark(&self, mark: u64) -> Result<(), TsoError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join(MARK_FILE);
        let tmp = dir.join(format!("{MARK_FILE}.tmp"));
        let io = |source| TsoError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(mark.to_string().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
        let mut all: Vec<u64> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..5000)
                            .map(|_| tso.get_timestamp().unwrap().0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
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
            Err(TsoError::Corrupt { .. })
        ));
    }
}
