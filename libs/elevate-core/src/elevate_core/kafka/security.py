"""How every Elevate Kafka client connects and proves who it is (docs/security.md).

One `KafkaEndpoint` — bootstrap servers plus `KafkaSecurity` — builds every producer,
consumer and admin client, so no client can be made without the process's credentials.

- `SASL_SSL` + `SCRAM-SHA-512`: a user name and a password *file* (a mounted secret); the
  local broker and the tests run this way.
- `SASL_SSL` + `AWS_MSK_IAM`: Amazon MSK's IAM auth, SASL/OAUTHBEARER with a token signed
  by `aws-msk-iam-sasl-signer-python` from the process's AWS credentials.
- `SSL`: TLS, optionally with a client certificate (mutual TLS: the certificate's subject
  is the principal).
- `PLAINTEXT`: nothing is authenticated or encrypted; settings refuse it outside dev/test
  unless the operator sets the setting that names that risk.

Secrets are read from their files each time a client is built, so a rotated secret is used
by the next connection without a restart; nothing here logs or repr()s a secret.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.abc import AbstractTokenProvider
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from elevate_core.errors import ConfigurationError


class SecurityProtocol(StrEnum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_SSL = "SASL_SSL"


class SaslMechanism(StrEnum):
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    AWS_MSK_IAM = "AWS_MSK_IAM"  # SASL/OAUTHBEARER with an MSK IAM token


class MskIamTokenProvider(AbstractTokenProvider):  # type: ignore[misc]
    """SASL/OAUTHBEARER tokens for Amazon MSK IAM auth, signed (SigV4, offline) from the
    AWS credentials the process has (IRSA, instance role, env). A token is reused until a
    minute before it expires, so reconnect storms do not re-sign for every connection."""

    def __init__(self, region: str, *, refresh_margin: float = 60.0) -> None:
        self.region = region
        self.refresh_margin = refresh_margin
        self._cached: tuple[str, float] | None = None
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        async with self._lock:
            if self._cached is None or time.time() >= self._cached[1] - self.refresh_margin:
                self._cached = await asyncio.to_thread(self._sign)
            return self._cached[0]

    def _sign(self) -> tuple[str, float]:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(self.region)
        return str(token), int(expiry_ms) / 1000


def _read_secret(path: Path, what: str) -> str:
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise ConfigurationError(f"{what}: cannot read {path}: {exc.strerror}") from None
    if not value:
        raise ConfigurationError(f"{what}: {path} is empty")
    return value


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    username: str = ""
    password_file: Path | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    key_password_file: Path | None = field(default=None, repr=False)
    msk_region: str = "us-east-1"

    def problems(self) -> list[str]:
        """What is missing or contradictory, as `setting: reason` lines (empty: usable)."""
        out: list[str] = []
        if self.protocol is SecurityProtocol.SASL_SSL:
            if self.mechanism is SaslMechanism.SCRAM_SHA_512:
                if not self.username:
                    out.append("kafka_sasl_username: SCRAM-SHA-512 needs a user name")
                if self.password_file is None:
                    out.append("kafka_sasl_password_file: SCRAM-SHA-512 needs a password file")
            elif self.username or self.password_file:
                out.append("kafka_sasl_username: AWS_MSK_IAM takes no user name or password")
        elif self.username or self.password_file:
            out.append(f"kafka_sasl_username: SASL credentials need SASL_SSL, not {self.protocol}")
        if self.protocol is SecurityProtocol.PLAINTEXT and (
            self.ca_file or self.cert_file or self.key_file
        ):
            out.append("kafka_ssl_ca_file: TLS files need SSL or SASL_SSL, not PLAINTEXT")
        if (self.cert_file is None) != (self.key_file is None):
            out.append("kafka_ssl_cert_file: a client certificate needs its key (and back)")
        return out

    @property
    def tls(self) -> bool:
        return self.protocol is not SecurityProtocol.PLAINTEXT

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker's certificate and host name against the CA bundle (the
        system's trust store when none is configured); TLS 1.2 at least."""
        password = (
            _read_secret(self.key_password_file, "kafka_ssl_key_password_file")
            if self.key_password_file
            else None
        )
        context: ssl.SSLContext = create_ssl_context(
            cafile=self.ca_file, certfile=self.cert_file, keyfile=self.key_file, password=password
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def client_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments (the same for producers, consumers and admins)."""
        if self.problems():
            raise ConfigurationError(self.problems()[0])
        options: dict[str, Any] = {"security_protocol": self.protocol.value}
        if self.tls:
            options["ssl_context"] = self.ssl_context()
        if self.protocol is SecurityProtocol.SASL_SSL:
            if self.mechanism is SaslMechanism.AWS_MSK_IAM:
                options["sasl_mechanism"] = "OAUTHBEARER"
                options["sasl_oauth_token_provider"] = MskIamTokenProvider(self.msk_region)
            else:
                assert self.password_file is not None
                options["sasl_mechanism"] = self.mechanism.value
                options["sasl_plain_username"] = self.username
                options["sasl_plain_password"] = _read_secret(
                    self.password_file, "kafka_sasl_password_file"
                )
        return options


@dataclass(frozen=True, slots=True)
class KafkaEndpoint:
    """Where Kafka is and how to prove who we are there: builds every client."""

    bootstrap: str
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @property
    def principal(self) -> str:
        return self.security.username or "(anonymous)"

    def environment(self) -> dict[str, str]:
        """The `ELEVATE_KAFKA_*` settings that make a process connect as this endpoint does
        (paths only: secrets stay in their files)."""
        sec = self.security
        env = {
            "ELEVATE_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "ELEVATE_KAFKA_SECURITY_PROTOCOL": sec.protocol.value,
            "ELEVATE_KAFKA_SASL_MECHANISM": sec.mechanism.value,
        }
        files = {
            "SASL_PASSWORD_FILE": sec.password_file,
            "SSL_CA_FILE": sec.ca_file,
            "SSL_CERT_FILE": sec.cert_file,
            "SSL_KEY_FILE": sec.key_file,
            "SSL_KEY_PASSWORD_FILE": sec.key_password_file,
        }
        env |= {f"ELEVATE_KAFKA_{name}": str(path) for name, path in files.items() if path}
        if sec.username:
            env["ELEVATE_KAFKA_SASL_USERNAME"] = sec.username
        return env

    def as_settings(self) -> dict[str, Any]:
        """The same, as `Settings(**…)` keyword arguments."""
        return {k.removeprefix("ELEVATE_").lower(): v for k, v in self.environment().items()}

    def options(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.bootstrap, **self.security.client_options()}

    def producer(self, **kwargs: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.options(), **kwargs)

    def consumer(self, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.options(), **kwargs)

    def admin(self, **kwargs: Any) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(**self.options(), **kwargs)
