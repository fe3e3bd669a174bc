"""The AWS-backed directory against seeded moto, over real HTTP.

AWS calls are counted with a botocore `before-call` event hook, never with mocks. Faults
(throttling, 5xx) come from a small forwarding proxy in front of moto.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from botocore.config import Config
from elevate_core.directory.aws import Directory
from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
    UserNotFoundError,
)
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.ports import free_port

from tests import harness

if TYPE_CHECKING:
    from mypy_boto3_identitystore import IdentityStoreClient
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_sso_admin import SSOAdminClient

pytestmark = pytest.mark.integration

_NO_RETRIES = Config(retries={"mode": "standard", "max_attempts": 1})


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CallCounter:
    """Counts AWS operations through botocore's `before-call` event."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, event_name: str, **kwargs: Any) -> None:
        with self._lock:
            self.calls[event_name.rsplit(".", 1)[-1]] += 1

    def attach(self, *clients: Any) -> None:
        for client in clients:
            client.meta.events.register("before-call", self)

    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()


class FaultProxy:
    """Forwards to moto; while `fault` is set, answers every call with that AWS error."""

    def __init__(self, upstream: str) -> None:
        self.fault: tuple[int, str] | None = None
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if proxy.fault is not None:
                    status, code = proxy.fault
                    payload = json.dumps({"__type": code, "message": "injected"}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length")
                }
                upstream_response = httpx.post(upstream + self.path, content=body, headers=headers)
                self.send_response(upstream_response.status_code)
                for key, value in upstream_response.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "content-encoding",
                        "transfer-encoding",
                        "connection",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(upstream_response.content)))
                self.end_headers()
                self.wfile.write(upstream_response.content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def seeded(moto_endpoint: str) -> SeededOrganisation:
    return seed_organisation(moto_endpoint)


def _clients(
    endpoint: str,
) -> tuple[IdentityStoreClient, OrganizationsClient, SSOAdminClient]:
    return (
        boto3.client(
            "identitystore", endpoint_url=endpoint, region_name="us-east-1", config=_NO_RETRIES
        ),
        boto3.client(
            "organizations", endpoint_url=endpoint, region_name="us-east-1", config=_NO_RETRIES
        ),
        boto3.client(
            "sso-admin", endpoint_url=endpoint, region_name="us-east-1", config=_NO_RETRIES
        ),
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def counter() -> CallCounter:
    return CallCounter()


@pytest.fixture
def directory(
    seeded: SeededOrganisation, moto_endpoint: str, clock: FakeClock, counter: CallCounter
) -> Directory:
    ids, org, sso = _clients(moto_endpoint)
    counter.attach(ids, org, sso)
    return Directory(
        identitystore=ids,
        organizations=org,
        sso_admin=sso,
        user_ttl=60.0,
        negative_user_ttl=10.0,
        org_ttl=300.0,
        max_stale=3_600.0,
        clock=clock,
    )


@pytest.fixture
def proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_endpoint)
    yield proxy
    proxy.stop()


async def test_resolves_alice_with_groups(directory: Directory, seeded: SeededOrganisation) -> None:
    alice = await directory.get_user("alice")
    assert alice.user_id == seeded.user_ids["alice"]
    assert alice.user_name == "alice"
    assert alice.email == "alice@elevate.example"
    assert alice.display_name == "Alice Archer"
    assert alice.groups == frozenset({"engineers", "sre"})


async def test_person_key_is_the_primary_email_by_default(directory: Directory) -> None:
    assert (await directory.get_user("alice")).person_key == "email:alice@elevate.example"


async def test_employee_number_person_key_asks_for_the_enterprise_extension(
    moto_endpoint: str,
) -> None:
    # moto accepts DescribeUser's Extensions but stores none: no key, so ids only
    # (the key itself is read in tests/unit/test_person_key.py).
    ids, org, sso = _clients(moto_endpoint)
    asked: list[object] = []
    ids.meta.events.register(
        "provide-client-params.identitystore.DescribeUser",
        lambda params, **_: asked.append(params.get("Extensions")),
    )
    directory = Directory(
        identitystore=ids, organizations=org, sso_admin=sso, person_key="employee_number"
    )
    alice = await directory.get_user("alice")
    assert (alice.user_name, alice.person_key) == ("alice", None)
    assert asked == [["aws:identitystore:enterprise"]]


async def test_resolves_the_sre_leads(directory: Directory, seeded: SeededOrganisation) -> None:
    bob = await directory.get_user("bob")
    assert bob.user_id == seeded.user_ids["bob"]
    assert bob.groups == frozenset({"sre-leads"})
    for lead in ("frank", "grace"):
        assert (await directory.get_user(lead)).groups == frozenset({"sre-leads"})
    carol = await directory.get_user("carol")
    assert carol.groups == frozenset({"auditors"})


async def test_unknown_user(directory: Directory, counter: CallCounter, clock: FakeClock) -> None:
    with pytest.raises(UserNotFoundError) as caught:
        await directory.get_user("mallory")
    assert caught.value.retryable is False
    assert isinstance(caught.value, DirectoryError)
    counter.reset()
    with pytest.raises(UserNotFoundError):
        await directory.get_user("mallory")
    assert counter.total() == 0  # the miss is cached too, briefly
    clock.advance(11)
    with pytest.raises(UserNotFoundError):
        await directory.get_user("mallory")
    assert counter.calls["GetUserId"] == 1


async def test_user_cache_hit_makes_no_aws_call(directory: Directory, counter: CallCounter) -> None:
    first = await directory.get_user("alice")
    assert counter.calls["GetUserId"] == 1
    assert counter.calls["DescribeUser"] == 1
    assert counter.calls["ListGroupMembershipsForMember"] == 1
    counter.reset()
    for _ in range(5):
        assert await directory.get_user("alice") == first
    assert counter.total() == 0


async def test_a_user_is_described_while_their_groups_are_listed(
    moto_endpoint: str, seeded: SeededOrganisation
) -> None:
    """A fresh read (every re-check makes one) waits for GetUserId, then for the longer of
    DescribeUser and ListGroupMembershipsForMember, not their sum."""
    ids, org, sso = _clients(moto_endpoint)
    listing = threading.Event()
    ids.meta.events.register(
        "before-call.identitystore.ListGroupMembershipsForMember", lambda **_: listing.set()
    )

    def describe_waits_for_the_listing(**_: object) -> None:
        assert listing.wait(10), "DescribeUser was sent alone: the groups were not asked beside"

    ids.meta.events.register(
        "before-call.identitystore.DescribeUser", describe_waits_for_the_listing
    )
    directory = Directory(identitystore=ids, organizations=org, sso_admin=sso)
    alice = await directory.get_user("alice")
    assert (alice.user_name, alice.groups) == ("alice", frozenset({"engineers", "sre"}))


async def test_a_user_deleted_between_the_reads_is_not_found(
    moto_endpoint: str, seeded: SeededOrganisation
) -> None:
    ids, org, sso = _clients(moto_endpoint)
    admin, _, _ = _clients(moto_endpoint)
    store = seeded.identity_store_id
    user_id = admin.create_user(
        IdentityStoreId=store,
        UserName=f"leaver-{uuid.uuid4().hex[:8]}",
        DisplayName="Leaver",
        Name={"GivenName": "Lea", "FamilyName": "Ver"},
    )["UserId"]
    name = admin.describe_user(IdentityStoreId=store, UserId=user_id)["UserName"]

    def delete_first(**_: object) -> None:  # returning a value would short-circuit the call
        admin.delete_user(IdentityStoreId=store, UserId=user_id)

    ids.meta.events.register("before-call.identitystore.DescribeUser", delete_first)
    directory = Directory(identitystore=ids, organizations=org, sso_admin=sso)
    with pytest.raises(UserNotFoundError):
        await directory.get_user(name)


async def test_a_user_read_with_the_id_they_have_skips_get_user_id(
    directory: Directory, counter: CallCounter, seeded: SeededOrganisation
) -> None:
    """A re-check knows the id from the request: DescribeUser and the groups go out at once."""
    alice = await directory.get_user("alice", expected_id=seeded.user_ids["alice"])
    assert (alice.user_id, alice.groups) == (
        seeded.user_ids["alice"],
        frozenset({"engineers", "sre"}),
    )
    assert counter.calls["GetUserId"] == 0
    assert counter.calls["DescribeUser"] == 1
    assert counter.calls["ListGroupMembershipsForMember"] == 1


@pytest.mark.parametrize("expected", ["bob", "unknown", "malformed"])
async def test_an_expected_id_that_is_not_the_users_is_never_believed(
    directory: Directory, counter: CallCounter, seeded: SeededOrganisation, expected: str
) -> None:
    """Another user's id, an id nobody has, or one AWS refuses: the user is looked up by
    name as before — never the user the id names, so a re-check still sees the mismatch."""
    wrong = {
        "bob": seeded.user_ids["bob"],
        "unknown": str(uuid.uuid4()),
        "malformed": "not/an-id",
    }[expected]
    alice = await directory.get_user("alice", expected_id=wrong)
    assert (alice.user_name, alice.user_id) == ("alice", seeded.user_ids["alice"])
    assert alice.groups == frozenset({"engineers", "sre"})
    assert counter.calls["GetUserId"] == 1


async def test_a_user_recreated_under_the_same_name_is_found_with_the_new_id(
    moto_endpoint: str, seeded: SeededOrganisation
) -> None:
    ids, org, sso = _clients(moto_endpoint)
    store = seeded.identity_store_id
    name = f"rejoiner-{uuid.uuid4().hex[:8]}"
    person = {"DisplayName": "Re Joiner", "Name": {"GivenName": "Re", "FamilyName": "Joiner"}}
    old = ids.create_user(IdentityStoreId=store, UserName=name, **person)["UserId"]  # type: ignore[arg-type]
    ids.delete_user(IdentityStoreId=store, UserId=old)
    new = ids.create_user(IdentityStoreId=store, UserName=name, **person)["UserId"]  # type: ignore[arg-type]
    directory = Directory(identitystore=ids, organizations=org, sso_admin=sso)
    assert (await directory.get_user(name, expected_id=old)).user_id == new


async def test_group_names_are_cached_across_users(
    directory: Directory, counter: CallCounter
) -> None:
    await directory.get_user("alice")  # engineers, sre
    assert counter.calls["DescribeGroup"] == 2
    counter.reset()
    erin = await directory.get_user("erin")  # engineers: already known
    assert erin.groups == frozenset({"engineers"})
    assert counter.calls["DescribeGroup"] == 0
    assert counter.calls["GetUserId"] == 1


async def test_concurrent_lookups_share_one_fetch(
    directory: Directory, counter: CallCounter
) -> None:
    users = await asyncio.gather(*(directory.get_user("grace") for _ in range(10)))
    assert {u.groups for u in users} == {frozenset({"sre-leads"})}
    assert counter.calls["GetUserId"] == 1


async def test_user_ttl_expiry_refetches(
    directory: Directory,
    counter: CallCounter,
    clock: FakeClock,
    seeded: SeededOrganisation,
    moto_endpoint: str,
) -> None:
    ids, _, _ = _clients(moto_endpoint)
    store = seeded.identity_store_id
    name = f"probe-{uuid.uuid4().hex[:8]}"
    user_id = ids.create_user(
        IdentityStoreId=store,
        UserName=name,
        DisplayName="Probe User",
        Name={"GivenName": "Probe", "FamilyName": "User"},
    )["UserId"]
    group_a = ids.create_group(IdentityStoreId=store, DisplayName=f"{name}-a")["GroupId"]
    group_b = ids.create_group(IdentityStoreId=store, DisplayName=f"{name}-b")["GroupId"]
    ids.create_group_membership(
        IdentityStoreId=store, GroupId=group_a, MemberId={"UserId": user_id}
    )

    assert (await directory.get_user(name)).groups == {f"{name}-a"}
    ids.create_group_membership(
        IdentityStoreId=store, GroupId=group_b, MemberId={"UserId": user_id}
    )

    counter.reset()
    clock.advance(59)
    assert (await directory.get_user(name)).groups == {f"{name}-a"}  # still cached
    assert counter.total() == 0

    clock.advance(2)
    assert (await directory.get_user(name)).groups == {f"{name}-a", f"{name}-b"}
    assert counter.calls["GetUserId"] == 1
    assert counter.calls["ListGroupMembershipsForMember"] == 1

    directory.invalidate_user(name)
    counter.reset()
    await directory.get_user(name)
    assert counter.calls["GetUserId"] == 1


async def test_accounts_with_ou_paths(directory: Directory, seeded: SeededOrganisation) -> None:
    payments = await directory.get_account(seeded.account_ids["payments-prod"])
    assert payments.name == "payments-prod"
    assert tuple(ou.name for ou in payments.ou_path) == ("Workloads", "Prod")
    assert tuple(ou.id for ou in payments.ou_path) == (
        seeded.ou_ids["Workloads"],
        seeded.ou_ids["Workloads/Prod"],
    )
    assert payments.ou_path_names == "Workloads/Prod"
    assert payments.is_management is False

    staging = await directory.get_account(seeded.account_ids["payments-staging"])
    assert staging.ou_path_names == "Workloads/NonProd"
    log_archive = await directory.get_account(seeded.account_ids["log-archive"])
    assert log_archive.ou_path_names == "Security"

    management = await directory.get_account(seeded.management_account_id)
    assert management.is_management is True
    assert management.ou_path == ()
    accounts = await directory.list_accounts()
    assert [a.id for a in accounts if a.is_management] == [seeded.management_account_id]
    assert {a.name for a in accounts} >= set(seeded.account_ids)

    with pytest.raises(AccountNotFoundError) as caught:
        await directory.get_account("000000000000")
    assert caught.value.retryable is False


async def test_org_snapshot_parents_and_nesting(
    directory: Directory, seeded: SeededOrganisation
) -> None:
    snapshot = await directory.org()
    assert snapshot.root_id == seeded.root_id
    assert snapshot.organization_id == seeded.organization_id
    prod = seeded.ou_ids["Workloads/Prod"]
    assert snapshot.parent_id(seeded.account_ids["data-prod"]) == prod
    assert snapshot.parent_id(prod) == seeded.ou_ids["Workloads"]
    assert snapshot.parent_id(seeded.ou_ids["Workloads"]) == seeded.root_id
    assert snapshot.parent_id(seeded.management_account_id) == seeded.root_id

    workloads = snapshot.ou_by_path("Workloads")
    assert workloads is not None
    assert workloads.id == seeded.ou_ids["Workloads"]
    under = {a.name for a in snapshot.accounts_under(workloads.id)}
    assert {"payments-prod", "data-prod", "payments-staging"} <= under
    assert not under & {"sandbox-alice", "log-archive", "master"}
    assert snapshot.ou_by_path("Workloads/Nope") is None
    assert snapshot.account_by_name("sandbox-alice").id == seeded.account_ids["sandbox-alice"]


async def test_account_lookups_are_dict_reads(
    directory: Directory, counter: CallCounter, seeded: SeededOrganisation, clock: FakeClock
) -> None:
    await directory.get_account(seeded.account_ids["data-prod"])
    assert counter.calls["ListAccountsForParent"] >= 6  # root + five OUs, once
    counter.reset()
    for name in ("data-prod", "sandbox-shared", "security-tooling"):
        await directory.get_account(seeded.account_ids[name])
    await directory.list_accounts()
    assert counter.total() == 0

    clock.advance(301)  # past org_ttl: one inline refresh, then dict reads again
    await directory.get_account(seeded.account_ids["data-prod"])
    assert counter.calls["DescribeOrganization"] == 1
    counter.reset()
    await directory.get_account(seeded.account_ids["data-prod"])
    assert counter.total() == 0


async def test_background_refresh(
    seeded: SeededOrganisation, moto_endpoint: str, counter: CallCounter
) -> None:
    ids, org, sso = _clients(moto_endpoint)
    counter.attach(ids, org, sso)
    directory = Directory(
        identitystore=ids, organizations=org, sso_admin=sso, refresh_interval=0.05
    )
    async with directory:
        assert counter.calls["DescribeOrganization"] == 1
        assert counter.calls["ListPermissionSets"] >= 1
        await harness.eventually(lambda: _refreshed(counter, 3), what="three background refreshes")
        account = await directory.get_account(seeded.account_ids["sandbox-alice"])
        assert account.ou_path_names == "Sandbox"
    after_close = counter.total()

    # A witness running the same loop refreshes three more times: time enough for the closed
    # directory's loop to have called AWS, had it survived the close.
    witness_counter = CallCounter()
    w_ids, w_org, w_sso = _clients(moto_endpoint)
    witness_counter.attach(w_ids, w_org, w_sso)
    witness = Directory(
        identitystore=w_ids, organizations=w_org, sso_admin=w_sso, refresh_interval=0.05
    )
    async with witness:
        await harness.eventually(
            lambda: _refreshed(witness_counter, 4), what="the witness refreshing"
        )
    assert counter.total() == after_close


async def _refreshed(counter: CallCounter, times: int) -> bool:
    return min(counter.calls["DescribeOrganization"], counter.calls["ListPermissionSets"]) >= times


async def test_permission_sets_by_name(
    directory: Directory, seeded: SeededOrganisation, counter: CallCounter, clock: FakeClock
) -> None:
    read_only = await directory.get_permission_set("ReadOnlyAccess")
    assert read_only.arn == seeded.permission_set_arns["ReadOnlyAccess"]
    listed = {ps.name: ps.arn for ps in await directory.list_permission_sets()}
    assert listed.items() >= seeded.permission_set_arns.items()

    counter.reset()
    assert (await directory.get_permission_set("DatabaseAdmin")).arn == (
        seeded.permission_set_arns["DatabaseAdmin"]
    )
    assert counter.total() == 0

    clock.advance(31)  # a miss may relist, but at most once per miss interval
    with pytest.raises(PermissionSetNotFoundError):
        await directory.get_permission_set("NoSuchSet")
    assert counter.calls["ListPermissionSets"] == 1
    with pytest.raises(PermissionSetNotFoundError):
        await directory.get_permission_set("NoSuchSet")
    assert counter.calls["ListPermissionSets"] == 1


async def test_connection_failure_is_retryable(seeded: SeededOrganisation) -> None:
    directory = Directory.from_region(
        region="us-east-1",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        max_attempts=1,
        connect_timeout=1.0,
        identity_store_id=seeded.identity_store_id,
        instance_arn=seeded.instance_arn,
    )
    with pytest.raises(DirectoryError) as caught:
        await directory.get_user("alice")
    assert not isinstance(caught.value, UserNotFoundError)
    assert caught.value.retryable is True


@pytest.mark.parametrize(
    ("fault", "retryable"),
    [
        ((400, "ThrottlingException"), True),
        ((500, "InternalServerException"), True),
        ((400, "AccessDeniedException"), False),
    ],
)
async def test_aws_errors_are_classified(
    proxy: FaultProxy,
    seeded: SeededOrganisation,
    fault: tuple[int, str],
    retryable: bool,
) -> None:
    ids, org, sso = _clients(proxy.url)
    directory = Directory(identitystore=ids, organizations=org, sso_admin=sso)
    assert (await directory.get_user("alice")).user_name == "alice"  # through the proxy
    proxy.fault = fault
    with pytest.raises(DirectoryError) as caught:
        await directory.get_user("dave")
    assert caught.value.retryable is retryable
    assert caught.value.code == fault[1]


async def test_stale_org_served_while_throttled_but_never_stale_users(
    proxy: FaultProxy, seeded: SeededOrganisation, clock: FakeClock
) -> None:
    ids, org, sso = _clients(proxy.url)
    directory = Directory(
        identitystore=ids,
        organizations=org,
        sso_admin=sso,
        user_ttl=60.0,
        org_ttl=300.0,
        max_stale=1_000.0,
        clock=clock,
    )
    await directory.get_user("alice")
    await directory.get_account(seeded.account_ids["payments-prod"])
    proxy.fault = (400, "TooManyRequestsException")

    clock.advance(400)  # org past its TTL, within max_stale: the old snapshot is served
    account = await directory.get_account(seeded.account_ids["payments-prod"])
    assert account.ou_path_names == "Workloads/Prod"
    with pytest.raises(DirectoryError) as caught:
        await directory.get_user("alice")  # expired user: no stale group data
    assert caught.value.retryable is True

    clock.advance(700)  # beyond max_stale: the error surfaces
    with pytest.raises(DirectoryError) as caught:
        await directory.get_account(seeded.account_ids["payments-prod"])
    assert caught.value.retryable is True

    proxy.fault = None
    assert (await directory.get_user("alice")).groups == {"engineers", "sre"}
