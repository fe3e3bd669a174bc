"""`explain`: which rule matched and why, or why none did."""

from __future__ import annotations

import pytest
from elevate_core.policy import explain

from tests.unit.policy.org import ACCOUNTS, USERS, eval_policy

POLICY = eval_policy()


@pytest.mark.parametrize(
    ("user", "account", "permission_set", "break_glass", "rule", "reason"),
    [
        pytest.param(
            "alice",
            "payments-prod-eu",
            "AdministratorAccess",
            False,
            "sre-prod-admin",
            "account matched by ou Workloads/Prod",
            id="nested-ou",
        ),
        pytest.param(
            "mallory",
            "data-prod",
            "PowerUserAccess",
            False,
            "named-users",
            "applies to mallory via user mallory",
            id="user-principal",
        ),
        pytest.param(
            "erin",
            "data-prod",
            "PowerUserAccess",
            False,
            "named-users",
            "erin is not among users [mallory, u-oscar-id] (their groups: engineers)",
            id="user-principal-miss",
        ),
        pytest.param(
            "MALLORY",
            "data-prod",
            "PowerUserAccess",
            False,
            "named-users",
            "MALLORY is not among users [mallory, u-oscar-id]",
            id="user-principal-name-differing-by-case",
        ),
        pytest.param(
            "carol",
            "log-archive",
            "PowerUserAccess",
            False,
            "excluded-even-if-named",
            "account excluded by ou ou-ab12-security",
            id="exclusion",
        ),
        pytest.param(
            "carol",
            "management",
            "ReadOnlyAccess",
            False,
            "auditors-everywhere",
            "management account is covered only when named by id or name, not via '*'",
            id="management-via-star",
        ),
        pytest.param(
            "alice",
            "management",
            "AdministratorAccess",
            False,
            "infra-admins",
            "not via ou Infra",
            id="management-via-ou",
        ),
        pytest.param(
            "dave",
            "management",
            "ReadOnlyAccess",
            False,
            "admins-management",
            "account named by name management",
            id="management-named",
        ),
        pytest.param(
            "alice",
            "sandbox-alice",
            "ReadOnlyAccess",
            True,
            "engineers-sandbox",
            "not a break-glass rule",
            id="normal-rule-for-break-glass",
        ),
        pytest.param(
            "alice",
            "data-prod",
            "AdministratorAccess",
            False,
            "sre-break-glass",
            "break-glass rule: applies to break-glass requests only",
            id="bg-rule-for-normal",
        ),
        pytest.param(
            "alice",
            "data-prod",
            "DatabaseAdmin",
            False,
            "sre-prod-admin",
            "permission set DatabaseAdmin not in [AdministratorAccess, ReadOnlyAccess]",
            id="permission-set",
        ),
    ],
)
def test_trace_reasons(
    user: str, account: str, permission_set: str, break_glass: bool, rule: str, reason: str
) -> None:
    result = explain(
        POLICY, USERS[user], ACCOUNTS[account], permission_set, break_glass=break_glass
    )
    trace = next(t for t in result.traces if t.rule == rule)
    assert any(reason in r for r in trace.reasons), trace.reasons
    assert result.policy_version == POLICY.version
    assert len(result.traces) == len(POLICY.eligibility_rules)


def test_render_strictest_and_hint() -> None:
    overlap = explain(POLICY, USERS["alice"], ACCOUNTS["payments-prod"], "ReadOnlyAccess")
    text = overlap.render()
    assert text.splitlines()[0] == (
        "ELIGIBLE: alice -> ReadOnlyAccess on payments-prod (100000000002, in Workloads/Prod): "
        "rule 'prod-ro-strict'; approval 'two-leads' (2 approval(s) from sre-leads); max 1h; "
        "ticket required; ticket must match ^[A-Z]+-[0-9]+$ and OPS-.*"
    )
    assert (
        "strictest of 3 matching rules: engineers-workloads-ro, sre-prod-admin, prod-ro-strict"
    ) in text
    denied = explain(POLICY, USERS["alice"], ACCOUNTS["shared-services"], "AdministratorAccess")
    assert not denied.eligible
    assert denied.summary().startswith("NOT ELIGIBLE: alice -> AdministratorAccess")
    assert denied.hints == ("as a break-glass request this would be allowed by 'sre-break-glass'",)
