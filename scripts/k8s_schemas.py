"""Kubernetes 1.37's JSON schemas from the kubernetes-validate package, rewritten for
kubeconform offline (scripts/k8s-tools.sh): each file's `$id` dropped and the
`/api/_definitions.json#…` references made relative. Usage: python scripts/k8s_schemas.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import kubernetes_validate

VERSION = "v1.37.0"


def main() -> int:
    out = Path(sys.argv[1])
    source = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    for flavour in (f"{VERSION}-local-strict",):
        src = source / flavour
        dest = out / flavour
        dest.mkdir(parents=True, exist_ok=True)
        for path in src.glob("*.json"):
            text = path.read_text(encoding="utf-8").replace(
                '"/api/_definitions.json#', '"_definitions.json#'
            )
            document = json.loads(text)
            if isinstance(document, dict):
                document.pop("$id", None)
            (dest / path.name).write_text(json.dumps(document), encoding="utf-8")
    print(f"schemas in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
