"""grant-worker's managed scope, asked before every grant is served: the pairs the policy
makes requestable, by permission set ARN, kept until the policy, the org or an ARN changes."""

from __future__ import annotations

from typing import cast

from elevate_core.access import AccessControl
from elevate_core.directory.errors import PermissionSetNotFoundError
from elevate_core.directory.models import PermissionSet
from elevate_core.policy import Evaluator
from elevate_grant_worker.main import policy_scope

from tests.unit.policy.org import ACCOUNTS, eval_policy


class FakeAccess:
    def __init__(self) -> None:
        self.index = Evaluator(eval_policy(), ACCOUNTS.values())
        self.arns = {"AdministratorAccess": "arn:admin", "ReadOnlyAccess": "arn:ro"}
        self.directory = self

    async def evaluator(self) -> Evaluator:
        return self.index

    async def get_permission_set(self, name: str) -> PermissionSet:
        if name not in self.arns:
            raise PermissionSetNotFoundError(name)
        return PermissionSet(name, self.arns[name])


async def test_scope_by_arn_follows_the_directory_and_the_policy() -> None:
    access = FakeAccess()
    scope = policy_scope(cast(AccessControl, access))
    first = await scope()
    prod, mgmt = ACCOUNTS["payments-prod"].id, ACCOUNTS["management"].id
    assert (prod, "arn:admin") in first
    assert (mgmt, "arn:ro") in first  # a rule names the management account
    assert (mgmt, "arn:admin") not in first  # only an OU rule reaches it: not managed
    assert not any(arn == "" for _, arn in first)  # PowerUserAccess is unknown: left out
    assert await scope() is first  # nothing changed: not recomputed

    access.arns["PowerUserAccess"] = "arn:power"
    assert (ACCOUNTS["data-prod"].id, "arn:power") in await scope()
    access.arns["ReadOnlyAccess"] = "arn:ro-2"
    changed = await scope()
    assert (mgmt, "arn:ro-2") in changed
    assert (mgmt, "arn:ro") not in changed

    access.index = Evaluator(eval_policy(), [a for a in ACCOUNTS.values() if a.name != "data-prod"])
    assert (ACCOUNTS["data-prod"].id, "arn:power") not in await scope()
