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
LOG_TAG=bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require_tools curl jq awk pgbench
find_sidecar_bin
find_pg_bin pg_basebackup
bench_root tgpitr
STORE=$ROOT/store
mkdir -p "$STORE"
chmod 0777 "$STORE"
SIDECAR_STOP_TIMEOUT=30
SIDECAR_ARGS=(--start-timeout-secs="$TIMEOUT" --archive-url="file://$STORE")

mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
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
        record "${mode}_restore_s" "$(elapsed "$t0" "$t1" 1)"
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
print_results
