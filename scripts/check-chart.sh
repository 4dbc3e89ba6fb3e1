#!/usr/bin/env bash
# Lints and renders the Helm chart in charts/toygres with each values variant (the defaults need
# no value), checks that bad values are refused, and validates every rendered manifest strictly
# (unknown fields fail) against the Kubernetes version the test control plane runs, offline.
# Uses the helm and kubernetes-validate that scripts/k8s/build.sh builds (and builds them when
# they are missing).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
chart=charts/toygres

if ! bin=$(bash scripts/k8s/build.sh --print-bin-dir); then
    bin=$(bash scripts/k8s/build.sh | tail -1)
fi
helm=$bin/helm
validate=$bin/kubernetes-validate
# The Kubernetes version of the control plane the tests run (from scripts/k8s/go.mod).
kube_version=$("$bin/kube" kube-apiserver --version | awk '{print $2}')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The values variants are the chart's own ci/*-values.yaml (the chart-testing convention; the
# Kubernetes test k8s_chart.rs validates the same files server-side), plus the defaults.
variants=("")
for file in "$chart"/ci/*-values.yaml; do
    variants+=("$file")
done

"$helm" lint --strict "$chart"
"$helm" lint --strict "$chart" -f "$chart/ci/everything-values.yaml"

# Values the chart must refuse: by its values.schema.json (an unknown key, a bad quantity, a
# port out of range) and by its templates (two controllers sharing one embedded CMS).
refused=(
    "--set controler.replicas=1|additional properties 'controler' not allowed"
    "--set cms.persistence.size=lots|/cms/persistence/size"
    "--set service.port=0|/service/port"
    "--set controller.replicas=2|controller.replicas must be 1 with the embedded CMS"
)
for entry in "${refused[@]}"; do
    flags=${entry%%|*}
    reason=${entry#*|}
    # shellcheck disable=SC2086 # $flags is a list of flags
    if out=$("$helm" template toygres "$chart" $flags 2>&1); then
        echo "helm template accepted $flags" >&2
        exit 1
    fi
    if ! grep -qF -- "$reason" <<<"$out"; then
        echo "helm template refused $flags, but not because of $reason:" >&2
        echo "$out" >&2
        exit 1
    fi
    echo "== refused as it should be: $flags ($reason)"
done

failed=0
for file in "${variants[@]}"; do
    name=${file:-defaults: no values}
    flags=${file:+-f $file}
    rendered=$work/rendered.yaml
    echo "== helm template: $name"
    # shellcheck disable=SC2086 # $flags is a list of flags
    "$helm" template toygres "$chart" --namespace toygres --kube-version "$kube_version" \
        $flags >"$rendered"
    out=$("$validate" --strict --quiet -k "${kube_version#v}" "$rendered" 2>&1) || failed=1
    [[ -z $out ]] || echo "$out"
    # A kind without a bundled schema is only a warning to kubernetes-validate; only the
    # Prometheus Operator's ServiceMonitor and PodMonitor (CRDs) may lack one.
    if grep -Ev 'Couldn.t find schema for kind (ServiceMonitor|PodMonitor) with api version monitoring.coreos.com/v1 ' <<<"$out" | grep -q '^WARN'; then
        failed=1
    fi
    kinds=$(grep -c '^kind:' "$rendered" || true)
    echo "   $kinds objects validated against Kubernetes $kube_version (strict)"
done

if ((failed)); then
    echo "chart checks FAILED" >&2
    exit 1
fi
echo "chart checks passed"
