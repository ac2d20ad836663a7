//! Generated column values: `SERIAL`/`BIGSERIAL`/`SMALLSERIAL` and `GENERATED … AS
//! IDENTITY` columns take the next value of their sequence when an INSERT gives them none.
//!
//! A sequence is a counter in the key space (under the catalog's prefix: `m` `seq/`, the
//! table ID, `/`, the column name) holding the first value not yet handed out. Values are
//! handed out in batches of [`BATCH`]: a node takes a batch in a transaction of its own (not
//! the inserting one, so a rollback does not give values back and concurrent inserts do not
//! conflict on the counter; two nodes taking a batch at once conflict, and the loser
//! retries), then hands values out of it from memory. As in PostgreSQL with a sequence
//! cache, values are unique but not gap-free (a rollback, a restart or another node's
//! batch leaves gaps) and, across nodes, not in insertion order.
//!
//! Not implemented yet: `CREATE SEQUENCE`, `nextval`/`currval`/`setval`, sequence options
//! (`START`, `INCREMENT`, `CYCLE`), and `TRUNCATE … RESTART IDENTITY` (refused: other nodes'
//! batches could not be taken back).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kv::{Isolation, TransactionSource, TxnConfig, TxnMode};

use crate::catalog::KEY_PREFIX;
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::types::SqlType;

/// How many values a node takes at once.
pub const BATCH: i64 = 100;

/// How often taking a batch is retried after losing a conflict to another node.
const ATTEMPTS: usize = 50;

/// The key of the sequence of a table's column.
pub fn sequence_key(table_id: u64, column: &str) -> Vec<u8> {
    let mut key = vec![KEY_PREFIX];
    key.extend_from_slice(b"seq/");
    key.extend_from_slice(&table_id.to_be_bytes());
    key.push(b'/');
    key.extend_from_slice(column.as_bytes());
    key
}

/// The keys of every sequence of a table: `[start, end)`.
pub fn table_sequences(table_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![KEY_PREFIX];
    start.extend_from_slice(b"seq/");
    start.extend_from_slice(&table_id.to_be_bytes());
    start.push(b'/');
    let mut end = start.clone();
    *end.last_mut().expect("not empty") += 1;
    (start, end)
}

/// A batch: the next value to hand out and the end (exclusive).
type Batch = (i64, i64);

/// The batches this process holds, shared by its sessions.
pub struct Sequences {
    source: Arc<dyn TransactionSource>,
    /// Per sequence key: the next value to hand out and the end of the batch (each behind
    /// its own lock, held while a new batch is taken, so that only inserts into that column
    /// wait for it).
    batches: Mutex<HashMap<Vec<u8>, Arc<Mutex<Batch>>>>,
}

impl Sequences {
    pub fn new(source: Arc<dyn TransactionSource>) -> Sequences {
        Sequences {
            source,
            batches: Mutex::new(HashMap::new()),
        }
    }

    /// The next value of the sequence under `key`, for a column of type `ty` (22003 once the
    /// type's range is used up, as PostgreSQL's sequence reaches its maximum).
    pub fn next(&self, key: &[u8], ty: SqlType, column: &str) -> SqlResult<i64> {
        let batch = {
            let mut batches = self.batches.lock().expect("sequence batches");
            Arc::clone(batches.entry(key.to_vec()).or_default())
        };
        let mut batch = batch.lock().expect("a sequence batch");
        let (next, end) = &mut *batch;
        if *next >= *end {
            (*next, *end) = self.take_batch(key)?;
        }
        let value = *next;
        *next += 1;
        let max = match ty {
            SqlType::SmallInt => i16::MAX as i64,
            SqlType::Int => i32::MAX as i64,
            _ => i64::MAX,
        };
        if value > max {
            return Err(SqlError::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("the sequence of column \"{column}\" reached its maximum value ({max})"),
            ));
        }
        Ok(value)
    }

    /// Takes the next batch from the stored counter, in a transaction of its own.
    fn take_batch(&self, key: &[u8]) -> SqlResult<(i64, i64)> {
        let config = TxnConfig {
            mode: TxnMode::Optimistic,
            isolation: Isolation::RepeatableRead,
            lock_timeout: None,
        };
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            let mut txn = self.source.begin(config)?;
            let start = match txn.get(key)? {
                Some(bytes) => i64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                    SqlError::new(sqlstate::DATA_CORRUPTED, "corrupt sequence counter")
                })?),
                None => 1,
            };
            let end = start.saturating_add(BATCH);
            txn.put(key.to_vec(), end.to_be_bytes().to_vec());
            match txn.commit() {
                Ok(()) => return Ok((start, end)),
                Err(e) if e.is_retryable_transaction() => last_error = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last_error.expect("attempts were made").into())
    }
}
