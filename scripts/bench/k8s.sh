#!/usr/bin/env bash
# Kubernetes platform benchmark (issue 12), on the test harness's real control plane and process
# nodes (tests/src/k8s/): the controller on the host with --platform kubernetes, a three-member
# sync instance (`toygres create --replicas 2`), a single writer through the rw Service's
# endpoint (resolved through its EndpointSlice), TRIALS kill -9 failovers of every process of
# the primary's pod and SWITCHOVERS switchovers. Prints the create time, each kill's time to the
# first commit the new primary acknowledged (then median and max), and each switchover's longest
# write pause; also the machine's load before and after. Then (LOCAL=1, the default) the same
# trials on the local platform in the same run and build (the HA test's benchmark, three sync
# members, kill -9 of the primary's sidecar and postmaster), so the two platforms are compared
# under the same load.
#
#   TRIALS=10 SWITCHOVERS=5 scripts/bench/k8s.sh
#
# Debug build (as the harness's other tests); needs root (network namespaces) and the harness's
# Kubernetes binaries (see tests/src/k8s/binaries.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
LOG_TAG=k8s-bench
# shellcheck source=scripts/bench/lib.sh
source scripts/bench/lib.sh
export TRIALS="${TRIALS:-10}" SWITCHOVERS="${SWITCHOVERS:-5}"
require_positive_int TRIALS
require_positive_int SWITCHOVERS
cargo build --workspace --bins >&2
log "load before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
out=$(mktemp /tmp/toygres-k8s-bench.XXXXXX)
status=0
cargo test --workspace --test k8s_failures_e2e -- --ignored --nocapture \
    bench_k8s_failover_and_switchover >"$out" 2>&1 || status=$?
grep -E '^BENCH|test result' "$out" || true
if [[ "${LOCAL:-1}" == 1 ]] && ((status == 0)); then
    log "load before the local platform's trials: $(cut -d' ' -f1-3 /proc/loadavg)"
    REPLICATION=sync cargo test --workspace --test ha -- --ignored --nocapture \
        bench_failover_and_switchover >"$out.local" 2>&1 || status=$?
    grep -E '^BENCH|test result' "$out.local" | sed 's/^/local: /' || true
fi
log "load after: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
if ((status != 0)); then
    log "the benchmark failed; its whole output is in $out"
    grep -E -A3 'panicked' "$out" >&2 || true
fi
exit "$status"
