#!/usr/bin/env bash
# Builds Prometheus's promtool once per machine, from the Go module proxy, into a cache outside
# the clone (next to the Kubernetes tools of scripts/k8s/build.sh, sharing their Go module and
# build caches), to unit-test monitoring/alerts.yaml with `promtool test rules`.
#
# Usage:
#   bash scripts/build-promtool.sh                  build if needed; the LAST line of stdout is the binary
#   bash scripts/build-promtool.sh --print-path     never builds: prints the binary's path, exits 1 if absent
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/k8s/env.sh"

# Prometheus v3.x's Go module version (v0.<minor*100+x>.<patch>).
PROMETHEUS_MODULE_VERSION=v0.316.0

bin_dir=$TOYGRES_K8S_CACHE/promtool-$PROMETHEUS_MODULE_VERSION-$(go env GOVERSION)
promtool=$bin_dir/promtool

if [[ ${1:-} == --print-path ]]; then
    echo "$promtool"
    [[ -x $promtool ]]
    exit
elif [[ $# -gt 0 ]]; then
    echo "usage: build-promtool.sh [--print-path]" >&2
    exit 2
fi

if [[ -x $promtool ]]; then
    echo "$promtool"
    exit 0
fi

mkdir -p "$TOYGRES_K8S_CACHE"
exec 9>"$TOYGRES_K8S_CACHE/promtool.lock"
flock 9
if [[ ! -x $promtool ]]; then
    echo "build-promtool.sh: building promtool $PROMETHEUS_MODULE_VERSION (a few minutes the first time)" >&2
    tmp=$bin_dir.tmp$$
    mkdir -p "$tmp"
    GOFLAGS=-buildvcs=false GOBIN=$tmp \
        go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
    rm -rf "$bin_dir"
    mv "$tmp" "$bin_dir"
fi
echo "$promtool"
