#!/usr/bin/env bash
# Base backup and restore benchmark (issue 3): a pgbench database, backed up and restored by the
# sidecar through a file:// object store, against pg_basebackup -Ft to local disk with a restore by
# hand (tar -x, pg_ctl start), and against pgBackRest (posix repository on the same disk).
#
#   scripts/bench/backup.sh                     # from the repo root; SCALE=50 RUNS=1
#   SCALE=20 RUNS=3 LEVELS="1 6" scripts/bench/backup.sh
#   SCALE=200 RUNS=3 LEVELS=1 PGBR_PROCS="1 2" scripts/bench/backup.sh
#
# Per run and gzip level L (LEVELS, default "1 6"):
#   1. ours, backup: POST /v1/backups {"kind":"base"} on a sidecar started with
#      --wal-compression=L (pg_basebackup -D - -Ft -X fetch, gzip L, multipart upload into the
#      store), until it returns the manifest.
#   2. peer, backup: pg_basebackup -D DIR -Ft -X fetch --checkpoint=fast --compress=client-gzip:L
#      --manifest-checksums=SHA256, to local disk.
#   3. ours, restore: toygres-sidecar run --bootstrap restore --restore-backup-id=ID (download,
#      SHA-256 check, gunzip, untar, recovery, promotion, restart as a primary) until /readyz.
#   4. peer, restore: tar -xzf base.tar.gz into an empty directory, pg_ctl start -w (recovery
#      from backup_label) until it accepts connections.
#   5. pgBackRest, for each process-max P in PGBR_PROCS: `pgbackrest backup --type=full` (gzip L,
#      start-fast, archive-check=n: the sidecar archives WAL into our store, not pgBackRest's
#      repository), then `pgbackrest restore` into an empty directory and pg_ctl start with
#      restore_command = gzip -dc from our store's WAL (the cheapest fetch there is) until
#      pg_is_in_recovery() is false, i.e. like ours: recovered to the end of the archive and
#      promoted.
#
#   6. with AB_SIDECAR_BIN set (another build of the sidecar, e.g. before a change): step 3
#      again with that binary, right after step 3 (odd runs) or right before it (even runs),
#      recorded as ab_restore_*: an A/B comparison of two builds in the same minutes.
#
# Environment: SCALE (50), RUNS (1), LEVELS ("1 6"), PGBR_PROCS ("1"; empty to skip pgBackRest),
# SIDECAR_BIN (target/release/toygres-sidecar, built when missing), AB_SIDECAR_BIN (unset),
# PG_BIN (pg_config --bindir), KEEP=1 (keep the temp dir), TIMEOUT (900 s).
# Everything lives in one temp dir (TMPDIR); every process started is stopped by pid on exit (also
# on failure or Ctrl-C), and every postmaster found in a data directory made here is stopped too.
set -eEuo pipefail

SCALE=${SCALE:-50}
RUNS=${RUNS:-1}
LEVELS=${LEVELS:-"1 6"}
PGBR_PROCS=${PGBR_PROCS-"1"}
TIMEOUT=${TIMEOUT:-900}
LOG_TAG=bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk pgbench tar
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgbk

if [[ -n $PGBR_PROCS ]]; then
    command -v pgbackrest >/dev/null || die "pgbackrest is required (apt-get install -y pgbackrest)"
fi
STORE=$ROOT/store
mkdir -p "$STORE"
chmod 0777 "$STORE"
SIDECAR_STOP_TIMEOUT=30
SIDECAR_ARGS=(--start-timeout-secs="$TIMEOUT" --archive-url="file://$STORE")

mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }

# ---------------------------------------------------------------------------------------------
# The source: a sidecar primary with a pgbench database.

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
DB_BYTES=$(PGPASSWORD=$SU_PW "$PG_BIN/psql" -X -h 127.0.0.1 -p "$SRC_PG" -U postgres -Atqc \
    "SELECT sum(pg_database_size(oid)) FROM pg_database" postgres)
record db_mib "$(mib "$DB_BYTES")"
SOCKET=$SRC/bench-0/data.run

