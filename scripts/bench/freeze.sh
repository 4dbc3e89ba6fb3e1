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
profile="${PROFILE:-release}"
flag=()
[[ "$profile" == release ]] && flag=(--release)
cargo build "${flag[@]}" --workspace --bins >&2
log=$(mktemp /tmp/toygres-freeze-bench.XXXXXX)
status=0
cargo test "${flag[@]}" --workspace --test ha_freeze -- --ignored --nocapture \
    bench_freeze_failover >"$log" 2>&1 || status=$?
grep -E '^BENCH|test result' "$log" || true
if ((status != 0)); then
    echo "the benchmark failed; its whole output is in $log" >&2
    grep -E -A3 'panicked' "$log" >&2 || true
fi
exit "$status"
