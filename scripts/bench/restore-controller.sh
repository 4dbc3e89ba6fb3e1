#!/usr/bin/env bash
# Backup and restore through the controller (issue 11), beside pgBackRest in the same run:
# `toygres controller` on a fresh temp TOYGRES_HOME (local platform, backups on by default into
# its file:// store), one instance with a pgbench database.
#
#   scripts/bench/restore-controller.sh                   # from the repo root; SCALE=50 RUNS=1
#   SCALE=50 RUNS=3 PGBR_PROCS="1 2" scripts/bench/restore-controller.sh
#   TOYGRES_BIN=target/debug/toygres SIDECAR_BIN=target/debug/toygres-sidecar \
#       scripts/bench/restore-controller.sh               # a debug build (say so when quoting)
#
# Per run (odd runs in this order, even runs pgBackRest first):
#   1. ours, backup: `toygres backup create src` until the CLI returns (the operation succeeded:
#      pg_basebackup on the member, the tar cut into parts compressed on every core, uploaded).
#   2. ours, restore: `toygres restore src --to rN --backup ID` until the CLI returns (the new
#      instance is up: its member created, the parts downloaded and decompressed on every core,
#      untarred, recovered to the end of the source's archive, promoted, restarted as a
#      primary). Of which download + decompress + untar, from the member's log (ours_unpack_s).
#      The instance is deleted again (not timed).
#   3. pgBackRest, for each process-max P in PGBR_PROCS (posix repository on the same disk,
#      backing up the same primary through its socket; the same compressor and level as ours,
#      COMPRESS, default zst level 1): `pgbackrest backup --type=full`, then `pgbackrest
#      restore` into an empty directory and pg_ctl start with restore_command reading our
#      store's WAL (zstd -dc, the cheapest fetch there is) until pg_is_in_recovery() is false.
#
# Environment: SCALE (50), RUNS (1), PGBR_PROCS ("1 2"), COMPRESS ("zst 1": pgBackRest's
# compress-type and level; ours is `--backup-compression zstd`, level 1), TOYGRES_BIN and
# SIDECAR_BIN (target/release/…, built when missing), TOYGRES_BACKUP_JOBS (unset: every core),
# PG_BIN, KEEP=1 (keep the temp dir), TIMEOUT (900 s per wait).
#
# Cleanup (also on failure or Ctrl-C): every instance is deleted through the controller, the
# controller is stopped, then any process naming the temp home is stopped by pid, and so is every
# postmaster of a pgBackRest copy.
set -eEuo pipefail

SCALE=${SCALE:-50}
RUNS=${RUNS:-1}
PGBR_PROCS=${PGBR_PROCS-"1 2"}
COMPRESS=${COMPRESS:-"zst 1"}
TIMEOUT=${TIMEOUT:-900}
LOG_TAG=restore-bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk pgbench zstd
require_positive_int SCALE
require_positive_int RUNS
read -r PGBR_TYPE PGBR_LEVEL <<<"$COMPRESS"
[[ $PGBR_TYPE == zst ]] || die "COMPRESS: only zst is compared here (ours: zstd)"
if [[ -n $PGBR_PROCS ]]; then
    command -v pgbackrest >/dev/null || die "pgbackrest is required (apt-get install -y pgbackrest)"
fi
find_controller_bin
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgrc

TG_HOME=$ROOT/home
mkdir -p "$TG_HOME"
chmod 0711 "$TG_HOME"
STORE=$TG_HOME/backups
cd "$ROOT"

TG=(env -u DATABASE_URL -u TOYGRES_URL -u TOYGRES_TOKEN_FILE -u TOYGRES_LISTEN
    "TOYGRES_HOME=$TG_HOME" "RUST_LOG=${RUST_LOG:-info}" "$TOYGRES_BIN")
tg() { "${TG[@]}" "$@"; }

CTL_PID=""
free_port CTL_PORT
LOGS+=("$ROOT/controller.log")
"${TG[@]}" controller --listen "127.0.0.1:$CTL_PORT" --sidecar-bin "$SIDECAR_BIN" \
    --pg-bin-dir "$PG_BIN" </dev/null >"$ROOT/controller.log" 2>&1 &
