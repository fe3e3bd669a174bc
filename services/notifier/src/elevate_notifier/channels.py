"""The channels: Slack (Web API through `slack-sdk`), email (SMTP with STARTTLS) and
signed webhooks. Each sends one `Message` to one target and says how it failed: a channel
that is down or throttling raises `ChannelDown` (retried with backoff), one that refuses
the message for good raises `ChannelRefused` (dead-lettered with the reason).

Secrets are read from their files when a message is sent (a rotated secret is picked up
without a restart) and never appear in errors or logs."""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Protocol
from urllib.error import URLError

import httpx
import orjson
from elevate_core.errors import PermanentError, TransientError
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from elevate_notifier import slack, webhooks
from elevate_notifier.domain import Message
from elevate_notifier.settings import NotifierSettings, Webhook


class ChannelDown(TransientError):
    """The channel could not take the message now; it is retried with backoff."""


class ChannelRefused(PermanentError):
    """The channel refused the message for good (unknown recipient, bad request…)."""


@dataclass(frozen=True, slots=True)
class Sent:
    """Where a Slack message went (to update it later); nothing for other channels."""

    slack_channel: str | None = None
    slack_ts: str | None = None


class Sender(Protocol):
    channel: str

    async def send(self, target: str, message: Message, *, key: str) -> Sent:
        """Send `message` to `target`; `key` identifies the delivery (stable across
        retries, so a receiver can drop a repeat)."""
        ...


