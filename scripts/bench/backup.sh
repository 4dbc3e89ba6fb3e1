#!/usr/bin/env bash
# Base backup and restore benchmark (issue 3): a pgbench database, backed up and restored by the
# sidecar through a file:// object store, against pg_basebackup -Ft to local disk and a restore by
# hand (tar -x, pg_ctl start).
#
#   scripts/bench/backup.sh                     # from the repo root; SCALE=50 RUNS=1
#   SCALE=20 RUNS=3 LEVELS="1 6" scripts/bench/backup.sh
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
#
# Environment: SCALE (50), RUNS (1), LEVELS ("1 6"), SIDECAR_BIN (target/release/toygres-sidecar,
# built when missing), PG_BIN (pg_config --bindir), KEEP=1 (keep the temp dir), TIMEOUT (900 s).
# Everything lives in one temp dir (TMPDIR); every process started is stopped by pid on exit (also
# on failure or Ctrl-C), and every postmaster found in a data directory made here is stopped too.
set -eEuo pipefail

SCALE=${SCALE:-50}
RUNS=${RUNS:-1}
LEVELS=${LEVELS:-"1 6"}
TIMEOUT=${TIMEOUT:-900}
LOG_TAG=bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk pgbench tar
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgbk

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

        log "run $run, gzip $level: ours, restore"
        DST=$ROOT/dst-$run-$level
        mkdir -p "$DST"
        chmod 0711 "$DST"
        free_port DST_PG
        free_port DST_API
        t0=$(now)
        start_sidecar "$DST" "copy$run$level-0" "$DST_PG" "$DST_API" \
            --bootstrap=restore --restore-instance=bench --restore-backup-id="$ID"
        DST_PID=$SC_PID
        wait_for "$DST_PID" "the restored sidecar" readyz_ok "$DST_API"
        t1=$(now)
        record "ours_restore_s_gzip$level" "$(elapsed "$t0" "$t1" 1)"
        # Of which download + SHA-256 + gunzip + untar + fsync, from the sidecar's log.
        record "ours_restore_unpack_s_gzip$level" "$(grep -m1 'downloaded and unpacked' \
            "$DST/copy$run$level-0.log" | sed -E 's/.*seconds=([0-9.]+).*/\1/' |
            awk '{ printf "%.1f", $1 }')"
        stop_sidecar "$DST_PID"
        ((KEEP == 1)) || rm -rf "$DST"

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
    done
done

log "results (seconds; sizes in MiB):"
print_results
