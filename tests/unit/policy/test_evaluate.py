"""Table tests of eligibility: every path (bulk, single request, explain) must agree."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from elevate_core.directory.models import Account, OrgUnit, User
from elevate_core.policy import (
    Evaluator,
    approval_rule_for,
    evaluate_request,
    explain,
    is_standing,
    parse_policy,
)

from tests.unit.policy.org import ACCOUNTS, USERS, eval_policy

H = timedelta(hours=1)
POLICY = eval_policy()
EVALUATOR = Evaluator(POLICY, ACCOUNTS.values())

# user, account, permission set, break-glass -> matched rules, max duration, approval, ticket
CASES = [
    pytest.param(
        "erin",
        "sandbox-alice",
        "ReadOnlyAccess",
        False,
        ("engineers-sandbox",),
        8 * H,
        "auto",
        False,
        id="ou-match",
    ),
    pytest.param(
        "erin",
        "payments-prod-eu",
        "ReadOnlyAccess",
        False,
        ("engineers-workloads-ro",),
        4 * H,
        "one-lead",
        False,
        id="nested-ou-2-levels",
    ),
    pytest.param(
        "alice",
        "payments-prod-eu",
        "AdministratorAccess",
        False,
        ("sre-prod-admin",),
        4 * H,
        "one-lead",
        True,
        id="nested-ou-1-level",
    ),
    pytest.param(
        "erin",
        "payments-prod",
        "AdministratorAccess",
        False,
        None,
        None,
        None,
        None,
        id="group-not-in-rule",
    ),
    pytest.param(
        "alice",
        "payments-staging",
        "AdministratorAccess",
        False,
        None,
        None,
        None,
        None,
        id="sibling-ou-not-covered",
    ),
    pytest.param(
        "alice",
        "payments-prod",
        "ReadOnlyAccess",
        False,
        ("engineers-workloads-ro", "sre-prod-admin", "prod-ro-strict"),
        1 * H,
        "two-leads",
        True,
        id="overlap-three-rules-strictest",
    ),
    pytest.param(
        "alice",
        "data-prod",
        "ReadOnlyAccess",
        False,
        ("engineers-workloads-ro", "sre-prod-admin"),
        4 * H,
        "one-lead",
        True,
        id="overlap-ticket-from-one-rule",
    ),
    pytest.param(
        "alice",
        "sandbox-alice",
        "ReadOnlyAccess",
        False,
        ("engineers-sandbox",),
        8 * H,
        "auto",
        False,
        id="auto-approve-alone",
    ),
    pytest.param(
        "mallory",
        "data-prod",
        "PowerUserAccess",
        False,
        ("named-users",),
        2 * H,
        "one-lead",
        False,
        id="user-principal-exact-name",
    ),
    pytest.param(
        "MALLORY",
        "data-prod",
        "PowerUserAccess",
        False,
        None,
        None,
        None,
        None,
        id="user-principal-name-differing-by-case-is-someone-else",
    ),
    pytest.param(
        "oscar",
        "data-prod",
        "PowerUserAccess",
        False,
        ("named-users",),
        2 * H,
        "one-lead",
        False,
        id="user-principal-by-id",
    ),
    pytest.param(
        "erin",
        "data-prod",
        "PowerUserAccess",
        False,
        None,
        None,
        None,
        None,
        id="user-rule-not-for-others",
    ),
    pytest.param(
        "carol",
        "payments-prod",
        "ReadOnlyAccess",
        False,
        ("auditors-everywhere",),
        8 * H,
        "auto",
        False,
        id="star",
    ),
    pytest.param(
        "carol",
        "shared-services",
        "ReadOnlyAccess",
        False,
        None,
        None,
        None,
        None,
        id="star-excluded-by-name",
    ),
    pytest.param(
        "carol",
        "log-archive",
        "ReadOnlyAccess",
        False,
        None,
        None,
        None,
        None,
        id="star-excluded-by-ou",
    ),
    pytest.param(
        "carol",
        "log-archive",
        "PowerUserAccess",
        False,
        None,
        None,
        None,
        None,
        id="exclude-wins-over-name",
    ),
    pytest.param(
        "carol",
        "management",
        "ReadOnlyAccess",
        False,
        None,
        None,
        None,
        None,
        id="management-not-in-star",
    ),
    pytest.param(
        "alice",
        "management",
        "AdministratorAccess",
        False,
        None,
        None,
        None,
        None,
        id="management-not-in-its-ou",
    ),
    pytest.param(
        "alice",
        "infra-tools",
        "AdministratorAccess",
        False,
        ("infra-admins",),
        2 * H,
        "one-lead",
        False,
        id="management-ou-others-ok",
    ),
    pytest.param(
        "dave",
        "management",
        "ReadOnlyAccess",
        False,
        ("admins-management",),
        2 * H,
        "one-lead",
        False,
        id="management-named",
    ),
    pytest.param(
        "dave",
        "sandbox-shared",
        "ReadOnlyAccess",
        False,
        ("admins-management",),
        2 * H,
        "one-lead",
        False,
        id="named-and-star",
    ),
    pytest.param(
        "alice",
        "payments-prod",
        "AdministratorAccess",
        True,
        ("sre-break-glass",),
        1 * H,
        "break-glass",
        False,
        id="break-glass",
    ),
    pytest.param(
        "alice",
        "shared-services",
        "AdministratorAccess",
        True,
        ("sre-break-glass",),
        1 * H,
        "break-glass",
        False,
        id="break-glass-root-acct",
    ),
    pytest.param(
        "alice",
        "log-archive",
        "AdministratorAccess",
        True,
        None,
        None,
        None,
        None,
        id="break-glass-excluded",
    ),
    pytest.param(
        "alice",
        "management",
        "AdministratorAccess",
        True,
        None,
        None,
        None,
        None,
        id="break-glass-not-management",
    ),
    pytest.param(
        "erin",
        "payments-prod",
        "AdministratorAccess",
        True,
        None,
        None,
        None,
        None,
        id="break-glass-wrong-group",
    ),
    pytest.param(
        "alice",
        "sandbox-alice",
        "ReadOnlyAccess",
        True,
        None,
        None,
        None,
        None,
        id="break-glass-uses-only-bg-rules",
    ),
    pytest.param(
        "alice",
        "shared-services",
        "AdministratorAccess",
        False,
        None,
        None,
        None,
        None,
        id="bg-rule-ignored-for-normal-request",
    ),
]


@pytest.mark.parametrize(
    (
        "user",
        "account",
        "permission_set",
        "break_glass",
        "rules",
        "max_duration",
        "approval",
        "ticket",
    ),
    CASES,
)
def test_eligibility_table(
    user: str,
    account: str,
    permission_set: str,
    break_glass: bool,
    rules: tuple[str, ...] | None,
    max_duration: timedelta | None,
    approval: str | None,
    ticket: bool | None,
) -> None:
    who, where = USERS[user], ACCOUNTS[account]
    single = evaluate_request(POLICY, who, where, permission_set, break_glass=break_glass)
    indexed = EVALUATOR.terms(who, where.id, permission_set, break_glass=break_glass)
    bulk = EVALUATOR.eligibility(who, break_glass=break_glass).get(where.id, permission_set)
    why = explain(POLICY, who, where, permission_set, break_glass=break_glass)
    assert single == indexed == bulk == why.terms
    if rules is None:
        assert single is None
        assert not why.eligible
        assert why.matched_rules == ()
        assert (
            approval_rule_for(POLICY, who, where, permission_set, break_glass=break_glass) is None
        )
        return
    assert single is not None
    assert single.rules == rules == why.matched_rules
    assert single.max_duration == max_duration
    assert single.approval.name == approval
    assert single.ticket_required is ticket
    assert single.break_glass is break_glass
    assert single.policy_version == POLICY.version
    assert (
        approval_rule_for(POLICY, who, where, permission_set, break_glass=break_glass)
        == single.approval
    )


def test_strictest_combines_ticket_patterns_and_governing_rule() -> None:
    terms = evaluate_request(POLICY, USERS["alice"], ACCOUNTS["payments-prod"], "ReadOnlyAccess")
    assert terms is not None
    assert terms.rule == "prod-ro-strict"
    assert terms.ticket_patterns == ("^[A-Z]+-[0-9]+$", "OPS-.*")
    assert terms.problems(duration=timedelta(minutes=30), ticket="OPS-12") == ()
    assert terms.problems(duration=2 * H, ticket="OPS-12") == (
        "duration exceeds the maximum of 1h",
    )
    assert terms.problems(duration=H, ticket=None) == ("a ticket is required",)
    assert terms.problems(duration=H, ticket="ABC-1") == ("ticket 'ABC-1' does not match 'OPS-.*'",)
    assert terms.problems(duration=H, ticket="OPS-X") == (
        "ticket 'OPS-X' does not match '^[A-Z]+-[0-9]+$'",
    )


def test_break_glass_reviewers_default_to_auditors() -> None:
    terms = EVALUATOR.terms(
        USERS["alice"], ACCOUNTS["payments-prod"].id, "AdministratorAccess", break_glass=True
    )
    assert terms is not None
    assert terms.approval.auto_approve
    assert terms.review_groups == ("auditors",)


def test_tie_on_approvals_goes_to_first_rule_in_file() -> None:
    policy = parse_policy(b"""\
