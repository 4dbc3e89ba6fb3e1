# Sourced by build.sh and update-go-mod.sh: where the Go toolchain keeps everything it
# downloads and compiles, outside the clone so that a fresh clone on the same machine reuses it.
TOYGRES_K8S_CACHE=${TOYGRES_K8S_CACHE:-$HOME/.cache/toygres-k8s}
export GOPATH=$TOYGRES_K8S_CACHE/go/path
export GOMODCACHE=$TOYGRES_K8S_CACHE/go/mod
export GOCACHE=$TOYGRES_K8S_CACHE/go/build
export CGO_ENABLED=0
# The machine's Go builds Kubernetes 1.36; never fetch another toolchain behind our back.
export GOTOOLCHAIN=local
export GOFLAGS="-mod=readonly -buildvcs=false"
