#!/usr/bin/env bash
# Parameters benchmark (issue 15): a three-member sync instance on the local platform under
# continuous single-row INSERTs through the rw endpoint. ROUNDS times each:
#   - a reload-class change (work_mem): from the PUT to the operation's success, which waits
#     until every member's pg_settings shows the value;
#   - a restart-class change (shared_buffers) rolled by switchover (the default) and by a
#     restart of the primary in place: the whole roll, and its longest write pause (the
#     longest gap between two acknowledged commits from the PUT on).
# It also counts acknowledged commits missing at the end (must be 0).
#
#   ROUNDS=3 scripts/bench/params.sh
#   PROFILE=debug ROUNDS=3 scripts/bench/params.sh   # a debug build (slower; say so)
#
# Release build unless PROFILE=debug. Everything it starts is stopped by the test's guards,
# by pid.
set -euo pipefail
cd "$(dirname "$0")/../.."
export ROUNDS="${ROUNDS:-3}"
case "${PROFILE:-release}" in
release) profile=(--release) ;;
debug) profile=() ;;
*)
    echo "PROFILE must be release or debug, not ${PROFILE}" >&2
    exit 2
    ;;
esac
cargo build "${profile[@]}" --workspace --bins >&2
log=$(mktemp /tmp/toygres-params-bench.XXXXXX)
status=0
cargo test "${profile[@]}" --workspace --test parameters -- --ignored --nocapture \
    bench_parameter_changes >"$log" 2>&1 || status=$?
grep -E '^BENCH|test result' "$log" || true
if ((status != 0)); then
    echo "the benchmark failed; its whole output is in $log" >&2
    grep -E -A3 'panicked' "$log" >&2 || true
fi
exit "$status"
