"""Policy evaluation speed against a 5,000-account organisation, next to one AWS call.

    uv run python bench/policy.py

Builds an organisation in memory (directory models, nested OUs), a realistic policy,
and times a user's whole eligibility from the cache (the `Evaluator`). As a baseline
it starts moto's ThreadedMotoServer on a free port and times boto3
`organizations.describe_organization` round trips over real HTTP. Prints figures only;
nothing here asserts a time.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from elevate_core.directory.models import Account, OrgUnit, User
from elevate_core.policy import (
    Eligibility,
    Evaluator,
    Policy,
    evaluate_request,
    explain,
    parse_policy,
)

# Never reach a real AWS account from a benchmark, whatever the shell holds.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
)
for _name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)

ACCOUNTS = 5_000
ENVS = ("Prod", "NonProd", "Dev")
BUSINESS_UNITS = 20
TEAMS = 4


def build_organisation() -> list[Account]:
    """Root / Workloads / {Prod,NonProd,Dev} / BU<n> / Team<n>, plus Sandbox, Infrastructure,
    Security, Suspended, and the management account at the root."""
    counter = 0

    def ou(name: str) -> OrgUnit:
        nonlocal counter
        counter += 1
        return OrgUnit(f"ou-root-{counter:08x}", name)

    root = OrgUnit("r-root", "Root")
    workloads = ou("Workloads")
    leaves: list[tuple[OrgUnit, ...]] = []
    for env in ENVS:
        env_ou = ou(env)
        for bu in range(BUSINESS_UNITS):
            bu_ou = ou(f"BU{bu}")
            leaves.extend((root, workloads, env_ou, bu_ou, ou(f"Team{t}")) for t in range(TEAMS))
    sandbox, infra, security, suspended = (
        ou("Sandbox"),
        ou("Infrastructure"),
        ou("Security"),
        ou("Suspended"),
    )
    accounts = [Account("000000000001", "management", (root,), is_management=True)]
    plan: list[tuple[int, Callable[[int], tuple[OrgUnit, ...]]]] = [
        (4_000, lambda i: leaves[i % len(leaves)]),
        (800, lambda i: (root, sandbox)),
        (150, lambda i: (root, infra)),
        (20, lambda i: (root, security)),
        (ACCOUNTS - 1 - 4_000 - 800 - 150 - 20, lambda i: (root, suspended)),
    ]
    for count, where in plan:
        for i in range(count):
            number = len(accounts) + 1
            path = where(i)
            accounts.append(Account(f"{number:012d}", f"{path[-1].name.lower()}-{number}", path))
    return accounts


_HEADER = (
    "schema_version: 1",
    "auditor_groups: [auditors]",
    "admin_groups: [elevate-admins]",
    "approval_rules:",
    "  - {name: auto, auto_approve: true}",
    "  - {name: one-lead, approver_groups: [sre-leads], required_approvals: 1}",
    "  - {name: two-leads, approver_groups: [sre-leads, security], required_approvals: 2}",
    "eligibility:",
)
_TICKET = ', ticket_required: true, ticket_pattern: "^[A-Z]+-[0-9]+$"'


def _rule(
    name: str,
    groups: str,
    accounts: str,
    sets: str,
    duration: str,
    approval: str,
    extra: str = "",
) -> str:
    return (
        f"  - {{name: {name}, principals: {{groups: [{groups}]}}, accounts: [{accounts}], "
        f"permission_sets: [{sets}], max_duration: {duration}, approval: {approval}{extra}}}"
    )


def _business_unit_rules(bu: int) -> list[str]:
    """A unit's developers read all its accounts and power-use Dev; its leads admin Prod."""
    refs = ", ".join(f"{{ou: Workloads/{env}/BU{bu}}}" for env in ENVS)
    devs, leads = f"bu{bu}-devs", f"bu{bu}-leads"
    return [
        _rule(f"bu{bu}-read", devs, refs, "ReadOnlyAccess", "8h", "auto"),
        _rule(
            f"bu{bu}-dev-power",
            devs,
            f"{{ou: Workloads/Dev/BU{bu}}}",
            "PowerUserAccess",
            "8h",
            "auto",
        ),
        _rule(
            f"bu{bu}-prod-admin",
            leads,
            f"{{ou: Workloads/Prod/BU{bu}}}",
            "AdministratorAccess",
            "2h",
            "one-lead",
            _TICKET,
        ),
    ]


def _organisation_wide_rules() -> list[str]:
    """Engineers, SRE, auditors and break-glass, across business units."""
    return [
        _rule(
            "engineers-workloads-read",
            "engineers",
            "{ou: Workloads}",
            "ReadOnlyAccess",
            "4h",
            "one-lead",
        ),
        _rule(
            "engineers-sandbox",
            "engineers",
            "{ou: Sandbox}",
            "ReadOnlyAccess, PowerUserAccess",
            "8h",
            "auto",
        ),
        _rule(
            "sre-prod-admin",
            "sre",
            "{ou: Workloads/Prod}",
            "AdministratorAccess, ReadOnlyAccess",
            "4h",
            "one-lead",
            _TICKET,
        ),
        _rule(
            "sre-prod-db",
            "sre",
            "{ou: Workloads/Prod}",
            "DatabaseAdmin",
            "2h",
            "two-leads",
            _TICKET,
        ),
        _rule("sre-infra", "sre", "{ou: Infrastructure}", "AdministratorAccess", "4h", "one-lead"),
        '  - {name: auditors-read, principals: {groups: [auditors]}, accounts: ["*"], '
        "exclude: [{ou: Security}, {ou: Suspended}], permission_sets: [ReadOnlyAccess], "
        "max_duration: 8h, approval: auto}",
        "  - {name: sre-break-glass, break_glass: true, principals: {groups: [sre]}, "
        'accounts: ["*"], exclude: [{ou: Security}], permission_sets: [AdministratorAccess], '
        "max_duration: 1h}",
    ]


