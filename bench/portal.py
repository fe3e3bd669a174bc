"""The portal's server time: the account picker with 2,000 eligible accounts, and each page.

    uv run python -m bench.portal [--accounts 2000] [--seconds 5] [--clients 1]

The API bench's stack (bench/api_stack.py: real Kafka, PostgreSQL, moto with the example
and a generated organisation behind the AWS proxy, the local OIDC provider, request-api in
its own process as `make dev` starts it), with a policy that makes the bench user eligible
for 4 permission sets on every generated account (8,000 pairs): the picker's worst case.
The bench user signs in to the portal through the local provider (the code flow, as a
browser would) and the session cookie is sent with every request.

Load comes from vegeta (bench/vegeta.py) with `--clients` closed-model clients (1: each
answer's latency is the server's time for it plus the loopback). Measured, each
`--seconds` long: `/healthz` (the baseline, before and after), the picker answering a
user typing (`/request/accounts?q=` with each prefix of an account name, an account id
and an OU path, round-robin), and every page: the picker's first page, the request form,
my requests, a request's page and its live panel. Reported (not binding): the picker's p95
against the goal of 50 ms, and each figure as a ratio to `/healthz`'s p95 in the same
run. Results are printed and written to bench/out/portal.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from elevate_local.oidc import subject_of

from bench import vegeta
from bench.api_stack import BENCH_USER, ELIGIBLE_PERMISSION_SETS, Stack
from bench.org_gen import DIVISIONS

OUT = Path(__file__).parent / "out"
PICKER_GOAL_P95_MS = 50.0


def everywhere_policy(permission_sets: list[str]) -> str:
    """The bench user: every generated account x the first permission sets."""
    sets = ", ".join(permission_sets[:ELIGIBLE_PERMISSION_SETS])
    divisions = "\n".join(f"      - ou: Division-{d}" for d in range(DIVISIONS))
    return f"""schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - name: one-lead
    description: One lead approves.
    approver_groups: [sre-leads]
    required_approvals: 1
eligibility:
  - name: bench-everywhere
    description: The bench user may ask on every account.
    principals:
      users: [{BENCH_USER}]
    accounts:
{divisions}
    permission_sets: [{sets}]
    max_duration: 8h
    approval: one-lead
