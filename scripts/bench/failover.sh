#!/usr/bin/env bash
# Failover and switchover benchmark (issue 5): a three-member instance on the local platform
# with the controller's default health and HA settings (cooldown 0 so trials follow each other),
# continuous single-row INSERTs through the rw endpoint, TRIALS kill -9 failovers of the primary
# (sidecar and postmaster) and SWITCHOVERS switchovers. Prints the time from each kill to the
# first write acknowledged by the new primary, and each switchover's longest write pause.
#
#   TRIALS=20 SWITCHOVERS=10 REPLICATION=sync scripts/bench/failover.sh   (PROFILE=debug: debug build)
#
# Release binaries unless PROFILE=debug (through TOYGRES_TEST_BIN_DIR); the
# killed primary is not restarted by the platform's supervisor (it rejoins through the
# controller), so every trial is a real failover. Each trial prints the kill's wall time, to
# line it up with the logs (TOYGRES_TEST_LOGS=1 prints them at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
export TRIALS="${TRIALS:-20}" SWITCHOVERS="${SWITCHOVERS:-10}" REPLICATION="${REPLICATION:-sync}"
# The test itself is built in debug (it is only the clients); the controller and sidecars it
# starts are the release binaries unless PROFILE=debug.
if [[ "${PROFILE:-release}" == release ]]; then
    cargo build --release --workspace --bins >&2
    export TOYGRES_TEST_BIN_DIR="$PWD/target/release"
fi
log=$(mktemp /tmp/toygres-failover-bench.XXXXXX)
status=0
cargo test --workspace --test ha -- --ignored --nocapture \
    bench_failover_and_switchover >"$log" 2>&1 || status=$?
grep -E '^BENCH|test result' "$log" || true
if ((status != 0)); then
    echo "the benchmark failed; its whole output is in $log" >&2
    grep -E -A3 'panicked' "$log" >&2 || true
fi
exit "$status"

