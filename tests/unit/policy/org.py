"""A small organisation, its people, and a policy exercising every matching rule."""

from __future__ import annotations

from elevate_core.directory.models import Account, OrgUnit, User
from elevate_core.policy import Policy, parse_policy

ROOT = OrgUnit("r-ab12", "Root")
WORKLOADS = OrgUnit("ou-ab12-workload", "Workloads")
PROD = OrgUnit("ou-ab12-prod0001", "Prod")
EU = OrgUnit("ou-ab12-prodeu01", "EU")
NONPROD = OrgUnit("ou-ab12-nonprod1", "NonProd")
SANDBOX = OrgUnit("ou-ab12-sandbox1", "Sandbox")
SECURITY = OrgUnit("ou-ab12-security", "Security")
INFRA = OrgUnit("ou-ab12-infra001", "Infra")


def _account(number: int, name: str, *path: OrgUnit, management: bool = False) -> Account:
    return Account(f"{number:012d}", name, (ROOT, *path), management)


ACCOUNTS: dict[str, Account] = {
    a.name: a
    for a in (
        _account(100000000001, "management", INFRA, management=True),
        _account(100000000002, "payments-prod", WORKLOADS, PROD),
        _account(222222222222, "data-prod", WORKLOADS, PROD),
        _account(100000000004, "payments-prod-eu", WORKLOADS, PROD, EU),
        _account(100000000005, "payments-staging", WORKLOADS, NONPROD),
        _account(100000000006, "sandbox-alice", SANDBOX),
        _account(100000000007, "sandbox-shared", SANDBOX),
        _account(100000000008, "log-archive", SECURITY),
        _account(100000000009, "security-tooling", SECURITY),
        _account(100000000010, "shared-services"),
        _account(100000000011, "infra-tools", INFRA),
    )
}


def _user(name: str, *groups: str, user_id: str | None = None) -> User:
    return User(
        user_id or f"id-{name}", name, f"{name}@example.com", name.title(), frozenset(groups)
    )


USERS: dict[str, User] = {
    "alice": _user("alice", "engineers", "sre"),
    "erin": _user("erin", "engineers"),
    "bob": _user("bob", "sre-leads"),
    "frank": _user("frank", "sre-leads"),
    "grace": _user("grace", "sre-leads"),
    "carol": _user("carol", "auditors"),
    "dave": _user("dave", "elevate-admins"),
    "mallory": _user("mallory"),
    # Another user whose name differs from mallory's only by case: somebody else.
    "MALLORY": _user("MALLORY"),
    "oscar": _user("oscar", user_id="u-oscar-id"),
    # bob in two roles at once: a lead who may also request as sre.
    "bob-sre": _user("bob", "sre-leads", "sre", user_id="id-bob"),
}

EVAL_POLICY = """\
schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - {name: auto, auto_approve: true}
  - {name: one-lead, approver_groups: [sre-leads], required_approvals: 1}
  - name: two-leads
    approver_groups: [sre-leads]
    required_approvals: 2
    pending_timeout: 2h
eligibility:
  - name: engineers-sandbox
    principals: {groups: [engineers]}
    accounts: [{ou: Sandbox}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 8h
    approval: auto
  - name: engineers-workloads-ro
    principals: {groups: [engineers]}
    accounts: [{ou: Workloads}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 4h
    approval: one-lead
  - name: sre-prod-admin
    principals: {groups: [sre]}
    accounts: [{ou: Workloads/Prod}]
    permission_sets: [AdministratorAccess, ReadOnlyAccess]
    max_duration: 4h
    approval: one-lead
    ticket_required: true
    ticket_pattern: "^[A-Z]+-[0-9]+$"
  - name: prod-ro-strict
    principals: {groups: [sre]}
    accounts: [{name: payments-prod}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: two-leads
    ticket_required: true
    ticket_pattern: "OPS-.*"
  - name: named-users
    principals: {users: [mallory, u-oscar-id]}
    accounts: [{id: "222222222222"}]
    permission_sets: [PowerUserAccess]
    max_duration: 2h
    approval: one-lead
  - name: auditors-everywhere
    principals: {groups: [auditors]}
    accounts: ["*"]
    exclude: [{ou: Security}, {name: shared-services}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 8h
    approval: auto
  - name: excluded-even-if-named
    principals: {groups: [auditors]}
    accounts: [{name: log-archive}]
    exclude: [{ou: ou-ab12-security}]
    permission_sets: [PowerUserAccess]
    max_duration: 1h
    approval: one-lead
  - name: admins-management
    principals: {groups: [elevate-admins]}
    accounts: ["*", {name: management}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 2h
    approval: one-lead
  - name: infra-admins
    principals: {groups: [sre]}
    accounts: [{ou: Infra}]
    permission_sets: [AdministratorAccess]
    max_duration: 2h
    approval: one-lead
  - name: sre-break-glass
    break_glass: true
    principals: {groups: [sre]}
    accounts: ["*"]
    exclude: [{ou: Security}]
    permission_sets: [AdministratorAccess]
    max_duration: 1h
standing_assignments:
  - {user: carol, account: {name: log-archive}, permission_set: ReadOnlyAccess}
  - {user: id-dave, account: {id: "100000000001"}, permission_set: ReadOnlyAccess}
"""


def eval_policy() -> Policy:
    return parse_policy(EVAL_POLICY.encode(), source="eval.yaml")
