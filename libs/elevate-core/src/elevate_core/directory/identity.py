"""Identity Store users with their groups, cached per lookup key.

A user is found by a `UserKey`: an `ExternalId` of an issuer (how SCIM-provisioned users
are bound to their identity provider's immutable subject) or a unique attribute
(`userName`, `emails.value`). A lookup is GetUserId, then DescribeUser beside
ListGroupMembershipsForMember (only the last two when the caller expects an id that still
holds: `_read_user`); group display names come from DescribeGroup, cached by group
id for `group_ttl`. Users are cached for `user_ttl`, unknown keys for `negative_ttl`;
concurrent lookups of one key share one fetch. An expired entry is refetched inline and a
stale user is never served: group membership decides access.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from elevate_core.directory.errors import (
    DirectoryError,
    UserNotFoundError,
    both,
    call_aws,
    error_code,
)
from elevate_core.directory.models import PersonKey, User

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_identitystore.type_defs import AlternateIdentifierTypeDef


def _unique_attribute(path: str, value: str) -> AlternateIdentifierTypeDef:
    # AttributeValue is a JSON document in the API model; AWS takes a plain string.
    document: Any = value
    return {"UniqueAttribute": {"AttributePath": path, "AttributeValue": document}}


EXTERNAL_ID = "externalId"
# Keys the Identity Store holds for one user at most (emails need not be unique).
_UNIQUE_KEYS = frozenset({"userName", EXTERNAL_ID})
ENTERPRISE = "aws:identitystore:enterprise"  # DescribeUser's extension with employeeNumber
UNIQUE_ATTRIBUTES = frozenset({"userName", "emails.value"})  # GetUserId's only valid paths


@dataclass(frozen=True, slots=True)
class UserKey:
    """How one Identity Store user is found: `attribute` is `externalId` (then `issuer` is
    the ExternalId's Issuer) or a unique attribute path."""

    attribute: str
    value: str
    issuer: str = ""

    @classmethod
    def user_name(cls, name: str) -> UserKey:
        return cls("userName", name)

    def alternate_identifier(self) -> AlternateIdentifierTypeDef:
        if self.attribute == EXTERNAL_ID:
            return {"ExternalId": {"Issuer": self.issuer, "Id": self.value}}
        return _unique_attribute(self.attribute, self.value)

    def matches(self, described: Mapping[str, Any]) -> bool:
        """The described user really carries this key (checked again after GetUserId)."""
        if self.attribute == EXTERNAL_ID:
            wanted = {"Issuer": self.issuer, "Id": self.value}
            return any(dict(e) == wanted for e in described.get("ExternalIds", []))
        if self.attribute == "userName":
            return bool(described.get("UserName") == self.value)
        return any(e.get("Value") == self.value for e in described.get("Emails", []))

    def __str__(self) -> str:
        if self.attribute == EXTERNAL_ID:
            return f"externalId {self.value!r} of {self.issuer!r}"
        return f"{self.attribute} {self.value!r}"


def _primary_email(described: Mapping[str, Any]) -> str | None:
    emails = described.get("Emails", [])
    primary = next((e for e in emails if e.get("Primary")), emails[0] if emails else None)
    value = primary.get("Value") if primary else None
    return value if isinstance(value, str) else None


def person_key_of(described: Mapping[str, Any], kind: PersonKey) -> str | None:
    """The tagged person key of a DescribeUser answer ("email:ann@example.com"), or None
    when the user has no such attribute (then only the user id identifies them)."""
    if kind == "employee_number":
        extension = (described.get("Extensions") or {}).get(ENTERPRISE)
        value = extension.get("employeeNumber") if isinstance(extension, Mapping) else None
    else:
        value = _primary_email(described)
    if not isinstance(value, str) or not value.strip():
        return None
    # Lower-cased: treating two accounts as one person only ever refuses a decision.
    return f"{kind}:{value.strip().lower()}"


@dataclass(frozen=True, slots=True)
class _UserRecord:
    user_id: str
    user_name: str
    email: str | None
    display_name: str | None
    group_ids: tuple[str, ...]
    person_key: str | None


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
        person_key: PersonKey = "email",
    ) -> None:
        self._client = client
        self._person_key: PersonKey = person_key
        self._store_id = identity_store_id
        self._clock = clock
        self._user_ttl = user_ttl
        self._negative_ttl = negative_ttl
        self._group_ttl = group_ttl
        self._max_users = max_users
        self._entries: dict[UserKey, _Entry] = {}
        self._fetches: dict[UserKey, asyncio.Task[_Entry]] = {}
        self._group_names: dict[str, tuple[str, float]] = {}

    async def get(self, key: UserKey, *, expected_id: str | None = None) -> User:
        """The user found by `key`. `expected_id`, the id the caller believes the user has
        (a re-check has it from the request), lets a fresh read skip GetUserId when the
        user with that id carries the key (`_read_user`); the answer is the same."""
        entry = self._entries.get(key)
        if entry is None or not self._fresh(entry):
            task = self._fetches.get(key)
            if task is None:
                task = asyncio.create_task(self._fetch(key, expected_id))
                self._fetches[key] = task
                task.add_done_callback(lambda done: self._forget(key, done))
            entry = await asyncio.shield(task)
        if entry.user is None:
            raise UserNotFoundError(key.value if key.attribute == "userName" else str(key))
        return entry.user

    def invalidate(self, user_name: str) -> None:
        """Forget every cached lookup that found (or looked for) this user name."""
        for key, entry in list(self._entries.items()):
            found = entry.user.user_name if entry.user is not None else None
            if key == UserKey.user_name(user_name) or found == user_name:
                del self._entries[key]

    def _fresh(self, entry: _Entry) -> bool:
        ttl = self._user_ttl if entry.user is not None else self._negative_ttl
        return self._clock() - entry.fetched_at < ttl

    def _forget(self, key: UserKey, task: asyncio.Task[_Entry]) -> None:
        if self._fetches.get(key) is task:
            del self._fetches[key]
        if not task.cancelled():
            task.exception()  # marked retrieved; the awaiting callers re-raise it

    async def _fetch(self, key: UserKey, expected_id: str | None) -> _Entry:
        store_id = await self._store_id()
        record = await self._read_user(
            store_id, key, f"Identity Store lookup of {key}", expected_id
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
                person_key=record.person_key,
            )
        entry = _Entry(user=user, fetched_at=self._clock())
        self._entries.pop(key, None)  # re-insert: oldest first, for eviction
        self._entries[key] = entry
        while len(self._entries) > self._max_users:
            del self._entries[next(iter(self._entries))]
        return entry

    async def _read_user(
        self, store_id: str, key: UserKey, what: str, expected_id: str | None = None
    ) -> _UserRecord | None:
        """GetUserId, then DescribeUser beside ListGroupMembershipsForMember: both need only
        the user id, and a re-check waits for all three.

        With an expected id and a key the store keeps unique (a UserName, an ExternalId),
        the two reads go out for that id at once: if the user they describe carries the
        key, it is the one user GetUserId would have found, and that round trip is saved.
        Anything else — no such id, the key now on someone else, an id AWS refuses —
        falls back to the lookup by key, so a re-check's verdict is unchanged."""
        if expected_id and key.attribute in _UNIQUE_KEYS:
            try:
                known = await self._read_id(store_id, key, expected_id, what)
            except DirectoryError as exc:
                if exc.retryable:
                    raise
                known = None
            if known is not None:
                return known
        user_id = await call_aws(what, lambda: self._user_id(store_id, key))
        if user_id is None:
            return None
        return await self._read_id(store_id, key, user_id, what)

    async def _read_id(
        self, store_id: str, key: UserKey, user_id: str, what: str
    ) -> _UserRecord | None:
        """The user with this id, if they carry `key`."""
        described, group_ids = await both(
            call_aws(what, lambda: self._describe(store_id, user_id)),
            call_aws(what, lambda: self._group_ids(store_id, user_id)),
        )
        user_name = described.get("UserName") if described is not None else None
        if described is None or not user_name or not key.matches(described):
            # A user who does not carry the key they were found by is nobody's identity.
            return None
        return _UserRecord(
            user_id=user_id,
            user_name=user_name,
            email=_primary_email(described),
            display_name=described.get("DisplayName"),
            group_ids=group_ids,
            person_key=person_key_of(described, self._person_key),
        )

    def _user_id(self, store_id: str, key: UserKey) -> str | None:
        try:
            return self._client.get_user_id(
                IdentityStoreId=store_id, AlternateIdentifier=key.alternate_identifier()
            )["UserId"]
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return None
            raise

    def _group_ids(self, store_id: str, user_id: str) -> tuple[str, ...]:
        pager = self._client.get_paginator("list_group_memberships_for_member")
        try:
            return tuple(
                membership["GroupId"]
                for page in pager.paginate(IdentityStoreId=store_id, MemberId={"UserId": user_id})
                for membership in page["GroupMemberships"]
                if "GroupId" in membership
            )
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return ()  # deleted since GetUserId: DescribeUser, beside this, says so
            raise

    def _describe(self, store_id: str, user_id: str) -> Mapping[str, Any] | None:
        try:
            if self._person_key == "employee_number":  # only then: not every store has it
                return self._client.describe_user(
                    IdentityStoreId=store_id, UserId=user_id, Extensions=[ENTERPRISE]
                )
            return self._client.describe_user(IdentityStoreId=store_id, UserId=user_id)
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return None  # deleted since GetUserId
            raise

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


def read_user_id(client: IdentityStoreClient, store_id: str, entry: str) -> str | None:
    """The user id of the user whose user name is exactly `entry`, else of the user whose
    id it is; None: neither (blocking)."""
    try:
        user_id = client.get_user_id(
            IdentityStoreId=store_id, AlternateIdentifier=_unique_attribute("userName", entry)
        )["UserId"]
        if client.describe_user(IdentityStoreId=store_id, UserId=user_id).get("UserName") == entry:
            return user_id
    except ClientError as error:
        if error_code(error) != "ResourceNotFoundException":
            raise
    try:
        client.describe_user(IdentityStoreId=store_id, UserId=entry)
    except ClientError as error:
        if error_code(error) in ("ResourceNotFoundException", "ValidationException"):
            return None
        raise
    return entry


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