schema_version: 1
approval_rules:
  - {name: leads, approver_groups: [sre-leads]}
  - {name: security, approver_groups: [security]}
eligibility:
  - {name: a, principals: {groups: [sre]}, accounts: ["*"], permission_sets: [X],
     max_duration: 2h, approval: leads}
  - {name: b, principals: {groups: [sre]}, accounts: ["*"], permission_sets: [X],
     max_duration: 3h, approval: security}
""")
    terms = evaluate_request(policy, USERS["alice"], ACCOUNTS["data-prod"], "X")
    assert terms is not None
    assert (terms.rule, terms.approval.name, terms.max_duration) == ("a", "leads", 2 * H)


def test_bulk_eligibility_listing() -> None:
    result = EVALUATOR.eligibility(USERS["alice"])
    assert result.policy_version == POLICY.version
    assert result.permission_sets == ("AdministratorAccess", "ReadOnlyAccess")
    prod = {ACCOUNTS[n].id for n in ("payments-prod", "data-prod", "payments-prod-eu")}
    assert result.account_ids("AdministratorAccess") == prod | {ACCOUNTS["infra-tools"].id}
    workloads = prod | {ACCOUNTS["payments-staging"].id}
    sandbox = {ACCOUNTS["sandbox-alice"].id, ACCOUNTS["sandbox-shared"].id}
    assert result.account_ids("ReadOnlyAccess") == workloads | sandbox
    assert len(result) == 4 + 6 == len(list(result)) == len(result.pairs())
    assert (ACCOUNTS["data-prod"].id, "ReadOnlyAccess") in result
    assert (ACCOUNTS["management"].id, "AdministratorAccess") not in result
    listed = [(e.account.name, e.permission_set) for e in result]
    assert listed[0] == ("payments-prod", "AdministratorAccess")
    assert not EVALUATOR.eligibility(USERS["mallory"], break_glass=True)


def test_managed_scope_and_standing_assignments() -> None:
    scope = EVALUATOR.managed_scope()
    assert (ACCOUNTS["payments-prod"].id, "AdministratorAccess") in scope
    assert (ACCOUNTS["log-archive"].id, "AdministratorAccess") not in scope
    assert (ACCOUNTS["management"].id, "ReadOnlyAccess") in scope
    assert EVALUATOR.standing_assignments() == (
        (ACCOUNTS["log-archive"].id, "ReadOnlyAccess", "carol"),
        (ACCOUNTS["management"].id, "ReadOnlyAccess", "id-dave"),
    )
    assert is_standing(POLICY, ACCOUNTS["log-archive"], "ReadOnlyAccess", USERS["carol"])
    assert is_standing(POLICY, ACCOUNTS["management"], "ReadOnlyAccess", USERS["dave"])
    assert not is_standing(POLICY, ACCOUNTS["log-archive"], "AdministratorAccess", USERS["carol"])
    assert not is_standing(POLICY, ACCOUNTS["log-archive"], "ReadOnlyAccess", USERS["erin"])


def test_unresolved_selectors_are_reported() -> None:
    policy = parse_policy(
        b"""\
