#!/usr/bin/env bash
# make chart-e2e: install the chart for real on kube-apiserver + etcd with the controllers,
# the scheduler and a kwok fake node (scripts/k8s_cluster.py --nodes): `helm install --wait`
# completes (hook Jobs done, every Deployment available), then `helm upgrade` with a changed
# policy changes only the policy ConfigMap (no Deployment rolls). Not part of make test.
set -euo pipefail
cd "$(dirname "$0")/.."
K8S=$(bash scripts/k8s-tools.sh --e2e)
exec python3 scripts/k8s_cluster.py "$K8S" --nodes -- bash -euo pipefail -c '
chart=deploy/helm/elevate checks=deploy/helm/checks ns=elevate
say() { echo "chart-e2e: $*" >&2; }
kubectl create namespace $ns >/dev/null
say "the referenced Secrets and ConfigMap (what an operator or External Secrets provides)"
kubectl -n $ns create secret generic elevate-database $(for s in request-api approval grant-worker audit-ingest notifier; do
  printf -- "--from-literal=%s=postgresql+asyncpg://%s:placeholder@postgres/%s " $s $s $s; done) >/dev/null
for p in request-api approval grant-worker audit-ingest notifier elevate-admin; do
  kubectl -n $ns create secret generic elevate-kafka-$p --from-literal=password=placeholder >/dev/null
done
keys=$(mktemp -d); trap "rm -rf $keys" EXIT
for w in request-api approval; do
  openssl genpkey -algorithm ed25519 -out $keys/$w.pem 2>/dev/null
  openssl pkey -in $keys/$w.pem -pubout -out $keys/$w.pub
  kubectl -n $ns create secret generic elevate-event-key-$w --from-file=private.pem=$keys/$w.pem >/dev/null
done
kubectl -n $ns create configmap elevate-event-public-keys --from-file=$keys/request-api.pub --from-file=$keys/approval.pub >/dev/null

say "helm install --wait"
start=$(date +%s)
helm install elevate $chart -n $ns -f $checks/e2e-values.yaml --wait --timeout 10m >/dev/null
say "installed in $(( $(date +%s) - start )) s"
kubectl -n $ns get deployments -o custom-columns=DEPLOYMENT:.metadata.name,READY:.status.readyReplicas,AVAILABLE:.status.conditions[?\(@.type==\"Available\"\)].status
for d in $(kubectl -n $ns get deployments -o name); do
  [ "$(kubectl -n $ns get $d -o jsonpath="{.status.conditions[?(@.type==\"Available\")].status}")" = True ] \
    || { say "$d is not available"; exit 1; }
done
# The hook Jobs are deleted once they succeed (hook-succeeded); their events stay.
completed=$(kubectl -n $ns get events --field-selector involvedObject.kind=Job,reason=Completed -o name | wc -l)
say "hook Jobs completed: $completed of 6 (topics, 5 migrations)"
[ "$completed" -eq 6 ]

say "helm upgrade with a changed policy"
gen() { kubectl -n $ns get deployments -o jsonpath="{range .items[*]}{.metadata.name}={.metadata.generation} {end}"; }
before=$(gen)
helm get manifest elevate -n $ns > $keys/rev1.yaml
helm upgrade elevate $chart -n $ns -f $checks/e2e-values.yaml -f $checks/e2e-policy-change.yaml --wait --timeout 10m >/dev/null
helm get manifest elevate -n $ns > $keys/rev2.yaml
changed=$(python3 - $keys/rev1.yaml $keys/rev2.yaml <<PY
import sys
def docs(path):
    out = {}
    for doc in open(path).read().split("\n---\n"):
        src = [l for l in doc.splitlines() if l.startswith("# Source: ")]
        name = [l for l in doc.splitlines() if l.startswith("  name: ")]
        if src and name:
            out[(src[0], name[0])] = doc
    return out
a, b = docs(sys.argv[1]), docs(sys.argv[2])
print(" ".join(sorted(k[0].split("/")[-1] + ":" + k[1].split()[-1] for k in a.keys() | b.keys() if a.get(k) != b.get(k))))
PY
)
say "changed in the release: ${changed:-nothing}"
[ "$changed" = "policy-configmap.yaml:elevate-policy" ]
after=$(gen)
[ "$before" = "$after" ] || { say "a Deployment rolled: $before -> $after"; exit 1; }
say "no Deployment rolled (generations $after)"
kubectl -n $ns get configmap elevate-policy -o jsonpath="{.data.policy\.yaml}" | grep -q "max_duration: 2h"
say "passed"
'
