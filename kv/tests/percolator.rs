//! Script-driven tests of the Percolator commands: every `percolator/*.test` file is a list
//! of commands against one fresh store, each with the result it must give. A new case is a
//! text file. Every script runs twice: against a store in-process and against the same kind
//! of store through its gRPC service, so the service and the remote client are held to the
//! same expectations.
//!
//! One command per line, `#` comments, `->` before the expected result. Timestamps are
//! written as physical milliseconds (logical part 0), so TTLs can be reasoned about.
//!
//! ```text
//! prewrite START PRIMARY TTL MUTATION...   MUTATION: put:k=v | del:k | lock:k; a kind
//!                                          ending in `!` (put!:k=v): the key holds the
//!                                          transaction's pessimistic lock already
//! lock START PRIMARY FOR_UPDATE TTL KEY... (AcquirePessimisticLock)
//! lock-newest START PRIMARY FOR_UPDATE TTL KEY...
//!                                          (the same, locking over newer changes and
//!                                          answering `ok` and the newest values)
//! unlock START FOR_UPDATE KEY...           (PessimisticRollback)
//! commit START COMMIT KEY...
//! rollback START KEY...                    (BatchRollback)
//! get KEY TS
//! scan START_KEY END_KEY|- TS [LIMIT]
//! status PRIMARY LOCK_TS CURRENT_TS        (CheckTxnStatus)
//! resolve START COMMIT|0                   (ResolveLock on the whole store)
//! heartbeat PRIMARY START TTL              (TxnHeartBeat)
//! ```
//!
//! Results: `ok`, `none`, a value, `k=v k=v …` or `empty` for scans, `locked START` (a read or
//! prewrite met the lock of transaction START), `write-conflict COMMIT_TS`, `aborted`,
//! `committed TS`, `rolled-back`, `alive TTL`, `resolved N`, `ttl N`, `error` (any other
//! failure).

mod support;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use kv::KvError;
use kv::mvcc::reader::ReadOutcome;
use kv::storage::MemoryEngine;
use kv::txn::actions::PrewriteError;
use kv::txn::{LockMode, Mutation, TxnCommands, TxnCommandsExt, TxnStatus, TxnStore};
use scheduler_api::Timestamp;

fn ts(word: &str) -> Result<Timestamp, String> {
    word.parse::<u64>()
        .map(|ms| Timestamp::compose(ms, 0))
        .map_err(|_| format!("bad timestamp {word:?}"))
}

fn show_ts(t: Timestamp) -> String {
    t.physical_ms().to_string()
}

fn show_error(e: &KvError) -> String {
    match e {
        KvError::WriteConflict {
            conflict_commit_ts, ..
        } => format!("write-conflict {}", show_ts(*conflict_commit_ts)),
        KvError::TxnAborted { .. } => "aborted".into(),
        _ => "error".into(),
    }
}

fn show<T>(result: Result<T, KvError>, ok: impl FnOnce(T) -> String) -> String {
    match result {
        Ok(v) => ok(v),
        Err(e) => show_error(&e),
    }
}

/// A mutation word, and whether it is marked pessimistic (`put!:k=v`).
fn mutation(word: &str) -> Result<(Mutation, bool), String> {
    let (kind, rest) = word
        .split_once(':')
        .ok_or(format!("bad mutation {word:?}"))?;
    let (kind, pessimistic) = match kind.strip_suffix('!') {
        Some(kind) => (kind, true),
        None => (kind, false),
    };
    let mutation = match kind {
        "put" => {
            let (k, v) = rest.split_once('=').ok_or(format!("bad put {word:?}"))?;
            Mutation::Put {
                key: k.as_bytes().to_vec(),
                value: v.as_bytes().to_vec(),
            }
        }
        "del" => Mutation::Delete {
            key: rest.as_bytes().to_vec(),
        },
        "lock" => Mutation::Lock {
            key: rest.as_bytes().to_vec(),
        },
        _ => return Err(format!("bad mutation kind {kind:?}")),
    };
    Ok((mutation, pessimistic))
}

