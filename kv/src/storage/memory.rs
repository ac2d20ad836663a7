//! The in-memory engine, for tests and for the SQL layer's fast test suite.
//!
//! Each column family is a `BTreeMap` inside one `Arc`. A snapshot clones the `Arc` (cheap);
//! a write while a snapshot is alive copies the maps first (`Arc::make_mut`), so snapshots stay
//! consistent without any versioning. That copy makes writes O(n) while snapshots are held,
//! which is fine for test-sized data and is the reason this engine is not for production.
//! Nothing is persisted: "durable" means "visible to every later snapshot".

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use super::{Cf, Engine, KvPair, Modify, Snapshot, StorageResult, WriteBatch};

type Families = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

#[derive(Default)]
pub struct MemoryEngine {
    families: RwLock<Arc<Families>>,
}

impl MemoryEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for MemoryEngine {
    type Snapshot<'a> = MemorySnapshot;

    fn snapshot(&self) -> MemorySnapshot {
        let families = self.families.read().unwrap_or_else(|e| e.into_inner());
        MemorySnapshot {
            families: Arc::clone(&families),
        }
    }

    fn write(&self, batch: WriteBatch) -> StorageResult<()> {
        let mut guard = self.families.write().unwrap_or_else(|e| e.into_inner());
        let families = Arc::make_mut(&mut guard);
        for modify in batch.modifies {
            match modify {
                Modify::Put { cf, key, value } => {
                    families[cf.index()].insert(key, value);
                }
                Modify::Delete { cf, key } => {
                    families[cf.index()].remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// A snapshot of the in-memory engine: the maps as they were when it was taken.
pub struct MemorySnapshot {
    families: Arc<Families>,
}

impl Snapshot for MemorySnapshot {
    fn get(&self, cf: Cf, key: &[u8]) -> StorageResult<Option<Vec<u8>>> {
        Ok(self.families[cf.index()].get(key).cloned())
    }

    fn scan<'a>(
        &'a self,
        cf: Cf,
        start: &[u8],
        end: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = StorageResult<KvPair>> + 'a> {
        let upper = match end {
            Some(end) if end <= start => return Box::new(std::iter::empty()),
            Some(end) => Bound::Excluded(end.to_vec()),
            None => Bound::Unbounded,
        };
        let range = (Bound::Included(start.to_vec()), upper);
        Box::new(
            self.families[cf.index()]
                .range::<Vec<u8>, _>(range)
                .map(|(k, v)| Ok((k.clone(), v.clone()))),
        )
    }
}
