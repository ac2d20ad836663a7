//! Multi-version concurrency control over the three data column families.
//!
//! # Layout
//!
//! For a user key `k` (encoded memcomparably as `K`, see [`key`]):
//!
//! | family  | key                     | value                                   |
//! |---------|-------------------------|-----------------------------------------|
//! | `lock`  | `K`                     | [`Lock`]: kind, primary key, start_ts, TTL |
//! | `default` | `K + ts(start_ts)`    | the value written by that transaction   |
//! | `write` | `K + ts(commit_ts)`     | [`Write`]: kind (Put/Delete/Rollback/Lock), start_ts |
//!
//! `ts(t)` is `!t` big-endian, so for one key the newest version sorts first and "the newest
//! version at or below `t`" is a single forward seek to `K + ts(t)`.
//!
//! # Visibility
//!
//! A reader at timestamp `t` sees, for each key, the newest `Put` or `Delete` write record with
//! `commit_ts <= t` (`Rollback` and `Lock` records are skipped). If the key carries a lock with
//! `start_ts <= t` (other than a lock-only lock), the reader cannot know whether that
//! transaction will commit below `t`, so it reports the lock instead of guessing; the client
//! resolves it (see `txn`).
//!
//! Not implemented yet: garbage collection of old versions (they accumulate; point reads stay
//! one seek, scans step over old versions), and short values inlined in write records.

pub mod key;
pub mod reader;
pub mod record;

pub use reader::MvccReader;
pub use record::{Lock, LockKind, Write, WriteKind};
