#!/usr/bin/env bash
# Quick start, command 2: run every test of the workspace.
# Installs what the build and tests need on a fresh machine (libclang, PostgreSQL to compare
# against) and reuses a cached RocksDB build.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p sql`).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REGIONDB_ROOT"
regiondb_ensure_postgres || { echo "regiondb: could not install PostgreSQL" >&2; exit 1; }
cargo build --workspace --all-targets
regiondb_save_rocksdb
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace "$@" 2>&1 | tee "$log"
# One closing line for the whole run: cargo prints one per test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
