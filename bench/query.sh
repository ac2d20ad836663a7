#!/bin/bash
# Query-engine benchmark: PostgreSQL 15 and a single-node RegionDB on this machine in one
# invocation, the same data and queries on both. Reports each query's best time of three runs
# and RegionDB's speed as a ratio to PostgreSQL's (PostgreSQL's time / RegionDB's time), and
# the RegionDB process's peak memory (VmHWM) during a `SELECT *` of the big table.
#
#   bench/query.sh                 1,000,000 rows (ROWS=… for fewer)
#
# Data: big(id, k, v) with ROWS rows (k = id % 100), mid(id, sid) with 100,000 rows and
# small(id, name) with 1,000, loaded with INSERT … SELECT … generate_series in batches of
# 50,000 rows. Queries: count(*) over big; GROUP BY k over big; the join of mid and small.
ROWS=${ROWS:-1000000}
source "$(dirname "$0")/lib.sh"

bench_start_postgres 25600
"$BIN" --data-dir "$WORK/single" --pg-listen 127.0.0.1:25601 >/dev/null 2>"$WORK/single.log" & PIDS+=($!)
REGIONDB_PID=$!
wait_port 25601

run_sql() { # port sql
  psql -h 127.0.0.1 -p "$1" -U postgres -q -v ON_ERROR_STOP=1 -c "$2" postgres >/dev/null
}

load() { # port
  local port=$1
  run_sql "$port" "CREATE TABLE big (id INT PRIMARY KEY, k INT, v INT)"
  run_sql "$port" "CREATE TABLE mid (id INT PRIMARY KEY, sid INT)"
  run_sql "$port" "CREATE TABLE small (id INT PRIMARY KEY, name TEXT)"
  local from=1
  while [ "$from" -le "$ROWS" ]; do
    local to=$((from + 49999))
    [ "$to" -gt "$ROWS" ] && to=$ROWS
    run_sql "$port" "INSERT INTO big SELECT n, n % 100, n % 7 FROM generate_series($from, $to) AS g(n)"
    from=$((to + 1))
  done
  run_sql "$port" "INSERT INTO mid SELECT n, n % 1000 FROM generate_series(1, 50000) AS g(n)"
  run_sql "$port" "INSERT INTO mid SELECT n, n % 1000 FROM generate_series(50001, 100000) AS g(n)"
  run_sql "$port" "INSERT INTO small SELECT n, 'name' || n FROM generate_series(0, 999) AS g(n)"
}

best_ms() { # port sql: the best of three runs, in milliseconds
  local best=""
  for _ in 1 2 3; do
    local start end ms
    start=$(date +%s%N)
    run_sql "$1" "$2"
    end=$(date +%s%N)
    ms=$(( (end - start) / 1000000 ))
    if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
  done
  echo "$best"
}

for port in 25600 25601; do
  start=$(date +%s)
  load $port
  echo "loaded port $port in $(( $(date +%s) - start )) s" >&2
done
run_sql 25600 "VACUUM ANALYZE"

printf '%-44s %12s %12s %8s\n' query "PostgreSQL ms" "RegionDB ms" ratio
for sql in \
  "SELECT count(*) FROM big" \
  "SELECT k, count(*), sum(v) FROM big GROUP BY k" \
  "SELECT count(*) FROM mid JOIN small ON small.id = mid.sid" \
  "SELECT small.name, count(*) FROM small JOIN mid ON mid.sid = small.id GROUP BY small.name ORDER BY 2 DESC LIMIT 3"; do
  pg=$(best_ms 25600 "$sql")
  rdb=$(best_ms 25601 "$sql")
  ratio=$(awk -v p="$pg" -v r="$rdb" 'BEGIN { printf "%.2f", (r > 0 ? p / r : 0) }')
  printf '%-44.44s %12s %12s %8s\n' "$sql" "$pg" "$rdb" "$ratio"
done

# Memory while the whole big table goes to a client: RegionDB restarted (so what loading
# allocated is gone), then its peak resident set during the query.
kill "$REGIONDB_PID"
wait "$REGIONDB_PID" 2>/dev/null || true
"$BIN" --data-dir "$WORK/single" --pg-listen 127.0.0.1:25601 >/dev/null 2>>"$WORK/single.log" & PIDS+=($!)
REGIONDB_PID=$!
wait_port 25601
echo "RegionDB resident memory before SELECT * FROM big: $(grep VmRSS /proc/$REGIONDB_PID/status | awk '{print $2, $3}')"
psql -h 127.0.0.1 -p 25601 -U postgres -q -c "SELECT * FROM big" postgres >/dev/null
echo "RegionDB peak memory during SELECT * FROM big ($ROWS rows): $(grep VmHWM /proc/$REGIONDB_PID/status | awk '{print $2, $3}')"
