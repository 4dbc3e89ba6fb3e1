#!/usr/bin/env bash
# WAL replay rate during a restore (issue 3), with and without wal-fetch's prefetch: a pgbench
# database is backed up, pgbench then writes for a while (every segment archived by the sidecar
# into a file:// store), and the backup is restored to the end of that WAL by
# `toygres-sidecar run --bootstrap restore`, once with prefetch (--archive-concurrency=
# PREFETCH_CONCURRENCY: the sidecar keeps the next segments downloading while Postgres replays)
# and once without (--archive-concurrency=1: each segment fetched alone, when Postgres asks).
#
#   scripts/bench/pitr-replay.sh                          # from the repo root
#   SCALE=20 DURATION=60 RUNS=3 scripts/bench/pitr-replay.sh
#
# Measured per run and mode: the recovery time (from the sidecar's log: Postgres started on the
# restored copy until recovery reached the end of the archive and promoted), the WAL replayed
# (from the backup's stop LSN to the end of the archived WAL) and their ratio in MiB/s; also
# the restore until /readyz.
#
# Environment: SCALE (20), CLIENTS (4), DURATION (60 s of pgbench writes after the backup), RUNS
# (3), MODES ("prefetch none"; also "ab-prefetch ab-none": the same with AB_SIDECAR_BIN, another
# build, to A/B a change in the same run), PREFETCH_CONCURRENCY (4, the default
# --archive-concurrency), SIDECAR_BIN (target/release/toygres-sidecar, built when missing),
# PG_BIN, KEEP=1, TIMEOUT (900).
# Everything lives in one temp dir; every process started is stopped by pid on exit.
set -eEuo pipefail

SCALE=${SCALE:-20}
CLIENTS=${CLIENTS:-4}
DURATION=${DURATION:-60}
RUNS=${RUNS:-3}
MODES=${MODES:-"prefetch none"}
PREFETCH_CONCURRENCY=${PREFETCH_CONCURRENCY:-4}
TIMEOUT=${TIMEOUT:-900}
KEEP=${KEEP:-0}
TOKEN="bench-api-token-0123456789abcdef"
SU_PW="bench-superuser-pw"
REPL_PW="bench-replication-pw"
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in curl jq awk pgbench; do
    command -v "$tool" >/dev/null || die "$tool is required"
done

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
    [[ -x $PG_BIN/initdb ]] || PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
fi
[[ -x $PG_BIN/pg_basebackup && -x $PG_BIN/pg_ctl ]] || die "no PostgreSQL programs in '$PG_BIN'"

if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user"
    as_pg() { runuser -u postgres -- "$@"; }
    PG_OWNER=postgres
else
    as_pg() { "$@"; }
    PG_OWNER=$(id -un)
fi

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/tgpitr.XXXXXX")
chmod 0711 "$ROOT"
PIDS=()
DATA_DIRS=()
LOGS=()

pid_alive() {
    local pid=$1 state
    kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo Z)
    [[ $state != Z ]]
}

stop_pid() { # pid signal seconds
    local pid=$1 sig=$2 wait_s=$3 i
    pid_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < wait_s * 20; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.1
}

forget_pid() {
    local keep=() p
    for p in "${PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

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
            tail -n 25 "$f" >&2
        done
    fi
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}" TERM 30
        wait "${PIDS[i]}" 2>/dev/null
    done
    for dir in "${DATA_DIRS[@]}"; do
        if pid=$(postmaster_of "$dir"); then
            log "stopping leftover postmaster $pid ($dir)"
            stop_pid "$pid" QUIT 10
        fi
    done
    if ((KEEP == 1)); then log "kept $ROOT"; else rm -rf "$ROOT"; fi
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
STORE=$ROOT/store
mkdir -p "$STORE"
chmod 0777 "$STORE"

USED_PORTS=" "
free_port() { # free_port VAR
    local p i
    for ((i = 0; i < 1000; i++)); do
        p=$((10000 + RANDOM % 20000))
        [[ $USED_PORTS == *" $p "* ]] && continue
        [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]] || continue
        USED_PORTS+="$p "
        printf -v "$1" '%s' "$p"
        return 0
    done
    die "no free port found"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

wait_for() { # pid-or-- what command…
    local watch=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if [[ $watch != - ]] && ! pid_alive "$watch"; then
            die "process $watch exited while waiting for $what"
        fi
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.05
    done
}
readyz_ok() { curl -sf --max-time 2 "http://127.0.0.1:$1/readyz" >/dev/null; }

start_sidecar() { # dir member pg_port api_port [extra args…]; sets SC_PID
    local dir=$1 member=$2 pg_port=$3 api_port=$4
    shift 4
    local logf=$dir/$member.log
    LOGS+=("$logf")
    DATA_DIRS+=("$dir/$member/data")
    RUST_LOG=${RUST_LOG:-info} "${SC_BIN:-$SIDECAR_BIN}" run \
        --data-dir="$dir/$member/data" --pg-port="$pg_port" --api-addr="127.0.0.1:$api_port" \
        --member-name="$member" --token-file="$ROOT/token" \
        --superuser-password-file="$ROOT/superuser.pw" \
        --replication-password-file="$ROOT/replication.pw" \
        --pg-bin-dir="$PG_BIN" --stop-timeout-secs=30 --start-timeout-secs="$TIMEOUT" \
        --archive-url="file://$STORE" "$@" </dev/null >"$logf" 2>&1 &
    SC_PID=$!
    PIDS+=("$SC_PID")
}

