#!/usr/bin/env bash
# Controller benchmarks (issue 4): `toygres controller` with its embedded CMS on a fresh temp
# TOYGRES_HOME, on the local platform.
#
#   scripts/bench/controller.sh                      # from the repo root
#   RUNS=2 INSTANCES=3 SAMPLE_SECONDS=10 scripts/bench/controller.sh   # quick check
#
# Measures:
#   1. create with one standby: `toygres create NAME --replicas 1 --replication sync|async` until
#      the CLI returns (it waits for the standby to stream and, in sync mode, to be confirmed
#      synchronous), RUNS times each; every instance is deleted again before the next create.
#      Peer, in the same runs: by hand, initdb + pg_ctl start + pg_basebackup -R + pg_ctl start
#      until the primary's pg_stat_replication shows the standby streaming (sync: the primary
#      starts with synchronous_standby_names = '*' and the clock stops at sync_state = 'sync').
#   2. load: INSTANCES instances with LOAD_REPLICAS async standbys each, health interval
#      HEALTH_INTERVAL_MS; after SETTLE seconds, every SAMPLE_EVERY seconds for SAMPLE_SECONDS:
#      the controller's CPU (utime + stime from /proc/PID/stat) and RSS; the CMS's CPU (its
#      postmaster and every backend, the exited ones counted through the postmaster's cutime) and
#      PSS (proportional set size, so shared buffers count once); the sidecars' CPU; member
#      health probes per second (from the controller's /metrics).
#
# Environment: RUNS (5), INSTANCES (20), LOAD_REPLICAS (1), HEALTH_INTERVAL_MS (1000),
# SETTLE (15 s), SAMPLE_SECONDS (60), SAMPLE_EVERY (5 s), TOYGRES_BIN and SIDECAR_BIN
# (target/release/…, built with `cargo build --release --bin toygres --bin toygres-sidecar` when
# missing), PG_BIN, KEEP=1 (keep the temp dir), TIMEOUT (180 s per wait).
#
# Cleanup (also on failure or Ctrl-C): every instance is deleted through the controller, the
# controller is stopped (SIGTERM: it stops its CMS), then any process whose command line names the
# temp home (sidecars, postmasters) is stopped by pid, and so is every hand-made postmaster.
set -eEuo pipefail

