"""Each service process starts, answers its probes and metrics, survives an absent
Kafka, and refuses a malformed setting with one line naming it."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_local import runs
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port, wait_for_port
from elevate_local.postgres import PostgresCluster

from tests.harness import event_environment
from tests.helpers import eventually

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["request_api", "approval", "grant_worker", "audit_ingest", "notifier"]


class Service:
    def __init__(self, module: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = runs.spawn(
            [sys.executable, "-m", f"elevate_{module}.main"],
            cwd=ROOT,
            env={
                **os.environ,
                "ELEVATE_MODE": "test",
                "ELEVATE_HTTP_PORT": str(self.port),
                "ELEVATE_LOG_JSON": "true",
                **env,
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, timeout=60, what=module)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return bytes(out).decode()


@pytest.fixture
def services(
    kafka: KafkaBroker, postgres: PostgresCluster, topic_prefix: str, moto_endpoint: str
) -> Iterator[dict[str, Service]]:
    """The five services, each with its own principal, before their topics exist."""
    kafka.allow(topic_prefix)
    started: dict[str, Service] = {}
    try:
        for module in SERVICES:
            # Each service owns its own database (and its own Alembic chain).
            url = postgres.create_database(f"svc_{module}_{uuid.uuid4().hex[:8]}")
            principal = Principal(module.replace("_", "-"))
            started[module] = Service(
                module,
                {
                    "ELEVATE_DATABASE_URL": url,
                    **kafka.endpoint(principal).environment(),
                    **event_environment(principal),
                    "ELEVATE_TOPIC_PREFIX": topic_prefix,
                    "ELEVATE_AWS_ENDPOINT_URL": moto_endpoint,
                },
            )
        yield started
    finally:
        for svc in started.values():
            svc.stop()


async def _topics_up(svc: Service) -> bool | None:
    """Whether the service sees its topics, as its metrics say (None: not checked yet);
    /healthz tells anonymous callers only that the process runs."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{svc.url}/metrics")).text
    for value, up in (("1.0", True), ("0.0", False)):
        if f'elevate_component_up{{component="kafka-topics"}} {value}' in text:
            return up
    return None


async def test_every_service_answers_probes_and_waits_for_the_admin_to_create_topics(
    services: dict[str, Service], kafka: KafkaBroker, topic_prefix: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as client:
        for svc in services.values():
            health = await client.get(f"{svc.url}/healthz")
            assert health.status_code == 200
            assert health.json() == {"status": "ok"}
            ready = await client.get(f"{svc.url}/readyz")
            assert ready.status_code == 200, ready.text
            metrics = await client.get(f"{svc.url}/metrics")
            assert metrics.status_code == 200
            assert "elevate_outbox_pending" in metrics.text or "python_info" in metrics.text
    for module, svc in services.items():

        async def says_missing(svc: Service = svc) -> bool:
            return await _topics_up(svc) is False

        await eventually(says_missing, what=f"{module} reporting its missing topics")
    # Services may not create topics (the broker refuses them); the admin principal does.
    await ensure_topics(kafka.endpoint(Principal.ADMIN), prefix=topic_prefix)
    for module, svc in services.items():

        async def present(svc: Service = svc) -> bool:
            return await _topics_up(svc) is True

        await eventually(present, what=f"{module} seeing its topics")
        tables = ["processed_events", "timers", "outbox"]
        tables += ["gw_grants"] if module == "grant_worker" else []

        async def purged(url: str = svc.url, tables: list[str] = tables) -> bool:
            async with httpx.AsyncClient(timeout=10) as client:
                text = (await client.get(f"{url}/metrics")).text
            return all(f'elevate_purged_rows_total{{table="{t}"}}' in text for t in tables)

        await eventually(purged, what=f"{module} ran its first purge round")


async def test_service_without_kafka_keeps_running_and_says_so(
    sqlite_url: str, moto_endpoint: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    svc = Service(
        "request_api", {"ELEVATE_DATABASE_URL": sqlite_url, "ELEVATE_KAFKA_BOOTSTRAP_SERVERS": dead}
    )
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def reported() -> bool:
                return await _topics_up(svc) is False

            await eventually(reported, what="the metrics reporting Kafka unreachable")
            health = await client.get(f"{svc.url}/healthz")
            assert health.json() == {"status": "ok"}  # the address is for the logs only
            assert (await client.get(f"{svc.url}/readyz")).status_code == 200
    finally:
        logs = svc.stop()
    assert f"Kafka unreachable at {dead}" in logs


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ELEVATE_DATABASE_URL": "mysql://nope"}, "ELEVATE_DATABASE_URL"),
        ({"ELEVATE_HTTP_PORT": "http"}, "ELEVATE_HTTP_PORT"),
        ({"ELEVATE_NO_SUCH_OPTION": "1"}, "ELEVATE_NO_SUCH_OPTION"),
        (
            {"ELEVATE_MODE": "prod", "ELEVATE_AWS_ACCESS_KEY_ID": "testing"},
            "ELEVATE_AWS_ACCESS_KEY_ID",
        ),
    ],
)
def test_malformed_setting_stops_with_one_line(env: dict[str, str], named: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    proc = subprocess.run(
        [sys.executable, "-m", "elevate_approval.main"],
        cwd=ROOT,
        capture_output=True,
        env={**clean, "ELEVATE_MODE": "test", **env},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"elevate: invalid setting {named}:")
