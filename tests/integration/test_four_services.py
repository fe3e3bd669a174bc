"""The product once, end to end, on the real stack: the four services as processes on
real Kafka, PostgreSQL (one database each) and seeded moto, called with real bearer
tokens from the local OIDC provider.

alice (sre) asks for AdministratorAccess on payments-prod, which the example policy sends
to one SRE lead; bob approves; the assignment appears in Identity Center; alice revokes;
it disappears; and the audit topic carries the OCSF 3005 Assign and then Revoke records
that tie back to the request.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import boto3
import httpx
import pytest
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint
from elevate_local import runs
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.oidc import (
    fetch_token,
    register_users,
    seeded_user_claims,
    start_oidc_provider,
    subject_of,
)
from elevate_local.ports import free_port
from elevate_local.postgres import PostgresCluster

from tests.harness import event_environment
from tests.helpers import data_of, eventually

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

ROOT = Path(__file__).resolve().parents[2]
POLICY = ROOT / "deploy/local/policy.yaml"
SERVICES = ("request_api", "approval", "grant_worker", "audit_ingest")
# Bounds a broken run only; a healthy one finishes each wait in a few seconds.
DEADLINE = 90.0
# The example policy's rule for this triple is one-sre-lead, with a ticket required.
REQUESTER, APPROVER = "alice", "bob"
ACCOUNT, PERMISSION_SET = "payments-prod", "AdministratorAccess"


@dataclass
class Process:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    out: IO[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()

    def wait(self) -> None:
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.out.close()


@dataclass
class Stack:
    issuer: str
    seeded: SeededOrganisation
    sso: SSOAdminClient
    endpoint: KafkaEndpoint
    topic_prefix: str
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return self.processes["request_api"].url

    def client(self, user: str) -> httpx.AsyncClient:
        # the genuine code flow with PKCE, as the user's immutable subject
        token = fetch_token(self.issuer, subject_of(user)).id_token
        return httpx.AsyncClient(
            base_url=self.api, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def logs(self, lines: int = 25) -> str:
        """The end of every service's output, for failure messages."""
        parts = []
        for p in self.processes.values():
            tail = p.log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {p.name} (exit {p.proc.poll()}) ---\n" + "\n".join(tail))
        return "\n".join(parts)

    def assigned(self) -> list[str]:
        """Principals holding the triple's user assignments, as moto has them."""
        rows = self.sso.list_account_assignments(
            InstanceArn=self.seeded.instance_arn,
            AccountId=self.seeded.account_ids[ACCOUNT],
            PermissionSetArn=self.seeded.permission_set_arns[PERMISSION_SET],
        )["AccountAssignments"]
        return [r["PrincipalId"] for r in rows if r["PrincipalType"] == "USER"]


