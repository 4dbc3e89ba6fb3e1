#!/usr/bin/env bash
# WAL archiving benchmark (issues 3 and 11): our `toygres-sidecar wal-push` against
# `pgbackrest archive-push` (async) and `barman-cloud-wal-archive` (Debian barman-cli-cloud), side
# by side in one run, all writing to the same kind of S3 store (moto's S3 server behind stunnel,
# so over HTTPS), each compressor of COMPRESSORS at the same level and parallelism for ours and
# pgBackRest's (barman-cloud only gzips).
#
#   scripts/bench/wal-archive.sh            # from the repo root; RUNS=3 by default
#   RUNS=1 DURATION=20 scripts/bench/wal-archive.sh
#
# Ours runs as in the product: `wal-push` as archive_command, and beside Postgres what the
# sidecar runs while its member is a primary (`wal-push-ahead`: keeps CONCURRENCY waiting files
# uploading, so each wal-push finds its file stored). pgBackRest runs with archive-async (its
# own background process, started by its archive-push).
#
# Each trial (one archiver, one run): a fresh moto S3 server and a fresh cluster (initdb as the
# postgres OS user when root; archive_mode=on). `pgbench -i -s SCALE` runs with
# archive_command=/bin/true (the load's WAL is what is measured, not the init's), then the
# archiver becomes archive_command (ALTER SYSTEM + reload), a CHECKPOINT, and a fixed-duration
# pgbench write load (`-c CLIENTS -j JOBS -T DURATION`, TPC-B-like, synchronous_commit=off so
# Postgres writes WAL as fast as it can). At the end of the load, pg_switch_wal(), and the clock
# runs until pg_stat_archiver reports that last segment archived and no .ready file is left.
# Measured:
#   - archive throughput: segments archived (and MiB of WAL) per second from the start of the
#     load until everything is archived; also during the load and after it (the drain rate,
#     which is the archiver's capacity when a backlog is left);
#   - archive lag: number of .ready files and age of the oldest one (its mtime), sampled every
#     SAMPLE_MS: maximum, and at the end of the load;
#   - time from the end of the load until everything is archived;
#   - pgbench TPS (archiving shares the machine with the load) and WAL written.
# The "none" archiver (archive_command=/bin/true, no store) is the baseline for TPS and WAL rate.
#
# BACKLOG=1 measures capacity instead: `pgbench -i` and the load run with archive_command empty
# (Postgres keeps every segment as .ready and archives nothing; at scale 50 the init alone
# leaves about 50 segments), then the archiver is set, and the clock runs from that reload until
# the whole backlog is archived. Segments per second then is what the
# archiver can do, not the rate pgbench happened to produce WAL at on a shared machine; the
# per-run ratio is taken on that row.
#
# STORE=file compares the archivers without a store server in the way: ours writes to a
# file:// store and pgBackRest to a posix repository, both in the trial's directory on the same
# disk, both fsyncing every object (barman-cloud has no file store: not with STORE=file). With
# STORE=s3 (the default) both push about 30 MB/s of objects into one Python moto process at the
# rates measured, and the store can be what limits them.
#
# Environment: STORE (s3 or file), RUNS (3), ARCHIVERS ("toygres pgbackrest"; also barman, none), COMPRESSORS
# ("gz zst lz4"), SCALE (50), CLIENTS (4), JOBS (2), DURATION (30 s), CONCURRENCY (4: our
# wal-push concurrency = pgBackRest process-max), GZIP_LEVEL (6, pgBackRest's default; barman-
# cloud-wal-archive --gzip has no level: Python's gzip uses 9), ZSTD_LEVEL (1), lz4 in its fast
# mode (pgBackRest compress-level 1), SAMPLE_MS (500), DRAIN_TIMEOUT (900 s), SIDECAR_BIN
# (target/release/toygres-sidecar, built when missing), PG_BIN, KEEP=1 (keep the temp dir).
# Per run, the report gives ours / pgBackRest for each compressor, so "ahead in every run" can
# be read off it, and the load average when each trial started.
#
# Everything lives in one temp dir; every process started is stopped by pid on exit (also on
# failure or Ctrl-C), every postmaster found in a data directory made here is stopped, and so is
# every pgBackRest async process whose command line names this run's config file.
set -eEuo pipefail

