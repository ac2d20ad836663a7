#!/bin/bash
# Secondary indexes and generated keys: PostgreSQL 15 and a single-node RegionDB on this
# machine in one invocation, reported as ratios to PostgreSQL.
#
#   bench/index.sh [SECONDS] [CLIENTS] [ROWS]
#
# Workloads (pgbench custom scripts, simple protocol):
# - lookup: SELECT by a random value of a unique secondary key (email) over ROWS rows —
#   an index point read and the row it leads to;
# - lookup-only: the same, selecting only the key and the id (index-only in RegionDB);
# - serial-insert: INSERT into a table with a BIGSERIAL key from every client at once
#   (identity values come in batches per node, so inserts do not serialize on a counter);
#   its output also checks the ids came out distinct.
SECONDS_PER_RUN=${1:-10}
CLIENTS=${2:-8}
ROWS=${3:-100000}
source "$(dirname "$0")/lib.sh"

cat > "$WORK/init.sql" <<SQL
CREATE TABLE people (id INT PRIMARY KEY, email TEXT UNIQUE, name TEXT);
INSERT INTO people SELECT g, 'user' || g || '@example.com', 'name ' || g FROM generate_series(1, $ROWS) g;
CREATE TABLE events (id BIGSERIAL PRIMARY KEY, who INT, what TEXT);
SQL
cat > "$WORK/lookup.sql" <<SQL
\set n random(1, $ROWS)
SELECT * FROM people WHERE email = 'user' || :n || '@example.com';
SQL
cat > "$WORK/lookup-only.sql" <<SQL
\set n random(1, $ROWS)
SELECT id, email FROM people WHERE email = 'user' || :n || '@example.com';
SQL
cat > "$WORK/serial-insert.sql" <<SQL
\set n random(1, $ROWS)
INSERT INTO events (who, what) VALUES (:n, 'clicked');
SQL

run() { # port script
  pgbench -h 127.0.0.1 -p "$1" -U postgres -n -f "$2" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -M simple postgres 2>/dev/null \
    | awk '/^tps/ {print $3; exit}'
}

bench_start_postgres 25500
"$BIN" --data-dir "$WORK/single" --pg-listen 127.0.0.1:25501 >/dev/null 2>"$WORK/single.log" & PIDS+=($!)
wait_port 25501
for port in 25500 25501; do
  psql -h 127.0.0.1 -p $port -U postgres -q -v ON_ERROR_STOP=1 -f "$WORK/init.sql" postgres >/dev/null
done

printf "%-32s %12s %12s   %s\n" workload postgres regiondb ratio
for workload in lookup lookup-only serial-insert; do
  pg=$(run 25500 "$WORK/$workload.sql")
  rdb=$(run 25501 "$WORK/$workload.sql")
  printf "%-32s %12.0f %12.0f   %.3f\n" "$workload (c=$CLIENTS, ${SECONDS_PER_RUN}s)" "$pg" "$rdb" \
    "$(echo "$rdb / $pg" | bc -l)"
done
distinct=$(psql -h 127.0.0.1 -p 25501 -U postgres -At -c "SELECT count(*) = count(DISTINCT id) FROM events" postgres)
echo "serial-insert ids distinct on RegionDB: $distinct"