def _spawn(name: str, env: dict[str, str], tmp: Path) -> Process:
    port = free_port()
    log = tmp / f"{name}.log"
    out = log.open("wb")  # a file, not a pipe: a chatty service never blocks on us
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    proc = runs.spawn(
        [sys.executable, "-m", f"elevate_{name}.main"],
        name=name,
        cwd=ROOT,
        env={
            **clean,
            "ELEVATE_MODE": "test",
            "ELEVATE_HTTP_PORT": str(port),
            "ELEVATE_LOG_JSON": "false",
            "ELEVATE_POLICY_FILE": str(POLICY),
            **env,
        },
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return Process(name, port, proc, log, out)


async def _until(
    probe: Callable[[], Awaitable[tuple[bool, object]]], what: str, stack: Stack
) -> object:
    """Wait for `probe` to report done; on the deadline fail with its last state."""
    last: list[object] = [None]

    async def check() -> bool:
        done, last[0] = await probe()
        return done

    try:
        await eventually(check, timeout=DEADLINE, interval=0.2, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last state: {last[0]!r}\n{stack.logs()}") from None
    return last[0]


@pytest.fixture
async def stack(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    catalog: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    topic_prefix = catalog
    seeded = seed_organisation(moto_endpoint)
    users = seeded_user_claims()
    sso = boto3.client("sso-admin", endpoint_url=moto_endpoint, region_name="us-east-1")
    with contextlib.ExitStack() as cleanup:
        oidc = cleanup.enter_context(start_oidc_provider(0, predefined_users=users))
        register_users(oidc.issuer, users)
        # As in `make dev`: grant-worker and request-api reach moto through the proxy that
        # emulates what moto lacks (the reconciler's calls, the seeded users' ExternalIds
        # of this issuer); no faults are injected here.
        proxy = AwsFaultProxy(moto_endpoint)
        proxy.external_ids.link_seeded(oidc.issuer)
        proxy.start()
        cleanup.callback(proxy.stop)
        s = Stack(oidc.issuer, seeded, sso, kafka.endpoint(), topic_prefix)
        cleanup.callback(_stop_all, s)
        for name in SERVICES:
            s.processes[name] = _spawn(
                name,
                {
                    "ELEVATE_DATABASE_URL": postgres.create_database(
                        f"e2e_{name}_{uuid.uuid4().hex[:8]}"
                    ),
                    **kafka.endpoint(Principal(name.replace("_", "-"))).environment(),
                    **event_environment(Principal(name.replace("_", "-"))),
                    "ELEVATE_TOPIC_PREFIX": topic_prefix,
                    "ELEVATE_AWS_ENDPOINT_URL": proxy.endpoint_url
                    if name in ("grant_worker", "request_api")
                    else moto_endpoint,
                    "ELEVATE_AWS_ACCESS_KEY_ID": "testing",
                    "ELEVATE_AWS_SECRET_ACCESS_KEY": "testing",
                    "ELEVATE_OIDC_ISSUER": oidc.issuer,
                    # as in `make dev`: the local provider's bearer tokens are ID tokens
                    **(
                        {"ELEVATE_OIDC_TOKEN_TYPES": '["access_token", "id_token"]'}
                        if name == "request_api"
                        else {}
                    ),
                },
                tmp_path,
            )
        await _ready(s)
        yield s


def _stop_all(stack: Stack) -> None:
    # SIGTERM to all first: each drains on its own clock, so they stop side by side.
    for p in stack.processes.values():
        p.terminate()
    for p in stack.processes.values():
        p.wait()


async def _ready(stack: Stack) -> None:
    """Every service ready (listening, its own database migrated); one that exits fails."""
    async with httpx.AsyncClient(timeout=10) as client:
        for p in stack.processes.values():

            async def ready(p: Process = p) -> tuple[bool, object]:
                if p.proc.poll() is not None:
                    pytest.fail(f"{p.name} exited with {p.proc.poll()}\n{stack.logs()}")
                try:
                    response = await client.get(f"{p.url}/readyz")
                except httpx.ConnectError:
                    return False, "not listening yet"
                return response.status_code == 200, response.text

            await _until(ready, f"{p.name} ready", stack)


async def _status(stack: Stack, client: httpx.AsyncClient, location: str, want: str) -> None:
    async def probe() -> tuple[bool, object]:
        response = await client.get(location)
        if response.status_code != 200:
            return False, f"{response.status_code} {response.text}"
        body = response.json()
        return body["status"] == want, body

    await _until(probe, f"the request becoming {want!r}", stack)


async def _audit_until_revoke(stack: Stack, request_id: str) -> list[Any]:
    """The audit topic from its beginning until the request's 3005 Revoke is on it."""
    topic = f"{stack.topic_prefix}elevate.audit.v1"
    consumer = stack.endpoint.consumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []

    def revoke_seen() -> bool:
        return any(_is_user_access(r, request_id, activity=2) for r in records)

    async def probe() -> tuple[bool, object]:
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
        return revoke_seen(), [
            (data_of(r).get("class_uid"), data_of(r).get("activity_id")) for r in records
        ]

    try:
        await _until(probe, f"the 3005 Revoke of {request_id} on {topic}", stack)
    finally:
        await consumer.stop()
    return records


def _is_user_access(record: Any, request_id: str, *, activity: int) -> bool:
    doc = data_of(record)
    return bool(
        doc.get("class_uid") == 3005
        and doc.get("activity_id") == activity
        and doc.get("metadata", {}).get("correlation_uid") == request_id
    )


async def test_request_approved_activated_revoked_and_audited(stack: Stack) -> None:
    seeded = stack.seeded
    account_id = seeded.account_ids[ACCOUNT]
    alice_id = seeded.user_ids[REQUESTER]
    assert alice_id not in stack.assigned(), "moto already holds the assignment under test"

    async with stack.client(REQUESTER) as alice, stack.client(APPROVER) as bob:
        created = await alice.post(
            "/v1/requests",
            json={
                "account_id": account_id,
                "permission_set": PERMISSION_SET,
                "duration_minutes": 60,
                "justification": "OPS-4711: rotate the payments database credentials",
                "ticket": "OPS-4711",
            },
        )
        assert created.status_code == 202, created.text
        assert created.json()["status"] == "pending"  # a human must decide
        request_id, location = created.json()["id"], created.headers["Location"]

        waiting = (await bob.get("/v1/approvals")).json()
        assert request_id in [r["id"] for r in waiting], waiting
        approved = await bob.post(
            f"/v1/requests/{request_id}/approve", json={"comment": "go ahead"}
        )
        assert approved.status_code == 202, approved.text

        await _status(stack, alice, location, "active")
        assert stack.assigned().count(alice_id) == 1

        revoked = await alice.post(f"/v1/requests/{request_id}/revoke", json={"comment": "done"})
        assert revoked.status_code == 202, revoked.text
        await _status(stack, alice, location, "revoked")
        assert alice_id not in stack.assigned()

    records = await _audit_until_revoke(stack, request_id)
    _check_audit(records, stack, request_id)


def _check_audit(records: list[Any], stack: Stack, request_id: str) -> None:
    seeded = stack.seeded
    account_id = seeded.account_ids[ACCOUNT]
    assigns = [r for r in records if _is_user_access(r, request_id, activity=1)]
    [revoke] = [r for r in records if _is_user_access(r, request_id, activity=2)]
    assert revoke.key.decode() == request_id
    doc = data_of(revoke)
    assert doc["type_uid"] == 300502
    assert doc["user"]["name"] == REQUESTER
    assert doc["user"]["uid"] == seeded.user_ids[REQUESTER]
    assert doc["privileges"] == [PERMISSION_SET]
    assert doc["resource"]["uid"] == account_id
    assert doc["resource"]["name"] == ACCOUNT
    grant = doc["enrichments"][0]["data"]
    assert grant["request_id"] == request_id
    assert grant["account_id"] == account_id
    assert grant["permission_set"] == PERMISSION_SET
    assert grant["permission_set_arn"] == seeded.permission_set_arns[PERMISSION_SET]
    assert grant["approvers"] == [APPROVER]
    assert grant["reason"] == "revoked"
    # The Assign came first: same key, so same partition, at a lower offset.
    assert [(r.partition, r.offset < revoke.offset) for r in assigns] == [
        (revoke.partition, True)
    ], [data_of(r) for r in assigns]
    assert data_of(assigns[0])["time"] <= doc["time"]
