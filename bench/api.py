"""request-api under load: submits, eligibility and the CSV export at 2,000 accounts.

    uv run python -m bench.api [--seconds 20] [--clients 50] [--export-rows 100000]

A local stack on PostgreSQL (bench/api_stack.py): the real Kafka broker (SASL_SSL + SCRAM,
as `make dev` runs it), a PostgreSQL cluster of its own, moto behind the project's AWS
proxy seeded with the example organisation plus a generated one (bench/org_gen.py: 2,000
accounts in nested OUs, 500 permission sets), the local OIDC provider, and request-api in
a process of its own (uvicorn, as `make dev` starts it). The policy makes the bench user
eligible for 400 (account, permission set) pairs, auto-approved, so every submit is
accepted (request-api answers 202 once the request and its outbox event are committed; no
other service is needed). Load comes from vegeta (bench/vegeta.py), a compiled generator
in a process of its own, with `--clients` closed-model clients; only 2xx answers count and
the run fails (exit 1) when more than 1 % of any phase's answers are not 2xx.

Phases, each `--seconds` long, with `/healthz` (the baseline) before and after:
- submit: POST /v1/requests, every body distinct (account, permission set, start, duration,
  justification) with its own Idempotency-Key; goal throughput >= 0.25 x /healthz's and
  p99 <= 100 ms.
- GET /v1/eligibility, its first page and a search (`?q=`); goal p99 <= 3 x /healthz's.
- CSV export, GET /v1/audit/requests?format=csv as the auditor over `--export-rows`
  requests: rows/s and the server's peak RSS while it streams. The rows are inserted
  straight into request-api's read model (`requests`) with PostgreSQL COPY, not submitted
  through the API (100,000 submits would take most of an hour): the export reads only
  that table, so what it streams is what 100,000 real requests would give it.

A route the running request-api does not have yet (the export, eligibility's search and
pages) is reported "not available" instead of measured. Results are printed and written
to bench/out/api.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench import api_export, vegeta
from bench.api_stack import AUDITOR, BENCH_USER, TEAM_OU, Stack

OUT = Path(__file__).parent / "out"
NON_2XX_LIMIT = 0.01


def submit_targets(stack: Stack, token: str, n: int, offset: int = 0) -> list[dict[str, Any]]:
    """n distinct submits over the bench user's eligible pairs, in future windows."""
    accounts = stack.org.under(TEAM_OU)
    sets = stack.org.permission_sets[:4]
    base = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    out = []
    for i in range(offset, offset + n):
        account = accounts[i % len(accounts)]
        body = {
            "account_id": account.id,
            "permission_set": sets[(i // len(accounts)) % len(sets)],
            "start": (base + timedelta(seconds=37 * i)).isoformat(),
            "duration_minutes": 30 + i % 450,
            "justification": f"bench run: investigate incident {i} on {account.name}",
        }
        out.append(
            vegeta.target(
                "POST",
                f"{stack.api}/v1/requests",
                token,
                body,
                **{"Idempotency-Key": str(uuid.uuid4())},
            )
        )
    return out


def probe_eligibility(stack: Stack, token: str) -> dict[str, Any]:
    """What the running request-api's /v1/eligibility offers: pages, search."""
    auth = {"Authorization": f"Bearer {token}"}
    whole = httpx.get(f"{stack.api}/v1/eligibility", headers=auth, timeout=60)
    whole.raise_for_status()
    body = whole.json()
    paged = isinstance(body, dict) and "items" in body
    items = body["items"] if paged else body
    wanted = stack.org.under(TEAM_OU)[7].name
    found = httpx.get(
        f"{stack.api}/v1/eligibility", params={"q": wanted}, headers=auth, timeout=60
    ).json()
    searched = found["items"] if isinstance(found, dict) and "items" in found else found
    search_works = paged and 0 < len(searched) < len(items) + int(bool(body.get("next_cursor")))
    return {
        "paged": paged,
        "first_page_items": len(items),
        "first_page_bytes": len(whole.content),
        "search": wanted,
        "search_items": len(searched),
        "search_available": bool(search_works),
    }


def run_phases(stack: Stack, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    token = stack.token(BENCH_USER)
    clients, seconds = args.clients, args.seconds
    health = [vegeta.target("GET", f"{stack.api}/healthz", token)]

    def go(name: str, targets: list[dict[str, Any]], secs: float = seconds) -> vegeta.Attack:
        # One target: sent over and over; many (submits): each once, in order.
        lazy = len(targets) > 1
        result = vegeta.attack(name, targets, work=work, clients=clients, seconds=secs, lazy=lazy)
        print(f"{name}: {json.dumps(result.summary())}", flush=True)
        return result

    # Warm-up (connections, caches, the JIT-less interpreter's first paths); not reported.
    go("warmup-healthz", health, 3)
    go("warmup-submit", submit_targets(stack, token, 5_000, offset=int(seconds * 1500)), 3)
    attacks = [go("healthz-before", health)]
    attacks.append(go("submit", submit_targets(stack, token, int(seconds * 1500))))
    probe = probe_eligibility(stack, token)
    print(f"eligibility: {json.dumps(probe)}", flush=True)
    first = [vegeta.target("GET", f"{stack.api}/v1/eligibility", token)]
    attacks.append(go("eligibility-first-page", first))
    if probe["search_available"]:
        q = f"{stack.api}/v1/eligibility?q={probe['search']}"
        attacks.append(go("eligibility-search", [vegeta.target("GET", q, token)]))
    attacks.append(go("healthz-after", health))
    return {"probe": probe, "attacks": {a.name: a for a in attacks}}


def figures(phases: dict[str, Any]) -> dict[str, Any]:
    a: dict[str, vegeta.Attack] = phases["attacks"]
    hz_rate = (a["healthz-before"].throughput + a["healthz-after"].throughput) / 2
    hz_p99 = (a["healthz-before"].p99_ms + a["healthz-after"].p99_ms) / 2
    submit = a["submit"]
    out: dict[str, Any] = {
        "healthz_throughput_per_s": round(hz_rate, 1),
        "healthz_p99_ms": round(hz_p99, 2),
        "submit_throughput_per_s": round(submit.throughput, 1),
        "submit_p50_ms": submit.p50_ms,
        "submit_p99_ms": submit.p99_ms,
        "submit_to_healthz_throughput": round(submit.throughput / hz_rate, 3),
    }
    out["goal_submit"] = {
        "throughput_ratio_min": 0.25,
        "p99_ms_max": 100,
        "met": out["submit_to_healthz_throughput"] >= 0.25 and submit.p99_ms <= 100,
    }
    for name in ("eligibility-first-page", "eligibility-search"):
        key = name.replace("-", "_")
        if name not in a:
            out[key] = "not available"
            continue
        ratio = round(a[name].p99_ms / hz_p99, 2)
        out[key] = {
            "p50_ms": a[name].p50_ms,
            "p99_ms": a[name].p99_ms,
            "p99_to_healthz_p99": ratio,
            "goal_p99_ratio_max": 3,
            "met": ratio <= 3,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--permission-sets", type=int, default=500)
    parser.add_argument("--export-rows", type=int, default=100_000)
    parser.add_argument(
        "--profile-server", type=Path, help="cProfile request-api into this file (slower)"
    )
    args = parser.parse_args()
    vegeta.binary()  # built before the stack starts, so its build is not in any figure
    with tempfile.TemporaryDirectory(prefix="elevate-bench-api-") as tmp:
        work = Path(tmp)
        stack = Stack(
            work,
            accounts=args.accounts,
            permission_sets=args.permission_sets,
            profile=args.profile_server,
        )
        try:
            stack.start()
            print(f"stack up: {stack.seconds}, org seeding {stack.org.seconds}", flush=True)
            phases = run_phases(stack, args, work)
            results = figures(phases)
            results["export"] = api_export.measure(stack, stack.token(AUDITOR), args.export_rows)
        finally:
            stack.stop()
    attacks: dict[str, vegeta.Attack] = phases["attacks"]
    results["phases"] = {name: a.summary() for name, a in attacks.items()}
    results["eligibility_probe"] = phases["probe"]
    results["setup_seconds"] = {**stack.seconds, **stack.org.seconds}
    results["clients"], results["seconds_per_phase"] = args.clients, args.seconds
    OUT.mkdir(exist_ok=True)
    (OUT / "api.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "phases"}, indent=2))
    failing = [n for n, a in attacks.items() if a.non_2xx_share > NON_2XX_LIMIT]
    if failing:
        print(f"FAILED: more than 1 % non-2xx answers in {', '.join(failing)}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
