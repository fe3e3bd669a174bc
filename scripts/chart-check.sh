#!/usr/bin/env bash
# The Helm chart's checks (make chart-check, called by .ci/run): lint, render with the
# default and the production example values, validate offline against the Kubernetes 1.37
# schemas, helm-unittest, checkov and kube-score with the committed skip lists, load every
# container's settings, and install both with --dry-run=server on a live kube-apiserver.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S=$(bash scripts/k8s-tools.sh)
export PATH="$K8S/bin:$PATH"
CHART=deploy/helm/elevate
CHECKS=deploy/helm/checks
PROD=$CHART/examples/production-values.yaml
out=$(mktemp -d /tmp/elevate-chart.XXXXXX)
trap 'rm -rf "$out"' EXIT
step() { echo "chart-check: $*" >&2; }

step "helm lint --strict"
helm lint --strict "$CHART" >/dev/null
helm lint --strict "$CHART" -f "$PROD" >/dev/null

step "helm template (default, production) | kubeconform -strict (Kubernetes 1.37)"
helm template elevate "$CHART" -n elevate > "$out/default.yaml"
helm template elevate "$CHART" -n elevate -f "$PROD" > "$out/production.yaml"
# CRDs (Strimzi, Prometheus Operator, External Secrets) have no schema offline: the
# live API server below takes them.
kubeconform -strict -summary -skip KafkaUser,ServiceMonitor,PrometheusRule,ExternalSecret \
  -schema-location "$K8S/schemas/v1.37.0-local-strict/{{.ResourceKind}}{{.KindSuffix}}.json" \
  "$out/default.yaml" "$out/production.yaml"

step "helm-unittest"
helm-unittest "$CHART"

step "the README lists every value; the ACL data is current"
.venv/bin/python -m elevate_local.chart --check

step "every container loads its settings in prod mode (production example)"
.venv/bin/python "$CHECKS/check_settings.py" "$out/production.yaml"

step "checkov (skip lists: $CHECKS/checkov-skips*.txt)"
# A skip list: one check id per line, first word, with why; '#' lines are comments.
skips() { cat "$@" | { grep -v '^#' || true; } | awk 'NF {print $1}' | paste -sd, -; }
checkov_on() {
  local file=$1 skip; shift; skip=$(skips "$@")
  BC_SKIP_MAPPING=TRUE checkov --quiet --compact --framework kubernetes -f "$file" \
    ${skip:+--skip-check "$skip"}
}
checkov_on "$out/production.yaml" "$CHECKS/checkov-skips.txt"
checkov_on "$out/default.yaml" "$CHECKS/checkov-skips.txt" "$CHECKS/checkov-skips-default.txt"

step "kube-score (skip list: $CHECKS/kube-score-skips.txt)"
ignore=(); while read -r t; do ignore+=(--ignore-test "$t"); done < <(grep -v '^#' "$CHECKS/kube-score-skips.txt" | awk 'NF {print $1}')
status=0
kube-score score "${ignore[@]}" --exit-one-on-warning --output-format ci \
  "$out/default.yaml" "$out/production.yaml" > "$out/kube-score.txt" || status=$?
grep -E '^\[(CRITICAL|WARNING)\]' "$out/kube-score.txt" || true
[ "$status" -eq 0 ]

step "helm install --dry-run=server and kubectl apply --dry-run=server on a live kube-apiserver"
python3 scripts/k8s_cluster.py "$K8S" -- bash -euo pipefail -c '
  kubectl apply -f "$0/crds.yaml" >/dev/null
  kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
  kubectl create namespace elevate >/dev/null
  for values in "" "-f $1"; do
    helm install elevate "$2" -n elevate --dry-run=server $values >/dev/null
    helm template elevate "$2" -n elevate $values | kubectl apply --dry-run=server -f - >/dev/null
  done' "$CHECKS" "$PROD" "$CHART"
step "all passed"