CTL_PID=$!
PIDS+=("$CTL_PID")
wait_for "$CTL_PID" "the controller's /healthz" \
    controller_get "$TG_HOME" "$CTL_PORT" /healthz --max-time 2 -o /dev/null

bench_cleanup_hook() { stop_controller_and_instances; }

mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

# ---------------------------------------------------------------------------------------------
# The source: an instance with a pgbench database.

log "toygres create src (backups on, zstd: level 1)"
tg create src --backup-compression zstd >"$ROOT/create-src.log" 2>&1 ||
    die "toygres create src failed: $(tail -5 "$ROOT/create-src.log")"
tg get src -o json >"$ROOT/src.json"
RW=$(jq -r .connection.rw "$ROOT/src.json")
PW=$(cat "$(jq -r .connection.password_location "$ROOT/src.json")")
log "pgbench -i -s $SCALE"
PGPASSWORD=$PW pgbench -i -s "$SCALE" -q "$RW" >"$ROOT/pgbench.log" 2>&1 ||
    die "pgbench -i failed: $(tail -3 "$ROOT/pgbench.log")"
DB_BYTES=$(PGPASSWORD=$PW "$PSQL" -X -Atqc \
    "SELECT sum(pg_database_size(oid)) FROM pg_database" "$RW")
record db_mib "$(mib "$DB_BYTES")"

# The primary's data directory, port and socket directory (postmaster.pid lines 4 and 5).
SRC_DATA=$TG_HOME/instances/src/src-0/data
[[ -f $SRC_DATA/postmaster.pid ]] || die "no running primary at $SRC_DATA"
SRC_PG=$(sed -n 4p "$SRC_DATA/postmaster.pid")
SOCKET=$(sed -n 5p "$SRC_DATA/postmaster.pid")

PGBR=$ROOT/pgbackrest
pgbr() { as_pg pgbackrest --config="$PGBR/pgbackrest.conf" --stanza=bench "$@"; }
if [[ -n $PGBR_PROCS ]]; then
    mkdir -p "$PGBR/repo" "$PGBR/log" "$PGBR/lock"
    cat >"$PGBR/pgbackrest.conf" <<EOF
[global]
repo1-path=$PGBR/repo
repo1-retention-full=9999
log-path=$PGBR/log
lock-path=$PGBR/lock
log-level-console=warn
log-level-file=off
start-fast=y
archive-check=n
compress-type=$PGBR_TYPE
compress-level=$PGBR_LEVEL

[bench]
pg1-path=$SRC_DATA
pg1-port=$SRC_PG
pg1-socket-path=$SOCKET
pg1-user=postgres
EOF
    chown -R "$PG_OWNER" "$PGBR"
    pgbr stanza-create >"$PGBR/stanza.log" 2>&1 ||
        die "pgbackrest stanza-create failed: $(tail -5 "$PGBR/stanza.log")"
fi

in_recovery() {
    as_pg "$PG_BIN/psql" -X -h "$1" -p "$2" -U postgres -Atqc "SELECT pg_is_in_recovery()" postgres
}
promoted() { [[ $(in_recovery "$1" "$2" 2>/dev/null) == f ]]; }

# Ours: a backup through the controller, then a restore of it to a new instance.
ours_run() { # run
    local run=$1
    log "run $run: ours, toygres backup create src"
    t0=$(now)
    tg backup create src -o json >"$ROOT/backup-$run.json" 2>"$ROOT/backup-$run.log" ||
        die "toygres backup create failed: $(tail -5 "$ROOT/backup-$run.log")"
    t1=$(now)
    ID=$(jq -r .id "$ROOT/backup-$run.json")
    record ours_backup_s "$(elapsed "$t0" "$t1")"
    record ours_backup_mib "$(mib "$(jq .stored_bytes "$ROOT/backup-$run.json")")"

    log "run $run: ours, toygres restore src --to r$run --backup $ID"
    t0=$(now)
    tg restore src --to "r$run" --backup "$ID" >"$ROOT/restore-$run.log" 2>&1 ||
        die "toygres restore failed: $(tail -5 "$ROOT/restore-$run.log")"
    t1=$(now)
    record ours_restore_s "$(elapsed "$t0" "$t1")"
    record ours_unpack_s "$(grep -m1 'downloaded and unpacked' \
        "$TG_HOME/instances/r$run/r$run-0/sidecar.log" | sed -E 's/.*seconds=([0-9.]+).*/\1/' |
        awk '{ printf "%.1f", $1 }')"
    # The member's log, kept beside the results: its timings break our restore down.
    cp "$TG_HOME/instances/r$run/r$run-0/sidecar.log" "$ROOT/restore-$run.sidecar.log" || true
    tg delete "r$run" >"$ROOT/delete-$run.log" 2>&1 ||
        die "toygres delete r$run failed: $(tail -5 "$ROOT/delete-$run.log")"
}