"""


def sign_in(stack: Stack, user: str) -> str:
    """The portal session cookie, from the code flow through the local provider."""
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        to_idp = client.get(f"{stack.api}/login")
        assert to_idp.status_code == 303, to_idp.text
        authorize = to_idp.headers["location"]
        client.get(authorize).raise_for_status()  # the login form
        back = client.post(authorize, data={"sub": subject_of(user)})
        assert back.status_code in (302, 303), back.text
        landed = client.get(back.headers["location"])
        assert landed.status_code == 303, landed.text
        cookie = client.cookies.get("elevate_session")
        assert cookie, "no portal session cookie after the callback"
        return cookie


def check_picker(stack: Stack, cookie: str) -> int:
    """The picker finds accounts of every division, by name, id and OU (a bench that
    timed empty answers would mean nothing); returns how many accounts were probed."""
    probes = [stack.org.accounts[i] for i in range(0, len(stack.org.accounts), 97)]
    with httpx.Client(base_url=stack.api, timeout=30, headers={"Cookie": cookie}) as client:
        for account in probes:
            for q in (account.name, account.id):
                found = client.get("/request/accounts", params={"q": q})
                assert f'data-account-id="{account.id}"' in found.text, (q, found.text[:300])
        leaf = probes[-1].ou_path
        found = client.get("/request/accounts", params={"q": leaf})
        assert found.text.count("data-account-id=") > 1, (leaf, found.text[:300])
    return len(probes)


def typing(name: str) -> list[str]:
    """What the picker is asked while `name` is typed, one keystroke at a time."""
    return [name[:n] for n in range(1, len(name) + 1)]


def submit_some(stack: Stack, token: str, n: int) -> list[str]:
    """`n` pending requests of the bench user (my requests' rows), their ids."""
    start = datetime.now(UTC) + timedelta(days=1)
    ids = []
    with httpx.Client(base_url=stack.api, timeout=30) as client:
        for i, account in enumerate(stack.org.accounts[:n]):
            body = {
                "account_id": account.id,
                "permission_set": stack.org.permission_sets[i % ELIGIBLE_PERMISSION_SETS],
                "start": (start + timedelta(minutes=i)).isoformat(),
                "duration_minutes": 60,
                "justification": f"BENCH-{i}: the portal bench's requests",
            }
            answer = client.post(
                "/v1/requests", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
    return ids


def run(stack: Stack, args: argparse.Namespace, work: Path) -> dict[str, vegeta.Attack]:
    cookie = f"elevate_session={sign_in(stack, BENCH_USER)}"
    probed = check_picker(stack, cookie)
    print(f"picker: {probed} accounts across the organisation found by name and id", flush=True)
    token = stack.token(BENCH_USER)
    request_id = submit_some(stack, token, 50)[0]
    account = stack.org.accounts[len(stack.org.accounts) // 2]
    queries = [*typing(account.name), account.id, account.ou_path, "nothing-matches-this"]
    api = stack.api

    def get(path: str) -> dict[str, Any]:
        return vegeta.target("GET", f"{api}{path}", "", Cookie=cookie)

    phases: dict[str, list[dict[str, Any]]] = {
        "healthz-before": [vegeta.target("GET", f"{api}/healthz", "")],
        "picker-typing": [get(f"/request/accounts?q={quote(q)}") for q in queries],
        "page-picker": [get("/request")],
        "page-request-form": [get(f"/request?account={account.id}")],
        "page-my-requests": [get("/requests")],
        "page-request": [get(f"/requests/{request_id}")],
        "page-request-panel": [get(f"/requests/{request_id}/panel")],
        "healthz-after": [vegeta.target("GET", f"{api}/healthz", "")],
    }
    vegeta.attack("warmup", phases["picker-typing"], work=work, clients=1, seconds=2, lazy=False)
    results = {}
    for name, targets in phases.items():
        attack = vegeta.attack(
            name, targets, work=work, clients=args.clients, seconds=args.seconds, lazy=False
        )
        print(f"{name}: {json.dumps(attack.summary())}", flush=True)
        results[name] = attack
    return results


def figures(attacks: dict[str, vegeta.Attack]) -> dict[str, Any]:
    base = (attacks["healthz-before"].p95_ms + attacks["healthz-after"].p95_ms) / 2
    bad = {n: a.non_2xx_share for n, a in attacks.items() if a.non_2xx_share > 0}
    assert not bad, f"answers other than 2xx (a broken run, not a figure): {bad}"
    out: dict[str, Any] = {"healthz_p95_ms": round(base, 2)}
    for name, a in attacks.items():
        if name.startswith("healthz"):
            continue
        out[name] = {
            "p50_ms": a.p50_ms,
            "p95_ms": a.p95_ms,
            "p99_ms": a.p99_ms,
            "p95_to_healthz_p95": round(a.p95_ms / base, 1),
        }
    picker = attacks["picker-typing"].p95_ms
    out["goal_picker_p95_ms"] = {"goal": PICKER_GOAL_P95_MS, "got": picker}
    out["goal_picker_p95_ms"]["met"] = picker <= PICKER_GOAL_P95_MS
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--permission-sets", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=1)
    args = parser.parse_args()
    vegeta.binary()  # built before the stack starts
    with tempfile.TemporaryDirectory(prefix="elevate-bench-portal-") as tmp:
        work = Path(tmp)
        stack = Stack(
            work,
            accounts=args.accounts,
            permission_sets=args.permission_sets,
            policy=everywhere_policy,
        )
        try:
            stack.start()
            print(f"stack up: {stack.seconds}, org seeding {stack.org.seconds}", flush=True)
            attacks = run(stack, args, work)
        finally:
            stack.stop()
    results = figures(attacks)
    results["eligible_accounts"] = args.accounts
    results["eligible_pairs"] = args.accounts * ELIGIBLE_PERMISSION_SETS
    results["clients"], results["seconds_per_phase"] = args.clients, args.seconds
    results["phases"] = {n: a.summary() for n, a in attacks.items()}
    OUT.mkdir(exist_ok=True)
    (OUT / "portal.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "phases"}, indent=2))


if __name__ == "__main__":
    main()
