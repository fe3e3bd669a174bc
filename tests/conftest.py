"""Session-wide real components: Kafka (KRaft), PostgreSQL and moto, each on free ports
and in temp dirs, so `make test` runs beside `make dev`.

A test that needs a component it cannot reach fails; nothing here skips. The session is a
recorded run (`elevate_local.runs`): SIGTERM and SIGHUP tear it down like Ctrl-C, its
components die with it even on SIGKILL, and it first removes what dead runs left.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from elevate_core.settings import TEST_MODE_OPT_IN
from elevate_local import runs
from elevate_local.event_keys import LocalEventKeys
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster

from tests import harness

# Tests must never reach a real AWS account, whatever the developer's shell holds.
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)
os.environ[TEST_MODE_OPT_IN] = "1"  # test mode (every guard off) runs only under this harness


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")  # pytest then tears everything down


def pytest_sessionstart(session: pytest.Session) -> None:
    runs.begin("test")
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)


def pytest_unconfigure(config: pytest.Config) -> None:
    runs.current().end()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Skips prove nothing here: a skipped test is reported as a failure."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped tests are failures in Elevate's suite: {reason}"
    return report


@pytest.fixture(scope="session", autouse=True)
def aws_calls_within_the_policies() -> Iterator[None]:
    """When the session ends: every AWS operation a fault proxy forwarded (grant-worker's
    and request-api's calls in the stack and worker tests) is granted by deploy/aws/iam/."""
    yield
    from elevate_local import aws_proxy

    from tests import iam

    granted = {a for s in iam.SERVICES for a in iam.granted(iam.policy(s))}
    outside = sorted(
        f"{prefix}.{operation}"
        for prefix, operation in aws_proxy.SEEN
        if (service := iam.service_of_target(prefix)) is None
        or iam.action_of(service, operation) not in granted
    )
    assert outside == [], "the services called AWS operations no policy in deploy/aws/iam grants"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """The session's broker, secured as production: SASL_SSL + SCRAM, deny by default. A
    test connects as a principal (`kafka.endpoint(principal)`, the super user by default)
    after `kafka.allow(topic_prefix)` grants the ACL table for its topics."""
    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"), ephemeral=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session", autouse=True)
def event_keys(tmp_path_factory: pytest.TempPathFactory) -> LocalEventKeys:
    """The session's event-signing keys: services sign and verify with them, and the
    harness signs what it publishes on a signed topic as that topic's writer would."""
    keys = LocalEventKeys.ensure(tmp_path_factory.mktemp("event-keys"))
    harness.use_event_keys(keys)
    return keys


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(tmp_path_factory.mktemp("postgres"), ephemeral=True)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(postgres: PostgresCluster) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'elevate.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Contract tests run once per backend."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from elevate_local.moto import MotoServer

    server = MotoServer()
    server.start()
    yield server.endpoint_url
    server.stop()


@pytest.fixture
def topic_prefix() -> str:
    """Per-test topic names on the one session broker."""
    return f"t{uuid.uuid4().hex[:8]}."
