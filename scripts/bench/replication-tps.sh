#!/usr/bin/env bash
# Replication cost (issue 5): pgbench TPS and latency against a primary run by toygres-sidecar
# with (a) no standby, (b) one asynchronous standby, (c) one synchronous standby.
#
#   scripts/bench/replication-tps.sh                       # from the repo root
#   RUNS=1 DURATION=5 SCALE=2 scripts/bench/replication-tps.sh   # quick check
#
# One primary sidecar (bootstrap init) with a `pgbench -i -s SCALE` database; a standby sidecar
# (bootstrap standby, pg_basebackup from the primary) is started for (b) and (c) and stopped for
# (a), so "none" really has no WAL sender. (c) is `PUT /v1/replication` on the primary with
# {"synchronous_standby_names": "<standby>", "synchronous_commit": "on"}, and waits until the
# primary's /v1/status lists the standby as sync; (a) and (b) set synchronous_standby_names to "".
# Each trial: CHECKPOINT, then `pgbench -c CLIENTS -j JOBS -T DURATION` (the TPC-B-like default
# script; MODE_FLAGS adds options, e.g. -N) over TCP to the primary's port, with per-transaction
# logs (-l) from which p99 latency is computed. RUNS runs, the order of the three configurations
# rotating each run; medians reported.
#
# Environment: RUNS (3), SCALE (10), CLIENTS (8), JOBS (2), DURATION (20 s), MODE_FLAGS (""),
# SIDECAR_BIN (target/release/toygres-sidecar, built when missing), PG_BIN, KEEP=1, TIMEOUT.
#
# Everything lives in one temp dir; both sidecars (and so their Postgres) are stopped by pid on
# exit, also on failure or Ctrl-C, and any postmaster left in their data directories too.
set -eEuo pipefail

RUNS=${RUNS:-3}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-8}
JOBS=${JOBS:-2}
DURATION=${DURATION:-20}
MODE_FLAGS=${MODE_FLAGS:-}
LOG_TAG=repl-bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk
for var in RUNS SCALE CLIENTS JOBS DURATION; do
    require_positive_int "$var"
done
find_sidecar_bin
find_pg_bin pgbench pg_basebackup
bench_root tgrep

DIR=$ROOT/pods
mkdir -p "$DIR"
chmod 0711 "$DIR"
PRIMARY=bench-0
STANDBY=bench-1
free_port P_PG
free_port P_API
free_port S_PG
free_port S_API
S_PID=""

sql() {
    PGPASSWORD=$SU_PW "$PSQL" -X -h 127.0.0.1 -p "$P_PG" -U postgres -d postgres -Atqc "$1"
}

standby_in_status() { # sync state wanted ("async" or "sync")
    api GET "$P_API" /v1/status --max-time 2 | jq -e --arg m "$STANDBY" --arg s "$1" \
        'any(.standbys[]; .application_name == $m and .state == "streaming" and .sync_state == $s)'
}

set_sync_names() { # value
    local body
    body=$(jq -nc --arg n "$1" '{synchronous_standby_names: $n, synchronous_commit: "on"}')
    api PUT "$P_API" /v1/replication --fail-with-body -H 'Content-Type: application/json' \
        -d "$body" >"$ROOT/put-replication.json" ||
        die "PUT /v1/replication failed: $(cat "$ROOT/put-replication.json")"
    [[ $(sql "SHOW synchronous_standby_names") == "$1" ]] ||
        die "synchronous_standby_names is not '$1' after PUT /v1/replication"
}

standby_up() {
    [[ -n $S_PID ]] && return 0
    start_sidecar "$DIR" "$STANDBY" "$S_PG" "$S_API" --bootstrap=standby --primary="127.0.0.1:$P_PG"
    S_PID=$SC_PID
    wait_for "$S_PID" "the standby sidecar's /readyz" readyz_ok "$S_API"
}

standby_down() {
    [[ -z $S_PID ]] && return 0
    stop_sidecar "$S_PID"
    S_PID=""
    if postmaster_of "$DIR/$STANDBY/data" >/dev/null; then die "the standby's Postgres outlived its sidecar"; fi
}

