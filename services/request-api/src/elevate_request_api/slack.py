"""Approve and reject from Slack (docs/notifications.md).

Slack posts each button click to `/integrations/slack/interactions`. That route has no
bearer token: Slack's request signature is its authentication — HMAC-SHA256 with the
app's signing secret over `v0:<timestamp>:<body>`, refused when wrong or when the
timestamp is more than five minutes off (a replay). The clicking Slack user is then
mapped to the Identity Store user with their Slack profile email (refused when Slack has
none, when no user has it, or when it is not that user's primary email), and the decision
goes through `service.decide`, the API's own use case: self-approval, separation of
duties by person and N-of-M apply unchanged, and a second click by the same person is
refused there, publishing nothing.

The outcome is shown where it was clicked: a refusal as a message only the clicker sees,
a recorded decision by updating the approval message (buttons removed)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from elevate_core.directory.errors import DirectoryError, UserNotFoundError
from elevate_core.directory.identity import UserKey
from elevate_core.directory.models import User
from fastapi import APIRouter, Request, Response
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from elevate_request_api import service
from elevate_request_api.deps import ApiState, AppState
from elevate_request_api.domain import (
    DirectoryUnavailableError,
    InvalidRequestError,
    RequestError,
    SlackOffError,
    SlackSignatureError,
)

log = logging.getLogger(__name__)

# Slack's callback, not an API for clients: out of the OpenAPI document, as the portal's
# routes are; docs/notifications.md and the authorisation table describe it.
router = APIRouter(prefix="/integrations/slack", include_in_schema=False)

MAX_SKEW_SECONDS = 300  # Slack's own advice: older requests may be replays
ACTIONS: dict[str, Literal["approve", "reject"]] = {
    "elevate.approve": "approve",
    "elevate.reject": "reject",
}


class SlackUserError(Exception):
    """The Slack user cannot be matched to exactly one Identity Store user."""


@dataclass(frozen=True, slots=True)
class Interaction:
    slack_user: str
    decision: Literal["approve", "reject"]
    request_id: uuid.UUID
    channel: str | None
    message_ts: str | None
    blocks: list[dict[str, Any]]


def verify_signature(
    secret: bytes, *, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> None:
    """Slack's v0 request signature (api.slack.com "Verifying requests from Slack")."""
    if not timestamp or not timestamp.isdigit() or not signature:
        raise SlackSignatureError("a Slack request signature and timestamp are required")
    if abs(now - int(timestamp)) > MAX_SKEW_SECONDS:
        raise SlackSignatureError("the Slack request timestamp is too old or in the future")
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SlackSignatureError("the Slack request signature does not match")


