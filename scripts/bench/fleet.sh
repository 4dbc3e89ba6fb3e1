#!/usr/bin/env bash
# Fleet benchmark (issue 17): what a controller and its CMS cost per instance, with many
# simulated instances (`toygres-sidecar fleet`, the hidden `--platform fleet-sim`) or with real
# ones (the local platform, real sidecars and Postgres).
#
#   scripts/bench/fleet.sh                                  # SIZES="20 100 500" RUNS=3, simulated
#   PLATFORM=local SIZES=20 scripts/bench/fleet.sh          # the same with 20 real instances
#   SIZES=20 RUNS=1 SAMPLE_SECONDS=20 scripts/bench/fleet.sh   # quick check
#
# For each size and run, on a fresh temp TOYGRES_HOME: starts the double (simulated only) and
# `toygres controller --health-interval-ms HEALTH_INTERVAL_MS` with its embedded CMS, creates
# SIZE instances with REPLICAS async standbys each (CONCURRENCY creates in flight), waits until
# all run, settles SETTLE seconds, then measures over SAMPLE_SECONDS (sampled every SAMPLE_EVERY
# for RSS): controller CPU (utime + stime) and RSS; the CMS's CPU (postmaster and backends, the
# exited ones through the postmaster's cutime) and PSS; the double's (or all sidecars') CPU;
# member probes per second. Simulated only (FAILOVERS=1): then kills the primary of one instance
# in the double and times kill → new primary recorded, then the primaries of ten others at once
# and times kill → all ten have a new primary. Then it stops the controller and the double and
# everything under the home, by pid. Each row is the median of the RUNS runs (min–max).
#
# Environment: SIZES ("20 100 500"), RUNS (3), PLATFORM (fleet-sim | local), REPLICAS (1),
# HEALTH_INTERVAL_MS (1000), SETTLE (15 s), SAMPLE_SECONDS (60), SAMPLE_EVERY (5 s),
# CONCURRENCY (20; 4 for local), FAST_PATH (true/false: the controller's --health-fast-path;
# unset: not passed), FAILOVERS (1; 0: skip), TOYGRES_BIN and SIDECAR_BIN (default: target/debug, never
# built here), PG_BIN, KEEP=1, TIMEOUT (600 s for all creates), STATEMENTS (0; 1: load
# pg_stat_statements into the run's CMS — bench only, the product's CMS does not — and print its
# TOP_STATEMENTS (25) statements of the window by total time, with calls/s and share of time).
set -eEuo pipefail

SIZES=${SIZES:-20 100 500}
RUNS=${RUNS:-3}
PLATFORM=${PLATFORM:-fleet-sim}
REPLICAS=${REPLICAS:-1}
HEALTH_INTERVAL_MS=${HEALTH_INTERVAL_MS:-1000}
SETTLE=${SETTLE:-15}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
TIMEOUT=${TIMEOUT:-600}
FAILOVERS=${FAILOVERS:-1}
STATEMENTS=${STATEMENTS:-0}
TOP_STATEMENTS=${TOP_STATEMENTS:-25}
LOG_TAG=fleet-bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

case $PLATFORM in
fleet-sim) CONCURRENCY=${CONCURRENCY:-20} ;;
local) CONCURRENCY=${CONCURRENCY:-4} ;;
*) die "PLATFORM must be fleet-sim or local" ;;
esac
require_tools curl jq awk ps
for var in RUNS HEALTH_INTERVAL_MS SETTLE SAMPLE_SECONDS SAMPLE_EVERY CONCURRENCY; do
    require_positive_int "$var"
done
[[ $REPLICAS =~ ^[0-9]$ ]] || die "REPLICAS must be 0-9"
TOYGRES_BIN=${TOYGRES_BIN:-$REPO_ROOT/target/debug/toygres}
SIDECAR_BIN=${SIDECAR_BIN:-$REPO_ROOT/target/debug/toygres-sidecar}
for bin in "$TOYGRES_BIN" "$SIDECAR_BIN"; do
    [[ -x $bin ]] || die "$bin is missing: cargo build --workspace --bins"
