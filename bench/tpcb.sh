#!/bin/bash
# pgbench's tpcb-like workload under contention: PostgreSQL 15, a single-node RegionDB and a
# three-node RegionDB cluster on this machine in one invocation, at several client counts.
# Reports tps, p99 latency and failed transactions for each, and checks afterwards that
# sum(abalance) = sum(tbalance) = sum(bbalance) = sum(history.delta) on every system.
#
#   bench/tpcb.sh [SECONDS] [CLIENT COUNTS...]        (default: 10 s; 1 4 8 16 clients)
#   TXN_MODE=optimistic bench/tpcb.sh                 RegionDB in its optimistic mode
#
# Scale 1: every transaction updates the one branch row, so writers queue on it. Load:
# ../shared/bench/init_plain.sh, with pgbench_history's mtime column left out on every
# system (RegionDB has no TIMESTAMP yet); the script is pgbench's built-in tpcb-like with
# that column left out of its insert.
SECONDS_PER_RUN=${1:-10}
shift || true
CLIENT_COUNTS=${*:-1 4 8 16}
source "$(dirname "$0")/lib.sh"
SHARED=../shared/bench
MODE_FLAGS=()
[ -n "${TXN_MODE:-}" ] && MODE_FLAGS=(--txn-mode "$TXN_MODE")

"$SHARED/init_plain.sh" 1 | sed 's/, mtime TIMESTAMP//' > "$WORK/init.sql"
sed 's/, mtime) VALUES (\(.*\), CURRENT_TIMESTAMP)/) VALUES (\1)/' "$SHARED/tpcb-like.sql" > "$WORK/tpcb.sql"
grep -q mtime "$WORK/init.sql" "$WORK/tpcb.sql" && { echo "could not drop mtime" >&2; exit 1; }

bench_start_postgres 25500 -c max_connections=100
"$BIN" --data-dir "$WORK/single" --pg-listen 127.0.0.1:25501 "${MODE_FLAGS[@]}" >/dev/null 2>"$WORK/single.log" & PIDS+=($!)
"$BIN" scheduler --listen 127.0.0.1:25510 --data-dir "$WORK/sched" >/dev/null 2>"$WORK/sched.log" & PIDS+=($!)
for i in 1 2 3; do
  "$BIN" node --scheduler 127.0.0.1:25510 --listen "127.0.0.1:2552$i" --pg-listen "127.0.0.1:2550$((i+1))" \
    --data-dir "$WORK/node$i" "${MODE_FLAGS[@]}" >/dev/null 2>"$WORK/node$i.log" & PIDS+=($!)
  sleep 0.5
done
for port in 25501 25502; do wait_port $port; done
sleep 5 # the scheduler brings the regions to three replicas
for port in 25500 25501 25502; do
  psql -h 127.0.0.1 -p $port -U postgres -q -v ON_ERROR_STOP=1 -f "$WORK/init.sql" postgres >/dev/null
done

# One run: prints "tps p99_ms failed" (p99 of the committed transactions, from pgbench's log).
run() { # port clients tag
  local log="$WORK/log-$3-$2" out
  mkdir -p "$log"
  out=$(cd "$log" && pgbench -h 127.0.0.1 -p "$1" -U postgres -n -f "$WORK/tpcb.sql" -s 1 -c "$2" -j "$2" \
    -T "$SECONDS_PER_RUN" -M simple -l --failures-detailed postgres 2>"$log/stderr" || true)
  local tps failed p99
  tps=$(awk '/^tps/ {print $3; exit}' <<<"$out")
  failed=$(awk '/^number of failed transactions/ {print $5; exit}' <<<"$out")
  p99=$(cat "$log"/pgbench_log.* 2>/dev/null | awk '$3 ~ /^[0-9]+$/ {print $3}' | sort -n \
    | awk '{v[NR] = $1} END { i = int(NR * 0.99); if (i < 1) i = 1; if (NR) printf "%.1f", v[i] / 1000; else print "-" }')
  local aborted
  aborted=$(grep -c "aborted" "$log/stderr" || true)
  [ "$aborted" != 0 ] && echo "  ($3, $2 clients: $aborted clients aborted; first: $(grep -m1 aborted -B1 "$log/stderr" | head -c 300))" >&2
  echo "${tps:-0} ${p99:--} ${failed:-?}"
}

sum() { # port query
  psql -h 127.0.0.1 -p "$1" -U postgres -At -c "$2" postgres | awk '{s += $1} END {print s + 0}'
}

echo "tpcb-like, scale 1, ${SECONDS_PER_RUN}s per run; RegionDB mode: ${TXN_MODE:-pessimistic (default)}"
printf "%-8s | %-28s | %-28s | %-28s\n" clients "postgres: tps p99ms failed" "single: tps p99ms failed" "3-node: tps p99ms failed"
for clients in $CLIENT_COUNTS; do
  pg=$(run 25500 "$clients" pg)
  single=$(run 25501 "$clients" single)
  cluster=$(run 25502 "$clients" cluster)
  printf "%-8s | %-28s | %-28s | %-28s\n" "$clients" "$pg" "$single" "$cluster"
done
echo
echo "sums afterwards: accounts tellers branches history"
for port in 25500 25501 25502; do
  a=$(sum $port "SELECT abalance FROM pgbench_accounts")
  t=$(sum $port "SELECT tbalance FROM pgbench_tellers")
  b=$(sum $port "SELECT bbalance FROM pgbench_branches")
  h=$(sum $port "SELECT delta FROM pgbench_history")
  verdict=ok; { [ "$a" = "$t" ] && [ "$t" = "$b" ] && [ "$b" = "$h" ]; } || verdict=MISMATCH
  echo "port $port: $a $t $b $h  $verdict"
done