def read_secret(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()


class SlackSender:
    channel = "slack"

    def __init__(self, *, token_file: Path, api_url: str, timeout: float = 10.0) -> None:
        self.token_file = token_file
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"
        self.timeout = timeout

    def client(self) -> WebClient:
        return WebClient(
            token=read_secret(self.token_file), base_url=self.api_url, timeout=int(self.timeout)
        )

    async def send(self, target: str, message: Message, *, key: str) -> Sent:
        return await asyncio.to_thread(self._send, target, message)

    def _send(self, target: str, message: Message) -> Sent:
        client = self.client()
        try:
            if target.startswith("update:"):
                _, channel, ts = target.split(":", 2)
                client.chat_update(
                    channel=channel, ts=ts, text=message.subject, blocks=slack.blocks(message)
                )
                return Sent(channel, ts)
            if target.startswith("email:"):
                found = client.users_lookupByEmail(email=target.removeprefix("email:"))
                channel = str(found["user"]["id"])  # a user id: Slack opens the DM
            else:
                channel = target.removeprefix("channel:")
            posted = client.chat_postMessage(
                channel=channel, text=message.subject, blocks=slack.blocks(message)
            )
            return Sent(str(posted["channel"]), str(posted["ts"]))
        except SlackApiError as exc:
            raise _slack_failure(exc) from None
        except (SlackClientError, URLError, OSError) as exc:
            raise ChannelDown(f"slack unreachable: {type(exc).__name__}") from None


def _slack_failure(exc: SlackApiError) -> Exception:
    status = exc.response.status_code
    error = str(exc.response.get("error") or status)
    if status == 429 or error == "ratelimited":
        after = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
        return ChannelDown("slack: rate limited", retry_after=float(after or 1))
    if status >= 500 or error in {"internal_error", "fatal_error", "service_unavailable"}:
        return ChannelDown(f"slack: {error}")
    return ChannelRefused(f"slack: {error}")


class EmailSender:
    channel = "email"

    def __init__(self, settings: NotifierSettings) -> None:
        assert settings.smtp_host is not None
        self.host = settings.smtp_host
        self.port = settings.smtp_port
        self.starttls = settings.smtp_starttls
        self.ca_file = settings.smtp_ca_file
        self.username = settings.smtp_username
        self.password_file = settings.smtp_password_file
        self.sender = settings.smtp_from
        self.timeout = settings.smtp_timeout_seconds
        self._context: tuple[int | None, ssl.SSLContext] | None = None

    def tls_context(self) -> ssl.SSLContext:
        """One context for every mail (loading a trust store costs tens of ms of CPU), made
        anew when the CA file changes, so a rotated CA is still picked up without a restart."""
        stamp = self.ca_file.stat().st_mtime_ns if self.ca_file else None
        if self._context is None or self._context[0] != stamp:
            cafile = str(self.ca_file) if self.ca_file else None
            self._context = (stamp, ssl.create_default_context(cafile=cafile))
        return self._context[1]

    async def send(self, target: str, message: Message, *, key: str) -> Sent:
        await asyncio.to_thread(self._send, target, message, key)
        return Sent()

    def _send(self, to: str, message: Message, key: str) -> None:
        mail = email_message(message, sender=self.sender, to=to, key=key)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.ehlo()
                if self.starttls:
                    # Never falls back to plain text: no STARTTLS offered is an error.
                    smtp.starttls(context=self.tls_context())
                    smtp.ehlo()
                if self.username and self.password_file is not None:
                    smtp.login(self.username, read_secret(self.password_file))
                smtp.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = {code for code, _ in exc.recipients.values()}
            if all(400 <= code < 500 for code in codes):
                raise ChannelDown(f"smtp: recipient deferred {sorted(codes)}") from None
            raise ChannelRefused(f"smtp: recipient refused {sorted(codes)}") from None
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise ChannelDown(f"smtp: {exc.smtp_code} (try later)") from None
            raise ChannelRefused(f"smtp: refused with {exc.smtp_code}") from None
        except smtplib.SMTPNotSupportedError:
            raise ChannelDown("smtp: the server offers no STARTTLS (not sent in clear)") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ChannelDown(f"smtp unreachable: {type(exc).__name__}") from None


def email_message(message: Message, *, sender: str, to: str, key: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = " ".join(message.subject.split())  # no header injection by newline
    # Stable across retries: a repeat of the same delivery is recognisably the same mail.
    mail["Message-ID"] = f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@elevate>"
    lines = [message.subject, ""]
    lines += [f"{label}: {value}" for label, value in message.facts]
    if message.link:
        lines += ["", f"Open in Elevate: {message.link}"]
    if message.actions:
        lines += ["Approve or reject it there (or from Slack, where configured)."]
    mail.set_content("\n".join(lines) + "\n")
    return mail


class WebhookSender:
    channel = "webhook"

    def __init__(self, hooks: list[Webhook], *, timeout: float) -> None:
        self.hooks = {hook.name: hook for hook in hooks}
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    async def send(self, target: str, message: Message, *, key: str) -> Sent:
        hook = self.hooks.get(target)
        if hook is None:
            raise ChannelRefused(f"webhook {target!r} is no longer configured")
        body = orjson.dumps({"id": key, **_webhook_body(message)})
        headers = webhooks.signed_headers(read_secret(hook.key_file).encode(), body, delivery=key)
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        try:
            response = await self._http.post(hook.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ChannelDown(f"webhook {target}: {type(exc).__name__}") from None
        if response.status_code == 429 or response.status_code >= 500:
            raise ChannelDown(f"webhook {target}: HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ChannelRefused(f"webhook {target}: HTTP {response.status_code}")
        return Sent()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _webhook_body(message: Message) -> dict[str, Any]:
    return {
        "kind": message.kind,
        "audience": message.audience,
        "subject": message.subject,
        "facts": dict(message.facts),
        "link": message.link,
        "request_id": message.request_id,
        **message.extra,
    }


def senders(settings: NotifierSettings) -> list[Sender]:
    """The configured channels."""
    out: list[Sender] = []
    if settings.slack_bot_token_file is not None:
        out.append(
            SlackSender(token_file=settings.slack_bot_token_file, api_url=settings.slack_api_url)
        )
    if settings.smtp_host:
        out.append(EmailSender(settings))
    if settings.webhooks:
        out.append(WebhookSender(settings.webhooks, timeout=settings.webhook_timeout_seconds))
    return out
