#!/usr/bin/env bash
# Runs every sqllogictest file (tests/slt/own and tests/slt/sqlite) on PostgreSQL 15 of this
# machine and on RegionDB, record by record, and writes tests/slt/CONFORMANCE.md with the
# counts. Fails if a record that passes on PostgreSQL fails on RegionDB other than by an
# honest refusal (0A000) or a `skipif regiondb` whose reason the file states.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REGIONDB_ROOT"
regiondb_ensure_postgres || { echo "regiondb: could not install PostgreSQL" >&2; exit 1; }
cargo test --release --test slt conformance -- --ignored --nocapture
cat tests/slt/CONFORMANCE.md
