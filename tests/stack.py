"""The four services as processes on the real components, for the end-to-end tests (the
API's, tests/integration/test_four_services.py, and the portal's browser tests).

`start_stack` runs request-api, approval, grant-worker and audit-ingest on the session's
Kafka (each as its own principal, on this test's topics), PostgreSQL (one database each)
and seeded moto — grant-worker and request-api through the project's AWS proxy, as in
`make dev` — with a local OIDC provider of its own that signs in the seeded users. It
yields once every service is ready and stops them all (SIGTERM, side by side) on exit.

request-api serves the portal at its own URL (`ELEVATE_PORTAL_BASE_URL` is set to it, so
the OIDC redirect comes back to the port it listens on); `env` adds or overrides settings
per service, e.g. `{"request_api": {"ELEVATE_PORTAL_IDLE_TIMEOUT_SECONDS": "3"}}`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
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
from tests.trail import Trail

if TYPE_CHECKING:
    from mypy_boto3_sso_admin import SSOAdminClient

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "deploy/local/policy.yaml"
SERVICES = ("request_api", "approval", "grant_worker", "audit_ingest")
# Started only when `env` names it (its tests configure the channels it sends to).
OPTIONAL = ("notifier",)
# Bounds a broken run only; a healthy one finishes each wait in a few seconds.
DEADLINE = 90.0


@dataclass(frozen=True)
class Launch:
    """How a service process starts: its argv, working directory and base environment
    (the settings are added to it)."""

    argv: list[str]
    cwd: Path
    env: Mapping[str, str]


def from_source(name: str) -> Launch:
    """The service from this checkout's environment, as `make dev` runs it."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    return Launch([sys.executable, "-m", f"elevate_{name}.main"], ROOT, clean)


Launcher = Callable[[str], Launch]


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
    trail: Trail
    processes: dict[str, Process] = field(default_factory=dict)

    @property
    def api(self) -> str:
        """request-api's URL: the REST API under /v1, the portal at its root."""
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

    def assigned(self, account: str, permission_set: str) -> list[str]:
        """Principals holding user assignments of `permission_set` on `account` (names of
        the seeded organisation), as moto has them."""
        rows = self.sso.list_account_assignments(
            InstanceArn=self.seeded.instance_arn,
            AccountId=self.seeded.account_ids[account],
            PermissionSetArn=self.seeded.permission_set_arns[permission_set],
        )["AccountAssignments"]
        return [r["PrincipalId"] for r in rows if r["PrincipalType"] == "USER"]


def is_user_access(record: Any, request_id: str, *, activity: int) -> bool:
    """An OCSF 3005 record of the request's grant (activity 1 Assign, 2 Revoke)."""
    doc = data_of(record)
    return bool(
        doc.get("class_uid") == 3005
        and doc.get("activity_id") == activity
        and doc.get("metadata", {}).get("correlation_uid") == request_id
    )


async def audit_until_revoke(stack: Stack, request_id: str) -> list[Any]:
    """The audit topic from its beginning until the request's 3005 Revoke is on it."""
    return await audit_until(stack, request_id, activity=2)


async def audit_until(stack: Stack, request_id: str, *, activity: int) -> list[Any]:
    """The audit topic from its beginning until the request's 3005 record of `activity`
    (1 Assign, 2 Revoke) is on it: audit-ingest then knows the grant (or its end)."""
    topic = f"{stack.topic_prefix}elevate.audit.v1"
    consumer = stack.endpoint.consumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[Any] = []

    def seen() -> bool:
        return any(is_user_access(r, request_id, activity=activity) for r in records)

    async def probe() -> tuple[bool, object]:
        for batch in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(batch)
        return seen(), [
            (data_of(r).get("class_uid"), data_of(r).get("activity_id")) for r in records
        ]

    try:
        await until(probe, f"the 3005 record {activity} of {request_id} on {topic}", stack)
    finally:
        await consumer.stop()
    return records


async def until(
    probe: Callable[[], Awaitable[tuple[bool, object]]], what: str, stack: Stack
) -> object:
    """Wait for `probe` to report done; on the deadline fail with its last state and the
    services' logs."""
    last: list[object] = [None]

    async def check() -> bool:
        done, last[0] = await probe()
        return done

    try:
        await eventually(check, timeout=DEADLINE, interval=0.2, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last state: {last[0]!r}\n{stack.logs()}") from None
    return last[0]


@contextlib.asynccontextmanager
async def start_stack(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    catalog: str,
    tmp_path: Path,
    *,
    env: Mapping[str, Mapping[str, str]] | None = None,
    launcher: Launcher = from_source,
) -> AsyncIterator[Stack]:
    """The four services, ready, on `catalog`'s topics (the `catalog` fixture's prefix);
    `env` adds settings per service name (`request_api`, ...); naming `notifier` starts it
    too; `launcher` says how each process starts (default: from this checkout)."""
    extra = env or {}
    unknown = set(extra) - set(SERVICES) - set(OPTIONAL)
    assert not unknown, f"no such service: {sorted(unknown)}"
    names = SERVICES + tuple(name for name in OPTIONAL if name in extra)
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
        trail = Trail.create(moto_endpoint)
        s = Stack(oidc.issuer, seeded, sso, kafka.endpoint(), catalog, trail)
        cleanup.callback(_stop_all, s)
        for name in names:
            principal = Principal(name.replace("_", "-"))
            port = free_port()
            s.processes[name] = _spawn(
                name,
                port,
                {
                    "ELEVATE_DATABASE_URL": postgres.create_database(
                        f"e2e_{name}_{uuid.uuid4().hex[:8]}"
                    ),
                    **kafka.endpoint(principal).environment(),
                    **event_environment(principal),
                    "ELEVATE_TOPIC_PREFIX": catalog,
                    "ELEVATE_AWS_ENDPOINT_URL": proxy.endpoint_url
                    if name in ("grant_worker", "request_api")
                    else moto_endpoint,
                    "ELEVATE_AWS_ACCESS_KEY_ID": "testing",
                    "ELEVATE_AWS_SECRET_ACCESS_KEY": "testing",
                    "ELEVATE_OIDC_ISSUER": oidc.issuer,
                    **(_request_api_environment(port) if name == "request_api" else {}),
                    **(_audit_ingest_environment(trail) if name == "audit_ingest" else {}),
                    **extra.get(name, {}),
                },
                tmp_path,
                launcher(name),
            )
        await _ready(s)
        yield s


def _audit_ingest_environment(trail: Trail) -> dict[str, str]:
    # this stack's own trail: another stack's notices are not read here
    return {"ELEVATE_CLOUDTRAIL_QUEUE": trail.queue, "ELEVATE_CLOUDTRAIL_SOURCES": trail.bucket}


def _request_api_environment(port: int) -> dict[str, str]:
    return {
        # as in `make dev`: the local provider's bearer tokens are ID tokens
        "ELEVATE_OIDC_TOKEN_TYPES": '["access_token", "id_token"]',
        # the portal's own address: the IdP sends the browser back to <it>/callback
        "ELEVATE_PORTAL_BASE_URL": f"http://127.0.0.1:{port}",
    }


def _spawn(name: str, port: int, env: dict[str, str], tmp: Path, launch: Launch) -> Process:
    log = tmp / f"{name}.log"
    out = log.open("wb")  # a file, not a pipe: a chatty service never blocks on us
    proc = runs.spawn(
        launch.argv,
        name=name,
        cwd=launch.cwd,
        env={
            **launch.env,
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

            await until(ready, f"{p.name} ready", stack)
