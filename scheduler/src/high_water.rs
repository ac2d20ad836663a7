//! A durable high-water mark: a number kept in a file, replaced atomically (write a temporary
//! file, fsync, rename, fsync the directory), so that after a crash the file holds either the
//! old or the new value, never a torn one. The timestamp oracle and the ID allocator reserve
//! ranges ahead of what they hand out by raising such a mark, which is what makes them never
//! go backwards across a restart.

use std::fs;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HighWaterError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is corrupt: {content:?}")]
    Corrupt { path: PathBuf, content: String },
}

/// A persisted mark; `None` directory: kept in memory only (tests, throwaway clusters).
pub struct HighWater {
    dir: Option<PathBuf>,
    name: &'static str,
}

impl HighWater {
    pub fn in_memory(name: &'static str) -> HighWater {
        HighWater { dir: None, name }
    }

    /// Opens (creating the directory) the mark `name` in `dir`; returns it with its value (0 if
    /// it was never stored).
    pub fn open(dir: &Path, name: &'static str) -> Result<(HighWater, u64), HighWaterError> {
        let io = |source| HighWaterError::Io {
            path: dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(name);
        let value = match fs::read_to_string(&path) {
            Ok(content) => content
                .trim()
                .parse::<u64>()
                .map_err(|_| HighWaterError::Corrupt {
                    path: path.clone(),
                    content: content.clone(),
                })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => return Err(HighWaterError::Io { path, source }),
        };
        Ok((
            HighWater {
                dir: Some(dir.to_path_buf()),
                name,
            },
            value,
        ))
    }

    /// Durably replaces the stored value.
    pub fn store(&self, value: u64) -> Result<(), HighWaterError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        crate::atomic_file::write_atomically(dir, self.name, value.to_string().as_bytes())
            .map_err(|source| HighWaterError::Io {
                path: dir.join(self.name),
                source,
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_survive_reopening_and_corruption_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (mark, value) = HighWater::open(dir.path(), "m").unwrap();
        assert_eq!(value, 0);
        mark.store(42).unwrap();
        assert_eq!(HighWater::open(dir.path(), "m").unwrap().1, 42);
        fs::write(dir.path().join("m"), "4x2").unwrap();
        assert!(matches!(
            HighWater::open(dir.path(), "m"),
            Err(HighWaterError::Corrupt { .. })
        ));
    }
}
