//! Unique ID allocation (region, peer and store IDs).
//!
//! IDs are handed out in increasing order and never reused, also across a restart: before
//! handing out an ID at or above the persisted high-water mark, the allocator raises the mark
//! by [`SAVE_AHEAD`] (one fsync per that many IDs). On start it resumes at the mark, skipping
//! whatever the previous run had reserved but not handed out.

use std::path::Path;
use std::sync::Mutex;

use crate::high_water::{HighWater, HighWaterError};

pub const SAVE_AHEAD: u64 = 1000;
const MARK_FILE: &str = "id-high-water";

#[derive(Debug, thiserror::Error)]
pub enum IdError {
    #[error("ID allocator: {0}")]
    Persist(#[from] HighWaterError),
    #[error("an ID batch must ask for between 1 and {max} IDs, not {count}")]
    BadCount { count: u32, max: u64 },
}

struct State {
    next: u64,
    /// Every ID handed out is below this persisted mark.
    mark: u64,
}

pub struct IdAllocator {
    high_water: HighWater,
    state: Mutex<State>,
}

impl IdAllocator {
    /// IDs start at 1 (0 means "none" throughout RegionDB).
    pub fn open(dir: &Path) -> Result<IdAllocator, IdError> {
        let (high_water, mark) = HighWater::open(dir, MARK_FILE)?;
        let next = mark.max(1);
        Ok(IdAllocator {
            high_water,
            state: Mutex::new(State { next, mark }),
        })
    }

    pub fn in_memory() -> IdAllocator {
        IdAllocator {
            high_water: HighWater::in_memory(MARK_FILE),
            state: Mutex::new(State { next: 1, mark: 0 }),
        }
    }

    /// A block of `count` IDs; returns the first: `[first, first + count)`.
    pub fn alloc(&self, count: u32) -> Result<u64, IdError> {
        if count == 0 || u64::from(count) > SAVE_AHEAD {
            return Err(IdError::BadCount {
                count,
                max: SAVE_AHEAD,
            });
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let first = state.next;
        let end = first + u64::from(count);
        if end > state.mark {
            let mark = end + SAVE_AHEAD;
            self.high_water.store(mark)?;
            state.mark = mark;
        }
        state.next = end;
        Ok(first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_increasing_and_never_reused_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut last = 0;
        for _ in 0..3 {
            let ids = IdAllocator::open(dir.path()).unwrap();
            for count in [1u32, 5, 999, 1000, 3] {
                let first = ids.alloc(count).unwrap();
                assert!(first > last, "{first} after {last}");
                last = first + u64::from(count) - 1;
            }
        }
        let ids = IdAllocator::in_memory();
        assert_eq!(ids.alloc(1).unwrap(), 1);
        assert!(matches!(ids.alloc(0), Err(IdError::BadCount { .. })));
        assert!(matches!(ids.alloc(1001), Err(IdError::BadCount { .. })));
    }
}