RUNS=${RUNS:-3}
ARCHIVERS=${ARCHIVERS:-"toygres pgbackrest"}
COMPRESSORS=${COMPRESSORS:-"gz zst lz4"}
SCALE=${SCALE:-50}
CLIENTS=${CLIENTS:-4}
JOBS=${JOBS:-2}
DURATION=${DURATION:-30}
CONCURRENCY=${CONCURRENCY:-4}
GZIP_LEVEL=${GZIP_LEVEL:-6}
ZSTD_LEVEL=${ZSTD_LEVEL:-1}
SAMPLE_MS=${SAMPLE_MS:-500}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-900}
BACKLOG=${BACKLOG:-0}
STORE=${STORE:-s3}
BUCKET=walbench
SEG_MIB=16
LOG_TAG=wal-bench
# shellcheck source=scripts/bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SAMPLE_SLEEP=$(awk -v ms="$SAMPLE_MS" 'BEGIN { printf "%.3f", ms / 1000 }')

BENCH_INSTALL_HINT="apt-get install -y pgbackrest barman-cli-cloud stunnel4 openssl curl jq"
require_tools curl jq awk openssl find
[[ $STORE =~ ^(s3|file)$ ]] || die "STORE must be s3 or file"
[[ $STORE == s3 ]] && require_tools stunnel
[[ $STORE == file && " $ARCHIVERS " == *" barman "* ]] && die "barman-cloud has no file store: STORE=file runs without it"
[[ " $ARCHIVERS " == *" pgbackrest "* ]] && require_tools pgbackrest
[[ " $ARCHIVERS " == *" barman "* ]] && require_tools barman-cloud-wal-archive
require_positive_int RUNS
[[ $GZIP_LEVEL =~ ^[1-9]$ ]] || die "GZIP_LEVEL must be 1-9"
[[ $ZSTD_LEVEL =~ ^[1-9]$ ]] || die "ZSTD_LEVEL must be 1-9"
for a in $ARCHIVERS; do
    [[ $a =~ ^(toygres|barman|pgbackrest|none)$ ]] || die "unknown archiver '$a'"
done
for c in $COMPRESSORS; do
    [[ $c =~ ^(gz|zst|lz4)$ ]] || die "unknown compressor '$c' (gz, zst or lz4)"
done
# The trials of one run: archiver_compressor (barman gzips only; none compresses nothing).
TRIALS=()
for a in $ARCHIVERS; do
    case $a in
    toygres | pgbackrest) for c in $COMPRESSORS; do TRIALS+=("${a}_$c"); done ;;
    barman) TRIALS+=(barman_gz) ;;
    none) TRIALS+=(none) ;;
    esac
done

# moto_server: through pyenv's shim the pid would be a wrapper's; use the real script.
MOTO=$(pyenv which moto_server 2>/dev/null || command -v moto_server || true)
[[ $STORE == file || -n $MOTO ]] || die "moto_server not found: run scripts/install-object-stores.sh"

find_sidecar_bin
find_pg_bin pgbench
bench_root tgwal

# pgBackRest's async archiver detaches from Postgres: find ours by the config path (under ROOT)
# on their command lines, and stop them by pid.
stop_pgbackrest_async() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" ]] && continue
        if tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline" | grep -q "^pgbackrest .*--config=$ROOT/"; then
            stop_pid "$p" TERM 10
        fi
    done
}

# Before the generic cleanup: the postmasters (whose archive_command may start pgBackRest), then
# pgBackRest's async processes.
bench_cleanup_hook() {
    stop_leftover_postmasters
    stop_pgbackrest_async
}



