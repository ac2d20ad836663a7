# Sourced by the benchmarks: a work directory removed on exit with every process started,
# the release build, and PostgreSQL 15 of this machine to compare against.
#
#   bench_start_postgres PORT [SERVER OPTIONS]   initdb + start, fsync on (like RegionDB);
#                                                as the `postgres` user when run as root
#   wait_port PORT                               until psql answers there
#   PIDS+=($!)                                   processes to kill on exit
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=$(mktemp -d /tmp/regiondb-bench.XXXXXX)
PIDS=()
AS_PG=()
PGDATA_DIR=""
bench_cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$PGDATA_DIR" ] && "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_DIR" stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap bench_cleanup EXIT

source scripts/env.sh
regiondb_ensure_postgres
cargo build --release --quiet
BIN=target/release/regiondb
PGBIN=$(dirname "$(command -v pg_ctl || ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1)")
[ -x "$PGBIN/pg_ctl" ] || { echo "PostgreSQL's pg_ctl not found" >&2; exit 1; }
export PATH="$PGBIN:$PATH"

wait_port() {
  for _ in $(seq 1 100); do
    psql -h 127.0.0.1 -p "$1" -U postgres -c 'select 1' >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "port $1 never answered" >&2
  exit 1
}

bench_start_postgres() { # port [server options]
  local port=$1
  shift
  if [ "$(id -u)" = 0 ]; then AS_PG=(runuser -u postgres --); fi
  PGDATA_DIR="$WORK/pg"
  chmod 755 "$WORK"
  mkdir -p "$PGDATA_DIR" && { [ ${#AS_PG[@]} -eq 0 ] || chown postgres "$PGDATA_DIR"; }
  "${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust >/dev/null
  "${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -o "-p $port -k $PGDATA_DIR -c listen_addresses=127.0.0.1 $*" \
    -l "$PGDATA_DIR/pg.log" start >/dev/null
  wait_port "$port"
}
