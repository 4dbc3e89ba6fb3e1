#!/usr/bin/env bash
# Builds the Kubernetes tools the tests use, once per machine, into a cache outside the clone:
#   kube                  one multi-call binary: kube-apiserver, kube-controller-manager,
#                         kube-scheduler, kubectl (`kube kubectl get pods`, or via the symlinks)
#   etcd                  etcd's server, at the version the Kubernetes release requires
#   helm                  helm v3, built against the same Kubernetes minor
#   kubernetes-validate   strict offline JSON-schema validation of manifests (a Python venv)
#
# Usage:
#   bash scripts/k8s/build.sh                  build if needed; the LAST line of stdout is the bin dir
#   bash scripts/k8s/build.sh --print-bin-dir  never builds: prints the bin dir and exits 0 when every
#                                              tool is there, exits 1 otherwise
#
# The cache is ${TOYGRES_K8S_CACHE:-$HOME/.cache/toygres-k8s}. The bin dir's name carries a hash of
# everything that decides what is built (go.mod, go.sum, the mains, this script, env.sh, the Go
# version), so a change rebuilds and an unchanged clone reuses it. The Go module and build caches
# are shared between bin dirs, so a rebuild after a small change is incremental.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
source ./env.sh

# Pinned versions of what is not in go.mod.
HELM_VERSION=v3.21.4               # built against k8s.io/client-go v0.36, like our Kubernetes
KUBERNETES_VALIDATE_VERSION=1.37.0 # bundles strict schemas for Kubernetes 1.34 ... 1.37

K8S_VERSION=$(sed -n 's/^require k8s\.io\/kubernetes \(v[0-9.]*\)$/\1/p; s/^\tk8s\.io\/kubernetes \(v[0-9.]*\)$/\1/p' go.mod | head -1)
[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || { echo "build.sh: no k8s.io/kubernetes version in go.mod" >&2; exit 1; }
K8S_MINOR=${BASH_REMATCH[1]}

key=$( { cat go.mod go.sum build.sh env.sh; find cmd -name '*.go' | LC_ALL=C sort | xargs cat; go env GOVERSION; } \
      | sha256sum | cut -c1-16)
bin=$TOYGRES_K8S_CACHE/bin-$K8S_VERSION-$key
tools=(kube etcd helm kubernetes-validate)

complete() {
    local t
    for t in "${tools[@]}"; do [[ -x $1/$t ]] || return 1; done
}

if [[ ${1:-} == --print-bin-dir ]]; then
    echo "$bin"
    complete "$bin"
    exit
elif [[ $# -gt 0 ]]; then
    echo "usage: build.sh [--print-bin-dir]" >&2
    exit 2
fi

if complete "$bin"; then
    echo "$bin"
    exit 0
fi

mkdir -p "$TOYGRES_K8S_CACHE"
# One build at a time per cache (parallel test binaries or two clones may all call this).
exec 9>"$TOYGRES_K8S_CACHE/build.lock"
if ! flock -n 9; then
    echo "build.sh: waiting for another build of the Kubernetes tools" >&2
    flock 9
fi
if complete "$bin"; then
    echo "$bin"
    exit 0
fi

step() { echo "build.sh: $(date -u +%H:%M:%S) $*" >&2; }
started=$SECONDS
work=$bin.partial
rm -rf "$work"
mkdir -p "$work"

step "downloading Go modules (Kubernetes $K8S_VERSION) into $GOMODCACHE"
go mod download
step "verifying Go modules against go.sum"
go mod verify >/dev/null

version_flags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    version_flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
    version_flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

step "compiling kube (apiserver, controller-manager, scheduler, kubectl); a cold build takes a while"
go build -trimpath -ldflags "-s -w$version_flags" -o "$work/kube" ./cmd/kube
for name in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    ln -sf kube "$work/$name"
done

step "compiling etcd"
go build -trimpath -ldflags "-s -w" -o "$work/etcd" ./cmd/etcd

step "compiling helm $HELM_VERSION"
helm_flags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    helm_flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$K8S_MINOR"
done
# `go install pkg@version` ignores this module's go.mod and uses helm's own.
GOBIN=$work GOFLAGS=-buildvcs=false go install -trimpath -ldflags "-s -w $helm_flags" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" 2> >(grep -v '^go: downloading ' >&2)

step "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into a venv"
python3 -m venv "$work/venv" >&2
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
# The venv's scripts name the venv's absolute path; the wrapper survives the rename below.
cat >"$work/kubernetes-validate" <<'EOF'
#!/bin/sh
exec "$(dirname "$0")/venv/bin/python3" -m kubernetes_validate "$@"
EOF
chmod +x "$work/kubernetes-validate"

"$work/kube" kube-apiserver --version >&2
"$work/kube" kubectl version --client >&2
"$work/etcd" --version | head -1 >&2
"$work/helm" version --short >&2
"$work/kubernetes-validate" --version >&2

complete "$work"
rm -rf "$bin"
mv "$work" "$bin"
step "done in $((SECONDS - started))s: $bin"
echo "$bin"
