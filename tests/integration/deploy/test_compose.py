"""docker-compose.yml, without a container engine: it loads with compose-go (the loader
Docker Compose itself uses: schema, interpolation, merges), and what it runs matches the
code — every Elevate service from the image by its own command, on `make dev`'s port,
with exactly the settings `make dev` gives it (elevate_local.supervisor.service_env,
with the compose network's names), each a setting that service's model reads and accepts.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from elevate_approval.settings import ApprovalSettings
from elevate_audit_ingest.settings import AuditSettings
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
)
from elevate_core.settings import Settings
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_local import compose
from elevate_local.event_keys import LocalEventKeys
from elevate_local.supervisor import Ports, principal_of, service_env
from elevate_notifier.settings import NotifierSettings
from elevate_request_api.settings import RequestApiSettings

from tests.stack import POLICY, ROOT

TOOL = ROOT / "deploy/tools/composecheck"
MODELS: dict[str, type[Settings]] = {
    "request_api": RequestApiSettings,
    "approval": ApprovalSettings,
    "grant_worker": GrantWorkerSettings,
    "audit_ingest": AuditSettings,
    "notifier": NotifierSettings,
}
# The local stand-ins, on make dev's ports.
HELPERS = {"kafka": "kafka", "moto": "moto", "aws-proxy": "aws_proxy", "oidc": "oidc"}
HELPERS |= {"mailbox": "mailbox"}
# Where the compose network differs from make dev's loopback.
COMPOSE = {
    "ELEVATE_OIDC_ISSUER": "http://oidc:9400",
    "ELEVATE_POLICY_FILE": "/etc/elevate/policy.yaml",
    "ELEVATE_PORTAL_URL": "http://localhost:8000",
    "ELEVATE_SMTP_HOST": "mailbox",
    "ELEVATE_SMTP_CA_FILE": "/shared/mail-tls/ca.pem",
}
NOT_IN_COMPOSE = {"ELEVATE_DATA_DIR", "ELEVATE_LOG_JSON"}  # SQLite's home; logs stay JSON


def composecheck() -> Path:
    """The binary bootstrap built for this source (scripts/bootstrap.sh: same key)."""
    digest = hashlib.sha256()
    for name in ("go.sum", "main.go"):
        text = (TOOL / name).read_bytes()
        digest.update(
            f"{hashlib.sha256(text).hexdigest()}  deploy/tools/composecheck/{name}\n".encode()
        )
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    binary = cache / "elevate/tools" / f"composecheck-{digest.hexdigest()[:16]}" / "composecheck"
    assert binary.exists(), f"{binary} is missing: run scripts/bootstrap.sh --with-postgres"
    return binary


@pytest.fixture(scope="module")
def project() -> dict[str, Any]:
    loaded = subprocess.run(
        [str(composecheck()), str(ROOT / "docker-compose.yml")], capture_output=True, text=True
    )
    assert loaded.returncode == 0, loaded.stderr
    document: dict[str, Any] = json.loads(loaded.stdout)
    return document


def expected_env(service: str) -> dict[str, str]:
    principal = principal_of(service).value
    kafka = KafkaEndpoint(
        "kafka:19092",
        KafkaSecurity(
            protocol=SecurityProtocol.SASL_SSL,
            mechanism=SaslMechanism.SCRAM_SHA_512,
            username=principal,
            password_file=Path(f"/shared/credentials/{principal}.password"),
            ca_file=Path("/shared/tls/ca.pem"),
        ),
    )
    env = service_env(
        service,
        ports=Ports(),
        data_dir=Path("/unused"),
        kafka=kafka,
        keys=LocalEventKeys(Path("/shared/keys")),
        moto_url="http://moto:5000",
        proxy_url="http://aws-proxy:5001",
        database_url=None,
    )
    env = {k: COMPOSE.get(k, v) for k, v in env.items() if k not in NOT_IN_COMPOSE}
    env["ELEVATE_DATABASE_URL"] = f"postgresql+asyncpg://postgres@postgres:5432/elevate_{service}"
    return env


def published(service: dict[str, Any]) -> list[tuple[int, int]]:
    return [(int(p["published"]), int(p["target"])) for p in service.get("ports") or []]


def test_the_elevate_services_are_the_image_by_their_own_commands(project: dict[str, Any]) -> None:
    services = project["services"]
    ours = {n for n, s in services.items() if (s.get("build") or {}).get("target") == "runtime"}
    assert ours == {n.replace("_", "-") for n in MODELS} | {"topics"}
    for name in MODELS:
        service = services[name.replace("_", "-")]
        package = ROOT / "services" / name.replace("_", "-") / "pyproject.toml"
        scripts = tomllib.loads(package.read_text())["project"]["scripts"]
        assert service["command"] == [f"elevate-{name.replace('_', '-')}"]
        assert service["command"][0] in scripts
        # the image's posture: its own non-root user, nothing writable but /tmp
        assert service.get("user") in (None, "")
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]
        assert service["tmpfs"] == ["/tmp"]


def test_ports_are_make_devs(project: dict[str, Any]) -> None:
    services, ports = project["services"], Ports()
    for name in MODELS:
        port = getattr(ports, name)
        service = services[name.replace("_", "-")]
        assert published(service) == [(port, port)]
        assert service["environment"]["ELEVATE_HTTP_PORT"] == str(port)
    for name, attr in HELPERS.items():
        assert published(services[name]) == [(getattr(ports, attr), getattr(ports, attr))]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_service_gets_make_devs_settings(project: dict[str, Any], name: str) -> None:
    env = project["services"][name.replace("_", "-")]["environment"]
    assert env == expected_env(name)


@pytest.fixture(scope="module")
def mounts(project: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The containers' mounts here: the shared volume as the init service fills it, and
    the bind mounts' sources."""
    shared = tmp_path_factory.mktemp("shared")
    compose.init(shared)
    return {"/shared": str(shared), "/etc/elevate/policy.yaml": str(POLICY)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_setting_is_one_the_service_reads_and_accepts(
    project: dict[str, Any], mounts: dict[str, str], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = project["services"][name.replace("_", "-")]["environment"]
    model = MODELS[name]
    fields = {f"ELEVATE_{field.upper()}" for field in model.model_fields}
    assert sorted(k for k in env if k.startswith("ELEVATE_") and k not in fields) == []
    for key in [k for k in os.environ if k.startswith("ELEVATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        for inside, here in mounts.items():
            value = value.replace(inside, here)
        monkeypatch.setenv(key, value)
    settings = model()  # validates every value as the service does at start
    assert settings.http_port == getattr(Ports(), name)


def test_the_compose_kafka_is_the_release_the_tests_run(project: dict[str, Any]) -> None:
    pom = (ROOT / "deploy/local/kafka/pom.xml").read_text()
    version = pom.split("<kafka.version>", 1)[1].split("<", 1)[0]
    for name in ("kafka", "kafka-setup"):
        assert project["services"][name]["image"] == f"apache/kafka:{version}"


def test_the_topics_job_runs_as_the_admin_principal_with_valid_settings(
    project: dict[str, Any], mounts: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = project["services"]["topics"]
    assert service["command"] == ["elevate", "topics", "create"]
    env = service["environment"]
    assert env["ELEVATE_KAFKA_SASL_USERNAME"] == Principal.ADMIN.value
    for key in [k for k in os.environ if k.startswith("ELEVATE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value.replace("/shared", mounts["/shared"]))
    assert Settings().kafka_sasl_username == Principal.ADMIN.value