# The store: moto's S3 server (plain HTTP) behind stunnel (TLS): pgBackRest talks to S3 over HTTPS
# only, and moto's own --ssl mode closes connections without a TLS close_notify, which pgBackRest
# (OpenSSL 3) rejects ("unexpected eof while reading"). All three archivers
# use the same https:// endpoint. pgBackRest: repo1-storage-verify-tls=n; barman (boto3):
# AWS_CA_BUNDLE; ours (object_store): AWS_ALLOW_INVALID_CERTIFICATES=true.
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$ROOT/key.pem" -out "$ROOT/cert.pem" -days 2 \
    -subj /CN=127.0.0.1 -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" >/dev/null 2>&1 ||
    die "openssl could not make a certificate"
chmod 0644 "$ROOT/cert.pem"
export AWS_ACCESS_KEY_ID=walbench AWS_SECRET_ACCESS_KEY=walbench-secret AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1 AWS_CA_BUNDLE=$ROOT/cert.pem AWS_ALLOW_INVALID_CERTIFICATES=true
unset AWS_ALLOW_HTTP AWS_PROFILE || true

MOTO_PID=""
TLS_PID=""
MOTO_PORT="" # what the archivers connect to: stunnel's TLS port
start_moto() { # dir
    local http_port
    free_port http_port
    free_port MOTO_PORT
    "$MOTO" -H 127.0.0.1 -p "$http_port" </dev/null >"$1/moto.log" 2>&1 &
    MOTO_PID=$!
    PIDS+=("$MOTO_PID")
    printf '%s\n' "foreground = yes" "pid =" "debug = warning" "[s3]" \
        "accept = 127.0.0.1:$MOTO_PORT" "connect = 127.0.0.1:$http_port" \
        "cert = $ROOT/cert.pem" "key = $ROOT/key.pem" >"$1/stunnel.conf"
    stunnel "$1/stunnel.conf" </dev/null >"$1/stunnel.log" 2>&1 &
    TLS_PID=$!
    PIDS+=("$TLS_PID")
    local deadline=$((SECONDS + 60))
    until curl -s --cacert "$ROOT/cert.pem" -o /dev/null "https://127.0.0.1:$MOTO_PORT/"; do
        pid_alive "$MOTO_PID" || die "moto_server exited: $(tail -5 "$1/moto.log")"
        pid_alive "$TLS_PID" || die "stunnel exited: $(tail -5 "$1/stunnel.log")"
        ((SECONDS < deadline)) || die "moto_server (behind stunnel) not answering after 60 s"
        sleep 0.1
    done
    [[ $(curl -s --cacert "$ROOT/cert.pem" -o /dev/null -w '%{http_code}' -X PUT \
        "https://127.0.0.1:$MOTO_PORT/$BUCKET") == 200 ]] || die "could not create the bucket"
}

stop_moto() {
    local p
    for p in $TLS_PID $MOTO_PID; do
        stop_pid "$p" TERM 10
        wait "$p" 2>/dev/null || true
        forget_pid "$p"
    done
    MOTO_PID=""
    TLS_PID=""
}

# Objects and total bytes stored under a prefix (moto answers unsigned listings; a file store's
# prefix is a directory under STORE_DIR).
STORE_DIR=""
stored_under() { # prefix -> "count bytes"
    if [[ $STORE == file ]]; then
        find "$STORE_DIR/$1" -type f -printf '%s\n' 2>/dev/null |
            awk '{ n++; s += $1 } END { print n + 0, s + 0 }'
        return
    fi
    local token="" url body count=0 bytes=0 c b
    while :; do
        url="https://127.0.0.1:$MOTO_PORT/$BUCKET?list-type=2&prefix=$1"
        [[ -n $token ]] && url+="&continuation-token=$(printf %s "$token" | jq -sRr @uri)"
        body=$(curl -s --cacert "$ROOT/cert.pem" "$url")
        read -r c b < <(grep -o '<Size>[0-9]*</Size>' <<<"$body" | tr -dc '0-9\n' |
            awk '{ n++; s += $1 } END { print n + 0, s + 0 }')
        count=$((count + c))
        bytes=$((bytes + b))
        token=$(grep -o '<NextContinuationToken>[^<]*' <<<"$body" | sed 's/.*>//' || true)
        [[ -n $token ]] || break
    done
    echo "$count $bytes"
}

