"""request-api's own settings (on top of the shared ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from elevate_core.settings import Mode, Settings
from pydantic import Field, field_validator, model_validator

from elevate_request_api.auth import ASYMMETRIC

TokenType = Literal["access_token", "id_token"]


class RequestApiSettings(Settings):
    # How far in the past "now" may be (how far ahead: the shared request_horizon_days).
    start_tolerance_seconds: int = Field(default=300, ge=0)
    # JWT checks.
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    jwks_min_refresh_seconds: float = Field(default=10.0, ge=0)
    # Bearer token types accepted: RFC 9068 access tokens (`typ` at+jwt); ID tokens
    # (`typ` JWT or none) only where the IdP issues no JWT access tokens (the local one).
    oidc_token_types: list[TokenType] = Field(default=["access_token"], min_length=1)
    # Signing algorithms accepted (each token must also use the one its key declares).
    oidc_algorithms: list[str] = Field(default=["RS256", "PS256", "ES256", "EdDSA"], min_length=1)
    # Longest `exp - iat` accepted: a stolen long-lived token is a long-lived credential.
    jwt_max_lifetime_seconds: int = Field(default=12 * 3600, ge=60)
    # Largest request body read (413 beyond); the largest valid one is a few KiB.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # Open status streams (SSE) one user may hold on one replica (429 beyond).
    max_streams_per_user: int = Field(default=5, ge=1)
    # A replica may serve the API without projecting the read model (then another does).
    read_model_consumer: bool = True

    # The portal (docs/portal.md). Its public URL (the OIDC redirect goes to
    # `<portal_base_url>/callback`): required, https, in prod; dev and test serve it on
    # http://<http_host>:<http_port>.
    portal_base_url: str = ""
    # The OIDC client the portal signs in as; its ID tokens' `aud`.
    portal_client_id: str = "elevate-portal"
    # A confidential client's secret, as a file (a mounted secret); none: a public client
    # (PKCE alone).
    portal_client_secret_file: Path | None = None
    portal_scope: str = "openid profile email"
    # A session unused this long is over; any session is over this long after sign-in.
    portal_idle_timeout_seconds: int = Field(default=30 * 60, ge=1)
    portal_absolute_timeout_seconds: int = Field(default=12 * 3600, ge=60)

    # Approve and reject from Slack (docs/notifications.md): the Slack app's signing secret
    # and bot token, as files; without both the interaction route answers 404.
    slack_signing_secret_file: Path | None = None
    slack_bot_token_file: Path | None = None
    slack_api_url: str = "https://slack.com/api/"

    @property
    def portal_url(self) -> str:
        return (self.portal_base_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    @model_validator(mode="after")
    def _portal_is_https_in_prod(self) -> Self:
        if self.mode is Mode.PROD:
            parts = urlsplit(self.portal_base_url)
            if parts.scheme.lower() != "https" or not parts.hostname:
                raise ValueError(
                    "portal_base_url: required in prod mode, an https:// URL (the portal's "
                    "public address; its session cookie is Secure)"
                )
        return self

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric(cls, value: list[str]) -> list[str]:
        refused = [alg for alg in value if alg not in ASYMMETRIC]
        if refused:
            raise ValueError(
                f"only asymmetric algorithms ({', '.join(sorted(ASYMMETRIC))}), not {refused}"
            )
        return value
