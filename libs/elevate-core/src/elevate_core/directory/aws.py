"""The directory over AWS: Identity Store users and groups, the Organizations tree and
Identity Center permission sets, cached.

- Users: see `elevate_core.directory.identity.UserCache` (per lookup key, `user_ttl`;
  unknown names `negative_user_ttl`; never served stale).
- Organizations: a full snapshot (`OrgSnapshot`), refreshed by a background task every
  `refresh_interval` seconds, so account lookups are dict reads. If the snapshot is older
  than `org_ttl` at lookup time it is refreshed inline; if that fails with a retryable
  error, a snapshot younger than `max_stale` is served.
- Permission sets: name → ARN (ListPermissionSets + DescribePermissionSet), refreshed with
  the org tree; an unknown name triggers at most one refresh per
  `permission_set_miss_refresh` seconds.

Blocking boto3 calls run in threads (`asyncio.to_thread`). Time for TTLs comes from the
injected `clock` (seconds, monotonic), so tests can move it without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config

from elevate_core.directory.errors import DirectoryError, PermissionSetNotFoundError, call_aws
from elevate_core.directory.identity import UserCache, UserKey, read_group_members, read_user_id
from elevate_core.directory.models import Account, PermissionSet, PersonKey, User
from elevate_core.directory.org import OrgSnapshot, load_org_snapshot

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_sso_admin import SSOAdminClient

_log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class _PermissionSets:
    by_name: dict[str, PermissionSet]
    fetched_at: float


class Directory:
    def __init__(
        self,
        *,
        identitystore: IdentityStoreClient,
        organizations: OrganizationsClient,
        sso_admin: SSOAdminClient,
        identity_store_id: str | None = None,
        instance_arn: str | None = None,
        user_ttl: float = 300.0,
        negative_user_ttl: float = 30.0,
        group_ttl: float = 900.0,
        org_ttl: float = 600.0,
        max_stale: float = 3600.0,
        permission_set_ttl: float = 900.0,
        permission_set_miss_refresh: float = 30.0,
        refresh_interval: float = 120.0,
        max_cached_users: int = 10_000,
        clock: Clock = time.monotonic,
        person_key: PersonKey = "email",
    ) -> None:
        self._org = organizations
        self._sso = sso_admin
        self._ids = identitystore
        self._identity_store_id = identity_store_id
        self._instance_arn = instance_arn
        self._org_ttl = org_ttl
        self._max_stale = max_stale
        self._permission_set_ttl = permission_set_ttl
        self._permission_set_miss_refresh = permission_set_miss_refresh
        self._refresh_interval = refresh_interval
        self._clock = clock

        self._users = UserCache(
            identitystore,
            identity_store_id=self._identity_store,
            clock=clock,
            user_ttl=user_ttl,
            negative_ttl=negative_user_ttl,
            group_ttl=group_ttl,
            max_users=max_cached_users,
            person_key=person_key,
        )
        self._snapshot: OrgSnapshot | None = None
        self._org_lock = asyncio.Lock()
        self._permission_sets: _PermissionSets | None = None
        self._ps_lock = asyncio.Lock()
        self._instance_lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @classmethod
    def from_region(
        cls,
        *,
        region: str,
        endpoint_url: str | None = None,
        max_attempts: int = 3,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        **options: Any,
    ) -> Directory:
        """Build the boto3 clients (credentials from the usual chain) and the directory."""
        config = Config(
            region_name=region,
            retries={"mode": "standard", "max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )
        session = boto3.session.Session(region_name=region)
        return cls(
            identitystore=session.client("identitystore", endpoint_url=endpoint_url, config=config),
            organizations=session.client("organizations", endpoint_url=endpoint_url, config=config),
            sso_admin=session.client("sso-admin", endpoint_url=endpoint_url, config=config),
            **options,
        )

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load the org tree and permission sets, then keep them fresh in the background."""
        await self.refresh_org()
        await self.refresh_permission_sets()
        if self._refresher is None:
            self._stop = asyncio.Event()
            self._refresher = asyncio.create_task(self._refresh_loop(), name="directory-refresh")

    async def aclose(self) -> None:
        """Stop background refreshes; waits for one in progress (boto3 calls in threads
        cannot be cancelled), so nothing calls AWS after this returns."""
        task, self._refresher = self._refresher, None
        if task is not None:
            self._stop.set()
            await task

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _refresh_loop(self) -> None:
        stop = self._stop
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self._refresh_interval)
            for refresh in (self.refresh_org, self.refresh_permission_sets):
                if stop.is_set():
                    return
                try:
                    await refresh()
                except DirectoryError as error:
                    _log.warning("directory background refresh failed: %s", error)

    # -- plumbing ----------------------------------------------------------------------

    async def _instance(self) -> tuple[str, str]:
        """(instance ARN, identity store id), from ListInstances unless configured."""
        async with self._instance_lock:
            if self._instance_arn is None or self._identity_store_id is None:
                instances = (await call_aws("ListInstances", self._sso.list_instances))["Instances"]
                if not instances:
                    raise DirectoryError("no IAM Identity Center instance", retryable=False)
                self._instance_arn = self._instance_arn or instances[0]["InstanceArn"]
                self._identity_store_id = self._identity_store_id or instances[0]["IdentityStoreId"]
            return self._instance_arn, self._identity_store_id

    async def _identity_store(self) -> str:
        return (await self._instance())[1]

    # -- users -------------------------------------------------------------------------

    async def get_user(self, user_name: str, *, expected_id: str | None = None) -> User:
        """The Identity Store user with this UserName, with group display names
        (`expected_id`: UserCache.get)."""
        return await self._users.get(UserKey.user_name(user_name), expected_id=expected_id)

    async def find_user(self, key: UserKey) -> User:
        """The Identity Store user found by `key` (an ExternalId or a unique attribute)."""
        return await self._users.get(key)

    async def user_name_of(self, user_id: str) -> str | None:
        """The UserName of an Identity Store user id (None if there is no such user)."""
        store = await self._identity_store()
        try:
            out = await call_aws(
                "identitystore:DescribeUser",
                lambda: self._ids.describe_user(IdentityStoreId=store, UserId=user_id),
            )
        except DirectoryError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        name = out.get("UserName")
        return str(name) if name else None

    async def group_members(self, group_names: Iterable[str]) -> dict[str, list[str]]:
        """User names in each named group, read now (not cached): for occasional checks
        such as whether an approval rule's groups can reach its required count."""
        store = await self._identity_store()
        names = list(group_names)
        return await call_aws(
            "Identity Store group listing", lambda: read_group_members(self._ids, store, names)
        )

    def user_id_blocking(self, entry: str) -> str | None:
        """The user id a policy `users:` entry (user name or id) names now; blocking, for
        the policy watcher's thread (policy.resolve). An Identity Store that cannot answer
        raises (boto3's errors): the watcher tries again at its next poll."""
        store = self._identity_store_id
        if store is None:
            instances = self._sso.list_instances()["Instances"]
            if not instances:
                raise DirectoryError("no IAM Identity Center instance", retryable=False)
            store = instances[0]["IdentityStoreId"]
        return read_user_id(self._ids, store, entry)

    def account_ids_blocking(self) -> dict[str, frozenset[str]]:
        """Account name → ids of the accounts so named, read now; blocking, for the policy
        watcher's thread (policy.resolve)."""
        snapshot = load_org_snapshot(self._org, fetched_at=self._clock())
        names: dict[str, set[str]] = {}
        for account in snapshot.accounts.values():
            names.setdefault(account.name, set()).add(account.id)
        return {name: frozenset(ids) for name, ids in names.items()}

    def invalidate_user(self, user_name: str) -> None:
        self._users.invalidate(user_name)

    # -- organizations -----------------------------------------------------------------

    async def org(self) -> OrgSnapshot:
        """The cached org tree; refreshed inline only if older than `org_ttl`."""
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - snapshot.fetched_at < self._org_ttl:
            return snapshot
        try:
            return await self.refresh_org(only_if_older_than=self._org_ttl)
        except DirectoryError as error:
            snapshot = self._snapshot
            if (
                error.retryable
                and snapshot is not None
                and self._clock() - snapshot.fetched_at < self._max_stale
            ):
                _log.warning("serving a stale org snapshot: %s", error)
                return snapshot
            raise

    async def refresh_org(self, *, only_if_older_than: float | None = None) -> OrgSnapshot:
        async with self._org_lock:
            snapshot = self._snapshot
            if (
                only_if_older_than is not None
                and snapshot is not None
                and self._clock() - snapshot.fetched_at < only_if_older_than
            ):
                return snapshot  # another caller refreshed it while we waited
            fetched_at = self._clock()
            snapshot = await call_aws(
                "Organizations listing",
                lambda: load_org_snapshot(self._org, fetched_at=fetched_at),
            )
            self._snapshot = snapshot
            return snapshot

    async def get_account(self, account_id: str) -> Account:
        return (await self.org()).account(account_id)

    async def list_accounts(self) -> list[Account]:
        return sorted((await self.org()).accounts.values(), key=lambda a: a.id)

    # -- permission sets ---------------------------------------------------------------

    async def get_permission_set(self, name: str) -> PermissionSet:
        sets = await self._permission_set_listing(max_age=self._permission_set_ttl)
        if name not in sets.by_name:
            # Created since the last listing? Look again, at most once per miss interval.
            sets = await self._permission_set_listing(
                max_age=self._permission_set_miss_refresh, serve_stale=False
            )
        try:
            return sets.by_name[name]
        except KeyError:
            raise PermissionSetNotFoundError(name) from None

    async def list_permission_sets(self) -> list[PermissionSet]:
        sets = await self._permission_set_listing(max_age=self._permission_set_ttl)
        return sorted(sets.by_name.values(), key=lambda ps: ps.name)

    async def refresh_permission_sets(self) -> list[PermissionSet]:
        sets = await self._permission_set_listing(max_age=0.0, serve_stale=False)
        return sorted(sets.by_name.values(), key=lambda ps: ps.name)

    async def _permission_set_listing(
        self, *, max_age: float, serve_stale: bool = True
    ) -> _PermissionSets:
        current = self._permission_sets
        if current is not None and self._clock() - current.fetched_at < max_age:
            return current
        instance_arn, _ = await self._instance()
        async with self._ps_lock:
            current = self._permission_sets
            if current is not None and self._clock() - current.fetched_at < max_age:
                return current  # another caller refreshed it while we waited
            fetched_at = self._clock()
            try:
                by_name = await call_aws(
                    "Identity Center permission set listing",
                    lambda: self._read_permission_sets(instance_arn),
                )
            except DirectoryError as error:
                if (
                    serve_stale
                    and error.retryable
                    and current is not None
                    and self._clock() - current.fetched_at < self._max_stale
                ):
                    _log.warning("serving stale permission sets: %s", error)
                    return current
                raise
            self._permission_sets = _PermissionSets(by_name=by_name, fetched_at=fetched_at)
            return self._permission_sets

    def _read_permission_sets(self, instance_arn: str) -> dict[str, PermissionSet]:
        by_name: dict[str, PermissionSet] = {}
        pager = self._sso.get_paginator("list_permission_sets")
        for page in pager.paginate(InstanceArn=instance_arn):
            for arn in page["PermissionSets"]:
                described = self._sso.describe_permission_set(
                    InstanceArn=instance_arn, PermissionSetArn=arn
                )["PermissionSet"]
                name = described.get("Name", arn)
                duration = described.get("SessionDuration")
                by_name.setdefault(name, PermissionSet(name, arn, duration))
        return by_name