SOCK=""
PGPORT_=""
sql() { "$PSQL" -X -h "$SOCK" -p "$PGPORT_" -U postgres -d postgres -Atqc "$1"; }

ready_dir() { echo "$1/pg_wal/archive_status"; }
# "count oldest_age_s" of .ready files
ready_stat() { # data dir, now
    find "$(ready_dir "$1")" -name '*.ready' -printf '%T@\n' 2>/dev/null |
        awk -v t="$2" 'BEGIN { n = 0; m = 0 } { n++; if (m == 0 || $1 < m) m = $1 }
            END { printf "%d %.2f\n", n, (n ? t - m : 0) }'
}

# Sets archive_command and waits until the server uses it (a reload is asynchronous).
set_archive_command() { # command ("" stops archiving; Postgres keeps the .ready files)
    sql "ALTER SYSTEM SET archive_command = \$\$$1\$\$" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    local deadline=$((SECONDS + 30))
    until [[ $(sql "SHOW archive_command") == "$1" ]]; do
        ((SECONDS < deadline)) || die "archive_command did not change"
        sleep 0.05
    done
}

# Ours: what the sidecar runs beside a primary that archives (as root, as the sidecar does on
# the local platform), started when archive_command is set.
PUSHER_PID=""
start_pusher() { # archiver dir data
    [[ $1 == toygres ]] || return 0
    # In the trial's CPU group; the subshell execs the sidecar, so $! is the sidecar's pid.
    (
        [[ -n $CG ]] && echo "$BASHPID" >"$CG/cgroup.procs"
        AWS_ENDPOINT_URL="https://127.0.0.1:$MOTO_PORT" exec "$SIDECAR_BIN" wal-push-ahead \
            --config "$2/archive/config.json" --wal-dir "$3/pg_wal"
    ) </dev/null >"$2/push-ahead.log" 2>&1 &
    PUSHER_PID=$!
    PIDS+=("$PUSHER_PID")
}

# ---------------------------------------------------------------------------------------------
# One trial

trial() { # run archiver_compressor
    local run=$1 id=$2 a=${2%%_*} comp=${2#*_} dir=$ROOT/run$1/$2
    mkdir -p "$dir/sock"
    chmod 0711 "$ROOT/run$run"
    local data=$dir/data
    SOCK=$dir/sock
    free_port PGPORT_
    DATA_DIRS+=("$data")

    STORE_DIR=$dir/store
    mkdir -p "$STORE_DIR"
    [[ $a == none || $STORE == file ]] || start_moto "$dir"
    local ep="https://127.0.0.1:$MOTO_PORT" cmd prefix ours pgbr_level
    case $comp in
    gz) ours=$GZIP_LEVEL pgbr_level=$GZIP_LEVEL ;;
    zst) ours=zstd:$ZSTD_LEVEL pgbr_level=$ZSTD_LEVEL ;;
    lz4) ours=lz4 pgbr_level=1 ;;
    *) ours=none pgbr_level=0 ;;
    esac
    case $a in
    toygres)
        mkdir -p "$dir/archive/pushed" "$dir/archive/prefetch" "$dir/archive/claims"
        local url=s3://$BUCKET/toygres
        # As the sidecar does: the instance's WAL directory made beforehand, owned by the
        # Postgres OS user (wal-push runs as that user, the uploader ahead as root).
        [[ $STORE == file ]] && url=file://$STORE_DIR/toygres && mkdir -p "$STORE_DIR/toygres/bench/wal"
        cat >"$dir/archive/config.json" <<EOF
{"url": "$url", "instance": "bench", "compression": "$ours",
 "concurrency": $CONCURRENCY, "state_dir": "$dir/archive", "wal_segment_size": 16777216}
