#!/usr/bin/env bash
# Installs the object-store emulators the WAL archive tests run against: moto's S3 server (PyPI)
# and Azurite's blob service (npm). Idempotent and quiet: each tool is installed only when it is
# missing, so a second run costs a few milliseconds.
set -euo pipefail

log() { echo "install-object-stores: $*"; }

if command -v moto_server >/dev/null 2>&1 && moto_server --help >/dev/null 2>&1; then
    log "moto_server present"
else
    log "installing moto[server] from PyPI"
    pip_install=(python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore)
    # A distribution's own Python refuses global installs (PEP 668) unless told otherwise.
    "${pip_install[@]}" 'moto[server]>=5' 2>/dev/null ||
        "${pip_install[@]}" --break-system-packages 'moto[server]>=5'
    # pyenv installs console scripts behind shims that need a rehash to appear.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    moto_server --help >/dev/null
fi

if command -v azurite-blob >/dev/null 2>&1; then
    log "azurite-blob present"
else
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found: installing nodejs and npm from Debian"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq nodejs npm >/dev/null
    fi
    log "installing azurite from npm"
    npm install --global --silent --no-fund --no-audit azurite >/dev/null
    command -v azurite-blob >/dev/null
fi
log "ready"
