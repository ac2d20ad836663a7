#!/bin/bash
# pgbench: PostgreSQL 15, a single-node RegionDB and a three-node RegionDB cluster, on this
# machine in one invocation, reported as ratios to PostgreSQL (absolute numbers drift on a
# shared machine).
#
#   bench/pgbench.sh [SECONDS] [CLIENTS]
#   BASELINE=/path/to/older/regiondb bench/pgbench.sh [SECONDS] [CLIENTS]
#
# With BASELINE, a single node and a three-node cluster of that binary run beside this
# build's, so a change is measured before and after in the same invocation.
# ROUNDS=N (default 1) runs every workload N times, this build and the baseline in
# alternating order, and reports each one's best round: on a shared machine (fsync times
# vary several-fold from minute to minute) one round per build is mostly noise.
#
# Load: ../shared/bench/init_plain.sh scale 1 without pgbench_history (RegionDB has no
# TIMESTAMP yet). Workloads: pgbench's select-only script, and an update workload (BEGIN;
# UPDATE accounts; SELECT; END) - simple-update without its history insert.
SECONDS_PER_RUN=${1:-15}
CLIENTS=${2:-4}
source "$(dirname "$0")/lib.sh"
SHARED=../shared/bench

"$SHARED/init_plain.sh" 1 | grep -v pgbench_history > "$WORK/init.sql"
sed '/pgbench_history/d' "$SHARED/simple-update.sql" > "$WORK/update.sql"

best() { awk -v a="$1" -v b="${2:-0}" 'BEGIN { print (a > b ? a : b) }'; }

run() { # name port script
  pgbench -h 127.0.0.1 -p "$2" -U postgres -n -f "$3" -s 1 -c "$CLIENTS" -j 1 -T "$SECONDS_PER_RUN" -M simple postgres 2>/dev/null \
    | awk '/^tps/ {print $3; exit}'
}

bench_start_postgres 25400
# Single-node RegionDB.
"$BIN" --data-dir "$WORK/single" --pg-listen 127.0.0.1:25401 >/dev/null 2>"$WORK/single.log" & PIDS+=($!)
# Three-node RegionDB.
"$BIN" scheduler --listen 127.0.0.1:25410 --data-dir "$WORK/sched" >/dev/null 2>"$WORK/sched.log" & PIDS+=($!)
for i in 1 2 3; do
  "$BIN" node --scheduler 127.0.0.1:25410 --listen "127.0.0.1:2542$i" --pg-listen "127.0.0.1:2540$((i+1))" \
    --data-dir "$WORK/node$i" >/dev/null 2>"$WORK/node$i.log" & PIDS+=($!)
  sleep 0.5
done
PORTS="25401 25402 25403 25404"
if [ -n "${BASELINE:-}" ]; then
  "$BASELINE" --data-dir "$WORK/b-single" --pg-listen 127.0.0.1:25405 >/dev/null 2>"$WORK/b-single.log" & PIDS+=($!)
  "$BASELINE" scheduler --listen 127.0.0.1:25411 --data-dir "$WORK/b-sched" >/dev/null 2>"$WORK/b-sched.log" & PIDS+=($!)
  for i in 1 2 3; do
    "$BASELINE" node --scheduler 127.0.0.1:25411 --listen "127.0.0.1:2543$i" --pg-listen "127.0.0.1:2540$((i+5))" \
      --data-dir "$WORK/b-node$i" >/dev/null 2>"$WORK/b-node$i.log" & PIDS+=($!)
    sleep 0.5
  done
  PORTS="$PORTS 25405 25406 25407 25408"
fi
for port in $PORTS; do wait_port $port; done
sleep 5 # the scheduler brings the region to three replicas

LOAD="25400 25401 25402"; [ -n "${BASELINE:-}" ] && LOAD="$LOAD 25405 25406"
for port in $LOAD; do
  psql -h 127.0.0.1 -p $port -U postgres -q -v ON_ERROR_STOP=1 -f "$WORK/init.sql" postgres >/dev/null
done

printf "%-28s %12s %12s %12s   %s\n" workload postgres single-node 3-node "ratios (single, 3-node)"
for workload in select-only update; do
  script="$SHARED/select-only.sql"; [ $workload = update ] && script="$WORK/update.sql"
  pg=0; single=0; cluster=0; b_single=0; b_cluster=0
  for round in $(seq 1 "${ROUNDS:-1}"); do
    pg=$(best "$pg" "$(run pg 25400 "$script")")
    order="this baseline"; [ $((round % 2)) = 0 ] && order="baseline this"
    for who in $order; do
      if [ "$who" = this ]; then
        single=$(best "$single" "$(run single 25401 "$script")")
        cluster=$(best "$cluster" "$(run cluster 25402 "$script")")
      elif [ -n "${BASELINE:-}" ]; then
        b_single=$(best "$b_single" "$(run b-single 25405 "$script")")
        b_cluster=$(best "$b_cluster" "$(run b-cluster 25406 "$script")")
      fi
    done
  done
  printf "%-28s %12.0f %12.0f %12.0f   %.2f %.2f\n" "$workload (c=$CLIENTS, ${SECONDS_PER_RUN}s)" \
    "$pg" "$single" "$cluster" "$(echo "$single / $pg" | bc -l)" "$(echo "$cluster / $pg" | bc -l)"
  if [ -n "${BASELINE:-}" ]; then
    printf "%-28s %12s %12.0f %12.0f   %.2f %.2f   (this build / baseline: %.2f %.2f)\n" "  baseline" "" \
      "$b_single" "$b_cluster" "$(echo "$b_single / $pg" | bc -l)" "$(echo "$b_cluster / $pg" | bc -l)" \
      "$(echo "$single / $b_single" | bc -l)" "$(echo "$cluster / $b_cluster" | bc -l)"
  fi
done
