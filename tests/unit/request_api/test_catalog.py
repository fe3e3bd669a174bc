"""A user's sorted eligibility is computed once per policy index, and again as soon as the
index is a new one (the policy or the organisation changed) or the user's groups did."""

from __future__ import annotations

from dataclasses import replace

from elevate_core.policy import Evaluator
from elevate_request_api import catalog

from tests.unit.policy.org import ACCOUNTS, USERS, eval_policy


def test_kept_per_index_and_recomputed_when_the_index_or_the_groups_change() -> None:
    user = next(u for u in USERS.values() if u.groups)
    first = Evaluator(eval_policy(), ACCOUNTS.values())
    found = catalog._all_sorted(first, user)
    assert found, "the fixture user must be eligible for something"
    assert [k for k, _ in found] == sorted(k for k, _ in found)
    assert catalog._all_sorted(first, user) is found  # kept
    gone = found[0][1][0].id  # an account leaves the organisation
    fewer = Evaluator(eval_policy(), [a for a in ACCOUNTS.values() if a.id != gone])
    again = catalog._all_sorted(fewer, user)
    assert gone not in {account.id for _, (account, _item) in again}
    nobody = replace(user, groups=frozenset())
    assert catalog._all_sorted(fewer, nobody) != again
