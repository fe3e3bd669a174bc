#!/usr/bin/env bash
# Builds the chart checks' tools from their Go modules / PyPI into the tool cache, outside
# the clone, one directory per tool and version: only the first run pays (minutes), later
# runs find them. Prints the directory holding the binaries (bin/).
#   scripts/k8s-tools.sh            helm, helm-unittest, kubeconform, kube-score, checkov,
#                                   the Kubernetes schemas, etcd and kube-apiserver
#   scripts/k8s-tools.sh --e2e      also kube-controller-manager, kube-scheduler and kwok
set -euo pipefail
cd "$(dirname "$0")/.."
# Callers read stdout as the directory: whatever a build prints goes to stderr.
exec 3>&1 1>&2

HELM_VERSION=v4.3.2
KUBECONFORM_VERSION=v0.8.0
HELM_UNITTEST_VERSION=v1.1.2
KUBE_SCORE_VERSION=v1.20.0
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0
KUBERNETES_VERSION=v1.37.2
KWOK_VERSION=v0.8.0
ETCD_VERSION=v3.6.16

TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/elevate/tools"
BIN="$TOOLS/k8s/bin"
mkdir -p "$BIN"
log() { echo "k8s-tools: $*" >&2; }

# go install NAME VERSION MODULE_PATH [ldflags]: into $TOOLS/NAME-VERSION, linked into bin/.
go_tool() {
  local name=$1 version=$2 path=$3 ldflags=${4:-}
  local dir="$TOOLS/$name-$version"
  if [ ! -x "$dir/$name" ]; then
    log "building $name $version (go install; once) …"
    GOBIN="$dir" GOFLAGS=-mod=mod go install ${ldflags:+-ldflags "$ldflags"} "$path@$version"
  fi
  ln -sf "$dir/$name" "$BIN/$name"
}

# A wrapper module for what `go install` cannot build alone (replace directives).
wrapped_build() {
  local name=$1 version=$2 dir=$3 pkg=$4 ldflags=${5:-}
  if [ ! -x "$dir/$name" ]; then
    log "building $name $version (wrapper module; once) …"
    (cd "$dir/src" && GOFLAGS=-mod=mod go build ${ldflags:+-ldflags "$ldflags"} -o "$dir/$name" "$pkg")
  fi
  ln -sf "$dir/$name" "$BIN/$name"
}

go_tool helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm \
  "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION"
go_tool kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
go_tool kube-score "$KUBE_SCORE_VERSION" github.com/zegl/kube-score/cmd/kube-score

# helm-unittest: its go.mod has a replace, so a module of ours requires it.
unittest="$TOOLS/helm-unittest-$HELM_UNITTEST_VERSION"
if [ ! -x "$unittest/helm-unittest" ]; then
  mkdir -p "$unittest/src"
  cat > "$unittest/src/go.mod" <<EOF
module elevate.local/helmunittest

go 1.26

require github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION

replace github.com/vmware-labs/yaml-jsonpath v0.3.2 => github.com/helm-unittest/yaml-jsonpath v0.4.0
EOF
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"\n' \
    > "$unittest/src/tools.go"
  (cd "$unittest/src" && GOFLAGS=-mod=mod go mod tidy)
fi
wrapped_build helm-unittest "$HELM_UNITTEST_VERSION" "$unittest" \
  github.com/helm-unittest/helm-unittest/cmd/helm-unittest

# checkov pins many packages: its own environment.
checkov="$TOOLS/checkov-$CHECKOV_VERSION"
if [ ! -x "$checkov/bin/checkov" ]; then
  log "installing checkov $CHECKOV_VERSION (own environment; once) …"
  uv venv -q --python python3.11 "$checkov"
  VIRTUAL_ENV="$checkov" uv pip install -q "checkov==$CHECKOV_VERSION"
fi
ln -sf "$checkov/bin/checkov" "$BIN/checkov"

# The Kubernetes 1.37 JSON schemas from kubernetes-validate, rewritten for offline use.
schemas="$TOOLS/k8s-schemas-$KUBERNETES_VALIDATE_VERSION"
if [ ! -d "$schemas/v1.37.0-local-strict" ]; then
  log "preparing the Kubernetes schemas (kubernetes-validate $KUBERNETES_VALIDATE_VERSION; once) …"
  venv="$TOOLS/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
  [ -d "$venv" ] || { uv venv -q --python python3.11 "$venv" \
    && VIRTUAL_ENV="$venv" uv pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"; }
  "$venv/bin/python" scripts/k8s_schemas.py "$schemas"
fi
ln -sfn "$schemas" "$TOOLS/k8s/schemas"

# etcd from its Go module (Debian's 3.4 is older than Kubernetes 1.37 supports, and cannot
# serve watch-list streams, so kwok and the controllers would only see changes on re-lists);
# kube-apiserver (and for --e2e its controllers) from k8s.io/kubernetes.
etcd="$TOOLS/etcd-$ETCD_VERSION"
if [ ! -f "$etcd/src/go.mod" ]; then
  mkdir -p "$etcd/src"
  printf 'module elevate.local/etcd\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" \
    > "$etcd/src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$etcd/src/tools.go"
  (cd "$etcd/src" && GOFLAGS=-mod=mod go mod tidy)
fi
wrapped_build etcd "$ETCD_VERSION" "$etcd" go.etcd.io/etcd/server/v3
kube="$TOOLS/kubernetes-$KUBERNETES_VERSION"
if [ ! -f "$kube/src/go.mod" ]; then
  mkdir -p "$kube/src"
  python3 scripts/k8s_module.py "$KUBERNETES_VERSION" "$kube/src"
fi
minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
KLDFLAGS="-X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
wrapped_build kube-apiserver "$KUBERNETES_VERSION" "$kube" k8s.io/kubernetes/cmd/kube-apiserver "$KLDFLAGS"
if [ "${1:-}" = "--e2e" ]; then
  wrapped_build kube-controller-manager "$KUBERNETES_VERSION" "$kube" \
    k8s.io/kubernetes/cmd/kube-controller-manager "$KLDFLAGS"
  wrapped_build kube-scheduler "$KUBERNETES_VERSION" "$kube" k8s.io/kubernetes/cmd/kube-scheduler "$KLDFLAGS"
  go_tool kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
  # kwok's stages (a fake node turns Ready and keeps its lease, pods run, Job pods
  # complete), from its module; the file is keyed by the list.
  stage_list="node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete"
  stages="$TOOLS/kwok-$KWOK_VERSION/stages-$(echo "$stage_list" | sha256sum | cut -c1-12).yaml"
  if [ ! -s "$stages" ]; then
    src=$(cd "$TOOLS/kwok-$KWOK_VERSION" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    for f in $stage_list; do
      printf -- '---\n'; cat "$src/kustomize/stage/$f.yaml"
    done > "$stages.tmp" && mv "$stages.tmp" "$stages"
  fi
  ln -sf "$stages" "$TOOLS/k8s/kwok-stages.yaml"
fi
echo "$TOOLS/k8s" >&3
