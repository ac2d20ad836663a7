#!/usr/bin/env bash
# Quick start, command 2: run every test of the workspace.
# Installs what the build needs on a fresh machine (libclang) and reuses a cached RocksDB build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REGIONDB_ROOT"
cargo build --workspace --all-targets
regiondb_save_rocksdb
cargo test --workspace "$@"
