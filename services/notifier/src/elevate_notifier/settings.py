"""notifier's own settings (on top of the shared ones; prefix ELEVATE_).

Every channel is optional: one with no settings sends nothing. Secrets — the Slack bot
token, the SMTP password, webhook keys — are files (mounted secrets), read when used and
never logged; outside dev mode the transport must be encrypted."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from elevate_core.settings import Mode, Settings
from pydantic import BaseModel, Field, model_validator

Audience = Literal["approvers", "requester", "security"]
AUDIENCES: tuple[Audience, ...] = ("approvers", "requester", "security")


class Webhook(BaseModel):
    """A generic receiver (Teams, PagerDuty, a SIEM…): JSON bodies signed with HMAC-SHA256
    over `<timestamp>.<body>` with the key in `key_file` (docs/notifications.md)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    url: str
    key_file: Path
    audiences: list[Audience] = Field(default_factory=lambda: list(AUDIENCES), min_length=1)


class NotifierSettings(Settings):
    # The portal's public URL: every message links to the request's page there.
    portal_url: str = "http://127.0.0.1:8000"
    # "Ending soon" is sent this long before a grant's end (none for shorter grants).
    ending_soon_seconds: float = Field(default=600.0, gt=0)
    # An event older than this when read is history, not news (a replay, a consumer far
    # behind): it updates what notifier knows but sends nothing.
    stale_after_seconds: float = Field(default=3600.0, gt=0)

    # Slack (a bot token with chat:write, users:read, users:read.email).
    slack_bot_token_file: Path | None = None
    slack_api_url: str = "https://slack.com/api/"
    # Approval rule name -> Slack channel id for its approval messages; a rule not listed
    # sends a direct message to each approver (found by their Identity Store email).
    slack_approval_channels: dict[str, str] = Field(default_factory=dict)
    slack_dm_requesters: bool = True
    slack_security_channel: str | None = None

    # Email over SMTP; STARTTLS is required outside dev mode.
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, gt=0, lt=65536)
    smtp_starttls: bool = True
    smtp_ca_file: Path | None = None  # the server's CA, if not a public one
    smtp_username: str | None = None
    smtp_password_file: Path | None = None
    smtp_from: str = "elevate@localhost"
    smtp_timeout_seconds: float = Field(default=15.0, gt=0)
    smtp_security_recipients: list[str] = Field(default_factory=list)

    webhooks: list[Webhook] = Field(default_factory=list)
    # Replay protection offered to receivers: the timestamp is part of what is signed.
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)

    # A delivery is retried with backoff (a channel that is down) this many times before
    # it is dead-lettered with its reason; the backoff doubles up to its ceiling.
    delivery_max_attempts: int = Field(default=20, ge=1)
    delivery_backoff_seconds: float = Field(default=2.0, gt=0)
    delivery_max_backoff_seconds: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _secret_files_exist(self) -> Self:
        files = [
            ("slack_bot_token_file", self.slack_bot_token_file),
            ("smtp_password_file", self.smtp_password_file),
            *((f"webhooks[{h.name}].key_file", h.key_file) for h in self.webhooks),
        ]
        for label, path in files:
            if path is not None and not path.is_file():
                raise ValueError(f"{label}: no such file {path}")
        if len({h.name for h in self.webhooks}) != len(self.webhooks):
            raise ValueError("webhooks: names must be unique")
        return self

    @model_validator(mode="after")
    def _encrypted_outside_dev(self) -> Self:
        if self.mode is Mode.DEV:
            return self
        if self.smtp_host and not self.smtp_starttls:
            raise ValueError("smtp_starttls: required outside dev mode (mail carries requests)")
        if self.smtp_username and self.smtp_password_file is None:
            raise ValueError("smtp_password_file: required with smtp_username")
        if self.mode is not Mode.PROD:
            return self
        urls = [
            ("portal_url", self.portal_url),
            ("slack_api_url", self.slack_api_url),
            *((f"webhooks[{h.name}].url", h.url) for h in self.webhooks),
        ]
        insecure = [label for label, url in urls if urlsplit(url).scheme != "https"]
        if insecure:
            raise ValueError(f"{', '.join(insecure)}: https required in prod mode")
        return self

    def request_url(self, request_id: str) -> str:
        return f"{self.portal_url.rstrip('/')}/requests/{request_id}"