schema_version: 1
auditor_groups: [auditors]
approval_rules: [{name: auto, auto_approve: true}]
eligibility:
  - name: typo
    principals: {groups: [sre]}
    accounts: [{ou: Prod}, {name: payments-prd}, {id: "999999999999"}]
    permission_sets: [ReadOnlyAccess]
    max_duration: 1h
    approval: auto
""",
        source="p.yaml",
    )
    evaluator = Evaluator(policy, ACCOUNTS.values())
    assert [str(i) for i in evaluator.unresolved] == [
        "p.yaml:7: warning: eligibility[0].accounts[0]: no account in OU 'Prod' (OU paths start "
        "at the root, e.g. 'Workloads/Prod') in the organisation",
        "p.yaml:7: warning: eligibility[0].accounts[1]: no account named 'payments-prd' in the "
        "organisation",
        "p.yaml:7: warning: eligibility[0].accounts[2]: no account with id 999999999999 in the "
        "organisation",
    ]
    assert not evaluator.eligibility(USERS["alice"])


def _random_org(rng: random.Random, count: int) -> list[Account]:
    ous = [OrgUnit(f"ou-rand-{i:08d}", f"OU{i}") for i in range(12)]
    accounts = []
    for i in range(count):
        depth = rng.randint(0, 3)
        path = tuple(rng.sample(ous[:4], 1) + rng.sample(ous[4:], depth))[: depth + 1]
        accounts.append(
            Account(
                f"{i:012d}",
                f"acct-{i % (count - 5)}",
                path if depth else (),
                is_management=(i == 7),
            )
        )
    return accounts


def test_indexed_evaluation_matches_reference_on_random_organisations() -> None:
    rng = random.Random(20260101)
    policy = parse_policy(b"""\
