#!/usr/bin/env bash
# Frozen-primary benchmark (issue 13): a three-member sync instance on the local platform with
# the controller's default health and HA settings (cooldown 0 so trials follow each other),
# three clients inserting rows through the rw endpoint, and TRIALS freezes of the primary
# (SIGSTOP of its sidecar, postmaster and every backend). Prints the time from each freeze to
# the first commit acknowledged by another server, and whether any commit was lost.
#
#   TRIALS=8 scripts/bench/freeze.sh            (PROFILE=debug to skip the release build)
#
# The frozen member is killed whole by the failover (the test checks no process of it is left).
set -euo pipefail
cd "$(dirname "$0")/../.."
export TRIALS="${TRIALS:-8}"
# The test itself is built in debug (it is only the clients); the controller and sidecars it
# starts are the release binaries unless PROFILE=debug.
if [[ "${PROFILE:-release}" == release ]]; then
    cargo build --release --workspace --bins >&2
    export TOYGRES_TEST_BIN_DIR="$PWD/target/release"
fi
log=$(mktemp /tmp/toygres-freeze-bench.XXXXXX)
status=0
cargo test --workspace --test ha_freeze -- --ignored --nocapture \
    bench_freeze_failover >"$log" 2>&1 || status=$?
grep -E '^BENCH|test result' "$log" || true
if ((status != 0)); then
    echo "the benchmark failed; its whole output is in $log" >&2
    grep -E -A3 'panicked' "$log" >&2 || true
fi
exit "$status"
