"""vegeta (github.com/tsenart/vegeta), the compiled load generator of the API bench: built
once from its Go module into a cache outside the clone, keyed by version, and driven in
the closed model (a fixed number of clients, each sending its next request when the last
one is answered).

Only 2xx answers count: throughput is 2xx answers per second of the attack, and the
percentiles are those of the 2xx answers (from `vegeta encode`, one line per request);
`vegeta report -type=json` is kept alongside as vegeta computes it.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VERSION = "v12.13.0"
MODULE = "github.com/tsenart/vegeta/v12"
TOOLS = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "elevate" / "tools"


def binary() -> Path:
    """The vegeta binary, built with `go install` the first time."""
    home = TOOLS / f"vegeta-{VERSION}"
    exe = home / "vegeta"
    if exe.is_file():
        return exe
    go = shutil.which("go")
    if go is None:
        raise SystemExit("bench: vegeta is built from its Go module; install Go first")
    home.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [go, "install", f"{MODULE}@{VERSION}"], check=True, env={**os.environ, "GOBIN": str(home)}
    )
    return exe


def target(
    method: str, url: str, token: str, body: dict[str, Any] | None = None, **headers: str
) -> dict[str, Any]:
    """One target in vegeta's JSON format (`-format=json`)."""
    header = {"Authorization": [f"Bearer {token}"], **{k: [v] for k, v in headers.items()}}
    out: dict[str, Any] = {"method": method, "url": url, "header": header}
    if body is not None:
        header["Content-Type"] = ["application/json"]
        out["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return out


@dataclass(frozen=True)
class Attack:
    name: str
    requests: int
    ok: int  # 2xx answers
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    status_codes: dict[str, int]
    errors: list[str]
    report: dict[str, Any]

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def non_2xx_share(self) -> float:
        return (self.requests - self.ok) / self.requests if self.requests else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok_2xx": self.ok,
            "non_2xx_share": round(self.non_2xx_share, 4),
            "throughput_per_s": round(self.throughput, 1),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "status_codes": self.status_codes,
            "errors": self.errors[:5],
        }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def attack(
    name: str,
    targets: list[dict[str, Any]],
    *,
    work: Path,
    clients: int,
    seconds: float,
    lazy: bool,
) -> Attack:
    """`clients` closed-model clients for `seconds` over `targets`: round-robin, or with
    `lazy` each once in order (an attack that uses them all ends early rather than
    sending one twice)."""
    exe = str(binary())
    tfile, results = work / f"{name}.targets.jsonl", work / f"{name}.bin"
    tfile.write_text("".join(json.dumps(t) + "\n" for t in targets))
    subprocess.run(
        [exe, "attack", "-format=json", f"-targets={tfile}", "-rate=0"]
        + (["-lazy"] if lazy else [])
        + [f"-workers={clients}", f"-max-workers={clients}", f"-duration={seconds}s"]
        + ["-timeout=30s", f"-output={results}"],
        check=True,
    )
    report = json.loads(
        subprocess.run(
            [exe, "report", "-type=json", str(results)], check=True, capture_output=True
        ).stdout
    )
    encoded = subprocess.run(
        [exe, "encode", "-to=json", str(results)], check=True, capture_output=True, text=True
    ).stdout
    rows = [json.loads(line) for line in encoded.splitlines() if line]
    ok_ms = [r["latency"] / 1e6 for r in rows if 200 <= r["code"] < 300]
    return Attack(
        name=name,
        requests=len(rows),
        ok=len(ok_ms),
        seconds=(report["duration"] + report["wait"]) / 1e9,
        p50_ms=round(statistics.median(ok_ms), 2) if ok_ms else float("nan"),
        p95_ms=round(_pct(ok_ms, 95), 2) if ok_ms else float("nan"),
        p99_ms=round(_pct(ok_ms, 99), 2) if ok_ms else float("nan"),
        status_codes=dict(report.get("status_codes") or {}),
        errors=list(report.get("errors") or []),
        report=report,
    )
