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
TIMEOUT=${TIMEOUT:-180}
KEEP=${KEEP:-0}
TOKEN="bench-api-token-0123456789abcdef"
SU_PW="bench-superuser-pw"
REPL_PW="bench-replication-pw"

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
POLL_SLEEP=$(awk -v ms="$POLL_MS" 'BEGIN { printf "%.3f", ms / 1000 }')

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in curl jq awk; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"

# ---------------------------------------------------------------------------------------------
# Binaries

if [[ -z ${SIDECAR_BIN:-} ]]; then
    SIDECAR_BIN=$REPO_ROOT/target/release/toygres-sidecar
    if [[ ! -x $SIDECAR_BIN ]]; then
        log "building the release sidecar (cargo build --release -p toygres-sidecar)"
        (cd "$REPO_ROOT" && cargo build --release -p toygres-sidecar)
    fi
fi
[[ $SIDECAR_BIN == /* ]] || SIDECAR_BIN=$PWD/$SIDECAR_BIN
[[ -x $SIDECAR_BIN ]] || die "no sidecar binary at $SIDECAR_BIN"

if [[ -z ${PG_BIN:-} ]]; then
    PG_BIN=$(pg_config --bindir 2>/dev/null || true)
    if [[ -z $PG_BIN || ! -x $PG_BIN/initdb ]]; then
        PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
    fi
fi
[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl && -x $PG_BIN/pg_basebackup ]] ||
    die "no PostgreSQL programs in '$PG_BIN' (set PG_BIN)"
PSQL=$PG_BIN/psql
[[ -x $PSQL ]] || PSQL=$(command -v psql) || die "psql not found"

# Postgres refuses to run as root: run its programs as the postgres OS user then.
if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
    as_pg() { runuser -u postgres -- "$@"; }
    PG_OWNER=postgres
else
    as_pg() { "$@"; }
    PG_OWNER=$(id -un)
fi

# ---------------------------------------------------------------------------------------------
# Cleanup: every pid started, every data directory made.

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/tgb.XXXXXX")
chmod 0711 "$ROOT"
PIDS=()       # processes this script started (sidecars, load generators)
DATA_DIRS=()  # data directories whose postmaster must not outlive the script
LOGS=()       # sidecar logs, shown on failure

pid_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)
    [[ $state != Z ]]
}

# Sends $2 to pid $1, then waits up to $3 seconds for it to go; SIGKILL after that.
stop_pid() {
    local pid=$1 sig=$2 wait_s=$3 i
    pid_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.05
    done
    log "pid $pid did not stop after SIG$sig within ${wait_s}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.1
}

# Drops a reaped pid from PIDS, so cleanup never signals a recycled one.
forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# The live postmaster of data directory $1 (from postmaster.pid, and only if that process's
# command line names the directory, so a stale file never points at a recycled pid).
postmaster_of() {
    local dir=$1 pid
    [[ -f $dir/postmaster.pid ]] || return 1
    pid=$(head -1 "$dir/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    pid_alive "$pid" || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$dir" || return 1
    echo "$pid"
}

cleanup() {
    local rc=$? pid dir i
    trap - EXIT INT TERM ERR
    set +e
    if ((rc != 0)); then
        for f in "${LOGS[@]}"; do
            [[ -f $f ]] || continue
            log "---- last lines of $f ----"
            tail -n 25 "$f" >&2 || true
        done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" TERM 20
        wait "${PIDS[i]}" 2>/dev/null || true
    done
    for dir in "${DATA_DIRS[@]}"; do
        if pid=$(postmaster_of "$dir"); then
            log "stopping leftover postmaster $pid ($dir)"
            stop_pid "$pid" QUIT 10
        fi
    done
    if ((KEEP == 1)); then
        log "kept $ROOT"
    else
        rm -rf "$ROOT"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap '[[ $BASHPID != "$$" ]] || log "ERROR: line $LINENO: \"$BASH_COMMAND\" failed"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

printf '%s\n' "$TOKEN" >"$ROOT/token"
printf '%s\n' "$SU_PW" >"$ROOT/superuser.pw"
printf '%s\n' "$REPL_PW" >"$ROOT/replication.pw"
chmod 0600 "$ROOT/token" "$ROOT/superuser.pw" "$ROOT/replication.pw"

# ---------------------------------------------------------------------------------------------
# Helpers

# free_port VAR: sets VAR to a port no socket uses and this script has not handed out yet (not
# called in $(…): the bookkeeping must survive). Ports come from below the kernel's ephemeral
# range, which other programs on this shared machine get their ports (bind to 0) from.
USED_PORTS=" "
EPHEMERAL_LOW=$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
((EPHEMERAL_LOW > 15000)) || EPHEMERAL_LOW=60000
free_port() {
    local p i
    for ((i = 0; i < 1000; i++)); do
        p=$((10000 + RANDOM % (EPHEMERAL_LOW - 10000)))
        [[ $USED_PORTS == *" $p "* ]] && continue
        if command -v ss >/dev/null; then
            # Any TCP socket (listening or connected) on that local port: taken.
            [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] || continue
        elif (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            continue
        fi
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; } # seconds, a -> b

api() { # api METHOD PORT PATH [curl args…]
    local method=$1 port=$2 path=$3
    shift 3
    curl -sS --max-time 120 -X "$method" -H "Authorization: Bearer $TOKEN" "$@" \
        "http://127.0.0.1:$port$path"
}

# Waits until the command succeeds, checking every POLL_MS; fails after TIMEOUT seconds, or at
# once when pid $1 (if not "-") exits.
wait_for() {
    local watch=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ $watch != - ]] && ! pid_alive "$watch"; then
            die "process $watch exited while waiting for $what"
        fi
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep "$POLL_SLEEP"
    done
}

readyz_ok() { curl -sf --max-time 2 "http://127.0.0.1:$1/readyz" >/dev/null; }

sidecar_sees_streaming() { # API port of the primary, standby member name
    api GET "$1" /v1/status --max-time 2 |
        jq -e --arg m "$2" 'any(.standbys[]; .application_name == $m and .state == "streaming")'
}

pg_sees_streaming() { # socket dir, port
    local n
    n=$("$PSQL" -X -h "$1" -p "$2" -U postgres -d postgres -Atqc \
        "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") || return 1
    ((n > 0))
}

CLK_TCK=$(getconf CLK_TCK)
# user + system CPU time of a process, in clock ticks
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

rss_kb() {
    [[ -r /proc/$1/status ]] || die "process $1 is gone (did the sidecar die?)"
    awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status"
}

# Epoch seconds of the first line of sidecar log $1 matching regex $2 (its RFC 3339 timestamp).
log_time() {
    local ts
    ts=$(grep -m1 -E "$2" "$1" | awk '{ print $1 }')
    [[ -n $ts ]] || die "no line matching '$2' in $1"
    date -d "$ts" +%s.%N
}

# Starts a sidecar in the background; sets SC_PID.
start_sidecar() { # dir member pg_port api_port [extra args…]
    local dir=$1 member=$2 pg_port=$3 api_port=$4
    shift 4
    local logf=$dir/$member.log
    LOGS+=("$logf")
    DATA_DIRS+=("$dir/$member/data")
    RUST_LOG=${RUST_LOG:-info} "$SIDECAR_BIN" run \
        --data-dir="$dir/$member/data" \
        --pg-port="$pg_port" \
        --api-addr="127.0.0.1:$api_port" \
        --member-name="$member" \
        --token-file="$ROOT/token" \
        --superuser-password-file="$ROOT/superuser.pw" \
        --replication-password-file="$ROOT/replication.pw" \
        --pg-bin-dir="$PG_BIN" \
        --stop-timeout-secs=10 \
        "$@" </dev/null >"$logf" 2>&1 &
    SC_PID=$!
    PIDS+=("$SC_PID")
}

stop_sidecar() {
    stop_pid "$1" TERM 30
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

# Results: one line "metric value" per measurement.
RESULTS=$ROOT/results.txt
: >"$RESULTS"
record() { echo "$1 $2" >>"$RESULTS"; log "  $1 = $2"; }

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
    resp=$(api POST "$s_api" /v1/promote --fail-with-body) ||
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
    mkdir -p "$dir/sock"
    chmod 0711 "$ROOT/run$run"
    chown -R "$PG_OWNER" "$dir"
    chmod 0700 "$dir"
    local pdata=$dir/primary sdata=$dir/standby sock=$dir/sock p_port s_port t0 t1 t2
    free_port p_port
    free_port s_port
    DATA_DIRS+=("$pdata" "$sdata")

    log "run $run: by hand: initdb + pg_ctl start + pg_basebackup -R + pg_ctl start"
    t0=$(now)
    as_pg "$PG_BIN/initdb" -D "$pdata" -U postgres --auth-local=trust --auth-host=trust \
        --data-checksums --encoding=UTF8 --locale=C.UTF-8 --no-instructions \
        >"$dir/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$dir/initdb.log")"
    local ti
    ti=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$pdata" -l "$dir/primary.log" -w -s \
        -o "-p $p_port -k $sock -c listen_addresses=127.0.0.1" start ||
        die "pg_ctl start (primary) failed: $(tail -5 "$dir/primary.log")"
    t1=$(now)
    as_pg "$PG_BIN/pg_basebackup" -D "$sdata" -h 127.0.0.1 -p "$p_port" -U postgres \
        -R -X stream --checkpoint=fast >"$dir/basebackup.log" 2>&1 ||
        die "pg_basebackup failed: $(tail -5 "$dir/basebackup.log")"
    local tb1 tb2
    tb1=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$sdata" -l "$dir/standby.log" -w -s \
        -o "-p $s_port -k $sock -c listen_addresses=127.0.0.1" start ||
        die "pg_ctl start (standby) failed: $(tail -5 "$dir/standby.log")"
    tb2=$(now)
    record pg_standby_basebackup_s "$(elapsed "$t1" "$tb1")"
    record pg_standby_start_s "$(elapsed "$tb1" "$tb2")"
    wait_for - "streaming in pg_stat_replication" pg_sees_streaming "$sock" "$p_port"
    t2=$(now)
    record pg_primary_ready_s "$(elapsed "$t0" "$t1")"
    record pg_primary_initdb_s "$(elapsed "$t0" "$ti")"
    record pg_primary_start_s "$(elapsed "$ti" "$t1")"
    record pg_streaming_s "$(elapsed "$t0" "$t2")"

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

# stat METRIC -> "median min max" (numeric, as recorded)
stat() {
    awk -v m="$1" '$1 == m { print $2 }' "$RESULTS" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "nan nan nan"; exit }
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print med, v[1], v[NR]
        }'
}
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
echo "Sidecar benchmarks: $RUNS runs, PostgreSQL $("$PG_BIN/postgres" --version | awk '{ print $3 }'), $(basename "$SIDECAR_BIN") at $SIDECAR_BIN"
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
