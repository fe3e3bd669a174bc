"""Notifications on the real stack: the five services as processes on Kafka, PostgreSQL
and moto, the notifier sending to real local receivers — an SMTP server that requires
STARTTLS (aiosmtpd), an HTTP server standing in for the Slack Web API, and a webhook
receiver that verifies every signature.

alice asks for AdministratorAccess on payments-prod (one SRE lead must approve): each of
the three leads gets a Slack DM with buttons and a mail, and the webhook one delivery.
Forged clicks are refused, alice's own click is refused in Slack with the reason, bob's
click approves it, his second click changes nothing, and alice hears of the approval.
Then, with the mail server down, a short grant runs its whole course; its mails arrive
once each, in order, when the server is back. A forged event reaches the security channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from elevate_core.events.models import Person, RequestRejected
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_local.kafka import KafkaBroker
from elevate_local.mailbox import MailServer
from elevate_local.postgres import PostgresCluster
from elevate_notifier import webhooks

from tests import forgery, harness
from tests.receivers import FakeSlack, Server, SlackCall, WebhookReceiver
from tests.stack import Stack, start_stack, until

LEADS = ("bob", "frank", "grace")  # sre-leads: who approves one-sre-lead
SIGNING_SECRET = "the Slack app's signing secret"
WEBHOOK_KEY = b"the webhook's shared key"
SECURITY_CHANNEL = "CSECURITY"


@dataclass
class Scene:
    stack: Stack
    mail: MailServer
    slack: FakeSlack
    hook: WebhookReceiver

    def mails(self, to: str, request_id: str) -> list[str]:
        return [m.subject for m in self.mail.mailbox.to(to) if request_id in m.body]


@pytest.fixture(scope="module")
async def scene(
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Scene]:
    tmp = tmp_path_factory.mktemp("notifications")
    prefix = f"t{uuid.uuid4().hex[:10]}."
    kafka.allow(prefix)
    await ensure_topics(kafka.endpoint(Principal.ADMIN), prefix=prefix)
    secrets = {
        "slack-token": "xoxb-elevate-test",
        "slack-signing": SIGNING_SECRET,
        "webhook-key": WEBHOOK_KEY.decode(),
    }
    for name, value in secrets.items():
        (tmp / name).write_text(value)
    slack = FakeSlack()
    for name in ("alice", *LEADS):
        slack.user_for(name)
    hook = WebhookReceiver(WEBHOOK_KEY)
    mail = MailServer(tls_dir=tmp / "mail-tls").start()
    with Server(slack=slack) as slack_api, Server(webhook=hook) as hook_server:
        env = {
            "request_api": {
                "ELEVATE_SLACK_SIGNING_SECRET_FILE": str(tmp / "slack-signing"),
                "ELEVATE_SLACK_BOT_TOKEN_FILE": str(tmp / "slack-token"),
                "ELEVATE_SLACK_API_URL": f"{slack_api.url}/api/",
            },
            "notifier": {
                "ELEVATE_PORTAL_URL": "https://elevate.example",
                "ELEVATE_SLACK_BOT_TOKEN_FILE": str(tmp / "slack-token"),
                "ELEVATE_SLACK_API_URL": f"{slack_api.url}/api/",
                "ELEVATE_SLACK_SECURITY_CHANNEL": SECURITY_CHANNEL,
                "ELEVATE_SMTP_HOST": "127.0.0.1",
                "ELEVATE_SMTP_PORT": str(mail.port),
                "ELEVATE_SMTP_CA_FILE": str(mail.ca_file),
                "ELEVATE_SMTP_FROM": "elevate@elevate.example",
                "ELEVATE_SMTP_SECURITY_RECIPIENTS": '["security@elevate.example"]',
                "ELEVATE_WEBHOOKS": json.dumps(
                    [{"name": "ops", "url": hook_server.url, "key_file": str(tmp / "webhook-key")}]
                ),
                "ELEVATE_ENDING_SOON_SECONDS": "10",
                # a channel that is back is used again within a second
                "ELEVATE_DELIVERY_BACKOFF_SECONDS": "0.2",
                "ELEVATE_DELIVERY_MAX_BACKOFF_SECONDS": "1",
                "ELEVATE_DELIVERY_MAX_ATTEMPTS": "1000",
            },
        }
        try:
            async with start_stack(kafka, postgres, moto_endpoint, prefix, tmp, env=env) as s:
                yield Scene(s, mail, slack, hook)
        finally:
            mail.stop()


async def wait_for(scene: Scene, what: str, probe: Callable[[], Awaitable[Any]]) -> None:
    async def check() -> tuple[bool, object]:
        got = await probe()
        return bool(got), got

    await until(check, what, scene.stack)


async def status_of(client: httpx.AsyncClient, request_id: str) -> str:
    return str((await client.get(f"/v1/requests/{request_id}")).json()["status"])


def click(
    scene: Scene,
    *,
    user: str,
    request_id: str,
    on: SlackCall | None = None,
    action: str = "elevate.approve",
    at: float | None = None,
    secret: str = SIGNING_SECRET,
) -> tuple[bytes, dict[str, str]]:
    """A block_actions interaction as Slack would post it, signed with `secret`."""
    posted = on.args if on is not None else {"channel": user, "blocks": []}
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": scene.slack.user_for(user)},
        "container": {"type": "message", "channel_id": posted["channel"], "message_ts": "1.1"},
        "message": {"ts": "1.1", "blocks": posted.get("blocks", [])},
        "actions": [{"action_id": action, "value": request_id, "type": "button"}],
    }
    if on is not None:
        payload["container"]["message_ts"] = on.answer["ts"]
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(time.time() if at is None else at))
    mac = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
    }
    return body, headers


async def post_click(scene: Scene, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=scene.stack.api, timeout=30) as client:
        return await client.post("/integrations/slack/interactions", content=body, headers=headers)


async def test_approvers_hear_of_it_and_bob_approves_from_slack(scene: Scene) -> None:
    stack, slack = scene.stack, scene.slack
    async with stack.client("alice") as alice:
        created = await alice.post(
            "/v1/requests",
            json={
                "account_id": stack.seeded.account_ids["payments-prod"],
                "permission_set": "AdministratorAccess",
                "duration_minutes": 60,
                "justification": "OPS-77: <!channel> the payments database is failing over",
                "ticket": "OPS-77",
            },
        )
        assert created.status_code == 202, created.text
        rid = created.json()["id"]

        # One message per approver and channel: a Slack DM and a mail each, one webhook call.
        async def approvers_told() -> object:
            dms = sorted(c.args["channel"] for c in slack.posts_about(rid))
            mails = {lead: scene.mails(f"{lead}@elevate.example", rid) for lead in LEADS}
            hooks = [d for d in scene.hook.about(rid) if d["kind"] == "approval_requested"]
            done = len(dms) == 3 and all(mails.values()) and hooks
            return (dms, mails, hooks) if done else None

        await wait_for(scene, "every approver told", approvers_told)
        assert sorted(c.args["channel"] for c in slack.posts_about(rid)) == [
            "UBOB",
            "UFRANK",
            "UGRACE",
        ]
        for lead in LEADS:
            assert scene.mails(f"{lead}@elevate.example", rid) == [
                "alice asks for AdministratorAccess on payments-prod"
            ]
        [hooked] = [d for d in scene.hook.about(rid) if d["kind"] == "approval_requested"]
        assert hooked["approvers"] == list(LEADS)
        assert hooked["facts"]["Ticket"] == "OPS-77"
        assert scene.mails("alice@elevate.example", rid) == []  # never asked to approve
        bobs = next(c for c in slack.posts_about(rid) if c.args["channel"] == "UBOB")
        text = json.dumps(bobs.args["blocks"])
        assert "&lt;!channel&gt;" in text  # escaped: no mention of the whole channel
        assert "<!channel>" not in text
        assert "elevate.approve" in text
        assert f"https://elevate.example/requests/{rid}" in text

        # Forged clicks: a wrong signature, an old timestamp.
        body, headers = click(scene, user="bob", request_id=rid, on=bobs, secret="guessed")
        refused = await post_click(scene, body, headers)
        assert refused.status_code == 401
        assert refused.json()["type"] == "urn:elevate:problem:slack-signature"
        old = click(scene, user="bob", request_id=rid, on=bobs, at=time.time() - 600)
        assert (await post_click(scene, *old)).status_code == 401
        # alice's own click: refused, and told so where she clicked.
        assert (
            await post_click(scene, *click(scene, user="alice", request_id=rid))
        ).status_code == 200
        [told] = [c for c in slack.called("chat.postEphemeral") if c.args["user"] == "UALICE"]
        assert "refused your approve" in told.args["text"], told.args
        assert "own" in told.args["text"] or "requester" in told.args["text"], told.args
        assert await status_of(alice, rid) == "pending"
        assert slack.called("chat.update") == []

        # bob's click approves it; his message loses its buttons.
        assert (
            await post_click(scene, *click(scene, user="bob", request_id=rid, on=bobs))
        ).status_code == 200

        async def active() -> object:
            return await status_of(alice, rid) == "active"

        await wait_for(scene, "the request active", active)
        updated = [c for c in slack.called("chat.update") if c.args["channel"] == "UBOB"]
        assert updated, slack.calls
        assert "bob approved" in updated[0].args["text"]
        assert "elevate.approve" not in json.dumps(updated[0].args["blocks"])
        # A second click changes nothing: refused in Slack, no second decision.
        before = (await alice.get(f"/v1/requests/{rid}")).json()
        assert (
            await post_click(scene, *click(scene, user="bob", request_id=rid, on=bobs))
        ).status_code == 200
        again = [c for c in slack.called("chat.postEphemeral") if c.args["user"] == "UBOB"]
        assert len(again) == 1, again
        assert "refused" in again[0].args["text"]
        after = (await alice.get(f"/v1/requests/{rid}")).json()
        assert after["timeline"] == before["timeline"]

    # alice hears it was approved and is active; frank's and grace's messages show it.
    async def requester_told() -> object:
        subjects = scene.mails("alice@elevate.example", rid)
        closed = {c.args["channel"] for c in slack.called("chat.update")}
        return subjects if len(subjects) >= 2 and {"UFRANK", "UGRACE"} <= closed else None

    await wait_for(scene, "alice told, the other leads' messages closed", requester_told)
    assert scene.mails("alice@elevate.example", rid)[:2] == [
        "Approved: AdministratorAccess on payments-prod",
        "Active now: AdministratorAccess on payments-prod until " + _end_of(after),
    ]
    assert {d["kind"] for d in scene.hook.about(rid)} >= {"approval_requested", "approved"}
    _webhook_alterations_are_rejected(scene, rid)
    await _revoked_and_told(scene, rid)


async def _revoked_and_told(scene: Scene, rid: str) -> None:
    """alice ends it herself and hears so; nothing is left in moto for the next module."""
    stack = scene.stack
    async with stack.client("alice") as alice:
        revoked = await alice.post(f"/v1/requests/{rid}/revoke", json={"comment": "done"})
        assert revoked.status_code == 202, revoked.text

    async def gone() -> object:
        alice_id = stack.seeded.user_ids["alice"]
        told = scene.mails("alice@elevate.example", rid)
        held = alice_id in stack.assigned("payments-prod", "AdministratorAccess")
        return told if not held and any(s.startswith("Revoked") for s in told) else None

    await wait_for(scene, "the assignment gone and alice told", gone)
    assert scene.mails("alice@elevate.example", rid)[-1] == (
        "Revoked: AdministratorAccess on payments-prod"
    )


def _end_of(request: dict[str, Any]) -> str:
    end = datetime.fromisoformat(request["end"]).astimezone(UTC)
    return end.strftime("%Y-%m-%d %H:%M UTC")


def _webhook_alterations_are_rejected(scene: Scene, rid: str) -> None:
    headers, body = next((h, b) for h, b in scene.hook.raw if rid.encode() in b)
    rejected = len(scene.hook.rejected)
    key = WEBHOOK_KEY
    stamp, signature = headers[webhooks.TIMESTAMP.lower()], headers[webhooks.SIGNATURE.lower()]
    webhooks.verify(key, timestamp=stamp, signature_header=signature, body=body)  # as sent
    tampered = body.replace(b"AdministratorAccess", b"ReadOnlyAccess", 1)
    later = str(int(stamp) + 1)
    for altered, sent in (
        (headers, tampered),  # the body changed
        ({**headers, webhooks.TIMESTAMP.lower(): later}, body),  # the timestamp changed
        ({**headers, webhooks.SIGNATURE.lower(): signature[:-2] + "00"}, body),
    ):
        assert scene.hook.receive(altered, sent) == 401
    assert len(scene.hook.rejected) == rejected + 3


IN_ORDER = ["Approved", "Active now", "Ending at", "Ended"]


def kinds(subjects: list[str]) -> list[str]:
    return [next((k for k in IN_ORDER if s.startswith(k)), s) for s in subjects]


async def test_mail_waits_for_the_server_and_arrives_once_in_order(scene: Scene) -> None:
    stack = scene.stack
    scene.mail.stop()  # the SMTP server is down for the whole grant
    try:
        async with stack.client("alice") as alice:
            # Auto-approved, started 45 s ago for a minute: it ends in 15 s, and "ending
            # soon" (10 s before the end) is due in about 5.
            start = datetime.now(UTC) - timedelta(seconds=45)
            created = await alice.post(
                "/v1/requests",
                json={
                    "account_id": stack.seeded.account_ids["sandbox-shared"],
                    "permission_set": "ReadOnlyAccess",
                    "duration_minutes": 1,
                    "start": start.isoformat(),
                    "justification": "look at the sandbox's logs",
                },
            )
            assert created.status_code == 202, created.text
            rid = created.json()["id"]

            async def ended() -> object:
                return await status_of(alice, rid) == "ended"

            await wait_for(scene, "the grant ended while the mail server was down", ended)

            # Slack was up all along: its messages came in order (the last one may follow
            # the read model's "ended" by a moment: the notifier reads the same event).
            async def slack_told_the_end() -> object:
                dms = [c.args["text"] for c in scene.slack.posts_about(rid)]
                return dms if any(d.startswith("Ended") for d in dms) else None

            await wait_for(scene, "Slack told alice it ended", slack_told_the_end)
            dms = [c.args["text"] for c in scene.slack.posts_about(rid)]
            assert kinds(dms) == IN_ORDER, dms
            assert scene.mails("alice@elevate.example", rid) == []
    finally:
        scene.mail.start()  # back, on the same port

    async def delivered() -> object:
        subjects = scene.mails("alice@elevate.example", rid)
        return subjects if any(s.startswith("Ended") for s in subjects) else None

    await wait_for(scene, "the mails delivered once the server is back", delivered)
    subjects = scene.mails("alice@elevate.example", rid)
    assert kinds(subjects) == IN_ORDER, subjects  # each once, in order


async def test_a_forged_event_reaches_the_security_channel(
    scene: Scene, kafka: KafkaBroker
) -> None:
    forged = forgery.forged(
        RequestRejected(
            request_id=uuid.uuid4(),
            rejected_by=Person(user_name="mallory", user_id="u-mallory"),
        ),
        prefix=scene.stack.topic_prefix,
        signed_by=None,
    )
    await harness.produce(kafka.endpoint(), [forged], sign=False)
    ce_id = forgery.ce_id(forged)

    async def told() -> object:
        slack = [
            c
            for c in scene.slack.called("chat.postMessage")
            if c.args["channel"] == SECURITY_CHANNEL and ce_id in json.dumps(c.args)
        ]
        mails = [m for m in scene.mail.mailbox.to("security@elevate.example") if ce_id in m.body]
        return (slack, mails) if slack and mails else None

    await wait_for(scene, "the security channel told of the forgery", told)
    slack_msgs = [
        c
        for c in scene.slack.called("chat.postMessage")
        if c.args["channel"] == SECURITY_CHANNEL and ce_id in json.dumps(c.args)
    ]
    # Every reader dead-letters it; the security team hears of it once.
    assert len(slack_msgs) == 1
    assert "forged or unsigned" in slack_msgs[0].args["text"]