# pgBackRest's backup and restore of the same primary, at each process-max.
pgbr_run() { # run
    local run=$1
    for procs in $PGBR_PROCS; do
        log "run $run: pgBackRest backup, process-max $procs"
        t0=$(now)
        pgbr backup --type=full --process-max="$procs" >"$PGBR/backup.log" 2>&1 ||
            die "pgbackrest backup failed: $(tail -5 "$PGBR/backup.log")"
        t1=$(now)
        record "pgbr${procs}_backup_s" "$(elapsed "$t0" "$t1")"
        LABEL=$(pgbr info --output=json | jq -r '.[0].backup[-1].label')
        record "pgbr${procs}_backup_mib" \
            "$(mib "$(du -sb "$PGBR/repo/backup/bench/$LABEL" | awk '{ print $1 }')")"

        log "run $run: pgBackRest restore, process-max $procs"
        BR=$ROOT/pgbr-$run-$procs
        mkdir -p "$BR"
        chown "$PG_OWNER" "$BR"
        BDATA=$BR/data
        DATA_DIRS+=("$BDATA")
        free_port BR_PG
        t0=$(now)
        pgbr restore --set="$LABEL" --pg1-path="$BDATA" --process-max="$procs" \
            --recovery-option="restore_command=zstd -dcq $STORE/src/wal/%f.zst > %p" \
            >"$PGBR/restore.log" 2>&1 || die "pgbackrest restore failed: $(tail -5 "$PGBR/restore.log")"
        # Its own port and socket, no archiving, nothing of the member's state.
        rm -f "$BDATA/standby.signal" "$BDATA/toygres.recovery.conf" "$BDATA/toygres.fenced"
        as_pg sh -c "printf \"port = $BR_PG\nunix_socket_directories = '$BR'\narchive_mode = off\n\" \
            >'$BDATA/toygres.conf'"
        as_pg "$PG_BIN/pg_ctl" -D "$BDATA" -w -t "$TIMEOUT" -l "$BR/pg.log" \
            -o "-c listen_addresses=''" start >/dev/null
        wait_for - "the pgBackRest copy's promotion" promoted "$BR" "$BR_PG"
        t1=$(now)
        record "pgbr${procs}_restore_s" "$(elapsed "$t0" "$t1")"
        as_pg "$PG_BIN/pg_ctl" -D "$BDATA" -m fast stop >/dev/null
        ((KEEP == 1)) || rm -rf "$BR"
        pgbr expire --set="$LABEL" >/dev/null 2>&1 || true
    done
}

# Odd runs go ours first, even runs pgBackRest first: the second of the two reuses the
# memory the first has just freed (its restored copy deleted), and on this VM memory the
# guest has not touched lately is several times slower to fill.
for run in $(seq 1 "$RUNS"); do
    if ((run % 2 == 1)); then
        ours_run "$run"
        pgbr_run "$run"
    else
        pgbr_run "$run"
        ours_run "$run"
    fi
done

log "load: $(uptime)"
log "results (seconds; sizes in MiB):"
print_results
for procs in $PGBR_PROCS; do
    log "ours / pgBackRest process-max $procs (medians): backup $(ratio ours_backup_s \
"pgbr${procs}_backup_s"), restore $(ratio ours_restore_s "pgbr${procs}_restore_s")"
done
