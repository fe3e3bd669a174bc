"""Kafka client security settings: what a process may connect with, and how.

The broker side (SASL_SSL + SCRAM, ACLs) is exercised against the real broker in
tests/contract/test_kafka_acls.py. Amazon MSK IAM cannot be reached from here: its token
provider is tested offline (the token is a SigV4-presigned URL, signed locally)."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from elevate_core.errors import ConfigurationError
from elevate_core.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    MskIamTokenProvider,
    SaslMechanism,
    SecurityProtocol,
)
from elevate_core.settings import Settings, load_settings

from tests.unit.production import set_production_env


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("ELEVATE_"):
            monkeypatch.delenv(key)
    set_production_env(monkeypatch, tmp_path)
    monkeypatch.delenv("ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS")  # under test


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "kafka.password"
    path.write_text("s3cret-one\n")
    return path


def _error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(f"ELEVATE_{key.upper()}", value)
    with pytest.raises(ConfigurationError) as err:
        load_settings(Settings)
    return str(err.value)


def test_plaintext_is_refused_in_production_naming_the_risk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = _error(monkeypatch)  # the default protocol is PLAINTEXT
    assert message.startswith("ELEVATE_KAFKA_SECURITY_PROTOCOL: PLAINTEXT is refused")
    assert "forge approvals" in message
    assert "ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS" in message
    monkeypatch.setenv("ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS", "true")
    assert load_settings(Settings).kafka_security_protocol is SecurityProtocol.PLAINTEXT


def test_dev_and_test_modes_may_use_plaintext(monkeypatch: pytest.MonkeyPatch) -> None:
    for mode in ("dev", "test"):
        monkeypatch.setenv("ELEVATE_MODE", mode)
        assert load_settings(Settings).kafka.security.protocol is SecurityProtocol.PLAINTEXT


def test_scram_needs_a_user_and_a_readable_password_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, password_file: Path
) -> None:
    assert _error(monkeypatch, kafka_security_protocol="SASL_SSL").startswith(
        "ELEVATE_KAFKA_SASL_USERNAME: SCRAM-SHA-512 needs a user name"
    )
    monkeypatch.setenv("ELEVATE_KAFKA_SASL_USERNAME", "approval")
    assert _error(monkeypatch).startswith("ELEVATE_KAFKA_SASL_PASSWORD_FILE: SCRAM-SHA-512 needs")
    missing = tmp_path / "nope"
    assert _error(monkeypatch, kafka_sasl_password_file=str(missing)) == (
        f"ELEVATE_KAFKA_SASL_PASSWORD_FILE: no such file {missing}"
    )
    monkeypatch.setenv("ELEVATE_KAFKA_SASL_PASSWORD_FILE", str(password_file))
    kafka = load_settings(Settings).kafka
    assert kafka.principal == "approval"
    assert kafka.security.protocol is SecurityProtocol.SASL_SSL


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"kafka_sasl_username": "approval"},
            "ELEVATE_KAFKA_SASL_USERNAME: SASL credentials need SASL_SSL, not PLAINTEXT",
        ),
        (
            {
                "kafka_security_protocol": "SASL_SSL",
                "kafka_sasl_mechanism": "AWS_MSK_IAM",
                "kafka_sasl_username": "approval",
            },
            "ELEVATE_KAFKA_SASL_USERNAME: AWS_MSK_IAM takes no user name or password",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cert_file": "/etc/hosts"},
            "ELEVATE_KAFKA_SSL_CERT_FILE: a client certificate needs its key",
        ),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "ELEVATE_KAFKA_SECURITY_PROTOCOL: "),
    ],
)
def test_contradictions_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    assert _error(monkeypatch, **env).startswith(message)


def test_the_password_is_read_when_a_client_is_built_so_a_rotated_secret_is_used(
    password_file: Path,
) -> None:
    security = KafkaSecurity(
        SecurityProtocol.SASL_SSL, username="approval", password_file=password_file
    )
    options = security.client_options()
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "approval"
    assert options["sasl_plain_password"] == "s3cret-one"
    assert options["ssl_context"].check_hostname  # the broker's name is verified
    password_file.write_text("s3cret-two\n")  # the mounted secret rotated
    assert security.client_options()["sasl_plain_password"] == "s3cret-two"
    assert "s3cret" not in repr(KafkaEndpoint("broker:9093", security))


def test_an_empty_or_unreadable_password_file_is_a_clear_error(password_file: Path) -> None:
    password_file.write_text("\n")
    security = KafkaSecurity(
        SecurityProtocol.SASL_SSL, username="approval", password_file=password_file
    )
    with pytest.raises(ConfigurationError, match=r"kafka_sasl_password_file: .* is empty"):
        security.client_options()


def test_msk_iam_uses_oauthbearer_with_the_signer() -> None:
    security = KafkaSecurity(
        SecurityProtocol.SASL_SSL, mechanism=SaslMechanism.AWS_MSK_IAM, msk_region="eu-west-1"
    )
    options = security.client_options()
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    provider = options["sasl_oauth_token_provider"]
    assert isinstance(provider, MskIamTokenProvider)
    assert provider.region == "eu-west-1"
    assert "sasl_plain_password" not in options


async def test_the_msk_token_is_a_presigned_connect_url_for_the_region_and_is_reused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    provider = MskIamTokenProvider("eu-west-1")
    token = await provider.token()
    url = urlparse(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode())
    query = parse_qs(url.query)
    assert url.hostname == "kafka.eu-west-1.amazonaws.com"
    assert query["Action"] == ["kafka-cluster:Connect"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert "/eu-west-1/kafka-cluster/aws4_request" in query["X-Amz-Credential"][0]
    assert await provider.token() == token  # not re-signed for every connection
