"""Process settings from the environment (prefix ELEVATE_), validated at start.

A malformed setting stops the process with one line naming it; dev-only values
(moto's dummy AWS key, the local OIDC issuer's insecure HTTP) are refused outside dev.
Production refuses every setting that would run it on the local stack's stand-ins
(SQLite, the example policy, the local OIDC provider, an AWS emulator), and test mode —
which turns those guards off — runs only under the test harness's opt-in.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings

from elevate_core.directory.models import PersonKey
from elevate_core.errors import ConfigurationError
from elevate_core.events.signing import Signer, Verifier, signed_topics_of
from elevate_core.settings_base import (
    ENV_PREFIX,
    TEST_MODE_OPT_IN,
    DatabaseSettings,
    KafkaSettings,
    Mode,
    ProcessSettings,
)

# Re-exported: callers take every settings name from this module.
__all__ = [
    "ENV_PREFIX",
    "TEST_MODE_OPT_IN",
    "DatabaseSettings",
    "KafkaSettings",
    "Mode",
    "ProcessSettings",
    "Settings",
    "load_settings",
    "load_settings_or_exit",
]

DEV_AWS_KEY = "testing"  # moto's conventional dummy credential
# The `make dev` example policy, found by path in a checkout and by its header anywhere.
EXAMPLE_POLICY = Path(__file__).resolve().parents[4] / "deploy" / "local" / "policy.yaml"
EXAMPLE_POLICY_MARKER = "Elevate access policy for the local example organisation"
LOCAL_OIDC_HOSTS = frozenset({"127.0.0.1", "localhost"})
LOCAL_OIDC_PORT = 9400  # deploy/local's OIDC provider (elevate_local.oidc)
# Claims many identity providers let users (or their profile sync) change, and that OIDC
# Core says are not unique: binding identity to one lets a user become someone else.
MUTABLE_CLAIMS = frozenset(
    {"preferred_username", "email", "name", "nickname", "given_name", "family_name", "upn"}
    | {"unique_name", "login", "username"}
)
UserAttribute = Literal["externalId", "userName", "emails.value"]


class Settings(KafkaSettings, DatabaseSettings):
    """Settings shared by every Elevate service."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=1, le=65535)
    # Signed events (elevate_core.events.signing): the writer's Ed25519 private key, and
    # the directory of every writer's public keys (`<principal>[.label].pub`).
    event_signing_key_file: Path | None = None
    event_verify_keys_dir: Path | None = None
    # Replays and read-model rebuilds: a new suffix starts new consumer groups at the
    # earliest offset (every consumer of the service).
    consumer_group_suffix: str = ""
    # Purging bounded tables (elevate_core.purge): kept `margin` beyond what they protect.
    purge_margin_hours: int = Field(default=24, ge=1)
    # Dedupe rows (processed events) kept this long; default retention + margin, never less
    # outside dev/test (a shorter horizon would let a re-delivered message act twice).
    dedupe_keep_hours: int | None = Field(default=None, ge=0)
    purge_interval_seconds: float = Field(default=3600.0, gt=0)
    purge_batch_size: int = Field(default=1000, ge=1, le=100_000)
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    oidc_issuer: str = "http://127.0.0.1:9400"
    oidc_audience: str = "elevate-portal"
    # Who a token is (docs/security.md, "Identity mapping"): the value of an immutable
    # claim, looked up as an Identity Store user's ExternalId of `oidc_external_id_issuer`
    # (default: the OIDC issuer), as SCIM-provisioned users carry it, or as a unique
    # attribute. Never a claim the user can edit (refused outside dev).
    oidc_user_claim: str = "sub"
    oidc_user_attribute: UserAttribute = "externalId"
    oidc_external_id_issuer: str = ""
    # Which Identity Store attribute says two accounts are one person (separation of
    # duties: nobody approves their own request, nor counts twice towards N-of-M).
    person_key: PersonKey = "email"
    policy_file: Path = Path("deploy/local/policy.yaml")
    # How far after its submission a request may start: request-api refuses later starts,
    # approval and grant-worker re-check it (elevate_core.recheck), so all read this one.
    request_horizon_days: int = Field(default=30, ge=1)
    otel_exporter_otlp_endpoint: str | None = None
    fail_points: str = ""

    # A whole service's settings check Kafka and the database in their own places below
    # (one error at a time, the most specific first); the bases' validators stand down.
    @model_validator(mode="after")
    def _kafka_security(self) -> Self:
        return self

    @model_validator(mode="after")
    def _production_needs_postgresql(self) -> Self:
        return self

    @model_validator(mode="after")
    def _no_dev_secrets_outside_dev(self) -> Self:
        if self.mode is Mode.PROD:
            if self.aws_access_key_id == DEV_AWS_KEY or self.aws_secret_access_key == DEV_AWS_KEY:
                raise ValueError("aws_access_key_id: moto's dummy key is refused outside dev mode")
            issuer_problem = _issuer_problem(self.oidc_issuer)
            if issuer_problem:
                raise ValueError(f"oidc_issuer: {issuer_problem}")
            if self.fail_points:
                raise ValueError("fail_points: crash fail points exist only in test mode")
        if self.fail_points and self.mode is not Mode.TEST:
            raise ValueError("fail_points: crash fail points exist only in test mode")
        return self

    @model_validator(mode="after")
    def _immutable_user_claim(self) -> Self:
        if self.oidc_user_claim in MUTABLE_CLAIMS and self.mode is not Mode.DEV:
            raise ValueError(
                f"oidc_user_claim: {self.oidc_user_claim!r} can be changed by users or is "
                "not unique, so it may not identify them outside dev mode; use an immutable "
                "claim (sub, or Entra ID's oid) — docs/security.md, Identity mapping"
            )
        return self

    @model_validator(mode="after")
    def _kafka_security_in_order(self) -> Self:
        self._check_kafka_security()
        return self

    @property
    def user_claim_is_mutable(self) -> bool:
        return self.oidc_user_claim in MUTABLE_CLAIMS

    @property
    def external_id_issuer(self) -> str:
        """The Issuer of the Identity Store ExternalIds tokens are matched against."""
        return self.oidc_external_id_issuer or self.oidc_issuer

    @model_validator(mode="after")
    def _event_keys(self) -> Self:
        key, keys = self.event_signing_key_file, self.event_verify_keys_dir
        if key is not None and not key.is_file():
            raise ValueError(f"event_signing_key_file: no such file {key}")
        if keys is not None and not keys.is_dir():
            raise ValueError(f"event_verify_keys_dir: no such directory {keys}")
        if self.mode is not Mode.PROD:
            return self
        writes, reads = signed_topics_of(self.service_name)
        if writes and key is None:
            raise ValueError(
                f"event_signing_key_file: {self.service_name} writes {sorted(writes)}, whose "
                "events must be signed; mount its Ed25519 key (docs/security.md)"
            )
        if reads and keys is None:
            raise ValueError(
                f"event_verify_keys_dir: {self.service_name} reads {sorted(reads)}, whose "
                "signatures must be verified; mount the writers' public keys"
            )
        return self

    @model_validator(mode="after")
    def _dedupe_outlives_retention(self) -> Self:
        floor = self.topic_retention_days * 24 + self.purge_margin_hours
        keep = self.dedupe_keep_hours
        if self.mode is Mode.PROD and keep is not None and keep < floor:
            raise ValueError(
                f"dedupe_keep_hours: must be at least topic retention + purge margin "
                f"({floor} h) outside dev/test, or a re-delivered message could act twice"
            )
        return self

    @model_validator(mode="after")
    def _production_refuses_local_stand_ins(self) -> Self:
        if self.mode is not Mode.PROD:
            return self
        if not self.oidc_audience.strip():
            raise ValueError("oidc_audience: required in prod mode (the tokens' expected aud)")
        self._check_production_database()
        policy_problem = _policy_problem(self.policy_file, "policy_file" in self.model_fields_set)
        if policy_problem:
            raise ValueError(f"policy_file: {policy_problem}")
        if self.aws_endpoint_url:
            raise ValueError(
                "aws_endpoint_url: refused in prod mode — it sends every AWS call "
                "to another endpoint (moto in dev) instead of AWS"
            )
        return self

    @property
    def dedupe_keep(self) -> timedelta:
        """How long a processed event's id is kept (the dedupe horizon)."""
        hours = self.dedupe_keep_hours
        if hours is None:
            hours = self.topic_retention_days * 24 + self.purge_margin_hours
        return timedelta(hours=hours)

    @property
    def request_horizon(self) -> timedelta:
        return timedelta(days=self.request_horizon_days)

    def event_signer(self) -> Signer | None:
        path = self.event_signing_key_file
        return Signer.from_file(path) if path is not None else None

    def event_verifier(self) -> Verifier | None:
        path = self.event_verify_keys_dir
        return Verifier.from_dir(path) if path is not None else None

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


