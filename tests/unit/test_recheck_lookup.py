"""The re-check's directory look-up (elevate_core.recheck.look_up): the user is read past the
cache, then the account and the permission set are asked side by side (a decision waits for
one of them, not their sum), and only "no such thing" is an answer — a directory that cannot
answer is transient, whichever look-up it failed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
    UserNotFoundError,
)
from elevate_core.directory.models import Account, PermissionSet, User
from elevate_core.policy.recheck import RequestFacts
from elevate_core.recheck import DirectoryUnavailableError, look_up

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
FACTS = RequestFacts(
    user_name="alice",
    user_id="u-1",
    account_id="111111111111",
    permission_set_name="ReadOnlyAccess",
    permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
    start=NOW,
    end=NOW + timedelta(hours=1),
    ticket=None,
    break_glass=False,
    submitted_at=NOW,
)
ALICE = User(user_id="u-1", user_name="alice", groups=frozenset({"engineers"}))
ACCOUNT = Account(id="111111111111", name="sandbox")
PERMISSION_SET = PermissionSet(name="ReadOnlyAccess", arn=FACTS.permission_set_arn)


class Directory:
    """The user answers at once; the account and permission set each wait until both have
    been asked (a sequential caller would wait for ever: the test's timeout fails it), then
    answer or raise what they were given."""

    def __init__(self, **failures: Exception) -> None:
        self.failures = failures
        self.asked: list[str] = []
        self.invalidated: list[str] = []
        self.expected_ids: list[str | None] = []
        self._all_asked = asyncio.Event()

    async def _answer(self, what: str, value: object) -> object:
        self.asked.append(what)
        if what != "user":
            if self.asked.count("account") + self.asked.count("permission_set") == 2:
                self._all_asked.set()
            await asyncio.wait_for(self._all_asked.wait(), 5)
        if what in self.failures:
            raise self.failures[what]
        return value

    async def get_user(self, user_name: str, *, expected_id: str | None = None) -> User:
        assert self.invalidated == [user_name], "the user must be read past the cache"
        self.expected_ids.append(expected_id)
        answer = await self._answer("user", ALICE)
        assert isinstance(answer, User)
        return answer

    async def get_account(self, account_id: str) -> Account:
        answer = await self._answer("account", ACCOUNT)
        assert isinstance(answer, Account)
        return answer

    async def get_permission_set(self, name: str) -> PermissionSet:
        answer = await self._answer("permission_set", PERMISSION_SET)
        assert isinstance(answer, PermissionSet)
        return answer

    def invalidate_user(self, user_name: str) -> None:
        self.invalidated.append(user_name)


async def test_the_user_first_then_account_and_permission_set_side_by_side() -> None:
    directory = Directory()
    found = await look_up(directory, FACTS)
    assert directory.asked[0] == "user"
    assert sorted(directory.asked[1:]) == ["account", "permission_set"]
    assert (found.user, found.account, found.permission_set) == (ALICE, ACCOUNT, PERMISSION_SET)


async def test_the_user_is_read_with_the_id_the_request_names() -> None:
    """The directory may then skip GetUserId (tests/integration/test_directory.py)."""
    directory = Directory()
    await look_up(directory, FACTS)
    assert directory.expected_ids == [FACTS.user_id]


async def test_a_missing_account_or_permission_set_is_an_answer() -> None:
    directory = Directory(
        account=AccountNotFoundError("no such account"),
        permission_set=PermissionSetNotFoundError("no such permission set"),
    )
    found = await look_up(directory, FACTS)
    assert (found.user, found.account, found.permission_set) == (ALICE, None, None)


async def test_a_missing_user_leaves_nothing_else_to_ask() -> None:
    directory = Directory(user=UserNotFoundError("no such user"))
    found = await look_up(directory, FACTS)
    assert (found.user, found.account, found.permission_set) == (None, None, None)
    assert directory.asked == ["user"]


@pytest.mark.parametrize("which", ["user", "account", "permission_set"])
async def test_a_directory_that_cannot_answer_is_transient_whichever_look_up(which: str) -> None:
    failing = Directory(**{which: DirectoryError("throttled", retryable=True)})
    with pytest.raises(DirectoryUnavailableError):
        await look_up(failing, FACTS)