stop_sidecar() {
    stop_pid "$1" TERM 60
    wait "$1" 2>/dev/null || true
    forget_pid "$1"
}

RESULTS=$ROOT/results.txt
: >"$RESULTS"
record() { echo "$1 $2" >>"$RESULTS"; log "  $1 = $2"; }
psql_src() {
    PGPASSWORD=$SU_PW "$PG_BIN/psql" -X -h 127.0.0.1 -p "$SRC_PG" -U postgres -Atqc "$1" postgres
}

# The source: a sidecar primary archiving into the store, with a pgbench database and a backup.
SRC=$ROOT/src
mkdir -p "$SRC"
chmod 0711 "$SRC"
free_port SRC_PG
free_port SRC_API
start_sidecar "$SRC" bench-0 "$SRC_PG" "$SRC_API" --wal-compression=1
SRC_PID=$SC_PID
wait_for "$SRC_PID" "the source sidecar" readyz_ok "$SRC_API"
log "pgbench -i -s $SCALE"
PGPASSWORD=$SU_PW pgbench -h 127.0.0.1 -p "$SRC_PG" -U postgres -i -s "$SCALE" -q postgres \
    >"$ROOT/pgbench.log" 2>&1 || die "pgbench -i failed: $(tail -3 "$ROOT/pgbench.log")"
log "base backup"
curl -sS --fail-with-body --max-time "$TIMEOUT" -X POST \
    -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
    -d '{"kind":"base"}' "http://127.0.0.1:$SRC_API/v1/backups" >"$ROOT/manifest.json"
ID=$(jq -r .id "$ROOT/manifest.json")
STOP_LSN=$(jq -r .stop_lsn "$ROOT/manifest.json")
log "pgbench for ${DURATION}s ($CLIENTS clients): the WAL to replay"
PGPASSWORD=$SU_PW pgbench -h 127.0.0.1 -p "$SRC_PG" -U postgres -c "$CLIENTS" -j 2 \
    -T "$DURATION" postgres >>"$ROOT/pgbench.log" 2>&1 || die "pgbench failed: $(tail -3 "$ROOT/pgbench.log")"
END_LSN=$(psql_src "SELECT pg_current_wal_lsn()")
LAST=$(psql_src "SELECT pg_walfile_name(pg_switch_wal())")
archived() { [[ $(psql_src "SELECT last_archived_wal >= '$LAST' FROM pg_stat_archiver") == t ]]; }
wait_for "$SRC_PID" "the archiving of $LAST" archived
WAL_BYTES=$(psql_src "SELECT pg_wal_lsn_diff('$END_LSN', '$STOP_LSN')")
record wal_mib "$(mib "$WAL_BYTES")"
record wal_segments "$(find "$STORE/bench/wal" -name '0*' | wc -l)"
# The source is no longer needed: stop it so that it takes no CPU from the restores.
stop_sidecar "$SRC_PID"

for run in $(seq 1 "$RUNS"); do
    for mode in $MODES; do
        SC_BIN=$SIDECAR_BIN
        case $mode in
            prefetch) conc=$PREFETCH_CONCURRENCY ;;
            none) conc=1 ;;
            ab-prefetch) conc=$PREFETCH_CONCURRENCY SC_BIN=${AB_SIDECAR_BIN:?ab modes need AB_SIDECAR_BIN} ;;
            ab-none) conc=1 SC_BIN=${AB_SIDECAR_BIN:?ab modes need AB_SIDECAR_BIN} ;;
            *) die "unknown mode '$mode' (prefetch, none, ab-prefetch, ab-none)" ;;
        esac
        log "run $run: restore with $mode (--archive-concurrency=$conc)"
        DST=$ROOT/dst-$run-$mode
        mkdir -p "$DST"
        chmod 0711 "$DST"
        free_port DST_PG
        free_port DST_API
        member="copy$run${mode//-/}-0"
        t0=$(now)
        start_sidecar "$DST" "$member" "$DST_PG" "$DST_API" --archive-concurrency="$conc" \
            --bootstrap=restore --restore-instance=bench --restore-backup-id="$ID"
        SC_BIN=
        DST_PID=$SC_PID
        wait_for "$DST_PID" "the restored sidecar" readyz_ok "$DST_API"
        t1=$(now)
        record "${mode}_restore_s" "$(elapsed "$t0" "$t1")"
        secs=$(grep -m1 'recovery reached its end' "$DST/$member.log" |
            sed -E 's/.*seconds=([0-9.]+).*/\1/')
        [[ $secs =~ ^[0-9.]+$ ]] || die "no recovery time in $DST/$member.log"
        record "${mode}_recovery_s" "$(awk -v s="$secs" 'BEGIN { printf "%.1f", s }')"
        record "${mode}_replay_mib_s" "$(awk -v b="$WAL_BYTES" -v s="$secs" \
            'BEGIN { printf "%.1f", b / 1048576 / s }')"
        stop_sidecar "$DST_PID"
        ((KEEP == 1)) || rm -rf "$DST"
    done
done

log "results (seconds; MiB; MiB/s):"
awk '{ n[$1]++; v[$1, n[$1]] = $2 } END {
    for (k in n) {
        line = k ":"; m = n[k]
        for (i = 1; i <= m; i++) { line = line " " v[k, i]; s[i] = v[k, i] + 0 }
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (s[j] < s[i]) { t = s[i]; s[i] = s[j]; s[j] = t }
        med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
        print line "  (median " med ")"
    }
}' "$RESULTS" | sort
