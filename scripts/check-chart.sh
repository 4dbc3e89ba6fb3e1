#!/usr/bin/env bash
# Lints and renders the Helm chart in charts/toygres, and validates the rendered manifests
# with kubeconform when it is installed. Skips (exit 0) when helm is not installed.
#
# kubeconform fetches Kubernetes JSON schemas from the network by default; to run offline,
# point KUBECONFORM_SCHEMA_LOCATION at a local schema tree (passed as -schema-location).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
chart=charts/toygres

if ! command -v helm >/dev/null 2>&1; then
    echo "helm not installed; skipping chart checks"
    exit 0
fi

# The chart requires the name of the Secret holding the CMS URL; any name renders.
required_values=(--set databaseUrl.existingSecret=toygres-cms)

helm lint "$chart" "${required_values[@]}"

rendered=$(mktemp)
trap 'rm -f "$rendered"' EXIT

# Render with the defaults and with every optional resource switched on or off.
for variant in \
    "" \
    "--set serviceMonitor.enabled=true" \
    "--set rbac.create=false --set serviceAccount.create=false"; do
    echo "helm template ${variant:-(defaults)}"
    # shellcheck disable=SC2086 # $variant is a list of flags
    helm template toygres "$chart" --namespace toygres "${required_values[@]}" $variant >"$rendered"

    if command -v kubeconform >/dev/null 2>&1; then
        schema_args=()
        if [[ -n "${KUBECONFORM_SCHEMA_LOCATION:-}" ]]; then
            schema_args=(-schema-location "$KUBECONFORM_SCHEMA_LOCATION")
        fi
        kubeconform -strict -ignore-missing-schemas -summary "${schema_args[@]}" "$rendered"
    fi
done

if ! command -v kubeconform >/dev/null 2>&1; then
    echo "kubeconform not installed; rendered manifests not schema-validated"
fi
echo "chart checks passed"