configure() { # none | async | sync
    case $1 in
    none)
        set_sync_names ""
        standby_down
        ;;
    async)
        set_sync_names ""
        standby_up
        wait_for "$S_PID" "the standby streaming asynchronously" standby_in_status async
        ;;
    sync)
        standby_up
        set_sync_names "\"$STANDBY\""  # a name with "-" must be quoted
        wait_for "$S_PID" "the standby confirmed synchronous" standby_in_status sync
        ;;
    esac
}

trial() { # run config
    local run=$1 config=$2 out=$ROOT/run$1-$2
    mkdir -p "$out"
    chmod 0777 "$out"
    configure "$config"
    sql "CHECKPOINT" >/dev/null
    log "run $run, $config: pgbench -c $CLIENTS -j $JOBS -T $DURATION $MODE_FLAGS"
    # shellcheck disable=SC2086
    (cd "$out" && PGPASSWORD=$SU_PW "$PG_BIN/pgbench" -h 127.0.0.1 -p "$P_PG" -U postgres \
        -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -l --log-prefix="$out/tx" $MODE_FLAGS postgres \
        >"$out/pgbench.log" 2>&1) || die "pgbench failed: $(tail -5 "$out/pgbench.log")"
    record "${config}_tps" "$(grep -m1 -oP 'tps = \K[0-9.]+' "$out/pgbench.log")"
    record "${config}_lat_avg_ms" "$(grep -m1 -oP 'latency average = \K[0-9.]+' "$out/pgbench.log")"
    # Per-transaction log: column 3 is the latency in microseconds.
    record "${config}_lat_p99_ms" "$(cat "$out"/tx.* | awk '{ print $3 }' | sort -n |
        awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.3f", v[i] / 1000 }')"
    if [[ $config == sync ]]; then
        # It was synchronous the whole time.
        standby_in_status sync >/dev/null || die "the standby was not synchronous at the end"
    fi
    ((KEEP == 1)) || rm -rf "$out"
}

# ---------------------------------------------------------------------------------------------
# Main

log "sidecar: $SIDECAR_BIN"
log "postgres: $("$PG_BIN/postgres" --version) ($PG_BIN); temp dir: $ROOT"
start_sidecar "$DIR" "$PRIMARY" "$P_PG" "$P_API" --bootstrap=init
P_PID=$SC_PID
wait_for "$P_PID" "the primary sidecar's /readyz" readyz_ok "$P_API"
log "pgbench -i -s $SCALE"
PGPASSWORD=$SU_PW "$PG_BIN/pgbench" -h 127.0.0.1 -p "$P_PG" -U postgres -i -q -s "$SCALE" postgres \
    >"$ROOT/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$ROOT/pgbench-init.log")"

CONFIGS=(none async sync)
for ((run = 1; run <= RUNS; run++)); do
    for ((i = 0; i < ${#CONFIGS[@]}; i++)); do
        trial "$run" "${CONFIGS[(i + run - 1) % ${#CONFIGS[@]}]}"
    done
done
configure none
stop_sidecar "$P_PID"

# ---------------------------------------------------------------------------------------------
# Report

# added MS_METRIC_A MS_METRIC_B -> median(A) - median(B), in ms
added() {
    local a b
    read -r a _ _ < <(stat "$1")
    read -r b _ _ < <(stat "$2")
    awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.2f ms", a - b }'
}
echo
echo "Replication cost: $RUNS runs, PostgreSQL $(pg_version), pgbench -i -s $SCALE; pgbench -c $CLIENTS -j $JOBS -T $DURATION ${MODE_FLAGS:-(TPC-B-like)} over TCP; $(nproc) CPUs"
echo
echo "| configuration | TPS | latency avg (ms) | latency p99 (ms) | TPS vs none | avg latency added vs none | p99 added vs none |"
echo "|---|---|---|---|---|---|---|"
for c in none async sync; do
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$(cell "${c}_tps" 0)" \
        "$(cell "${c}_lat_avg_ms" 2)" "$(cell "${c}_lat_p99_ms" 2)" "$(ratio "${c}_tps" none_tps)" \
        "$(added "${c}_lat_avg_ms" none_lat_avg_ms)" "$(added "${c}_lat_p99_ms" none_lat_p99_ms)"
done
