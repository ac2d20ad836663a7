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
//! - No barging: the key a release wakes a waiter for is *reserved* for that waiter's
//!   transaction for a moment ([`RESERVED_FOR`]), and a newcomer of another transaction that
//!   finds the key free but reserved queues behind ([`LockWaits::reserved_for_other`]), so
//!   locks are granted in the order of the queue. The reservation ends when its transaction
//!   takes the key ([`LockWaits::taken`]), passes its turn on, or the moment runs out (a
//!   woken waiter that never came back must not block the key).
//!
//! Deliberately not here (yet): waiters of a region that lost its leadership are not woken —
//! their slice runs out and their client sends again, to the right leader.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use scheduler_api::Timestamp;

/// How long a released key waits for the waiter it woke to take it.
pub const RESERVED_FOR: Duration = Duration::from_millis(200);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One waiting command, of transaction `txn`.
pub struct Waiter {
    txn: Timestamp,
    woken: Mutex<bool>,
    wake: Condvar,
}

impl Waiter {
    fn new(txn: Timestamp) -> Arc<Waiter> {
        Arc::new(Waiter {
            txn,
            woken: Mutex::new(false),
            wake: Condvar::new(),
        })
    }
}

#[derive(Default)]
struct Queues {
    waiting: HashMap<Vec<u8>, VecDeque<Arc<Waiter>>>,
    /// Keys released to a woken waiter: its transaction, and until when.
    reserved: HashMap<Vec<u8>, (Timestamp, Instant)>,
}

#[derive(Default)]
pub struct LockWaits {
    queues: Mutex<Queues>,
}

impl LockWaits {
    /// Queues a waiter of transaction `txn` for `key` (hold the key's latch).
    pub fn enqueue(&self, key: &[u8], txn: Timestamp) -> Arc<Waiter> {
        let waiter = Waiter::new(txn);
        lock(&self.queues)
            .waiting
            .entry(key.to_vec())
            .or_default()
            .push_back(Arc::clone(&waiter));
        waiter
    }

    /// Queues a woken waiter that found the key locked again back at the head (hold the key's
    /// latch).
    pub fn enqueue_first(&self, key: &[u8], txn: Timestamp) -> Arc<Waiter> {
        let waiter = Waiter::new(txn);
        lock(&self.queues)
            .waiting
            .entry(key.to_vec())
            .or_default()
            .push_front(Arc::clone(&waiter));
        waiter
    }

    /// The first of `keys` reserved for a woken waiter of a transaction other than `txn`,
    /// with that transaction (hold the keys' latches).
    pub fn reserved_for_other(
        &self,
        keys: &[Vec<u8>],
        txn: Timestamp,
    ) -> Option<(Vec<u8>, Timestamp)> {
        let queues = lock(&self.queues);
        if queues.reserved.is_empty() {
            return None;
        }
        let now = Instant::now();
        keys.iter().find_map(|key| match queues.reserved.get(key) {
            Some(&(owner, until)) if owner != txn && now < until => Some((key.clone(), owner)),
            _ => None,
        })
    }

    /// Transaction `txn` locked `keys`: their reservations for it end.
    pub fn taken(&self, keys: &[Vec<u8>], txn: Timestamp) {
        let mut queues = lock(&self.queues);
        if queues.reserved.is_empty() {
            return;
        }
        for key in keys {
            if queues
                .reserved
                .get(key)
                .is_some_and(|&(owner, _)| owner == txn)
            {
                queues.reserved.remove(key);
            }
        }
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
        if let Some(queue) = queues.waiting.get_mut(key) {
            queue.retain(|w| !Arc::ptr_eq(w, waiter));
            if queue.is_empty() {
                queues.waiting.remove(key);
            }
        }
        !*lock(&waiter.woken)
    }

    /// The locks on `keys` are gone: wakes the first waiter of each, and reserves the key
    /// for it (see the module doc).
    pub fn release<'a>(&self, keys: impl IntoIterator<Item = &'a [u8]>) {
        let mut queues = lock(&self.queues);
        if queues.waiting.is_empty() && queues.reserved.is_empty() {
            return;
        }
        for key in keys {
            let first = match queues.waiting.get_mut(key) {
                Some(queue) => {
                    let first = queue.pop_front();
                    if queue.is_empty() {
                        queues.waiting.remove(key);
                    }
                    first
                }
                None => None,
            };
            match first {
                Some(waiter) => {
                    let until = Instant::now() + RESERVED_FOR;
                    queues.reserved.insert(key.to_vec(), (waiter.txn, until));
                    *lock(&waiter.woken) = true;
                    waiter.wake.notify_one();
                }
                None => {
                    queues.reserved.remove(key);
                }
            }
        }
    }

    /// A woken waiter gives up without taking `key`'s lock: the next one gets its turn.
    pub fn pass_on(&self, key: &[u8]) {
        self.release([key]);
    }

    /// How many waiters are queued on `key`.
    pub fn waiting(&self, key: &[u8]) -> usize {
        lock(&self.queues).waiting.get(key).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_wakes_the_first_waiter_only_and_waiters_that_time_out_leave() {
        let waits = Arc::new(LockWaits::default());
        let first = waits.enqueue(b"k", Timestamp(1));
        let second = waits.enqueue(b"k", Timestamp(1));
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
        let waiter = waits.enqueue(b"k", Timestamp(1));
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
    fn a_released_key_is_reserved_for_the_woken_waiters_transaction_until_it_takes_it() {
        let waits = LockWaits::default();
        let (woken, newcomer) = (Timestamp(7), Timestamp(9));
        let keys = [b"k".to_vec(), b"other".to_vec()];
        let waiter = waits.enqueue(b"k", woken);
        assert_eq!(waits.reserved_for_other(&keys, newcomer), None);
        waits.release([b"k".as_slice()]);
        assert!(waits.wait(b"k", &waiter, Instant::now()));
        assert_eq!(
            waits.reserved_for_other(&keys, newcomer),
            Some((b"k".to_vec(), woken)),
            "a newcomer queues behind"
        );
        assert_eq!(waits.reserved_for_other(&keys, woken), None, "its own");
        waits.taken(&keys, woken);
        assert_eq!(waits.reserved_for_other(&keys, newcomer), None);
        // A release with nobody queued leaves no reservation; a reservation runs out.
        let again = waits.enqueue(b"k", woken);
        waits.release([b"k".as_slice()]);
        assert!(waits.wait(b"k", &again, Instant::now()));
        waits.release([b"k".as_slice()]);
        assert_eq!(waits.reserved_for_other(&keys, newcomer), None);
        let late = waits.enqueue(b"k", woken);
        waits.release([b"k".as_slice()]);
        assert!(waits.wait(b"k", &late, Instant::now()));
        std::thread::sleep(RESERVED_FOR + Duration::from_millis(20));
        assert_eq!(waits.reserved_for_other(&keys, newcomer), None, "expired");
    }

    #[test]
    fn a_waiter_put_back_first_keeps_its_turn() {
        let waits = LockWaits::default();
        let later = waits.enqueue(b"k", Timestamp(1));
        let again = waits.enqueue_first(b"k", Timestamp(2));
        waits.release([b"k".as_slice()]);
        assert!(waits.wait(b"k", &again, Instant::now()));
        assert!(!waits.wait(b"k", &later, Instant::now()));
    }
}