def parse_interaction(body: bytes) -> Interaction:
    """A block_actions payload for one of Elevate's buttons."""
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        decision = ACTIONS[action["action_id"]]
        request_id = uuid.UUID(action["value"])
        user = str(payload["user"]["id"])
    except (KeyError, IndexError, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(f"not an Elevate button click: {type(exc).__name__}") from None
    if payload.get("type") != "block_actions":
        raise InvalidRequestError("only block_actions interactions are handled")
    container = payload.get("container") or {}
    message = payload.get("message") or {}
    return Interaction(
        slack_user=user,
        decision=decision,
        request_id=request_id,
        channel=container.get("channel_id") or (payload.get("channel") or {}).get("id"),
        message_ts=container.get("message_ts") or message.get("ts"),
        blocks=list(message.get("blocks") or []),
    )


class SlackApi:
    """The Web API calls the route makes (bot token from its file; blocking client in a
    thread: one call per click)."""

    def __init__(self, *, token_file: Path, api_url: str) -> None:
        self.token_file = token_file
        self.api_url = api_url if api_url.endswith("/") else api_url + "/"

    def _client(self) -> WebClient:
        token = self.token_file.read_text(encoding="utf-8").strip()
        return WebClient(token=token, base_url=self.api_url, timeout=10)

    async def email_of(self, slack_user: str) -> str | None:
        def call() -> str | None:
            user = self._client().users_info(user=slack_user)["user"]
            if user.get("deleted") or user.get("is_bot"):
                return None
            email = (user.get("profile") or {}).get("email")
            return str(email) if email else None

        return await asyncio.to_thread(call)

    async def tell(self, interaction: Interaction, text: str) -> None:
        """A message only the clicking user sees, where they clicked."""
        if interaction.channel is None:
            return
        channel = interaction.channel
        await asyncio.to_thread(
            lambda: self._client().chat_postEphemeral(
                channel=channel, user=interaction.slack_user, text=text
            )
        )

    async def close(self, interaction: Interaction, text: str) -> None:
        """The approval message without its buttons, saying what was recorded."""
        if interaction.channel is None or interaction.message_ts is None:
            return
        kept = [b for b in interaction.blocks if b.get("type") != "actions"]
        blocks = [*kept, {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]
        channel, ts = interaction.channel, interaction.message_ts
        await asyncio.to_thread(
            lambda: self._client().chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        )


def slack_api(state: ApiState) -> SlackApi:
    settings = state.settings
    if settings.slack_signing_secret_file is None or settings.slack_bot_token_file is None:
        raise SlackOffError("the Slack integration is not configured")
    return SlackApi(token_file=settings.slack_bot_token_file, api_url=settings.slack_api_url)


async def identity_of(state: ApiState, email: str | None) -> User:
    """The one Identity Store user whose primary email is the Slack user's email."""
    if not email:
        raise SlackUserError("your Slack profile has no email Elevate can match")
    try:
        user = await state.access.directory.find_user(UserKey("emails.value", email))
    except UserNotFoundError:
        raise SlackUserError(f"no Identity Store user has the email {email}") from None
    except DirectoryError as exc:
        if exc.retryable:
            raise DirectoryUnavailableError("the identity directory is unavailable") from exc
        raise SlackUserError(f"no Identity Store user has the email {email}") from None
    if (user.email or "").casefold() != email.casefold():
        # Found by a secondary address: whose it is is not clear enough to decide with.
        raise SlackUserError(f"{email} is not the primary email of an Identity Store user")
    return user


@router.post("/interactions", status_code=200, response_class=Response)
async def interactions(request: Request, state: AppState) -> Response:
    """Slack's interactivity request URL (authenticated by Slack's signature)."""
    slack = slack_api(state)
    secret_file = state.settings.slack_signing_secret_file
    assert secret_file is not None
    body = await request.body()
    verify_signature(
        secret_file.read_text(encoding="utf-8").strip().encode(),
        timestamp=request.headers.get("x-slack-request-timestamp"),
        signature=request.headers.get("x-slack-signature"),
        body=body,
        now=time.time(),
    )
    interaction = parse_interaction(body)
    try:
        await _decide(state, slack, interaction)
    except (SlackApiError, SlackClientError, OSError) as exc:
        # Slack itself did not answer: say so to Slack (it shows the click failed).
        log.warning("slack interaction: the Web API failed: %s", type(exc).__name__)
        return Response(status_code=502)
    return Response(status_code=200)


async def _decide(state: ApiState, slack: SlackApi, interaction: Interaction) -> None:
    try:
        user = await identity_of(state, await slack.email_of(interaction.slack_user))
        async with state.ctx.db.transaction() as session:
            await service.decide(
                session=session,
                state=state,
                user=user,
                request_id=interaction.request_id,
                decision=interaction.decision,
                comment="decided in Slack",
                now=state.clock.now(),
            )
    except (SlackUserError, RequestError) as refusal:
        log.info(
            "slack %s by %s refused: %s", interaction.decision, interaction.slack_user, refusal
        )
        await slack.tell(interaction, f"Elevate refused your {interaction.decision}: {refusal}")
        return
    verb = "approved" if interaction.decision == "approve" else "rejected"
    await slack.close(
        interaction, f"{user.user_name} {verb} this in Slack; Elevate decides by its rule."
    )
