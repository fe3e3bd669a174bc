"""Identity Store users with their groups, cached per user name.

A lookup is GetUserId (by UserName) → DescribeUser → ListGroupMembershipsForMember; group
display names come from DescribeGroup, cached by group id for `group_ttl`. Users are
cached for `user_ttl`, unknown names for `negative_ttl`; concurrent lookups of one name
share one fetch. An expired entry is refetched inline and a stale user is never served:
group membership decides access.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from elevate_core.directory.errors import UserNotFoundError, call_aws, error_code
from elevate_core.directory.models import User

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_identitystore.type_defs import AlternateIdentifierTypeDef


def _unique_attribute(path: str, value: str) -> AlternateIdentifierTypeDef:
    # AttributeValue is a JSON document in the API model; AWS takes a plain string.
    document: Any = value
    return {"UniqueAttribute": {"AttributePath": path, "AttributeValue": document}}


@dataclass(frozen=True, slots=True)
class _UserRecord:
    user_id: str
    user_name: str
    email: str | None
    display_name: str | None
    group_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    user: User | None  # None: no such user
    fetched_at: float


class UserCache:
    def __init__(
        self,
        client: IdentityStoreClient,
        *,
        identity_store_id: Callable[[], Awaitable[str]],
        clock: Callable[[], float],
        user_ttl: float,
        negative_ttl: float,
        group_ttl: float,
        max_users: int,
    ) -> None:
        self._client = client
        self._store_id = identity_store_id
        self._clock = clock
        self._user_ttl = user_ttl
        self._negative_ttl = negative_ttl
        self._group_ttl = group_ttl
        self._max_users = max_users
        self._entries: dict[str, _Entry] = {}
        self._fetches: dict[str, asyncio.Task[_Entry]] = {}
        self._group_names: dict[str, tuple[str, float]] = {}

    async def get(self, user_name: str) -> User:
        entry = self._entries.get(user_name)
        if entry is None or not self._fresh(entry):
            task = self._fetches.get(user_name)
            if task is None:
                task = asyncio.create_task(self._fetch(user_name))
                self._fetches[user_name] = task
                task.add_done_callback(lambda done: self._forget(user_name, done))
            entry = await asyncio.shield(task)
        if entry.user is None:
            raise UserNotFoundError(user_name)
        return entry.user

    def invalidate(self, user_name: str) -> None:
        self._entries.pop(user_name, None)

    def _fresh(self, entry: _Entry) -> bool:
        ttl = self._user_ttl if entry.user is not None else self._negative_ttl
        return self._clock() - entry.fetched_at < ttl

    def _forget(self, user_name: str, task: asyncio.Task[_Entry]) -> None:
        if self._fetches.get(user_name) is task:
            del self._fetches[user_name]
        if not task.cancelled():
            task.exception()  # marked retrieved; the awaiting callers re-raise it

    async def _fetch(self, user_name: str) -> _Entry:
        store_id = await self._store_id()
        record = await call_aws(
            f"Identity Store lookup of {user_name!r}",
            lambda: self._read_user(store_id, user_name),
        )
        user: User | None = None
        if record is not None:
            groups = await self._group_display_names(store_id, record.group_ids)
            user = User(
                user_id=record.user_id,
                user_name=record.user_name,
                email=record.email,
                display_name=record.display_name,
                groups=frozenset(groups),
            )
        entry = _Entry(user=user, fetched_at=self._clock())
        self._entries.pop(user_name, None)  # re-insert: oldest first, for eviction
        self._entries[user_name] = entry
        while len(self._entries) > self._max_users:
            del self._entries[next(iter(self._entries))]
        return entry

    def _read_user(self, store_id: str, user_name: str) -> _UserRecord | None:
        try:
            user_id = self._client.get_user_id(
                IdentityStoreId=store_id,
                AlternateIdentifier=_unique_attribute("userName", user_name),
            )["UserId"]
            described = self._client.describe_user(IdentityStoreId=store_id, UserId=user_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return None
            raise
        emails = described.get("Emails", [])
        primary = next((e for e in emails if e.get("Primary")), emails[0] if emails else None)
        pager = self._client.get_paginator("list_group_memberships_for_member")
        group_ids = tuple(
            membership["GroupId"]
            for page in pager.paginate(IdentityStoreId=store_id, MemberId={"UserId": user_id})
            for membership in page["GroupMemberships"]
            if "GroupId" in membership
        )
        return _UserRecord(
            user_id=user_id,
            user_name=described.get("UserName", user_name),
            email=primary.get("Value") if primary else None,
            display_name=described.get("DisplayName"),
            group_ids=group_ids,
        )

    async def _group_display_names(self, store_id: str, group_ids: Iterable[str]) -> list[str]:
        now = self._clock()
        wanted = list(dict.fromkeys(group_ids))
        missing = [
            gid
            for gid in wanted
            if gid not in self._group_names or now - self._group_names[gid][1] >= self._group_ttl
        ]
        if missing:
            names = await call_aws(
                "Identity Store DescribeGroup", lambda: self._read_groups(store_id, missing)
            )
            fetched_at = self._clock()
            for gid in missing:
                if gid in names:
                    self._group_names[gid] = (names[gid], fetched_at)
                else:  # deleted since the membership listing
                    self._group_names.pop(gid, None)
        return [self._group_names[gid][0] for gid in wanted if gid in self._group_names]

    def _read_groups(self, store_id: str, group_ids: Iterable[str]) -> dict[str, str]:
        names: dict[str, str] = {}
        for gid in group_ids:
            try:
                group = self._client.describe_group(IdentityStoreId=store_id, GroupId=gid)
            except ClientError as error:
                if error_code(error) == "ResourceNotFoundException":
                    continue
                raise
            names[gid] = group.get("DisplayName", gid)
        return names


def read_group_members(
    client: IdentityStoreClient, store_id: str, group_names: Iterable[str]
) -> dict[str, list[str]]:
    """User names in each named group (blocking; unknown groups are left out)."""
    out: dict[str, list[str]] = {}
    for name in group_names:
        try:
            group_id = client.get_group_id(
                IdentityStoreId=store_id,
                AlternateIdentifier=_unique_attribute("displayName", name),
            )["GroupId"]
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                continue
            raise
        names: list[str] = []
        pages = client.get_paginator("list_group_memberships").paginate(
            IdentityStoreId=store_id, GroupId=group_id
        )
        for page in pages:
            for membership in page["GroupMemberships"]:
                user_id = membership.get("MemberId", {}).get("UserId")
                if user_id:
                    user = client.describe_user(IdentityStoreId=store_id, UserId=user_id)
                    names.append(user["UserName"])
        out[name] = names
    return out
