#!/usr/bin/env bash
# One-command API fuzzing: starts a controller (local platform, embedded CMS) in a temporary
# $TOYGRES_HOME, runs schemathesis over its OpenAPI document (/v1/openapi.json) with the bearer
# token and the home's CA, and stops everything it started (the controller by pid, then every
# process whose command line names the temporary home: the sidecars and Postgres it made).
# Passes when no response is a 5xx and every response matches the documented schema.
#
# With --sidecar it fuzzes a sidecar's API instead: it creates a one-member instance and runs
# over that member's document (/v1/openapi.json on the sidecar), with the instance's sidecar
# token and CA. `POST /v1/fence` is left out: a fenced member answers 503 by design until it is
# unfenced, which would hide every other finding. The readiness checks (`/readyz` and Patroni's
# `/primary`, `/replica`, …) answer 503 when the check fails, which is their documented
# contract: they run in a second pass without the no-5xx check.
#
# schemathesis comes from PyPI into a virtualenv outside the clone
# (${XDG_CACHE_HOME:-~/.cache}/toygres/schemathesis-venv), made on first use.
#
# Usage: scripts/schemathesis.sh [--sidecar] [MAX_EXAMPLES_PER_OPERATION (default 25)]
#        [extra `st run` args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=controller
if [ "${1:-}" = "--sidecar" ]; then
    target=sidecar
    shift
fi
examples=${1:-25}
shift || true
venv=${XDG_CACHE_HOME:-$HOME/.cache}/toygres/schemathesis-venv
if [ ! -x "$venv/bin/st" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet schemathesis
fi
bin=$root/target/debug
if [ ! -x "$bin/toygres" ] || [ ! -x "$bin/toygres-sidecar" ]; then
    (cd "$root" && cargo build --workspace --bins)
fi

home=$(mktemp -d /tmp/tgst.XXXXXX)
chmod 711 "$home"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
controller=
cleanup() {
    # The controller first (its supervisor would start killed sidecars again), then what it made.
    if [ -n "$controller" ]; then
        kill "$controller" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$controller" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$controller" 2>/dev/null || true
        wait "$controller" 2>/dev/null || true
    fi
    for _ in 1 2 3; do
        for pid in $(pgrep -f "$home" || true); do kill -9 "$pid" 2>/dev/null || true; done
        sleep 1
    done
    rm -rf "$home"
}
trap cleanup EXIT

TOYGRES_HOME=$home "$bin/toygres" controller --listen "127.0.0.1:$port" \
    --sidecar-bin "$bin/toygres-sidecar" >"$home/controller.log" 2>&1 &
controller=$!
for _ in $(seq 1 600); do
    [ -f "$home/controller.addr" ] && curl -sf --cacert "$home/tls/ca.crt" \
        "https://127.0.0.1:$port/healthz" >/dev/null && break
    kill -0 "$controller" 2>/dev/null || { cat "$home/controller.log"; exit 1; }
    sleep 0.2
done
url="https://127.0.0.1:$port"
token=$(cat "$home/controller.token")
ca=$home/tls/ca.crt
if [ "$target" = sidecar ]; then
    TOYGRES_HOME=$home "$bin/toygres" create stfuzz >"$home/create.log" 2>&1 ||
        { cat "$home/create.log" "$home/controller.log"; exit 1; }
    record=$(ls "$home"/instances/stfuzz/stfuzz-*/member.json | head -n 1)
    api_port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["api_port"])' "$record")
    url="https://127.0.0.1:$api_port"
    token=$(cat "$home/instances/stfuzz/secrets/sidecar-token")
    ca=$home/instances/stfuzz/secrets/tls/ca.crt
fi

fuzz() {
    local checks=$1
    shift
    "$venv/bin/st" run "$url/v1/openapi.json" \
        --header "Authorization: Bearer $token" \
        --tls-verify "$ca" \
        --checks "$checks" \
        --max-examples "$examples" \
        --phases examples,coverage,fuzzing \
        --request-timeout 30 \
        --generation-database none \
        --no-color \
        "$@"
}
all_checks=not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance
if [ "$target" = controller ]; then
    fuzz "$all_checks" "$@"
else
    probes='^/(readyz|primary|read-write|replica|read-only|health|readiness)$'
    status=0
    fuzz "$all_checks" --exclude-path /v1/fence --exclude-path-regex "$probes" "$@" || status=$?
    fuzz "${all_checks#not_a_server_error,}" --include-path-regex "$probes" "$@" || status=$?
    exit "$status"
fi