fn locked_or(result: Result<(), PrewriteError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(PrewriteError::Locked { lock, .. }) => format!("locked {}", show_ts(lock.start_ts)),
        Err(PrewriteError::Failed(e)) => show_error(&e),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(store: &dyn TxnCommands, command: &str) -> Result<String, String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let arg = |i: usize| words.get(i).copied().ok_or(format!("missing argument {i}"));
    let keys = |from: usize| {
        words[from.min(words.len())..]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    Ok(match arg(0)? {
        "prewrite" => {
            let (mutations, pessimistic): (Vec<_>, Vec<_>) = words[4.min(words.len())..]
                .iter()
                .map(|w| mutation(w))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .unzip();
            let pessimistic = if pessimistic.contains(&true) {
                pessimistic
            } else {
                Vec::new()
            };
            let ttl: u64 = arg(3)?.parse().map_err(|_| "bad ttl")?;
            locked_or(store.prewrite_pessimistic(
                &mutations,
                &pessimistic,
                arg(2)?.as_bytes(),
                ts(arg(1)?)?,
                ttl,
            ))
        }
        "lock" | "lock-newest" => {
            let ttl: u64 = arg(4)?.parse().map_err(|_| "bad ttl")?;
            let newest = words[0] == "lock-newest";
            let mode = LockMode {
                lock_if_changed: newest,
                return_values: newest,
            };
            let locked = store.acquire_pessimistic_lock(
                &keys(5),
                arg(2)?.as_bytes(),
                ts(arg(1)?)?,
                ts(arg(3)?)?,
                ttl,
                0,
                mode,
            );
            match locked {
                Ok(mut values) if newest => {
                    values.sort();
                    let shown: Vec<String> = values
                        .iter()
                        .map(|(k, v)| format!("{}={}", text(k), text(v)))
                        .collect();
                    format!("ok {}", shown.join(" ")).trim_end().to_string()
                }
                other => locked_or(other.map(drop)),
            }
        }
        "unlock" => show(
            store.pessimistic_rollback(&keys(3), ts(arg(1)?)?, ts(arg(2)?)?),
            |()| "ok".into(),
        ),
        "commit" => show(store.commit(&keys(3), ts(arg(1)?)?, ts(arg(2)?)?), |()| {
            "ok".into()
        }),
        "rollback" => show(store.rollback(&keys(2), ts(arg(1)?)?), |()| "ok".into()),
        "get" => show(
            store.get(arg(1)?.as_bytes(), ts(arg(2)?)?),
            |outcome| match outcome {
                ReadOutcome::Value(Some(v)) => text(&v),
                ReadOutcome::Value(None) => "none".into(),
                ReadOutcome::Locked { lock, .. } => format!("locked {}", show_ts(lock.start_ts)),
            },
        ),
        "scan" => {
            let end = match arg(2)? {
                "-" => None,
                e => Some(e.as_bytes().to_vec()),
            };
            let limit = words
                .get(4)
                .map(|l| l.parse().unwrap_or(usize::MAX))
                .unwrap_or(usize::MAX);
            show(
                store.scan(arg(1)?.as_bytes(), end.as_deref(), ts(arg(3)?)?, limit),
                |outcome| match outcome {
                    ReadOutcome::Value(pairs) if pairs.is_empty() => "empty".into(),
                    ReadOutcome::Value(pairs) => pairs
                        .iter()
                        .map(|(k, v)| format!("{}={}", text(k), text(v)))
                        .collect::<Vec<_>>()
                        .join(" "),
                    ReadOutcome::Locked { lock, .. } => {
                        format!("locked {}", show_ts(lock.start_ts))
                    }
                },
            )
        }
        "status" => show(
            store.check_txn_status(arg(1)?.as_bytes(), ts(arg(2)?)?, ts(arg(3)?)?),
            |s| match s {
                TxnStatus::Committed { commit_ts } => format!("committed {}", show_ts(commit_ts)),
                TxnStatus::RolledBack => "rolled-back".into(),
                TxnStatus::Alive { ttl_ms } => format!("alive {ttl_ms}"),
            },
        ),
        "resolve" => {
            let commit = match arg(2)? {
                "0" => None,
                c => Some(ts(c)?),
            };
            show(store.resolve_lock(b"", ts(arg(1)?)?, commit), |n| {
                format!("resolved {n}")
            })
        }
        "heartbeat" => {
            let ttl: u64 = arg(3)?.parse().map_err(|_| "bad ttl")?;
            show(
                store.txn_heartbeat(arg(1)?.as_bytes(), ts(arg(2)?)?, ttl),
                |t| format!("ttl {t}"),
            )
        }
        other => return Err(format!("unknown command {other:?}")),
    })
}

fn run_script(path: &Path, store: &dyn TxnCommands) -> Vec<String> {
    let mut failures = Vec::new();
    for (number, line) in fs::read_to_string(path)
        .expect("readable script")
        .lines()
        .enumerate()
    {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let place = format!("{}:{}", path.display(), number + 1);
        let Some((command, expected)) = line.split_once("->") else {
            failures.push(format!("{place}: no `->` in {line:?}"));
            continue;
        };
        match run(store, command.trim()) {
            Ok(actual) if actual == expected.trim() => {}
            Ok(actual) => failures.push(format!(
                "{place}: {}\n  expected: {}\n  actual:   {actual}",
                command.trim(),
                expected.trim()
            )),
            Err(problem) => failures.push(format!("{place}: {problem}")),
        }
    }
    failures
}

fn scripts() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/percolator");
    let mut paths: Vec<_> = fs::read_dir(&dir)
        .expect("scripts directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    paths
}

fn check(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failing steps:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn percolator_scripts_in_process() {
    let run = |p: &std::path::PathBuf| run_script(p, &TxnStore::new(Arc::new(MemoryEngine::new())));
    check(scripts().iter().flat_map(run).collect());
}

#[test]
fn percolator_scripts_over_grpc() {
    let run = |p: &std::path::PathBuf| run_script(p, support::GrpcStore::start().remote.as_ref());
    check(scripts().iter().flat_map(run).collect());
}
