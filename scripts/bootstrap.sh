#!/usr/bin/env bash
# Installs what a machine with Python 3.11+ and Java 17+ lacks for Elevate:
# uv (from PyPI), the locked Python workspace, the Kafka broker jars (Maven Central),
# and — with --with-postgres, for the tests — Debian's postgresql, and Debian's chromium and
# axe-core for the portal's browser tests (axe goes into the tool cache, outside the clone).
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.8
# axe-core, the accessibility engine the browser tests inject (tests/integration/browser
# reads this pin): the npm registry's tarball, checked against the registry's dist.integrity.
AXE_VERSION=4.14.1
AXE_INTEGRITY=sha512-FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ==
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/elevate/tools"   # as bench/vegeta.py
export UV_PYTHON_DOWNLOADS=never   # uv's own Python downloads are not reachable here

need_root() { [ "$(id -u)" = 0 ] || { echo "bootstrap: $1 needs root (or install it yourself)" >&2; exit 1; }; }
apt_install() {
  need_root "apt-get install $*"
  if [ -z "${ELEVATE_APT_UPDATED:-}" ]; then apt-get update -qq; export ELEVATE_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

python3 - <<'PY' || { echo "bootstrap: Python 3.11+ is required" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])' \
  || { echo "bootstrap: Java 17+ is required for the Kafka broker" >&2; exit 1; }

if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | awk '{print $2}')" != "$UV_VERSION" ]; then
  python3 -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
uv sync --frozen --quiet

command -v mvn >/dev/null 2>&1 || apt_install maven
if ! ls deploy/local/kafka/lib/kafka-tools-[0-9]*.jar >/dev/null 2>&1; then
  echo "bootstrap: fetching the Kafka broker jars from Maven Central …"
  mvn -q -B -f deploy/local/kafka/pom.xml package
fi

if [ "${1:-}" = "--with-postgres" ]; then
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
  # The browser tests drive Debian's chromium (never a browser build of Playwright's own).
  [ -x /usr/lib/chromium/chromium ] || apt_install chromium
  # composecheck (deploy/tools/composecheck): compose-go, the loader Docker Compose uses,
  # built once per go.sum into the tool cache (tests/integration/deploy/test_compose.py).
  check="$TOOLS/composecheck-$(sha256sum deploy/tools/composecheck/go.sum deploy/tools/composecheck/main.go | sha256sum | cut -c1-16)"
  if [ ! -x "$check/composecheck" ]; then
    echo "bootstrap: building composecheck (compose-go, from the Go module proxy) …"
    (cd deploy/tools/composecheck && GOFLAGS=-mod=readonly go build -o "$check/composecheck" .)
  fi
  axe="$TOOLS/axe-core-$AXE_VERSION/axe.min.js"
  if [ ! -f "$axe" ]; then
    echo "bootstrap: fetching axe-core $AXE_VERSION from the npm registry …"
    python3 scripts/npm_fetch.py axe-core "$AXE_VERSION" "$AXE_INTEGRITY" axe.min.js "$axe"
  fi
fi
