//! Latches: in-memory, per-key mutual exclusion for commands on one store.
//!
//! A command acquires latches on all its keys before taking its snapshot and releases them
//! after its write batch is durable, so two commands touching a common key never interleave.
//! Keys are hashed into a fixed number of slots; a command takes all of its slots at once (it
//! waits until every one is free), so commands cannot deadlock on each other. Hash collisions
//! only cost some concurrency.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Condvar, Mutex};

const SLOTS: usize = 1024;

pub struct Latches {
    busy: Mutex<Vec<bool>>,
    released: Condvar,
}

/// Latches held by one command; released on drop.
pub struct LatchGuard<'a> {
    latches: &'a Latches,
    slots: Vec<usize>,
}

impl Default for Latches {
    fn default() -> Self {
        Self {
            busy: Mutex::new(vec![false; SLOTS]),
            released: Condvar::new(),
        }
    }
}

fn slot(key: &[u8]) -> usize {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() as usize) % SLOTS
}

impl Latches {
    /// Blocks until every key's latch is held by the caller.
    pub fn acquire<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) -> LatchGuard<'_> {
        let mut slots: Vec<usize> = keys.into_iter().map(slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        // All-or-nothing under one mutex: wait until every slot is free, then take them all.
        while slots.iter().any(|&s| busy[s]) {
            busy = self.released.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        for &s in &slots {
            busy[s] = true;
        }
        LatchGuard {
            latches: self,
            slots,
        }
    }
}

impl Drop for LatchGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.latches.busy.lock().unwrap_or_else(|e| e.into_inner());
        for &s in &self.slots {
            busy[s] = false;
        }
        drop(busy);
        self.latches.released.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn commands_on_a_common_key_are_serialized() {
        let latches = Latches::default();
        let inside = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for t in 0..4u8 {
                let (latches, inside) = (&latches, &inside);
                scope.spawn(move || {
                    for _ in 0..200 {
                        let own = [t];
                        let _guard = latches.acquire([&b"shared"[..], &own[..]]);
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                        inside.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
    }
}
