#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need, builds every binary,
# checks the Helm chart, formatting and lints, then runs unit and end-to-end tests against real PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
bash scripts/check-chart.sh
cargo fmt --all -- --check
cargo build --workspace --bins --locked
cargo clippy --workspace --all-targets --locked -- -D warnings

# End-to-end tests start real Postgres servers; two test threads suit the 2-core machines.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log" || status=$?
echo
awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
