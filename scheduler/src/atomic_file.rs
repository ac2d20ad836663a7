//! Replacing a small file atomically: write a temporary file next to it, fsync it, rename it
//! over the old one, fsync the directory. After a crash the file holds either the old or the
//! new content, never a torn mix, and once this returns the new content survives a crash.
//! Used by the high-water marks and by the cluster metadata.

use std::fs;
use std::io::Write;
use std::path::Path;

/// Durably replaces `dir/name` with `bytes` (via `dir/name.tmp`).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()
}
