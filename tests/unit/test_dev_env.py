"""`make dev`'s service environments: local components, dev mode, a database each."""

from __future__ import annotations

from pathlib import Path

import pytest
from elevate_core.kafka.security import KafkaEndpoint, KafkaSecurity, SecurityProtocol
from elevate_local.event_keys import LocalEventKeys
from elevate_local.supervisor import SERVICES, Ports, principal_of, service_env

MOTO, PROXY = "http://127.0.0.1:5000", "http://127.0.0.1:5001"


def env_of(service: str, database_url: str | None = None) -> dict[str, str]:
    return service_env(
        service,
        ports=Ports(),
        data_dir=Path("/data"),
        kafka=KafkaEndpoint(
            "127.0.0.1:9092",
            KafkaSecurity(
                SecurityProtocol.SASL_SSL,
                username=principal_of(service),
                password_file=Path(f"/data/kafka/credentials/{principal_of(service)}.password"),
                ca_file=Path("/data/kafka/tls/ca.pem"),
            ),
        ),
        keys=LocalEventKeys(Path("/data/keys")),
        moto_url=MOTO,
        proxy_url=PROXY,
        database_url=database_url,
    )


@pytest.mark.parametrize(("name", "service"), SERVICES)
def test_each_service_runs_in_dev_mode_on_its_own_port(name: str, service: str) -> None:
    env = env_of(service)
    assert env["ELEVATE_MODE"] == "dev"
    assert env["ELEVATE_HTTP_PORT"] == str(getattr(Ports(), service))
    assert env["ELEVATE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092"
    # its own Kafka principal (the broker enforces the ACL table on it), over TLS
    assert env["ELEVATE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["ELEVATE_KAFKA_SASL_USERNAME"] == name
    assert env["ELEVATE_KAFKA_SASL_PASSWORD_FILE"] == f"/data/kafka/credentials/{name}.password"
    # every service verifies signed events; their writers also sign them
    assert env["ELEVATE_EVENT_VERIFY_KEYS_DIR"] == "/data/keys/public"
    signs = name in ("request-api", "approval")
    assert env.get("ELEVATE_EVENT_SIGNING_KEY_FILE") == (
        f"/data/keys/{name}.key" if signs else None
    )
    assert env["ELEVATE_OIDC_ISSUER"] == "http://127.0.0.1:9400"
    assert env["ELEVATE_DATA_DIR"] == "/data/db"
    # the embedded default: SQLite under the data dir, one file per service
    assert "ELEVATE_DATABASE_URL" not in env
    # what the proxy emulates on top of moto: grant-worker's reconciler calls, and the
    # ExternalIds request-api binds sign-ins to
    expected = PROXY if name in ("grant-worker", "request-api") else MOTO
    assert env["ELEVATE_AWS_ENDPOINT_URL"] == expected
    # audit-ingest fetches only the local trail's objects; no other service knows the setting
    sources = "elevate-cloudtrail/AWSLogs" if name == "audit-ingest" else None
    assert env.get("ELEVATE_CLOUDTRAIL_SOURCES") == sources


def test_a_configured_database_becomes_one_per_service() -> None:
    env = env_of("approval", "sqlite+aiosqlite:///tmp/elevate.db")
    assert env["ELEVATE_DATABASE_URL"] == "sqlite+aiosqlite:///tmp/elevate_approval.db"