RUNS=${RUNS:-5}
INSTANCES=${INSTANCES:-20}
LOAD_REPLICAS=${LOAD_REPLICAS:-1}
HEALTH_INTERVAL_MS=${HEALTH_INTERVAL_MS:-1000}
SETTLE=${SETTLE:-15}
SAMPLE_SECONDS=${SAMPLE_SECONDS:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
LOG_TAG=ctl-bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk ps
for var in RUNS INSTANCES HEALTH_INTERVAL_MS SETTLE SAMPLE_SECONDS SAMPLE_EVERY; do
    require_positive_int "$var"
done
[[ $LOAD_REPLICAS =~ ^[0-9]$ ]] || die "LOAD_REPLICAS must be 0-9"
if [[ -z ${TOYGRES_BIN:-} && ! -x $REPO_ROOT/target/release/toygres ]] ||
    [[ -z ${SIDECAR_BIN:-} && ! -x $REPO_ROOT/target/release/toygres-sidecar ]]; then
    log "building (cargo build --release --bin toygres --bin toygres-sidecar)"
    (cd "$REPO_ROOT" && cargo build --release --bin toygres --bin toygres-sidecar)
fi
find_controller_bin
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgctl

TG_HOME=$ROOT/home
mkdir -p "$TG_HOME"
chmod 0711 "$TG_HOME"
# The CLI and the controller read a .env in the working directory: run from the temp dir.
cd "$ROOT"

# `toygres` on this home, untouched by the caller's environment (env execs it: same pid).
TG=(env -u DATABASE_URL -u TOYGRES_URL -u TOYGRES_TOKEN_FILE -u TOYGRES_LISTEN
    "TOYGRES_HOME=$TG_HOME" "RUST_LOG=${RUST_LOG:-info}" "$TOYGRES_BIN")
tg() { "${TG[@]}" "$@"; }

CTL_PID=""
CTL_PORT=""
start_controller() {
    free_port CTL_PORT
    LOGS+=("$ROOT/controller.log")
    "${TG[@]}" controller --listen "127.0.0.1:$CTL_PORT" \
        --health-interval-ms "$HEALTH_INTERVAL_MS" --sidecar-bin "$SIDECAR_BIN" \
        --pg-bin-dir "$PG_BIN" </dev/null >"$ROOT/controller.log" 2>&1 &
    CTL_PID=$!
    PIDS+=("$CTL_PID")
    wait_for "$CTL_PID" "the controller's /healthz" \
        controller_get "$TG_HOME" "$CTL_PORT" /healthz --max-time 2 -o /dev/null
}

bench_cleanup_hook() { stop_controller_and_instances; }

# ---------------------------------------------------------------------------------------------
# 1. Create with one standby

create_ours() { # run mode
    local name=c$1-$2 t0 t1 t2
    log "run $1: toygres create $name --replicas 1 --replication $2"
    t0=$(now)
    tg create "$name" --replicas 1 --replication "$2" >"$ROOT/create-$name.log" 2>&1 ||
        die "toygres create $name failed: $(tail -5 "$ROOT/create-$name.log")"
    t1=$(now)
    tg delete "$name" >"$ROOT/delete-$name.log" 2>&1 ||
        die "toygres delete $name failed: $(tail -5 "$ROOT/delete-$name.log")"
    t2=$(now)
    record "ours_create_$2_s" "$(elapsed "$t0" "$t1")"
    record "ours_delete_s" "$(elapsed "$t1" "$t2")"
}

create_peer() { # run mode
    local dir=$ROOT/peer$1-$2
    log "run $1: by hand ($2): initdb + pg_ctl start + pg_basebackup -R + pg_ctl start"
    mkdir -p "$dir"
    hand_made_pair "$dir" "$2"
    record "peer_create_$2_s" "$(elapsed "$PEER_T0" "$PEER_T_STREAMING")"
    as_pg "$PG_BIN/pg_ctl" -D "$PEER_SDATA" -m fast -w -s stop || die "pg_ctl stop (standby) failed"
    as_pg "$PG_BIN/pg_ctl" -D "$PEER_PDATA" -m fast -w -s stop || die "pg_ctl stop (primary) failed"
    rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------------
# 2. Load: CPU and memory with many instances

# The sidecar processes of the instances: pid list.
sidecar_pids() {
    local p
    for p in $(pids_mentioning "$TG_HOME/instances"); do
        [[ $(cat "/proc/$p/comm" 2>/dev/null) == toygres-sidecar ]] && echo "$p"
    done
    return 0
}

sidecars_ticks() {
    local total=0 p
    for p in "$@"; do
        total=$((total + $(cpu_ticks "$p" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

health_checks() {
    controller_get "$TG_HOME" "$CTL_PORT" /metrics --max-time 5 |
        awk '/^toygres_controller_health_checks_total/ { s += $2 } END { print s + 0 }'
}

load_test() {
    local i name t0 t1
    log "load: creating $INSTANCES instances with $LOAD_REPLICAS async standby(s) each"
    for ((i = 1; i <= INSTANCES; i++)); do
        name=load-$i
        t0=$(now)
        tg create "$name" --replicas "$LOAD_REPLICAS" --replication async \
            >"$ROOT/create-$name.log" 2>&1 ||
            die "toygres create $name failed: $(tail -5 "$ROOT/create-$name.log")"
        t1=$(now)
        record load_create_s "$(elapsed "$t0" "$t1")"
    done
    local running
    running=$(tg list -o json | jq '[.instances[] | select(.state == "running")] | length')
    ((running == INSTANCES)) || die "only $running of $INSTANCES instances are running"
    log "load: settling for ${SETTLE}s"
    sleep "$SETTLE"

    local pm sidecars
    pm=$(head -1 "$TG_HOME/cms/data/postmaster.pid")
    [[ $pm =~ ^[0-9]+$ ]] && pid_alive "$pm" || die "no live CMS postmaster"
    mapfile -t sidecars < <(sidecar_pids)
    record load_sidecars "${#sidecars[@]}"
    log "load: sampling for ${SAMPLE_SECONDS}s (every ${SAMPLE_EVERY}s): controller $CTL_PID, CMS postmaster $pm, ${#sidecars[@]} sidecars"
    local ta tb c0 c1 m0 m1 s0 s1 h0 h1 tstart cstart mstart sstart hstart dt
    tstart=$(now)
    cstart=$(cpu_ticks "$CTL_PID")
    mstart=$(cms_ticks "$pm")
    sstart=$(sidecars_ticks "${sidecars[@]}")
    hstart=$(health_checks)
    ta=$tstart c0=$cstart m0=$mstart s0=$sstart h0=$hstart
    local rss_start
    rss_start=$(rss_kb "$CTL_PID")
    for ((i = 0; i < SAMPLE_SECONDS / SAMPLE_EVERY; i++)); do
        sleep "$SAMPLE_EVERY"
        pid_alive "$CTL_PID" || die "the controller exited"
        tb=$(now)
        c1=$(cpu_ticks "$CTL_PID")
        m1=$(cms_ticks "$pm")
        s1=$(sidecars_ticks "${sidecars[@]}")
        h1=$(health_checks)
        dt=$(elapsed "$ta" "$tb")
        record load_ctl_cpu_pct "$(pct $((c1 - c0)) "$dt")"
        record load_cms_cpu_pct "$(pct $((m1 - m0)) "$dt")"
        record load_sidecars_cpu_pct "$(pct $((s1 - s0)) "$dt")"
        record load_checks_per_s "$(calc "($h1 - $h0) / $dt")"
        record load_ctl_rss_kb "$(rss_kb "$CTL_PID")"
        record load_cms_pss_kb "$(cms_pss_kb "$pm")"
        ta=$tb c0=$c1 m0=$m1 s0=$s1 h0=$h1
    done
    dt=$(elapsed "$tstart" "$tb")
    record load_ctl_cpu_pct_window "$(pct $((c1 - cstart)) "$dt")"
    record load_cms_cpu_pct_window "$(pct $((m1 - mstart)) "$dt")"
    record load_sidecars_cpu_pct_window "$(pct $((s1 - sstart)) "$dt")"
    record load_ctl_hwm_kb "$(rss_kb "$CTL_PID" VmHWM)"
    record load_ctl_rss_start_kb "$rss_start"
    record load_ctl_rss_end_kb "$(rss_kb "$CTL_PID")"
    # A steady controller's RSS stays flat once settled; growth here means memory is retained.
    record load_ctl_rss_growth_mib_per_min "$(calc "($(rss_kb "$CTL_PID") - $rss_start) / 1024 / $dt * 60")"
    record load_cms_backends "$(ps -o pid= --ppid "$pm" | wc -l)"
}

# ---------------------------------------------------------------------------------------------
# Main

log "toygres: $TOYGRES_BIN; sidecar: $SIDECAR_BIN"
log "postgres: $("$PG_BIN/postgres" --version) ($PG_BIN); temp dir: $ROOT"
start_controller
log "controller $CTL_PID listening on 127.0.0.1:$CTL_PORT (health interval ${HEALTH_INTERVAL_MS} ms)"

MODES=(ours:sync ours:async peer:sync peer:async)
for ((run = 1; run <= RUNS; run++)); do
    # Rotate the order each run, so drift in machine load hits every variant.
    for ((i = 0; i < ${#MODES[@]}; i++)); do
        m=${MODES[(i + run - 1) % ${#MODES[@]}]}
        "create_${m%%:*}" "$run" "${m#*:}"
    done
done
load_test

log "load: deleting the $INSTANCES instances"
for name in $(live_instances); do
    tg delete "$name" --no-wait >/dev/null || die "toygres delete $name failed"
done
deadline=$((SECONDS + TIMEOUT))
while [[ -n $(live_instances) ]]; do
    ((SECONDS < deadline)) || die "instances still not deleted after ${TIMEOUT}s"
    sleep 0.5
done
left=$(pids_mentioning "$TG_HOME/instances" | wc -l)
((left == 0)) || die "$left processes of deleted instances are still running"

# ---------------------------------------------------------------------------------------------
# Report

row() { # label metric decimals [scale] [peer metric]
    local peer=${5:-}
    printf '| %s | %s | %s | %s |\n' "$1" "$(cell "$2" "$3" "${4:-1}")" \
        "$([[ -n $peer ]] && cell "$peer" "$3" "${4:-1}" || echo -)" \
        "$([[ -n $peer ]] && ratio "$2" "$peer" || echo -)"
}
MB=$(awk 'BEGIN { printf "%.10f", 1 / 1024 }')
echo
echo "Controller benchmarks: $RUNS runs, PostgreSQL $(pg_version), $(nproc) CPUs, release build; embedded CMS"
echo
echo "| measurement (median (min–max)) | toygres | peer by hand | toygres / peer |"
echo "|---|---|---|---|"
row "create, 1 sync standby, until the CLI returns (s)" ours_create_sync_s 2 1 peer_create_sync_s
row "create, 1 async standby, until the CLI returns (s)" ours_create_async_s 2 1 peer_create_async_s
row "delete (s)" ours_delete_s 2
row "create under load ($INSTANCES × $LOAD_REPLICAS async standby) (s)" load_create_s 2
row "controller CPU, % of one core, per ${SAMPLE_EVERY} s interval" load_ctl_cpu_pct 1
row "controller CPU over the whole ${SAMPLE_SECONDS} s window (%)" load_ctl_cpu_pct_window 1
row "controller RSS (MiB), sampled" load_ctl_rss_kb 1 "$MB"
row "controller RSS at the start of the window (MiB)" load_ctl_rss_start_kb 1 "$MB"
row "controller RSS at the end of the window (MiB)" load_ctl_rss_end_kb 1 "$MB"
row "controller RSS growth over the window (MiB/min)" load_ctl_rss_growth_mib_per_min 1
row "controller VmHWM (MiB)" load_ctl_hwm_kb 1 "$MB"
row "CMS CPU, postmaster + backends, per interval (%)" load_cms_cpu_pct 1
row "CMS CPU over the whole window (%)" load_cms_cpu_pct_window 1
row "CMS PSS, postmaster + backends (MiB)" load_cms_pss_kb 1 "$MB"
row "CMS backends at the end" load_cms_backends 0
row "sidecars' CPU, all ${INSTANCES} × $((LOAD_REPLICAS + 1)), per interval (%)" load_sidecars_cpu_pct 1
row "member health probes per second" load_checks_per_s 1
echo
echo "Load: $INSTANCES instances × $((LOAD_REPLICAS + 1)) members ($(stat load_sidecars | awk '{ print $1 }') sidecars), health interval $HEALTH_INTERVAL_MS ms, settled ${SETTLE} s, sampled every ${SAMPLE_EVERY} s for ${SAMPLE_SECONDS} s."
