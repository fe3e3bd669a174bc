"""A Go module that builds Kubernetes' own binaries from k8s.io/kubernetes (scripts/k8s-tools.sh).

k8s.io/kubernetes points its `k8s.io/*` dependencies at ./staging, which a dependent module
cannot see: each such replace becomes the published module of the same version (v0.N.M
for v1.N.M). Usage: python3 scripts/k8s_module.py v1.37.2 DIR
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def main() -> int:
    version, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    (out / "go.mod").write_text("module elevate.local/kubernetes\n\ngo 1.26\n")
    info = json.loads(
        subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
            cwd=out,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    upstream = Path(info["GoMod"]).read_text()
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\S+", upstream, re.M)
    published = "v0." + version.removeprefix("v1.")
    lines = [
        "module elevate.local/kubernetes",
        "",
        "go 1.26",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        *(f"replace {module} => {module} {published}" for module in sorted(set(staging))),
        "",
    ]
    (out / "go.mod").write_text("\n".join(lines))
    imports = "\n".join(f'\t_ "k8s.io/kubernetes/cmd/{c}"' for c in COMMANDS)
    (out / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    subprocess.run(["go", "mod", "tidy"], cwd=out, check=True, env=None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