S = TypeVar("S", bound=ProcessSettings)


def _issuer_problem(issuer: str) -> str | None:
    """Why `issuer` may not be a production issuer, or None."""
    try:
        parts = urlsplit(issuer.strip())
        port = parts.port
    except ValueError:
        return "not a URL"
    host = (parts.hostname or "").lower()
    if host in LOCAL_OIDC_HOSTS and port == LOCAL_OIDC_PORT:
        return "the local OIDC provider (make dev) is refused in prod mode"
    if parts.scheme.lower() != "https" or not host:
        return "must be an https:// URL with a host in prod mode (plain HTTP is refused)"
    return None


def _policy_problem(path: Path, configured: bool) -> str | None:
    """Why `path` may not be the production policy, or None."""
    if not configured:
        return "required in prod mode (the default is the make-dev example policy)"
    if path.resolve() == EXAMPLE_POLICY:
        return f"{path} is the make-dev example policy, refused in prod mode"
    if not path.is_file():
        return f"no such file {path}"
    with path.open(encoding="utf-8", errors="replace") as f:
        head = f.read(4096)  # the marker is the example's first line
    if EXAMPLE_POLICY_MARKER in head:
        return f"{path} is a copy of the make-dev example policy, refused in prod mode"
    return None


def _unknown_env_names(settings_cls: type[BaseSettings]) -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in settings_cls.model_fields}
    return sorted(k for k in os.environ if k.startswith(ENV_PREFIX) and k not in known)


def load_settings(settings_cls: type[S], **overrides: Any) -> S:
    """Build settings or raise ConfigurationError with one line naming the setting."""
    unknown = _unknown_env_names(settings_cls)
    if unknown:
        raise ConfigurationError(f"{unknown[0]}: unknown setting")
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ENV_PREFIX + "_".join(str(p) for p in err["loc"]).upper() if err["loc"] else ""
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and ":" in msg:
            field, _, msg = msg.partition(":")
            loc = ENV_PREFIX + field.strip().upper()
        raise ConfigurationError(f"{loc or 'settings'}: {msg.strip()}") from None


def load_settings_or_exit(settings_cls: type[S], **overrides: Any) -> S:
    try:
        return load_settings(settings_cls, **overrides)
    except ConfigurationError as exc:
        print(f"elevate: invalid setting {exc}", file=sys.stderr)
        raise SystemExit(2) from None
