#!/usr/bin/env bash
# Quick start, command 1: build and run a single-node RegionDB cluster.
#   scripts/run.sh                      data in ./regiondb-data, PostgreSQL wire on 127.0.0.1:5433
#   scripts/run.sh --pg-listen 127.0.0.1:6543 --data-dir /tmp/rdb
# Installs what the build needs on a fresh machine (libclang) and reuses a cached RocksDB build.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REGIONDB_ROOT"
cargo build --release --bin regiondb
regiondb_save_rocksdb
exec target/release/regiondb "$@"