EOF
        cmd="AWS_ENDPOINT_URL=$ep $SIDECAR_BIN wal-push --config $dir/archive/config.json %p"
        prefix=toygres/bench/wal/
        ;;
    barman)
        cmd="barman-cloud-wal-archive --endpoint-url $ep --gzip s3://$BUCKET/barman bench %p"
        prefix=barman/bench/wals/
        ;;
    pgbackrest)
        mkdir -p "$dir/pgbr/spool" "$dir/pgbr/lock" "$dir/pgbr/log"
        if [[ $STORE == file ]]; then
            cat >"$dir/pgbackrest.conf" <<EOF
[global]
repo1-type=posix
repo1-path=$STORE_DIR/pgbackrest
EOF
        else
            cat >"$dir/pgbackrest.conf" <<EOF
[global]
repo1-type=s3
repo1-path=/pgbackrest
repo1-s3-bucket=$BUCKET
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$MOTO_PORT
repo1-s3-region=us-east-1
repo1-s3-key=$AWS_ACCESS_KEY_ID
repo1-s3-key-secret=$AWS_SECRET_ACCESS_KEY
repo1-s3-uri-style=path
repo1-storage-verify-tls=n
EOF
        fi
        cat >>"$dir/pgbackrest.conf" <<EOF
compress-type=$comp
compress-level=$pgbr_level
archive-async=y
process-max=$CONCURRENCY
spool-path=$dir/pgbr/spool
lock-path=$dir/pgbr/lock
log-path=$dir/pgbr/log
log-level-file=info

[bench]
pg1-path=$data
pg1-socket-path=$SOCK
pg1-port=$PGPORT_
pg1-user=postgres
EOF
        cmd="pgbackrest --config=$dir/pgbackrest.conf --stanza=bench archive-push %p"
        prefix=pgbackrest/archive/bench/
        ;;
    none)
        cmd=/bin/true
        prefix=""
        ;;
    esac
    chown -R "$PG_OWNER" "$dir"
    chmod 0700 "$dir/sock"

    log "run $run, $id: initdb, pgbench -i -s $SCALE"
    as_pg "$PG_BIN/initdb" -D "$data" -U postgres --auth-local=trust --auth-host=trust \
        --data-checksums --encoding=UTF8 --locale=C.UTF-8 --no-instructions \
        >"$dir/initdb.log" 2>&1 || die "initdb failed: $(tail -5 "$dir/initdb.log")"
    cat >>"$data/postgresql.conf" <<EOF