done
BUILD=$([[ $TOYGRES_BIN == */release/* ]] && echo release || echo debug)
find_pg_bin pg_basebackup
bench_root tgfleet
cd "$ROOT"

HOME_DIR=""
CTL_PID=""
CTL_PORT=""
FLEET_PID=""

# `toygres` on the run's home, untouched by the caller's environment (env execs it: same pid).
tg_command() {
    TG=(env -u DATABASE_URL -u TOYGRES_URL -u TOYGRES_TOKEN_FILE -u TOYGRES_LISTEN
        "TOYGRES_HOME=$HOME_DIR" "RUST_LOG=${RUST_LOG:-info}" "$TOYGRES_BIN")
}
tg() { "${TG[@]}" "$@"; }

# Starts the double (simulated fleet) and the controller on a fresh home.
start_run() {
    local tag=$1 platform_args=()
    HOME_DIR=$ROOT/home-$tag
    mkdir -p "$HOME_DIR"
    chmod 0711 "$HOME_DIR"
    tg_command
    if [[ $PLATFORM == fleet-sim ]]; then
        "$SIDECAR_BIN" fleet --listen 127.0.0.1:0 --url-file "$ROOT/fleet-$tag.url" \
            >"$ROOT/fleet-$tag.log" 2>&1 &
        FLEET_PID=$!
        PIDS+=("$FLEET_PID")
        LOGS+=("$ROOT/fleet-$tag.log")
        wait_for "$FLEET_PID" "the fleet double's URL" test -s "$ROOT/fleet-$tag.url"
        platform_args=(--platform fleet-sim --fleet-sim-url "$(cat "$ROOT/fleet-$tag.url")")
    fi
    free_port CTL_PORT
    LOGS+=("$ROOT/controller-$tag.log")
    start_controller "$tag" "${platform_args[@]}"
    if [[ $STATEMENTS == 1 ]]; then
        # The first start made the CMS cluster; load pg_stat_statements into it (a restart).
        stop_controller
        printf "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.max = 2000\n" \
            >>"$HOME_DIR/cms/data/postgresql.conf"
        start_controller "$tag" "${platform_args[@]}"
        cms_psql -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null
    fi
}

# start_controller TAG [platform args…]
start_controller() {
    local tag=$1
    shift
    "${TG[@]}" controller --listen "127.0.0.1:$CTL_PORT" --health-interval-ms "$HEALTH_INTERVAL_MS" \
        --sidecar-bin "$SIDECAR_BIN" --pg-bin-dir "$PG_BIN" "$@" \
        ${FAST_PATH:+--health-fast-path "$FAST_PATH"} \
        </dev/null >>"$ROOT/controller-$tag.log" 2>&1 &
    CTL_PID=$!
    PIDS+=("$CTL_PID")
    wait_for "$CTL_PID" "the controller's /healthz" \
        controller_get "$HOME_DIR" "$CTL_PORT" /healthz --max-time 2 -o /dev/null
}

stop_controller() {
    if [[ -n $CTL_PID ]]; then
        stop_pid "$CTL_PID" TERM 60
        wait "$CTL_PID" 2>/dev/null || true
        forget_pid "$CTL_PID"
        CTL_PID=""
    fi
}

# psql on the run's CMS database, as its superuser over the Unix socket (trusted locally).
cms_psql() {
    "$PSQL" -X -q -v ON_ERROR_STOP=1 -h "$HOME_DIR/cms/run" -p "$(cat "$HOME_DIR/cms/port")" \
        -U postgres -d toygres "$@"
}

# statements SIZE SECONDS: the window's top statements (pg_stat_statements, reset at its start).
statements() {
    local n=$1 dt=$2
    {
        echo
        echo "Top $TOP_STATEMENTS CMS statements, n=$n, ${dt} s window (total time share of all statements):"
        echo
        echo "| # | calls/s | total ms/s | share % | mean ms | rows/call | statement |"
        echo "|---|---|---|---|---|---|---|"
        cms_psql -At -F '|' -v top="$TOP_STATEMENTS" -v dt="$dt" <<'SQL'
WITH s AS (SELECT query, calls, total_exec_time AS t, rows FROM pg_stat_statements),
     tot AS (SELECT sum(t) AS t FROM s)
SELECT '', row_number() OVER (ORDER BY s.t DESC),
       round(calls / :dt, 1), round((s.t / :dt)::numeric, 1),
       round((100 * s.t / nullif(tot.t, 0))::numeric, 1), round((s.t / nullif(calls, 0))::numeric, 3),
       round(rows::numeric / nullif(calls, 0), 1),
       left(regexp_replace(query, '\s+', ' ', 'g'), 160), ''
FROM s, tot ORDER BY s.t DESC LIMIT :top
SQL
        cms_psql -At -v dt="$dt" <<'SQL'
SELECT 'all statements: ' || round(sum(calls) / :dt, 1) || ' calls/s, '
       || round((sum(total_exec_time) / :dt)::numeric, 1) || ' ms/s' FROM pg_stat_statements
SQL
    } | tee -a "$ROOT/statements.md" >&2
}

# Stops the controller (it stops its CMS), the double, and whatever still runs from the home.
stop_run() {
    stop_controller
    if [[ -n $FLEET_PID ]]; then
        stop_pid "$FLEET_PID" TERM 10
        wait "$FLEET_PID" 2>/dev/null || true
        forget_pid "$FLEET_PID"
        FLEET_PID=""
    fi
    [[ -z $HOME_DIR ]] || stop_processes_under "$HOME_DIR"
}

bench_cleanup_hook() { stop_run; }

running_count() {
    tg list -o json | jq '[.instances[] | select(.state == "running")] | length'
}

# Creates $1 instances, $CONCURRENCY at a time, and waits until all run.
create_fleet() {
    local size=$1 i name deadline t0
    t0=$(now)
    for ((i = 1; i <= size; i++)); do
        name=f$i
        tg create "$name" --replicas "$REPLICAS" --replication async --no-wait \
            >>"$ROOT/creates.log" 2>&1 || die "toygres create $name failed: $(tail -3 "$ROOT/creates.log")"
        if ((i % CONCURRENCY == 0)); then
            deadline=$((SECONDS + TIMEOUT))
            until (($(running_count) >= i)); do
                ((SECONDS < deadline)) || die "only $(running_count) of $i instances run"
                sleep 0.5
            done
        fi
    done
    deadline=$((SECONDS + TIMEOUT))
    until (($(running_count) >= size)); do
        ((SECONDS < deadline)) || die "only $(running_count) of $size instances run"
        sleep 0.5
    done
    log "created $size instances in $(elapsed "$t0" "$(now)" 1) s"
}

health_checks() {
    controller_get "$HOME_DIR" "$CTL_PORT" /metrics --max-time 5 |
        awk '/^toygres_controller_health_checks_total/ { s += $2 } END { print s + 0 }'
}

# The fast path's wake-ups of actors so far: "sent withheld uncorroborated".
wakeups() {
    controller_get "$HOME_DIR" "$CTL_PORT" /metrics --max-time 5 |
        awk '/^toygres_controller_health_wakeups_total/ {
                 if ($1 ~ /"sent"/) s = $2; if ($1 ~ /"withheld"/) w = $2
                 if ($1 ~ /"uncorroborated"/) u = $2 }
             END { print s + 0, w + 0, u + 0 }'
}

# What serves the members: the double, or every sidecar under the home.
member_pids() {
    local p
    if [[ -n $FLEET_PID ]]; then
        echo "$FLEET_PID"
        return
    fi
    for p in $(pids_mentioning "$HOME_DIR/instances"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == toygres-sidecar ]] && echo "$p"
    done
    return 0
}

ticks_of() {
    local total=0 p
    for p in "$@"; do total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0))); done
    echo "$total"
}

# measure SIZE: one window; records SIZE-prefixed metrics.
measure() {
    local n=$1 pm members c0 m0 s0 h0 t0 c1 m1 s1 h1 dt i rss_max=0 rss pss_max=0 pss rss0
    local w0 w1 ws0 ww0 wu0 ws1 ww1 wu1
    pm=$(head -1 "$HOME_DIR/cms/data/postmaster.pid")
    [[ $pm =~ ^[0-9]+$ ]] && pid_alive "$pm" || die "no live CMS postmaster"
    mapfile -t members < <(member_pids)
    log "n=$n: sampling ${SAMPLE_SECONDS}s: controller $CTL_PID, CMS $pm, ${#members[@]} member processes"
    t0=$(now) c0=$(cpu_ticks "$CTL_PID") m0=$(cms_ticks "$pm") s0=$(ticks_of "${members[@]}")
    h0=$(health_checks) rss0=$(rss_kb "$CTL_PID") w0=$(wakeups)
    [[ $STATEMENTS != 1 ]] || cms_psql -c "SELECT pg_stat_statements_reset()" >/dev/null
    for ((i = 0; i < SAMPLE_SECONDS / SAMPLE_EVERY; i++)); do
        sleep "$SAMPLE_EVERY"
        pid_alive "$CTL_PID" || die "the controller exited"
        rss=$(rss_kb "$CTL_PID")
        ((rss > rss_max)) && rss_max=$rss
        pss=$(cms_pss_kb "$pm")
        ((pss > pss_max)) && pss_max=$pss
    done
    c1=$(cpu_ticks "$CTL_PID") m1=$(cms_ticks "$pm") s1=$(ticks_of "${members[@]}")
    h1=$(health_checks) w1=$(wakeups)
    dt=$(elapsed "$t0" "$(now)")
    read -r ws0 ww0 wu0 <<<"$w0"
    read -r ws1 ww1 wu1 <<<"$w1"
    log "n=$n: fast path in the window: $((ws1 - ws0)) wake-ups sent, $((ww1 - ww0)) withheld," \
        "$((wu1 - wu0)) timed-out probes held for a second pass; load $(cut -d' ' -f1-3 /proc/loadavg)"
    [[ $STATEMENTS != 1 ]] || statements "$n" "$dt"
    record "n${n}_ctl_cpu" "$(pct $((c1 - c0)) "$dt")"
    record "n${n}_cms_cpu" "$(pct $((m1 - m0)) "$dt")"
    record "n${n}_both_cpu" "$(pct $((c1 - c0 + m1 - m0)) "$dt")"
    record "n${n}_members_cpu" "$(pct $((s1 - s0)) "$dt")"
    record "n${n}_probes" "$(calc "($h1 - $h0) / $dt")"
    record "n${n}_ctl_rss" "$(calc "$rss_max / 1024")"
    record "n${n}_ctl_rss_growth" "$(calc "($(rss_kb "$CTL_PID") - $rss0) / 1024 / $dt * 60")"
    record "n${n}_cms_pss" "$(calc "$pss_max / 1024")"
    record "n${n}_cms_backends" "$(ps -o pid= --ppid "$pm" | wc -l)"
    record "n${n}_load" "$(awk '{ print $1 }' /proc/loadavg)"
}

primary_of() {
    tg get "$1" -o json | jq -r '[.members[] | select(.role == "primary") | .name][0] // ""'
}

# failovers SIZE: kills primaries in the double; records kill → new primary for one instance,
# and for the slowest of ten killed together (instances f2..f11, or fewer in a smaller fleet).
failovers() {
    local n=$1 i name t0 done_count deadline
    local -a names=() olds=() finished=()
    names=(f1) olds=("$(primary_of f1)")
    t0=$(now)
    curl -sf -X POST "$(cat "$ROOT/fleet-$n-$run.url")/fleet/members/${olds[0]}/kill" >/dev/null ||
        die "kill ${olds[0]} in the double"
    deadline=$((SECONDS + 120))
    until [[ $(primary_of f1) != "${olds[0]}" && -n $(primary_of f1) ]]; do
        ((SECONDS < deadline)) || die "f1 did not fail over within 120 s"
        sleep 0.1
    done
    record "n${n}_failover_one" "$(elapsed "$t0" "$(now)")"
    names=() olds=()
    for ((i = 2; i <= n && i <= 11; i++)); do
        names+=("f$i")
        olds+=("$(primary_of "f$i")")
    done
    t0=$(now)
    for i in "${!names[@]}"; do
        curl -sf -X POST "$(cat "$ROOT/fleet-$n-$run.url")/fleet/members/${olds[$i]}/kill" \
            >/dev/null || die "kill ${olds[$i]} in the double"
    done
    deadline=$((SECONDS + 180))
    finished=()
    while true; do
        done_count=0
        for i in "${!names[@]}"; do
            [[ -n ${finished[$i]:-} ]] && { done_count=$((done_count + 1)); continue; }
            name=$(primary_of "${names[$i]}")
            if [[ -n $name && $name != "${olds[$i]}" ]]; then
                finished[i]=1
                done_count=$((done_count + 1))
            fi
        done
        ((done_count == ${#names[@]})) && break
        ((SECONDS < deadline)) || die "only $done_count of ${#names[@]} failed over within 180 s"
        sleep 0.1
    done
    record "n${n}_failover_ten" "$(elapsed "$t0" "$(now)")"
}

log "toygres: $TOYGRES_BIN ($BUILD); sidecar: $SIDECAR_BIN; platform $PLATFORM; temp dir $ROOT"
for size in $SIZES; do
    require_positive_int size
    for ((run = 1; run <= RUNS; run++)); do
        log "n=$size run $run: starting"
        start_run "$size-$run"
        create_fleet "$size"
        log "n=$size run $run: settling ${SETTLE}s"
        sleep "$SETTLE"
        measure "$size"
        if [[ $PLATFORM == fleet-sim && $FAILOVERS == 1 ]]; then
            failovers "$size"
        fi
        stop_run
    done
done

echo
echo "Fleet benchmark: platform $PLATFORM, $BUILD build, $RUNS run(s) per size, $(nproc) CPUs;" \
    "$REPLICAS standby per instance, health interval $HEALTH_INTERVAL_MS ms, window ${SAMPLE_SECONDS} s" \
    "after ${SETTLE} s; median (min–max)"
echo
echo "| instances | controller CPU % | CMS CPU % | controller + CMS % | controller RSS MiB (peak) | RSS growth MiB/min | CMS PSS MiB | CMS backends | members' CPU % | probes/s | load avg | failover of one s | ten failovers s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for size in $SIZES; do
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$size" \
        "$(cell "n${size}_ctl_cpu" 1)" "$(cell "n${size}_cms_cpu" 1)" "$(cell "n${size}_both_cpu" 1)" \
        "$(cell "n${size}_ctl_rss" 1)" "$(cell "n${size}_ctl_rss_growth" 1)" \
        "$(cell "n${size}_cms_pss" 1)" "$(cell "n${size}_cms_backends" 0)" \
        "$(cell "n${size}_members_cpu" 1)" "$(cell "n${size}_probes" 1)" "$(cell "n${size}_load" 1)" \
        "$(cell "n${size}_failover_one" 2)" "$(cell "n${size}_failover_ten" 2)"
done
