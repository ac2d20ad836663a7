//! [`LockWaits`]: transactions waiting, in a store, for other transactions' pessimistic or
//! prewrite locks to go — woken when the lock is released, not by polling.
//!
//! # Protocol
//!
//! - A command that meets a lock and may wait registers a waiter on the key *while holding
//!   the key's latch* ([`LockWaits::enqueue`]), then drops the latch and sleeps
//!   ([`LockWaits::wait`]) for at most a slice of time.
//! - A command that removes locks (commit, rollback, resolve, a statement's rollback) calls
//!   [`LockWaits::release`] for those keys once its write is applied, *still holding their
//!   latches*. As both sides hold the latch, no release can slip between a waiter's look at
//!   the lock and its registration.
//! - A release wakes the first waiter of the key only; the others stay queued in order. A
//!   woken waiter that finds the key locked again goes back to the head of the queue
//!   ([`LockWaits::enqueue_first`]); one that gives up without taking the lock passes the turn
//!   on ([`LockWaits::pass_on`]).
//!
//! One `LockWaits` serves all the regions of a store (`txn::SharedLocking`), so a release
//! wakes a waiter whose region split or was rebuilt meanwhile.
//!
//! Deliberately not here (yet): a newcomer that finds the key free takes it even while
//! others wait; waiters of a region that lost its leadership are not woken — their slice
//! runs out and their client sends again, to the right leader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One waiting command.
#[derive(Default)]
pub struct Waiter {
    woken: Mutex<bool>,
    wake: Condvar,
}

#[derive(Default)]
pub struct LockWaits {
    queues: Mutex<HashMap<Vec<u8>, VecDeque<Arc<Waiter>>>>,
}

impl LockWaits {
    /// Queues a waiter for `key` (hold the key's latch).
    pub fn enqueue(&self, key: &[u8]) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter::default());
        lock(&self.queues)
            .entry(key.to_vec())
            .or_default()
            .push_back(Arc::clone(&waiter));
        waiter
    }

    /// Queues a woken waiter that found the key locked again back at the head (hold the key's
    /// latch).
    pub fn enqueue_first(&self, key: &[u8]) -> Arc<Waiter> {
        let waiter = Arc::new(Waiter::default());
        lock(&self.queues)
            .entry(key.to_vec())
            .or_default()
            .push_front(Arc::clone(&waiter));
        waiter
    }

    /// Sleeps until `waiter` is woken or `deadline`; whether it was woken. A waiter that was
    /// not leaves the queue.
    pub fn wait(&self, key: &[u8], waiter: &Arc<Waiter>, deadline: Instant) -> bool {
        self.sleep(waiter, deadline) || !self.leave(key, waiter)
    }

    /// Sleeps until `waiter` is woken or `until`, staying queued; whether it was woken.
    pub fn sleep(&self, waiter: &Arc<Waiter>, until: Instant) -> bool {
        let mut woken = lock(&waiter.woken);
        while !*woken {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            woken = waiter
                .wake
                .wait_timeout(woken, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *woken
    }

    /// Takes `waiter` out of `key`'s queue without its turn; false if it was woken before it
    /// left (its turn then came: the caller has it, to use or to [`pass_on`]).
    ///
    /// [`pass_on`]: LockWaits::pass_on
    pub fn leave(&self, key: &[u8], waiter: &Arc<Waiter>) -> bool {
        let mut queues = lock(&self.queues);
        if let Some(queue) = queues.get_mut(key) {
            queue.retain(|w| !Arc::ptr_eq(w, waiter));
            if queue.is_empty() {
                queues.remove(key);
            }
        }
        !*lock(&waiter.woken)
    }

    /// The locks on `keys` are gone: wakes the first waiter of each.
    pub fn release<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut queues = lock(&self.queues);
        if queues.is_empty() {
            return;
        }
        for key in keys {
            let Some(queue) = queues.get_mut(key) else {
                continue;
            };
            let first = queue.pop_front();
            if queue.is_empty() {
                queues.remove(key);
            }
            if let Some(waiter) = first {
                *lock(&waiter.woken) = true;
                waiter.wake.notify_one();
            }
        }
    }

    /// A woken waiter gives up without taking `key`'s lock: the next one gets its turn.
    pub fn pass_on(&self, key: &[u8]) {
        self.release([key]);
    }

    /// How many waiters are queued on `key`.
    pub fn waiting(&self, key: &[u8]) -> usize {
        lock(&self.queues).get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_release_wakes_the_first_waiter_only_and_waiters_that_time_out_leave() {
        let waits = Arc::new(LockWaits::default());
        let first = waits.enqueue(b"k");
        let second = waits.enqueue(b"k");
        assert_eq!(waits.waiting(b"k"), 2);
        waits.release([b"k".as_slice()]);
        assert!(
            waits.wait(b"k", &first, Instant::now()),
            "woken before it slept"
        );
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!waits.wait(b"k", &second, soon), "not woken: timed out");
        assert_eq!(waits.waiting(b"k"), 0);
        // A release with nobody waiting is nothing.
        waits.release([b"k".as_slice()]);
    }

    #[test]
    fn a_sleeping_waiter_is_woken_by_a_release_on_another_thread() {
        let waits = Arc::new(LockWaits::default());
        let waiter = waits.enqueue(b"k");
        let releaser = {
            let waits = Arc::clone(&waits);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                waits.release([b"k".as_slice()]);
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        assert!(waits.wait(b"k", &waiter, deadline));
        releaser.join().unwrap();
    }

    #[test]
    fn a_waiter_put_back_first_keeps_its_turn() {
        let waits = LockWaits::default();
        let later = waits.enqueue(b"k");
        let again = waits.enqueue_first(b"k");
        waits.release([b"k".as_slice()]);
        assert!(waits.wait(b"k", &again, Instant::now()));
        assert!(!waits.wait(b"k", &later, Instant::now()));
    }
}