port = $PGPORT_
listen_addresses = ''
unix_socket_directories = '$SOCK'
archive_mode = on
archive_command = '$( ((BACKLOG == 1)) || echo /bin/true)'
synchronous_commit = off
max_wal_size = 4GB
checkpoint_timeout = 30min
EOF
    # Postgres and everything it starts (archive_command, pgBackRest's async process), and
    # our uploader, in one CPU accounting group per trial.
    cpu_group "$run-$id"
    in_cpu_group as_pg "$PG_BIN/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -s start ||
        die "pg_ctl start failed: $(tail -5 "$dir/postgres.log")"
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PGPORT_" -U postgres -i -q -s "$SCALE" postgres \
        >"$dir/pgbench-init.log" 2>&1 || die "pgbench -i failed: $(tail -5 "$dir/pgbench-init.log")"
    if [[ $a == pgbackrest ]]; then
        as_pg pgbackrest --config="$dir/pgbackrest.conf" --stanza=bench stanza-create \
            >"$dir/stanza.log" 2>&1 || die "pgbackrest stanza-create failed: $(tail -5 "$dir/stanza.log")"
    fi
    # The init's WAL goes to /bin/true (with BACKLOG=1 it waits, with the load's, for the
    # archiver); then the archiver takes over.
    sql "CHECKPOINT" >/dev/null
    sql "SELECT pg_switch_wal()" >/dev/null
    local deadline=$((SECONDS + 120)) n age
    while ((BACKLOG == 0)) && read -r n age < <(ready_stat "$data" "$(now)") && ((n > 0)); do
        ((SECONDS < deadline)) || die "the init's WAL was not archived (to /bin/true)"
        sleep 0.1
    done
    # With BACKLOG=1 the load's WAL waits (archive_command empty) for the archiver.
    local first_cmd=$cmd
    ((BACKLOG == 1)) && first_cmd=""
    set_archive_command "$first_cmd"
    [[ -n $first_cmd ]] && start_pusher "$a" "$dir" "$data"
    sql "CHECKPOINT" >/dev/null

    local lsn0 arch0 fail0 t0 t1 t2
    record "${id}_load1" "$(cut -d' ' -f1 /proc/loadavg)"
    lsn0=$(sql "SELECT pg_current_wal_lsn()")
    read -r arch0 fail0 < <(sql "SELECT archived_count, failed_count FROM pg_stat_archiver" | tr '|' ' ')

    # Sampler: time, .ready count, oldest .ready age.
    (
        while :; do
            t=$(now)
            echo "$t $(ready_stat "$data" "$t")"
            sleep "$SAMPLE_SLEEP"
        done
    ) >"$dir/samples.txt" 2>/dev/null &
    local sampler=$!
    PIDS+=("$sampler")

    log "run $run, $id: pgbench -c $CLIENTS -j $JOBS -T $DURATION"
    t0=$(now)
    as_pg "$PG_BIN/pgbench" -h "$SOCK" -p "$PGPORT_" -U postgres -c "$CLIENTS" -j "$JOBS" \
        -T "$DURATION" postgres >"$dir/pgbench.log" 2>&1 || die "pgbench failed: $(tail -5 "$dir/pgbench.log")"
    t1=$(now)
    local end_ready end_age lsn1 target arch1
    read -r end_ready end_age < <(ready_stat "$data" "$t1")
    lsn1=$(sql "SELECT pg_current_wal_lsn()")
    read -r arch1 < <(sql "SELECT archived_count FROM pg_stat_archiver")
    target=$(sql "SELECT pg_walfile_name(pg_switch_wal())")
    local backlog=0 t_release="" cpu0=0
    if ((BACKLOG == 1)); then
        # The switch's segment becomes .ready once the WAL writer has flushed it: wait for it.
        deadline=$((SECONDS + 60))
        until [[ -e $(ready_dir "$data")/$target.ready ]]; do
            ((SECONDS < deadline)) || die "$id: $target never became .ready"
            sleep 0.05
        done
        read -r backlog age < <(ready_stat "$data" "$(now)")
        log "run $run, $id: backlog of $backlog segments; releasing the archiver"
        t_release=$(now)
        cpu0=$(cpu_used)
        set_archive_command "$cmd"
        start_pusher "$a" "$dir" "$data"
    fi

    log "run $run, $id: load done ($end_ready .ready); waiting until $target is archived"
    local last arch2 fail2
    deadline=$((SECONDS + DRAIN_TIMEOUT))
    while :; do
        read -r last arch2 fail2 < <(sql "SELECT coalesce(last_archived_wal, '-'), archived_count,
            failed_count FROM pg_stat_archiver" | tr '|' ' ')
        # WAL names on one timeline sort by position.
        if [[ $last != - ]] && [[ $last == "$target" || $last > $target ]]; then
            read -r n age < <(ready_stat "$data" "$(now)")
            ((n == 0)) && break
        fi
        ((SECONDS < deadline)) || die "$id: $target not archived after ${DRAIN_TIMEOUT}s (last: $last)"
        sleep 0.1
    done
    t2=$(now)
    local cpu1
    cpu1=$(cpu_used)
    stop_pid "$sampler" TERM 5
    wait "$sampler" 2>/dev/null || true
    forget_pid "$sampler"

    if ((BACKLOG == 1)); then
        record "${id}_backlog" "$backlog"
        record "${id}_seg_per_s_backlog" "$(calc "$backlog / $(elapsed "$t_release" "$t2")")"
        record "${id}_backlog_s" "$(elapsed "$t_release" "$t2")"
        # CPU of Postgres (its archiver loop, archive_command) and of the archiver, per segment.
        [[ -n $CG ]] && record "${id}_cpu_ms_per_segment" "$(calc "1000 * ($cpu1 - $cpu0) / $backlog")"
    fi
    local load_s drain_s window_s segs wal_mib tps max_ready max_age
    load_s=$(elapsed "$t0" "$t1")
    drain_s=$(elapsed "$t1" "$t2")
    window_s=$(elapsed "$t0" "$t2")
    segs=$((arch2 - arch0))
    wal_mib=$(calc "$(sql "SELECT pg_wal_lsn_diff('$lsn1', '$lsn0')") / 1048576")
    tps=$(grep -m1 -oP 'tps = \K[0-9.]+' "$dir/pgbench.log")
    read -r max_ready max_age < <(awk -v a="$t0" -v b="$t2" '$1 >= a && $1 <= b {
            if ($2 > n) n = $2; if ($3 > m) m = $3 } END { printf "%d %.2f\n", n, m }' "$dir/samples.txt")

    record "${id}_tps" "$tps"
    record "${id}_wal_mib" "$wal_mib"
    record "${id}_wal_mibs" "$(calc "$wal_mib / $load_s")"
    if [[ $a != none ]]; then
        record "${id}_segments" "$segs"
        record "${id}_seg_per_s" "$(calc "$segs / $window_s")"
        record "${id}_mibs" "$(calc "$segs * $SEG_MIB / $window_s")"
        record "${id}_seg_per_s_load" "$(calc "($arch1 - $arch0) / $load_s")"
        # Drain rate: only meaningful with a backlog; else it is the last few segments' latency.
        if ((end_ready >= 2 * CONCURRENCY)); then
            record "${id}_seg_per_s_drain" "$(calc "($arch2 - $arch1) / $drain_s")"
        fi
        record "${id}_drain_s" "$drain_s"
        record "${id}_ready_end" "$end_ready"
        record "${id}_age_end_s" "$end_age"
        record "${id}_ready_max" "$max_ready"
        record "${id}_age_max_s" "$max_age"
        record "${id}_failures" "$((fail2 - fail0))"
        local objs bytes
        read -r objs bytes < <(stored_under "$prefix")
        record "${id}_objects" "$objs"
        record "${id}_stored_pct" "$(calc "100 * $bytes / ($segs * $SEG_MIB * 1048576)")"
    fi

    as_pg "$PG_BIN/pg_ctl" -D "$data" -m fast -w -s stop || die "pg_ctl stop failed"
    if [[ -n $PUSHER_PID ]]; then
        stop_pid "$PUSHER_PID" TERM 10
        wait "$PUSHER_PID" 2>/dev/null || true
        forget_pid "$PUSHER_PID"
        PUSHER_PID=""
    fi
    stop_pgbackrest_async
    stop_moto
    [[ -n $CG ]] && { rmdir "$CG" 2>/dev/null || true; }
    ((KEEP == 1)) || rm -rf "$dir"
}

