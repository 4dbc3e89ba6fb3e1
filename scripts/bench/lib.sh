# shellcheck shell=bash
# shellcheck disable=SC2034  # variables set here are read by the scripts that source it
# Shared helpers of the benchmark scripts in scripts/bench/, sourced by each of them after
# `set -eEuo pipefail`:
#
#   LOG_TAG=bench                      # optional: the tag of log lines
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   find_pg_bin pg_basebackup          # PG_BIN, PSQL (the programs named must exist too)
#   find_sidecar_bin                   # SIDECAR_BIN (release build when missing)
#   bench_root tgb                     # ROOT (a temp dir), cleanup on exit, secrets, RESULTS
#
# Cleanup (on exit, failure or Ctrl-C): the function bench_cleanup_hook when the script defines
# one, then every pid in PIDS (newest first, SIGTERM then SIGKILL), then the postmaster of every
# directory in DATA_DIRS; on failure the tails of the files in LOGS are shown first. ROOT is
# removed unless KEEP=1.

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LOG_TAG=${LOG_TAG:-bench}
KEEP=${KEEP:-0}
TIMEOUT=${TIMEOUT:-180}
POLL_MS=${POLL_MS:-50}
POLL_SLEEP=$(awk -v ms="$POLL_MS" 'BEGIN { printf "%.3f", ms / 1000 }')
TOKEN="bench-api-token-0123456789abcdef"
SU_PW="bench-superuser-pw"
REPL_PW="bench-replication-pw"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[%s %s] %s\n' "$LOG_TAG" "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# require_tools TOOL…: fails naming the first one missing (BENCH_INSTALL_HINT says how to get it).
require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || die "$tool is required${BENCH_INSTALL_HINT:+ ($BENCH_INSTALL_HINT)}"
    done
}

