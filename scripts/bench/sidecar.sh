#!/usr/bin/env bash
# Sidecar benchmarks (issue 2), against hand-run PostgreSQL as the peer.
#
#   scripts/bench/sidecar.sh            # from the repo root; RUNS=5 by default
#   RUNS=3 SIDECAR_BIN=target/debug/toygres-sidecar scripts/bench/sidecar.sh
#
# Measures, over RUNS runs (median / min / max):
#   1. nothing -> primary + streaming standby: two `toygres-sidecar run` from empty directories
#      (init, then standby once the primary is ready) until the primary's GET /v1/status lists the
#      standby as "streaming"; peer: initdb + pg_ctl start + pg_basebackup -R + pg_ctl start until
#      pg_stat_replication shows "streaming".
#   2. promote: POST /v1/promote until it returns (it returns when writes are accepted); peer:
#      pg_ctl promote -w on a hand-made standby until `CREATE TABLE x()` succeeds.
#   3. sidecar resident memory (VmRSS of the sidecar process only): idle a few seconds after
#      ready, and while polling GET /v1/status (POLL_REQUESTS requests, sequential on one
#      keep-alive connection and POLL_PARALLEL connections at once), with requests/s.
#
# Environment: RUNS (5), SIDECAR_BIN (target/release/toygres-sidecar, built when missing),
# PG_BIN (pg_config --bindir), POLL_REQUESTS (2000), POLL_PARALLEL (8), IDLE_WAIT (3 s),
# POLL_MS (20: how often readiness/streaming is checked), KEEP=1 (keep the temp dir and logs).
#
# Everything lives in one temp dir; every process started is stopped by pid on exit (also on
# failure or Ctrl-C), and every postmaster found in a data directory made here is stopped too.
set -eEuo pipefail

RUNS=${RUNS:-5}
POLL_REQUESTS=${POLL_REQUESTS:-2000}
POLL_PARALLEL=${POLL_PARALLEL:-8}
IDLE_WAIT=${IDLE_WAIT:-3}
POLL_MS=${POLL_MS:-20}
SETTLE=${SETTLE:-2}
LOG_TAG=bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk
require_positive_int RUNS
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgb

# Epoch seconds of the first line of sidecar log $1 matching regex $2 (its RFC 3339 timestamp).
log_time() {
    local ts
    ts=$(grep -m1 -E "$2" "$1" | awk '{ print $1 }')
    [[ -n $ts ]] || die "no line matching '$2' in $1"
    date -d "$ts" +%s.%N
}

# ---------------------------------------------------------------------------------------------
# One run of the sidecar side

