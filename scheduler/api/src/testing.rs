//! Checks that every [`TimestampSource`] must pass, shared by their tests (the scheduler's
//! oracle, [`crate::MemoryTso`], [`crate::SchedulerClient`] over gRPC).

use crate::tso::TimestampSource;

/// `callers` threads each take `per_caller` timestamps from `source` at once: every caller
/// sees its timestamps increase, and no timestamp is handed out twice. Panics otherwise.
pub fn assert_concurrent_callers_get_unique_increasing_timestamps(
    source: &dyn TimestampSource,
    callers: usize,
    per_caller: usize,
) {
    let mut all: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                scope.spawn(|| {
                    let mine: Vec<u64> = (0..per_caller)
                        .map(|_| source.get_timestamp().unwrap().0)
                        .collect();
                    assert!(
                        mine.windows(2).all(|w| w[0] < w[1]),
                        "each caller sees time move forward"
                    );
                    mine
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
    assert_eq!(all.len(), n, "a timestamp handed out twice");
}