# ---------------------------------------------------------------------------------------------
# Main

log "sidecar: $SIDECAR_BIN"
log "postgres: $("$PG_BIN/postgres" --version); $(pgbackrest version 2>&1 || echo no pgBackRest); $(barman-cloud-wal-archive --version 2>&1 || echo no barman-cloud)"
log "runs: $RUNS; trials: ${TRIALS[*]}; gzip level $GZIP_LEVEL, zstd level $ZSTD_LEVEL; concurrency $CONCURRENCY; temp dir: $ROOT"
ORDER=("${TRIALS[@]}")
for ((run = 1; run <= RUNS; run++)); do
    # Rotate the order each run, so drift in machine load hits every archiver.
    for ((i = 0; i < ${#ORDER[@]}; i++)); do
        trial "$run" "${ORDER[(i + run - 1) % ${#ORDER[@]}]}"
    done
done

# ---------------------------------------------------------------------------------------------
# Report

# One row per measurement: each trial's median (min–max).
row() { # label suffix decimals
    local label=$1 s=$2 d=$3 id line="| $1 |"
    for id in "${TRIALS[@]}"; do line+=" $(cell "${id}_$s" "$d") |"; done
    echo "$line"
}

# "r1 r2 … (median m)": ours / pgBackRest's archive throughput in each run, for compressor $1
# (or, given a row name as $2, ours / pgBackRest's of that row).
per_run_ratios() {
    local row=seg_per_s
    ((BACKLOG == 1)) && row=seg_per_s_backlog
    [[ -n ${2:-} ]] && row=$2
    awk -v a="toygres_$1_$row" -v b="pgbackrest_$1_$row" '
        $1 == a { x[++n] = $2 } $1 == b { y[++m] = $2 }
        END {
            k = (n < m) ? n : m
            for (i = 1; i <= k; i++) { r[i] = (y[i] > 0) ? x[i] / y[i] : 0; printf "%.2f× ", r[i] }
            for (i = 2; i <= k; i++) for (j = i; j > 1 && r[j - 1] > r[j]; j--) { t = r[j]; r[j] = r[j - 1]; r[j - 1] = t }
            if (k) printf "(median %.2f×)", (k % 2) ? r[(k + 1) / 2] : (r[k / 2] + r[k / 2 + 1]) / 2
        }' "$RESULTS"
}

echo
echo "WAL archiving: $RUNS runs, PostgreSQL $(pg_version), pgbench -i -s $SCALE, then -c $CLIENTS -j $JOBS -T $DURATION (synchronous_commit=off); gzip level $GZIP_LEVEL, zstd level $ZSTD_LEVEL, lz4 fast; concurrency $CONCURRENCY (pgBackRest process-max); $([[ $STORE == file ]] && echo "file store and posix repository on the same disk, every object fsynced" || echo "moto S3 behind stunnel (HTTPS)"); $(nproc) cores"
echo
header="| measurement (median, min–max) |"
rule="|---|"
for id in "${TRIALS[@]}"; do
    header+=" $id |"
    rule+="---|"
done
echo "$header"
echo "$rule"
row "**archive throughput, load start → all archived (segments/s)**" seg_per_s 2
row "… the same in MiB/s of WAL" mibs 1
row "segments archived per second during the load" seg_per_s_load 2
row "drain rate after the load, with a backlog (segments/s)" seg_per_s_drain 2
if ((BACKLOG == 1)); then
    row "**backlog archived per second, from the archiver's release (segments/s)**" seg_per_s_backlog 2
    row "backlog (segments waiting when the archiver was set)" backlog 0
    row "time to archive the backlog (s)" backlog_s 1
    row "CPU per segment, Postgres + archiver, from the release (ms)" cpu_ms_per_segment 1
fi
row "**end of load → everything archived (s)**" drain_s 1
row "**.ready files at the end of the load**" ready_end 0
row "oldest .ready at the end of the load (s)" age_end_s 1
row "max .ready files" ready_max 0
row "max age of the oldest .ready (s)" age_max_s 1
row "segments archived (load + final switch)" segments 0
row "pgbench TPS" tps 0
row "WAL written by the load (MiB)" wal_mib 0
row "WAL write rate during the load (MiB/s)" wal_mibs 1
row "stored size, % of raw WAL" stored_pct 1
row "archive_command failures" failures 0
row "1-minute load average when the trial started" load1 2
echo
if [[ " $ARCHIVERS " == *" toygres "* && " $ARCHIVERS " == *" pgbackrest "* ]]; then
    for c in $COMPRESSORS; do
        echo "- ours / pgBackRest, $( ((BACKLOG == 1)) && echo "backlog archived per second" || echo "archive throughput"), $c, per run: $(per_run_ratios "$c")"
        if ((BACKLOG == 1)) && grep -q "^toygres_${c}_cpu_ms_per_segment " "$RESULTS"; then
            echo "- ours / pgBackRest, CPU per segment, $c, per run: $(per_run_ratios "$c" cpu_ms_per_segment)"
        fi
    done
fi