schema_version: 1
auditor_groups: [g4]
approval_rules:
  - {name: auto, auto_approve: true}
  - {name: one, approver_groups: [leads]}
  - {name: two, approver_groups: [leads], required_approvals: 2}
eligibility:
  - {name: r1, principals: {groups: [g1]}, accounts: [{ou: OU0}], permission_sets: [A, B],
     max_duration: 4h, approval: one}
  - {name: r2, principals: {groups: [g1, g2]}, accounts: [{ou: OU0/OU5}, {name: acct-3}],
     permission_sets: [A], max_duration: 2h, approval: two, ticket_required: true}
  - {name: r3, principals: {groups: [g3], users: [u7]}, accounts: ["*", {id: "000000000007"}],
     exclude: [{ou: OU1}, {ou: ou-rand-00000006}], permission_sets: [B, C], max_duration: 8h,
     approval: auto}
  - {name: r4, principals: {groups: [g2]}, accounts: [{ou: OU2}, {ou: OU3/OU9}],
     exclude: [{name: acct-11}], permission_sets: [A, C], max_duration: 1h, approval: auto}
  - {name: r5, break_glass: true, principals: {groups: [g1]}, accounts: ["*"],
     exclude: [{ou: OU3}], permission_sets: [A], max_duration: 1h}
""")
    accounts = _random_org(rng, 300)
    evaluator = Evaluator(policy, accounts)
    groups = ["g1", "g2", "g3", "g4"]
    users = [
        User(f"u{i}", f"u{i}", groups=frozenset(rng.sample(groups, rng.randint(0, 3))))
        for i in range(10)
    ]
    checked = 0
    for user in users:
        for break_glass in (False, True):
            bulk = evaluator.eligibility(user, break_glass=break_glass)
            expected = set()
            for account in accounts:
                for ps in ("A", "B", "C", "D"):
                    ref = evaluate_request(policy, user, account, ps, break_glass=break_glass)
                    assert bulk.get(account.id, ps) == ref
                    assert evaluator.terms(user, account.id, ps, break_glass=break_glass) == ref
                    if ref is not None:
                        expected.add((account.id, ps))
                        checked += 1
            assert bulk.pairs() == expected
            assert len(bulk) == len(expected)
    assert checked > 500