# require_positive_int NAME: the variable NAME holds a positive integer.
require_positive_int() {
    [[ ${!1} =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"
}

# ---------------------------------------------------------------------------------------------
# Binaries

# find_release_bin VAR BINARY PACKAGE: VAR keeps a path it already holds (made absolute), else
# target/release/BINARY, built with cargo when missing.
find_release_bin() {
    local var=$1 bin=$2 package=$3 path
    path=${!var:-}
    if [[ -z $path ]]; then
        path=$REPO_ROOT/target/release/$bin
        if [[ ! -x $path ]]; then
            log "building $bin (cargo build --release -p $package --bin $bin)"
            (cd "$REPO_ROOT" && cargo build --release -p "$package" --bin "$bin")
        fi
    fi
    [[ $path == /* ]] || path=$PWD/$path
    [[ -x $path ]] || die "no $bin binary at $path"
    printf -v "$var" '%s' "$path"
}

find_sidecar_bin() { find_release_bin SIDECAR_BIN toygres-sidecar toygres-sidecar; }
find_controller_bin() { find_release_bin TOYGRES_BIN toygres toygres-controller; }

# find_pg_bin [PROGRAM…]: PG_BIN (from PG_BIN, pg_config or the newest /usr/lib/postgresql/*)
# holding initdb, pg_ctl and every PROGRAM; PSQL. Also as_pg (runs a command as the OS user that
# owns Postgres data: postgres when we are root) and PG_OWNER.
find_pg_bin() {
    local program
    if [[ -z ${PG_BIN:-} ]]; then
        PG_BIN=$(pg_config --bindir 2>/dev/null || true)
        if [[ -z $PG_BIN || ! -x $PG_BIN/initdb ]]; then
            PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
        fi
    fi
    for program in initdb pg_ctl "$@"; do
        [[ -x $PG_BIN/$program ]] || die "no PostgreSQL $program in '$PG_BIN' (set PG_BIN)"
    done
    PSQL=$PG_BIN/psql
    [[ -x $PSQL ]] || PSQL=$(command -v psql) || die "psql not found"
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
        as_pg() { runuser -u postgres -- "$@"; }
        PG_OWNER=postgres
    else
        as_pg() { "$@"; }
        PG_OWNER=$(id -un)
    fi
}

pg_version() { "$PG_BIN/postgres" --version | awk '{ print $3 }'; }

# ---------------------------------------------------------------------------------------------
# Processes and cleanup

PIDS=()      # processes this script started
DATA_DIRS=() # data directories whose postmaster must not outlive the script
LOGS=()      # logs shown on failure

pid_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)
    [[ $state != Z ]]
}

# stop_pid PID SIGNAL SECONDS: sends SIGNAL, waits up to SECONDS for the process to go, then
# SIGKILL.
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
    tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "$dir" || return 1
    echo "$pid"
}

# Live processes (not this shell) whose command line contains $1, one pid a line.
pids_mentioning() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -qF -- "$1"; then
            pid_alive "$p" && echo "$p"
        fi
    done
    return 0
}

# Stops (SIGQUIT: immediate shutdown) the live postmaster of every directory in DATA_DIRS.
stop_leftover_postmasters() {
    local dir pid
    for dir in "${DATA_DIRS[@]}"; do
        if pid=$(postmaster_of "$dir"); then
            log "stopping leftover postmaster $pid ($dir)"
            stop_pid "$pid" QUIT 10
        fi
    done
}

# CPU accounting for a group of processes (cgroup v1 cpuacct, as root): cpu_group NAME makes
# a group and sets CG to it (empty where there is no such hierarchy, and then cpu_used says
# 0); in_cpu_group CMD… runs CMD inside CG (its children stay in it, also once detached);
# cpu_used prints the group's CPU time so far, in seconds. Groups are removed at exit.
CGROUPS=()
CG=""
CPUACCT=/sys/fs/cgroup/cpuacct
cpu_group() {
    CG=""
    [[ -w $CPUACCT/cgroup.procs ]] || return 0
    local g=$CPUACCT/$LOG_TAG-$$-$1
    mkdir "$g" 2>/dev/null || return 0
    CG=$g
    CGROUPS+=("$g")
}
in_cpu_group() {
    if [[ -n $CG ]]; then
        (
            echo "$BASHPID" >"$CG/cgroup.procs"
            # A command replaces the subshell (its pid is then the one `$!` gave).
            if declare -F "$1" >/dev/null; then "$@"; else exec "$@"; fi
        )
    else
        "$@"
    fi
}
cpu_used() {
    if [[ -n $CG ]]; then
        awk '{ printf "%.3f", $1 / 1e9 }' "$CG/cpuacct.usage"
    else
        echo 0
    fi
}

bench_cleanup() {
    local rc=$? i f
    trap - EXIT INT TERM ERR
    set +e
    if ((rc != 0)); then
        for f in "${LOGS[@]}"; do
            [[ -f $f ]] || continue
            log "---- last lines of $f ----"
            tail -n 25 "$f" >&2
        done
    fi
    if declare -F bench_cleanup_hook >/dev/null; then
        bench_cleanup_hook
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" TERM 30
        wait "${PIDS[i]}" 2>/dev/null
    done
    stop_leftover_postmasters
    for f in "${CGROUPS[@]}"; do
        [[ -d $f ]] || continue
        rmdir "$f" 2>/dev/null || log "could not remove the cgroup $f (a process still in it?)"
    done
    if ((KEEP == 1)); then
        log "kept $ROOT"
    else
        rm -rf "$ROOT"
    fi
    exit "$rc"
}

# bench_root PREFIX: makes ROOT (a temp dir the postgres OS user can traverse), installs the
# cleanup, writes the token and password files ($ROOT/token, superuser.pw, replication.pw) and
# starts an empty RESULTS file.
bench_root() {
    ROOT=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 0711 "$ROOT"
    trap bench_cleanup EXIT
    trap '[[ $BASHPID != "$$" ]] || log "ERROR: line $LINENO: \"$BASH_COMMAND\" failed"' ERR
    trap 'exit 130' INT
    trap 'exit 143' TERM
    printf '%s\n' "$TOKEN" >"$ROOT/token"
    printf '%s\n' "$SU_PW" >"$ROOT/superuser.pw"
    printf '%s\n' "$REPL_PW" >"$ROOT/replication.pw"
    chmod 0600 "$ROOT/token" "$ROOT/superuser.pw" "$ROOT/replication.pw"
    RESULTS=$ROOT/results.txt
    : >"$RESULTS"
}

# ---------------------------------------------------------------------------------------------
# Ports, time, waiting

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
# elapsed A B [DECIMALS]: seconds from A to B (3 decimals by default).
elapsed() { awk -v a="$1" -v b="$2" -v d="${3:-3}" 'BEGIN { printf "%.*f", d, b - a }'; }
calc() { awk "BEGIN { printf \"%.4f\", $1 }"; }

# wait_for PID WHAT COMMAND…: runs COMMAND every POLL_MS until it succeeds; fails after TIMEOUT
# seconds, or at once when PID (unless "-") exits.
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

# ---------------------------------------------------------------------------------------------
# CPU and memory of a process, from /proc

# user + system CPU time of a process, in clock ticks
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }

# user + system CPU time of a process and of the children it has reaped, in clock ticks
cpu_ticks_with_reaped() { sed 's/.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 + $14 + $15 }'; }

# rss_kb PID [FIELD]: VmRSS (or FIELD, e.g. VmHWM) of a process, in KiB.
rss_kb() {
    [[ -r /proc/$1/status ]] || die "process $1 is gone"
    awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status"
}

# Stops every process whose command line names $1: postmasters at once (SIGQUIT), others with
# SIGTERM, SIGKILL for whatever is left after 20 seconds.
stop_processes_under() {
    local pid deadline=$((SECONDS + 20)) left
    for pid in $(pids_mentioning "$1"); do
        if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]]; then
            kill -QUIT "$pid" 2>/dev/null || true
        else
            kill -TERM "$pid" 2>/dev/null || true
        fi
        log "stopped leftover process $pid"
    done
    while left=$(pids_mentioning "$1") && [[ -n $left ]]; do
        if ((SECONDS >= deadline)); then
            # shellcheck disable=SC2086
            kill -KILL $left 2>/dev/null
            break
        fi
        sleep 0.2
    done
}

# CPU ticks of the CMS: its postmaster and its live children, each with the children it reaped
# (a backend that exited during the window is in the postmaster's cutime/cstime).
cms_ticks() {
    local pm=$1 total child
    total=$(cpu_ticks_with_reaped "$pm")
    for child in $(ps -o pid= --ppid "$pm"); do
        total=$((total + $(cpu_ticks_with_reaped "$child" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# PSS of the CMS (postmaster and children), in KiB.
cms_pss_kb() {
    local pm=$1 total=0 p
    for p in "$pm" $(ps -o pid= --ppid "$pm"); do
        total=$((total + $(awk '$1 == "Pss:" { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# pct TICKS SECONDS -> percent of one core
pct() { awk -v t="$1" -v hz="$CLK_TCK" -v s="$2" 'BEGIN { printf "%.1f", 100 * t / hz / s }'; }

# ---------------------------------------------------------------------------------------------
# The controller

# controller_get HOME PORT PATH [curl args…]: a GET of the controller API with HOME's token, over
# HTTPS with the certificate of HOME's own CA once the controller has made it (the local
# platform), else over plain HTTP (the fleet double's platform serves no TLS).
controller_get() {
    local home=$1 port=$2 path=$3
    shift 3
    local token
    token=$(cat "$home/controller.token" 2>/dev/null || true)
    if [[ -f $home/tls/ca.crt ]]; then
        curl -sf --cacert "$home/tls/ca.crt" -H "Authorization: Bearer $token" "$@" \
            "https://127.0.0.1:$port$path"
    else
        curl -sf -H "Authorization: Bearer $token" "$@" "http://127.0.0.1:$port$path"
    fi
}

# live_instances: names of the instances the controller (reached with the script's `tg`) has not
# deleted.
live_instances() {
    tg list -o json | jq -r '.instances[] | select(.state != "deleted") | .name'
}

# stop_controller_and_instances: deletes every instance (all at once, then waits up to 120 s for
# them), stops the controller CTL_PID, then whatever still runs from the temp home TG_HOME.
stop_controller_and_instances() {
    local name deadline
    if [[ -n $CTL_PID ]] && pid_alive "$CTL_PID"; then
        for name in $(live_instances 2>/dev/null); do
            tg delete "$name" --no-wait >/dev/null 2>&1 || log "could not delete $name"
        done
        deadline=$((SECONDS + 120))
        while [[ -n $(live_instances 2>/dev/null) ]] && ((SECONDS < deadline)); do
            sleep 0.5
        done
        stop_pid "$CTL_PID" TERM 60
        wait "$CTL_PID" 2>/dev/null
        forget_pid "$CTL_PID"
    fi
    stop_processes_under "$TG_HOME"
}

# ---------------------------------------------------------------------------------------------
# Sidecars

api() { # api METHOD PORT PATH [curl args…]
    local method=$1 port=$2 path=$3
    shift 3
    curl -sS --max-time 120 -X "$method" -H "Authorization: Bearer $TOKEN" "$@" \
        "http://127.0.0.1:$port$path"
}

readyz_ok() { curl -sf --max-time 2 "http://127.0.0.1:$1/readyz" >/dev/null; }

# start_sidecar DIR MEMBER PG_PORT API_PORT [ARGS…]: `toygres-sidecar run` in the background with
# its data in DIR/MEMBER/data and its log in DIR/MEMBER.log, plus the arguments in SIDECAR_ARGS
# (an array the script may set) and ARGS; sets SC_PID. SIDECAR_STOP_TIMEOUT (10 s) is its
# --stop-timeout-secs.
SIDECAR_ARGS=()
start_sidecar() {
    local dir=$1 member=$2 pg_port=$3 api_port=$4
    shift 4
    local logf=$dir/$member.log
    LOGS+=("$logf")
    DATA_DIRS+=("$dir/$member/data")
    # Every sidecar of a run shares one CA (one instance's, as far as TLS goes).
    [ -d "$ROOT/tls/$member" ] || "$REPO_ROOT/scripts/dev-certs.sh" "$ROOT/tls" "$member"
    RUST_LOG=${RUST_LOG:-info} "${SC_BIN:-$SIDECAR_BIN}" run \
        --data-dir="$dir/$member/data" \
        --pg-port="$pg_port" \
        --api-addr="127.0.0.1:$api_port" \
        --member-name="$member" \
        --token-file="$ROOT/token" \
        --superuser-password-file="$ROOT/superuser.pw" \
        --tls-dir="$ROOT/tls/$member" \
        --pg-bin-dir="$PG_BIN" \
        --stop-timeout-secs="${SIDECAR_STOP_TIMEOUT:-10}" \
        "${SIDECAR_ARGS[@]}" "$@" </dev/null >"$logf" 2>&1 &
    SC_PID=$!
    PIDS+=("$SC_PID")
}

stop_sidecar() {
    stop_pid "$1" TERM "$((${SIDECAR_STOP_TIMEOUT:-10} + 20))"
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

sidecar_sees_streaming() { # API port of the primary, standby member name
    api GET "$1" /v1/status --max-time 2 |
        jq -e --arg m "$2" 'any(.standbys[]; .application_name == $m and .state == "streaming")'
}

# ---------------------------------------------------------------------------------------------
# The hand-made peer: a primary and a streaming standby made with PostgreSQL's own tools

pg_sees_streaming() { # socket dir, port [sync]: a standby streams (and is synchronous, if asked)
    local n cond="state = 'streaming'"
    [[ ${3:-} == sync ]] && cond+=" AND sync_state = 'sync'"
    n=$("$PSQL" -X -h "$1" -p "$2" -U postgres -d postgres -Atqc \
        "SELECT count(*) FROM pg_stat_replication WHERE $cond") || return 1
    ((n > 0))
}

# hand_made_pair DIR [sync]: initdb + pg_ctl start + pg_basebackup -R + pg_ctl start, until the
# primary's pg_stat_replication shows the standby streaming (and, with "sync", synchronous: the
# primary starts with synchronous_standby_names = '*'). Leaves both running. Sets PEER_PDATA,
# PEER_SDATA, PEER_SOCK, PEER_PPORT, PEER_SPORT and the timestamps PEER_T0 (start),
# PEER_T_INITDB (initdb done), PEER_T_PRIMARY (primary accepts connections), PEER_T_BASEBACKUP
# (copy done), PEER_T_STANDBY (standby accepts connections), PEER_T_STREAMING.
hand_made_pair() {
    local dir=$1 mode=${2:-async} sync_opt=""
    mkdir -p "$dir/sock"
    chown -R "$PG_OWNER" "$dir"
    chmod 0700 "$dir"
    PEER_PDATA=$dir/primary
    PEER_SDATA=$dir/standby
    PEER_SOCK=$dir/sock
    free_port PEER_PPORT
    free_port PEER_SPORT
    DATA_DIRS+=("$PEER_PDATA" "$PEER_SDATA")
    [[ $mode == sync ]] && sync_opt="-c synchronous_standby_names='*'"

    PEER_T0=$(now)
    as_pg "$PG_BIN/initdb" -D "$PEER_PDATA" -U postgres --auth-local=trust --auth-host=trust \
        --data-checksums --encoding=UTF8 --locale=C.UTF-8 --no-instructions \
        >"$dir/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$dir/initdb.log")"
    PEER_T_INITDB=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$PEER_PDATA" -l "$dir/primary.log" -w -s \
        -o "-p $PEER_PPORT -k $PEER_SOCK -c listen_addresses=127.0.0.1 $sync_opt" start ||
        die "pg_ctl start (primary) failed: $(tail -5 "$dir/primary.log")"
    PEER_T_PRIMARY=$(now)
    as_pg "$PG_BIN/pg_basebackup" -D "$PEER_SDATA" -h 127.0.0.1 -p "$PEER_PPORT" -U postgres \
        -R -X stream --checkpoint=fast >"$dir/basebackup.log" 2>&1 ||
        die "pg_basebackup failed: $(tail -5 "$dir/basebackup.log")"
    PEER_T_BASEBACKUP=$(now)
    as_pg "$PG_BIN/pg_ctl" -D "$PEER_SDATA" -l "$dir/standby.log" -w -s \
        -o "-p $PEER_SPORT -k $PEER_SOCK -c listen_addresses=127.0.0.1" start ||
        die "pg_ctl start (standby) failed: $(tail -5 "$dir/standby.log")"
    PEER_T_STANDBY=$(now)
    wait_for - "streaming in pg_stat_replication" pg_sees_streaming "$PEER_SOCK" "$PEER_PPORT" "$mode"
    PEER_T_STREAMING=$(now)
}

# ---------------------------------------------------------------------------------------------
# Results: one line "metric value" per measurement in RESULTS

record() { echo "$1 $2" >>"$RESULTS"; log "  $1 = $2"; }

# stat METRIC -> "median min max" of its recorded values ("nan nan nan" when none)
stat() {
    awk -v m="$1" '$1 == m { print $2 }' "$RESULTS" | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "nan nan nan"; exit }
            med = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print med, v[1], v[NR]
        }'
}

# cell METRIC DECIMALS [SCALE] -> "median (min–max)", or "-" when nothing was recorded
cell() {
    local med min max
    read -r med min max < <(stat "$1")
    [[ $med == nan ]] && { echo "-"; return; }
    awk -v a="$med" -v b="$min" -v c="$max" -v d="$2" -v s="${3:-1}" \
        'BEGIN { printf "%.*f (%.*f–%.*f)", d, a * s, d, b * s, d, c * s }'
}

# ratio METRIC_A METRIC_B -> "A/B×" of their medians, or "-"
ratio() {
    local a b
    read -r a _ _ < <(stat "$1")
    read -r b _ _ < <(stat "$2")
    awk -v a="$a" -v b="$b" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f×", a / b }'
}

# Every metric with its values in the order recorded and their median.
print_results() {
    awk '{ n[$1]++; v[$1, n[$1]] = $2 } END {
        for (k in n) {
            line = k ":"; m = n[k]
            for (i = 1; i <= m; i++) { line = line " " v[k, i]; s[i] = v[k, i] + 0 }
            for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
            med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
            print line "  (median " med ")"
        }
    }' "$RESULTS" | sort
}
