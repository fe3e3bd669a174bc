"""The settings every Elevate process shares, and the parts a one-job command reads alone.

`ProcessSettings` (mode, name, logging), `KafkaSettings` (what `elevate topics create`
needs) and `DatabaseSettings` (what `elevate migrate` needs): the Helm chart's hook Jobs
run in prod mode with nothing else. `elevate_core.settings.Settings` joins them for a whole
service.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from elevate_core.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
)

ENV_PREFIX = "ELEVATE_"
# Test mode turns every production guard off, so a stray ELEVATE_MODE=test must not start a
# production process: only the test harness sets this (not ELEVATE_-prefixed, so it
# survives the harness's stripping of the developer's ELEVATE_* variables).
TEST_MODE_OPT_IN = "I_AM_THE_ELEVATE_TEST_HARNESS"


class Mode(StrEnum):
    DEV = "dev"
    TEST = "test"
    PROD = "prod"


class ProcessSettings(BaseSettings):
    """What every Elevate process reads: its mode, name and logging."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    mode: Mode = Mode.PROD
    service_name: str = "elevate"
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @model_validator(mode="after")
    def _test_mode_needs_the_harness(self) -> Self:
        if self.mode is Mode.TEST and os.environ.get(TEST_MODE_OPT_IN) != "1":
            raise ValueError(
                "mode: test mode turns every production guard off and runs only under the "
                f"test harness ({TEST_MODE_OPT_IN}=1); use prod, or dev on a workstation"
            )
        return self


class KafkaSettings(ProcessSettings):
    """How a process reaches Kafka; alone, the settings of `elevate topics create`."""

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_client_id: str = ""
    # How this process proves who it is to Kafka (elevate_core.kafka.security); secrets
    # only as files (mounted secrets), re-read by every new connection.
    kafka_security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: SaslMechanism = SaslMechanism.SCRAM_SHA_512
    kafka_sasl_username: str = ""
    kafka_sasl_password_file: Path | None = None
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_key_password_file: Path | None = None
    # PLAINTEXT outside dev/test only with this set: it names what the operator accepts.
    kafka_allow_plaintext_anyone_can_forge_events: bool = False
    topic_prefix: str = ""
    topic_retention_days: int = Field(default=30, ge=1)
    aws_region: str = "us-east-1"  # MSK IAM signs for it (and Identity Center lives there)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        for part in value.split(","):
            host, _, port = part.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port…], got {part!r}")
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        self._check_kafka_security()
        return self

    def _check_kafka_security(self) -> None:
        problems = self.kafka_security.problems()
        if problems:
            raise ValueError(problems[0])
        for name in ("sasl_password_file", "ssl_ca_file", "ssl_cert_file", "ssl_key_file"):
            path = getattr(self, f"kafka_{name}")
            if path is not None and not path.is_file():
                raise ValueError(f"kafka_{name}: no such file {path}")
        plaintext = self.kafka_security_protocol is SecurityProtocol.PLAINTEXT
        if (
            plaintext
            and self.mode is Mode.PROD
            and not self.kafka_allow_plaintext_anyone_can_forge_events
        ):
            raise ValueError(
                "kafka_security_protocol: PLAINTEXT is refused outside dev mode — anyone who "
                "reaches the broker could read every request and forge approvals; use "
                "SASL_SSL (or SSL), or accept that risk with "
                "ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS=true"
            )

    @property
    def kafka_security(self) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=self.kafka_security_protocol,
            mechanism=self.kafka_sasl_mechanism,
            username=self.kafka_sasl_username,
            password_file=self.kafka_sasl_password_file,
            ca_file=self.kafka_ssl_ca_file,
            cert_file=self.kafka_ssl_cert_file,
            key_file=self.kafka_ssl_key_file,
            key_password_file=self.kafka_ssl_key_password_file,
            msk_region=self.aws_region,
        )

    @property
    def kafka(self) -> KafkaEndpoint:
        """Every Kafka client of the process is built from this."""
        return KafkaEndpoint(self.kafka_bootstrap_servers, self.kafka_security)


class DatabaseSettings(ProcessSettings):
    """A service's own database; alone, the settings of `elevate migrate`."""

    database_url: str = ""
    # The URL as a file (a mounted secret) instead: it holds the password, which in an
    # environment variable any process able to read /proc/<pid>/environ would see.
    database_url_file: Path | None = None
    data_dir: Path = Path(".elevate/data")

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        problem = _driver_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _url_file(self) -> Self:
        path = self.database_url_file
        if path is None:
            return self
        if self.database_url:
            raise ValueError("database_url_file: set it or ELEVATE_DATABASE_URL, not both")
        if not path.is_file():
            raise ValueError(f"database_url_file: no such file {path}")
        problem = _driver_problem(self.configured_database_url())
        if problem:
            raise ValueError(f"database_url_file: {problem}")  # never the URL: a password
        return self

    @model_validator(mode="after")
    def _production_needs_postgresql(self) -> Self:
        self._check_production_database()
        return self

    def _check_production_database(self) -> None:
        if self.mode is not Mode.PROD:
            return
        url = self.configured_database_url()
        if not url:
            raise ValueError(
                "database_url: required in prod mode, a postgresql+asyncpg:// URL "
                "(left empty it would be an SQLite file on this pod)"
            )
        if not url.startswith("postgresql+asyncpg://"):
            raise ValueError("database_url: SQLite is refused in prod mode; use PostgreSQL")

    def configured_database_url(self) -> str:
        """ELEVATE_DATABASE_URL, or the content of ELEVATE_DATABASE_URL_FILE; empty if none."""
        if self.database_url_file is not None:
            return self.database_url_file.read_text(encoding="utf-8").strip()
        return self.database_url

    def resolved_database_url(self) -> str:
        """SQLite under the data dir unless a URL is configured (the embedded default)."""
        url = self.configured_database_url()
        if url:
            return url
        return f"sqlite+aiosqlite:///{self.data_dir / (self.service_name + '.db')}"


def _driver_problem(url: str) -> str | None:
    if url and not url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        return (
            "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// "
            f"(got {url.split('://', 1)[0]}://…)"
        )
    return None