# pgBackRest: a posix repository on the same disk, backing up the source through its socket.
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
compress-type=gz

[bench]
pg1-path=$SRC/bench-0/data
pg1-port=$SRC_PG
pg1-socket-path=$SOCKET
pg1-user=postgres
EOF
    chown -R "$PG_OWNER" "$PGBR"
    pgbr stanza-create >"$PGBR/stanza.log" 2>&1 ||
        die "pgbackrest stanza-create failed: $(tail -5 "$PGBR/stanza.log")"
fi

# pg_is_in_recovery() of a server on a socket directory and port ("f" once promoted).
in_recovery() {
    as_pg "$PG_BIN/psql" -X -h "$1" -p "$2" -U postgres -Atqc "SELECT pg_is_in_recovery()" postgres
}
promoted() { [[ $(in_recovery "$1" "$2" 2>/dev/null) == f ]]; }

for run in $(seq 1 "$RUNS"); do
    for level in $LEVELS; do
        # The source's compression setting is its backup compression: restart it with level L.
        if [[ $(cat "$ROOT/level" 2>/dev/null || echo 1) != "$level" ]]; then
            stop_sidecar "$SRC_PID"
            start_sidecar "$SRC" bench-0 "$SRC_PG" "$SRC_API" --wal-compression="$level"
            SRC_PID=$SC_PID
            wait_for "$SRC_PID" "the source sidecar" readyz_ok "$SRC_API"
            echo "$level" >"$ROOT/level"
        fi

        log "run $run, gzip $level: ours, backup"
        t0=$(now)
        curl -sS --fail-with-body --max-time "$TIMEOUT" -X POST \
            -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
            -d '{"kind":"base"}' "http://127.0.0.1:$SRC_API/v1/backups" >"$ROOT/manifest.json"
        t1=$(now)
        ID=$(jq -r .id "$ROOT/manifest.json")
        record "ours_backup_s_gzip$level" "$(elapsed "$t0" "$t1" 1)"
        record "ours_backup_mib_gzip$level" "$(mib "$(jq .stored_bytes "$ROOT/manifest.json")")"

        log "run $run, gzip $level: peer, pg_basebackup -Ft to local disk"
        PEER=$ROOT/peer-$run-$level
        mkdir -p "$PEER"
        chown "$PG_OWNER" "$PEER"
        t0=$(now)
        as_pg "$PG_BIN/pg_basebackup" -h "$SOCKET" -p "$SRC_PG" -U postgres -D "$PEER/backup" \
            -Ft -X fetch --checkpoint=fast --compress="client-gzip:$level" \
            --manifest-checksums=SHA256
        t1=$(now)
        record "peer_backup_s_gzip$level" "$(elapsed "$t0" "$t1" 1)"
        record "peer_backup_mib_gzip$level" "$(mib "$(du -sb "$PEER/backup" | awk '{ print $1 }')")"

        # Ours (and the A/B build, alternating which goes first).
        WHO="ours"
        if [[ -n ${AB_SIDECAR_BIN:-} ]]; then
            if ((run % 2)); then WHO="ours ab"; else WHO="ab ours"; fi
        fi
        for who in $WHO; do
            log "run $run, gzip $level: $who, restore"
            DST=$ROOT/dst-$run-$level-$who
            mkdir -p "$DST"
            chmod 0711 "$DST"
            free_port DST_PG
            free_port DST_API
            SC_BIN=$SIDECAR_BIN
            [[ $who == ours ]] || SC_BIN=$AB_SIDECAR_BIN
            t0=$(now)
            start_sidecar "$DST" "copy$run$level-0" "$DST_PG" "$DST_API" \
                --bootstrap=restore --restore-instance=bench --restore-backup-id="$ID"
            SC_BIN=
            DST_PID=$SC_PID
            wait_for "$DST_PID" "the restored sidecar" readyz_ok "$DST_API"
            t1=$(now)
            record "${who}_restore_s_gzip$level" "$(elapsed "$t0" "$t1")"
            # Of which download + SHA-256 + gunzip + untar + fsync, from the sidecar's log.
            record "${who}_restore_unpack_s_gzip$level" "$(grep -m1 'downloaded and unpacked' \
                "$DST/copy$run$level-0.log" | sed -E 's/.*seconds=([0-9.]+).*/\1/' |
                awk '{ printf "%.1f", $1 }')"
            stop_sidecar "$DST_PID"
            ((KEEP == 1)) || rm -rf "$DST"
        done

        log "run $run, gzip $level: peer, tar -x and pg_ctl start"
        PDATA=$PEER/data
        DATA_DIRS+=("$PDATA")
        free_port PEER_PG
        t0=$(now)
        as_pg mkdir -m 0700 "$PDATA"
        as_pg tar -xzf "$PEER/backup/base.tar.gz" -C "$PDATA"
        # The copy carries the sidecar's settings: give it its own port and socket, no archiving.
        as_pg sh -c "printf \"port = $PEER_PG\nunix_socket_directories = '$PEER'\narchive_mode = off\n\" \
            >'$PDATA/toygres.conf'"
        as_pg "$PG_BIN/pg_ctl" -D "$PDATA" -w -t "$TIMEOUT" -l "$PEER/pg.log" \
            -o "-c listen_addresses=''" start >/dev/null
        t1=$(now)
        record "peer_restore_s_gzip$level" "$(elapsed "$t0" "$t1" 1)"
        as_pg "$PG_BIN/pg_ctl" -D "$PDATA" -m fast stop >/dev/null
        ((KEEP == 1)) || rm -rf "$PEER"

        for procs in $PGBR_PROCS; do
            log "run $run, gzip $level: pgBackRest backup, process-max $procs"
            t0=$(now)
            pgbr backup --type=full --compress-level="$level" --process-max="$procs" \
                >"$PGBR/backup.log" 2>&1 || die "pgbackrest backup failed: $(tail -5 "$PGBR/backup.log")"
            t1=$(now)
            record "pgbr${procs}_backup_s_gzip$level" "$(elapsed "$t0" "$t1")"
            LABEL=$(pgbr info --output=json | jq -r '.[0].backup[-1].label')
            record "pgbr${procs}_backup_mib_gzip$level" \
                "$(mib "$(du -sb "$PGBR/repo/backup/bench/$LABEL" | awk '{ print $1 }')")"

            log "run $run, gzip $level: pgBackRest restore, process-max $procs"
            BR=$ROOT/pgbr-$run-$level-$procs
            mkdir -p "$BR"
            chown "$PG_OWNER" "$BR"
            BDATA=$BR/data
            DATA_DIRS+=("$BDATA")
            free_port BR_PG
            t0=$(now)
            pgbr restore --set="$LABEL" --pg1-path="$BDATA" --process-max="$procs" \
                --recovery-option="restore_command=gzip -dc $STORE/bench/wal/%f.gz > %p" \
                >"$PGBR/restore.log" 2>&1 || die "pgbackrest restore failed: $(tail -5 "$PGBR/restore.log")"
            # Like the copy above: its own port and socket, no archiving.
            as_pg sh -c "printf \"port = $BR_PG\nunix_socket_directories = '$BR'\narchive_mode = off\n\" \
                >'$BDATA/toygres.conf'"
            as_pg "$PG_BIN/pg_ctl" -D "$BDATA" -w -t "$TIMEOUT" -l "$BR/pg.log" \
                -o "-c listen_addresses=''" start >/dev/null
            wait_for - "the pgBackRest copy's promotion" promoted "$BR" "$BR_PG"
            t1=$(now)
            record "pgbr${procs}_restore_s_gzip$level" "$(elapsed "$t0" "$t1")"
            as_pg "$PG_BIN/pg_ctl" -D "$BDATA" -m fast stop >/dev/null
            ((KEEP == 1)) || rm -rf "$BR"
            pgbr expire --set="$LABEL" >/dev/null 2>&1 || true
        done
    done
done

log "results (seconds; sizes in MiB):"
print_results
