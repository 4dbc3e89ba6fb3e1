#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, idempotently and quietly:
# PostgreSQL 15 (server, client tools, pgbench), promtool (Debian's prometheus package),
# the object-store emulators when their installer is present, and the Kubernetes control plane,
# helm and the manifest validator (built from Go modules by scripts/k8s/build.sh into a cache
# outside the clone: a cold build takes minutes, a warm one nothing).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  need_apt+=(postgresql-15 postgresql-client-15)
fi
command -v pgbench >/dev/null 2>&1 || need_apt+=(postgresql-contrib)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# The Kubernetes harness gives each pod a network namespace (ip, from iproute2) and runs small
# HTTP servers in its tests with python3.
command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
# scripts/k8s/build.sh puts kubernetes-validate in a venv.
python3 -c 'import ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need_apt[*]}: run this script as root (or install them) first" >&2
    exit 1
  fi
  echo "installing ${need_apt[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Debian's postgresql-common would create and start a 'main' cluster; the tests run their own.
  mkdir -p /etc/postgresql-common
  if [ ! -f /etc/postgresql-common/createcluster.conf ] || ! grep -q '^create_main_cluster = false' /etc/postgresql-common/createcluster.conf; then
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  fi
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The prometheus package starts a server we do not need.
  if command -v systemctl >/dev/null 2>&1; then systemctl stop prometheus 2>/dev/null || true; fi
  pkill -x prometheus 2>/dev/null || true
fi

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "running as root, but there is no 'postgres' OS user to run Postgres as" >&2
  exit 1
fi

if [ -f scripts/install-object-stores.sh ]; then
  bash scripts/install-object-stores.sh
fi
if ! command -v go >/dev/null 2>&1; then
  echo "the Kubernetes test tools are built with Go (1.26 or later), which is not installed" >&2
  exit 1
fi
k8s_bin=$(bash scripts/k8s/build.sh | tail -1)

echo "test dependencies ready: kubernetes tools in $k8s_bin, $(ls -d /usr/lib/postgresql/*/bin | tail -1), $(promtool --version 2>&1 | head -1)"
