#!/usr/bin/env bash
# Makes a CA and, for each member named, the TLS directory a sidecar run by hand reads through
# --tls-dir: DIR/<member>/{ca.crt,server.crt,server.key,replicator.crt,replicator.key,
# superuser.crt,superuser.key,rewind.crt,rewind.key}. The server certificates name localhost, 127.0.0.1 and ::1 only.
# The controller issues its own (one CA per instance); this is for sidecars outside it.
#
# Usage: scripts/dev-certs.sh DIR MEMBER...
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 DIR MEMBER..." >&2
    exit 2
fi
dir=$1
shift
umask 077
mkdir -p "$dir"
if [ ! -f "$dir/ca.key" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -keyout "$dir/ca.key" -out "$dir/ca.crt" -subj "/O=toygres/CN=toygres dev CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
fi
# issue PATH CN EXTENSIONS: PATH.key and PATH.crt, signed by the CA.
issue() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
    openssl x509 -req -in "$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
        -days 365 -out "$1.crt" -extfile <(printf '%b\n' "$3") 2>/dev/null
    rm -f "$1.csr"
}
for member in "$@"; do
    out=$dir/$member
    mkdir -p "$out"
    cp "$dir/ca.crt" "$out/ca.crt"
    issue "$out/server" "$member" \
        "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1\nextendedKeyUsage=serverAuth"
    issue "$out/replicator" replicator "extendedKeyUsage=clientAuth"
    issue "$out/superuser" postgres "extendedKeyUsage=clientAuth"
    issue "$out/rewind" toygres_rewind "extendedKeyUsage=clientAuth"
done