bench_sidecar() {
    local run=$1 dir=$ROOT/run$1/sc
    mkdir -p "$dir"
    chmod 0711 "$ROOT/run$run" "$dir"
    local p_pg p_api s_pg s_api t0 t1 t2 p_pid s_pid
    free_port p_pg
    free_port p_api
    free_port s_pg
    free_port s_api

    log "run $run: sidecar primary + standby from empty directories"
    t0=$(now)
    start_sidecar "$dir" bench-0 "$p_pg" "$p_api" --bootstrap=init
    p_pid=$SC_PID
    wait_for "$p_pid" "the primary sidecar's /readyz" readyz_ok "$p_api"
    t1=$(now)
    start_sidecar "$dir" bench-1 "$s_pg" "$s_api" --bootstrap=standby --primary="127.0.0.1:$p_pg"
    s_pid=$SC_PID
    wait_for "$s_pid" "the standby streaming in the primary's /v1/status" \
        sidecar_sees_streaming "$p_api" bench-1
    t2=$(now)
    record sc_primary_ready_s "$(elapsed "$t0" "$t1")"
    record sc_streaming_s "$(elapsed "$t0" "$t2")"
    # The primary may list the standby as streaming a moment before the standby's own sidecar
    # serves its API.
    wait_for "$s_pid" "the standby sidecar's /readyz" readyz_ok "$s_api"
    # Where the time went, from the sidecars' logs.
    local p_log=$dir/bench-0.log s_log=$dir/bench-1.log tb0 tb1 tb2
    tb0=$(log_time "$p_log" 'toygres_sidecar: starting')
    tb1=$(log_time "$p_log" 'postgres started')
    tb2=$(log_time "$p_log" 'API serving')
    record sc_primary_initdb_s "$(elapsed "$tb0" "$tb1")"
    record sc_primary_start_s "$(elapsed "$tb1" "$tb2")"
    tb0=$(log_time "$s_log" 'copying the primary with pg_basebackup')
    tb1=$(log_time "$s_log" 'postgres started')
    tb2=$(log_time "$s_log" 'API serving')
    record sc_standby_basebackup_s "$(elapsed "$tb0" "$tb1")"
    record sc_standby_start_s "$(elapsed "$tb1" "$tb2")"
    record sc_standby_start_fatal_lines "$(grep -c 'FATAL:  the database system is starting up' "$s_log" || true)"

    # Memory, idle: a few seconds after both are ready.
    sleep "$IDLE_WAIT"
    record sc_rss_idle_primary_kb "$(rss_kb "$p_pid")"
    record sc_rss_idle_standby_kb "$(rss_kb "$s_pid")"

    # Memory and throughput under status polling.
    local cfg=$dir/poll.curlrc i
    {
        echo "header = \"Authorization: Bearer $TOKEN\""
        echo 'silent'
        echo 'write-out = "%{http_code}\n"'
        for ((i = 0; i < POLL_REQUESTS; i++)); do
            echo "url = \"http://127.0.0.1:$p_api/v1/status\""
            echo 'output = "/dev/null"'
        done
    } >"$cfg"
    local mode extra codes ok peak cur load_pid ts te cpu0 cpu1
    for mode in seq par; do
        extra=()
        [[ $mode == par ]] && extra=(--parallel --parallel-immediate --parallel-max "$POLL_PARALLEL")
        codes=$dir/codes.$mode
        peak=0
        ts=$(now)
        cpu0=$(cpu_ticks "$p_pid")
        curl --max-time 600 --no-progress-meter "${extra[@]}" --config "$cfg" >"$codes" &
        load_pid=$!
        PIDS+=("$load_pid")
        while pid_alive "$load_pid"; do
            cur=$(rss_kb "$p_pid")
            ((cur > peak)) && peak=$cur
            sleep 0.05
        done
        wait "$load_pid" || die "status polling ($mode) failed"
        forget_pid "$load_pid"
        te=$(now)
        cpu1=$(cpu_ticks "$p_pid")
        cur=$(rss_kb "$p_pid")
        ((cur > peak)) && peak=$cur
        ok=$(grep -c '^200$' "$codes" || true)
        ((ok == POLL_REQUESTS)) ||
            die "status polling ($mode): only $ok of $POLL_REQUESTS answers were 200"
        record "sc_poll_${mode}_rps" "$(awk -v n="$POLL_REQUESTS" -v a="$ts" -v b="$te" \
            'BEGIN { printf "%.1f", n / (b - a) }')"
        record "sc_poll_${mode}_cpu_us" "$(awk -v t=$((cpu1 - cpu0)) -v hz="$CLK_TCK" \
            -v n="$POLL_REQUESTS" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')"
        record "sc_rss_poll_${mode}_peak_kb" "$peak"
        record "sc_rss_poll_${mode}_after_kb" "$cur"
    done
    record sc_rss_hwm_kb "$(rss_kb "$p_pid" VmHWM)"

    # Promote the standby through the API.
    sleep "$SETTLE"
    local resp
    t0=$(now)
    # force: the primary still runs (this measures promotion, not failover).
    resp=$(api POST "$s_api" /v1/promote --fail-with-body \
        -H 'Content-Type: application/json' -d '{"force":true}') ||
        die "POST /v1/promote failed: $resp"
    t1=$(now)
    record sc_promote_s "$(elapsed "$t0" "$t1")"
    record sc_promote_internal_s "$(jq -r '.duration_ms / 1000' <<<"$resp")"
    # It said writes are accepted: check that one is.
    PGPASSWORD=$SU_PW "$PSQL" -X -h 127.0.0.1 -p "$s_pg" -U postgres -d postgres -qc \
        'CREATE TABLE x()' >/dev/null || die "the promoted sidecar standby refused a write"

    log "run $run: stopping the sidecars (SIGTERM)"
    t0=$(now)
    stop_sidecar "$s_pid"
    t1=$(now)
    stop_sidecar "$p_pid"
    t2=$(now)
    record sc_stop_promoted_s "$(elapsed "$t0" "$t1")"
    record sc_stop_primary_s "$(elapsed "$t1" "$t2")"
    local d
    for d in "$dir/bench-0/data" "$dir/bench-1/data"; do
        if postmaster_of "$d" >/dev/null; then die "a postmaster outlived its sidecar in $d"; fi
    done
    ((KEEP == 1)) || rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------------
# One run of the hand-made peer

bench_peer() {
    local run=$1 dir=$ROOT/run$1/pg
    mkdir -p "$dir"
    chmod 0711 "$ROOT/run$run"
    log "run $run: by hand: initdb + pg_ctl start + pg_basebackup -R + pg_ctl start"
    hand_made_pair "$dir"
    local pdata=$PEER_PDATA sdata=$PEER_SDATA sock=$PEER_SOCK s_port=$PEER_SPORT t0 t1 t2
    record pg_standby_basebackup_s "$(elapsed "$PEER_T_PRIMARY" "$PEER_T_BASEBACKUP")"
    record pg_standby_start_s "$(elapsed "$PEER_T_BASEBACKUP" "$PEER_T_STANDBY")"
    record pg_primary_ready_s "$(elapsed "$PEER_T0" "$PEER_T_PRIMARY")"
    record pg_primary_initdb_s "$(elapsed "$PEER_T0" "$PEER_T_INITDB")"
    record pg_primary_start_s "$(elapsed "$PEER_T_INITDB" "$PEER_T_PRIMARY")"
    record pg_streaming_s "$(elapsed "$PEER_T0" "$PEER_T_STREAMING")"

    sleep "$SETTLE"
    t0=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$sdata" -w -s promote || die "pg_ctl promote failed"
    local deadline=$((SECONDS + TIMEOUT))
    until "$PSQL" -X -h "$sock" -p "$s_port" -U postgres -d postgres -qc 'CREATE TABLE x()' \
        >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "the promoted standby never took a write"
        sleep "$POLL_SLEEP"
    done
    t1=$(now)
    record pg_promote_s "$(elapsed "$t0" "$t1")"

    t0=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$sdata" -m fast -w -s stop || die "pg_ctl stop (standby) failed"
    t1=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$pdata" -m fast -w -s stop || die "pg_ctl stop (primary) failed"
    t2=$(now)
    record pg_stop_promoted_s "$(elapsed "$t0" "$t1")"
    record pg_stop_primary_s "$(elapsed "$t1" "$t2")"
    ((KEEP == 1)) || rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------------
# Main

log "sidecar: $SIDECAR_BIN"
log "postgres: $("$PG_BIN/postgres" --version) ($PG_BIN)"
log "runs: $RUNS; temp dir: $ROOT"
for ((run = 1; run <= RUNS; run++)); do
    # Alternate which side goes first, so slow drift on a shared machine hits both.
    if ((run % 2)); then
        bench_sidecar "$run"
        bench_peer "$run"
    else
        bench_peer "$run"
        bench_sidecar "$run"
    fi
    ((KEEP == 1)) || rm -rf "$ROOT/run$run"
done

# ---------------------------------------------------------------------------------------------
# Report

fmt() { # value scale decimals
    awk -v v="$1" -v s="$2" -v d="$3" 'BEGIN { printf "%.*f", d, v * s }'
}
row() { # label metric scale decimals unit [peer_metric]
    local label=$1 metric=$2 scale=$3 dec=$4 unit=$5 peer=${6:-}
    local med min max pmed pmin pmax peer_cell="" ratio=""
    read -r med min max < <(stat "$metric")
    if [[ -n $peer ]]; then
        read -r pmed pmin pmax < <(stat "$peer")
        peer_cell="$(fmt "$pmed" "$scale" "$dec") ($(fmt "$pmin" "$scale" "$dec")–$(fmt "$pmax" "$scale" "$dec"))"
        ratio="$(awk -v a="$med" -v b="$pmed" 'BEGIN { printf "%.2f×", a / b }')"
    fi
    printf '| %s | %s %s | %s | %s | %s | %s |\n' "$label" "$(fmt "$med" "$scale" "$dec")" "$unit" \
        "$(fmt "$min" "$scale" "$dec")" "$(fmt "$max" "$scale" "$dec")" "${peer_cell:--}" "${ratio:--}"
}

MB=$(awk 'BEGIN { printf "%.10f", 1 / 1024 }')
echo
echo "Sidecar benchmarks: $RUNS runs, PostgreSQL $(pg_version), $(basename "$SIDECAR_BIN") at $SIDECAR_BIN"
echo
echo "| measurement | median | min | max | peer median (min–max) | sidecar / peer |"
echo "|---|---|---|---|---|---|"
row "nothing → primary ready" sc_primary_ready_s 1 2 s pg_primary_ready_s
row "… of which initdb" sc_primary_initdb_s 1 2 s pg_primary_initdb_s
row "… of which primary start until it accepts connections" sc_primary_start_s 1 2 s pg_primary_start_s
row "nothing → primary + streaming standby" sc_streaming_s 1 2 s pg_streaming_s
row "… of which standby pg_basebackup" sc_standby_basebackup_s 1 2 s pg_standby_basebackup_s
row "… of which standby start until it accepts connections" sc_standby_start_s 1 2 s pg_standby_start_s
row "promote → accepts writes" sc_promote_s 1000 0 ms pg_promote_s
row "promote, sidecar's own duration_ms" sc_promote_internal_s 1000 0 ms
row "sidecar RSS idle, primary" sc_rss_idle_primary_kb "$MB" 1 MiB
row "sidecar RSS idle, standby" sc_rss_idle_standby_kb "$MB" 1 MiB
row "sidecar RSS peak, $POLL_REQUESTS × GET /v1/status sequential" sc_rss_poll_seq_peak_kb "$MB" 1 MiB
row "sidecar RSS peak, $POLL_REQUESTS × GET /v1/status, $POLL_PARALLEL connections" sc_rss_poll_par_peak_kb "$MB" 1 MiB
row "sidecar RSS after polling" sc_rss_poll_par_after_kb "$MB" 1 MiB
row "sidecar VmHWM (lifetime peak) after polling" sc_rss_hwm_kb "$MB" 1 MiB
row "GET /v1/status, sequential (1 keep-alive connection)" sc_poll_seq_rps 1 0 req/s
row "GET /v1/status, $POLL_PARALLEL connections" sc_poll_par_rps 1 0 req/s
row "sidecar CPU per GET /v1/status (sequential)" sc_poll_seq_cpu_us 1 0 µs
row "SIGTERM → exit, promoted standby" sc_stop_promoted_s 1000 0 ms pg_stop_promoted_s
row "SIGTERM → exit, old primary" sc_stop_primary_s 1000 0 ms pg_stop_primary_s
echo
echo "Peers: initdb + pg_ctl start -w + pg_basebackup -R -X stream --checkpoint=fast + pg_ctl start -w, until pg_stat_replication shows streaming;"
echo "pg_ctl promote -w, then CREATE TABLE x() retried every ${POLL_MS} ms until it succeeds; stop: pg_ctl stop -m fast -w. Memory goal: ≤ 20 MiB."