def build_policy_yaml() -> str:
    lines = list(_HEADER)
    for bu in range(BUSINESS_UNITS):
        lines += _business_unit_rules(bu)
    lines += _organisation_wide_rules()
    return "\n".join(lines) + "\n"


def time_us(fn: Callable[[], object], iterations: int) -> list[float]:
    for _ in range(min(50, iterations)):
        fn()
    samples = []
    for _ in range(iterations):
        started = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - started) / 1_000)
    return samples


def p99(samples: Iterable[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def report(label: str, samples: list[float]) -> float:
    median = statistics.median(samples)
    print(f"  {label:<52} median {median:>10.1f} us   p99 {p99(samples):>10.1f} us")
    return median


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def aws_round_trip_us(calls: int) -> list[float]:
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        client = boto3.client(
            "organizations", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_organization(FeatureSet="ALL")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        return time_us(client.describe_organization, calls)
    finally:
        server.stop()


ALICE = User(
    "id-alice",
    "alice",
    groups=frozenset({"engineers", "sre", "bu3-devs", "bu7-devs", "bu7-leads", "platform"}),
)


def _describe(
    accounts: list[Account], policy: Policy, eligibility: Eligibility, build_ms: float
) -> None:
    ous = {ou.id for a in accounts for ou in a.ou_path}
    print(
        f"organisation: {len(accounts)} accounts in {len(ous)} OUs (depth up to "
        f"{max(len(a.ou_path) for a in accounts) - 1} below the root); policy: "
        f"{len(policy.eligibility_rules)} eligibility rules, version {policy.version}"
    )
    print(
        f"user alice: {len(ALICE.groups)} groups -> {len(eligibility)} requestable "
        f"(account, permission set) pairs over {len(eligibility.permission_sets)} permission "
        f"sets; index built once per policy/directory change in {build_ms:.1f} ms"
    )


def _prod_account(accounts: list[Account], evaluator: Evaluator, policy: Policy) -> Account:
    """A Prod account of Team0, checked to be evaluated alike with and without the index."""
    target = next(
        a
        for a in accounts
        if a.ou_path[-1].name == "Team0" and "Prod" in {o.name for o in a.ou_path}
    )
    sanity = evaluate_request(policy, ALICE, target, "ReadOnlyAccess")
    assert sanity == evaluator.eligibility(ALICE).get(target.id, "ReadOnlyAccess")
    assert sanity is not None
    assert sanity.max_duration == timedelta(hours=4)
    return target


def _time_evaluation(evaluator: Evaluator, policy: Policy, target: Account) -> float:
    """Prints each evaluation's timing; returns the median of a user's whole eligibility."""
    user = ALICE
    entries = len(evaluator.eligibility(user))
    print("policy evaluation (from the in-memory cache):")
    whole = report(
        "eligibility(user): everything alice may request",
        time_us(lambda: evaluator.eligibility(user), 3_000),
    )
    report(
        "eligibility(user) + get(account, permission set)",
        time_us(lambda: evaluator.eligibility(user).get(target.id, "ReadOnlyAccess"), 3_000),
    )
    report(
        "terms(user, account, permission set): one request",
        time_us(lambda: evaluator.terms(user, target.id, "AdministratorAccess"), 3_000),
    )
    report(
        "evaluate_request without the index (pure, one account)",
        time_us(lambda: evaluate_request(policy, user, target, "ReadOnlyAccess"), 2_000),
    )
    report(
        "explain (one account, every rule traced)",
        time_us(lambda: explain(policy, user, target, "ReadOnlyAccess"), 500),
    )
    report(
        f"eligibility(user) listed in full ({entries} entries)",
        time_us(lambda: list(evaluator.eligibility(user)), 30),
    )
    return whole


def main() -> int:
    started = time.perf_counter()
    accounts = build_organisation()
    policy = parse_policy(build_policy_yaml().encode(), source="bench-policy.yaml")
    build_start = time.perf_counter()
    evaluator = Evaluator(policy, accounts)
    build_ms = (time.perf_counter() - build_start) * 1000
    _describe(accounts, policy, evaluator.eligibility(ALICE), build_ms)
    target = _prod_account(accounts, evaluator, policy)
    whole = _time_evaluation(evaluator, policy, target)

    print("baseline: one AWS-style call over HTTP (moto ThreadedMotoServer, boto3):")
    aws = report("organizations.describe_organization round trip", aws_round_trip_us(100))
    print(
        f"ratio: one AWS call takes {aws / whole:,.0f}x the time of a user's whole "
        f"eligibility ({whole:.1f} us vs {aws:.1f} us, medians)"
    )
    print(f"total bench time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
