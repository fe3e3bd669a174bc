"""The notifier's pure parts: who hears of what, how it reads, when "ending soon" is due,
webhook signatures, Slack's request signature, and the settings it refuses."""

from __future__ import annotations

import os
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    Person,
    RequestApproved,
    RequestCancelled,
    RequestDetails,
    RequestExpired,
    RequestRejected,
    RequestSnapshot,
    RequestSubmitted,
)
from elevate_local.tls import BrokerTls
from elevate_notifier import slack, webhooks
from elevate_notifier.channels import EmailSender, email_message
from elevate_notifier.domain import Kind, Notice, ending_soon_at, notices_for, render
from elevate_notifier.settings import NotifierSettings
from elevate_request_api.domain import InvalidRequestError, SlackSignatureError
from elevate_request_api.slack import parse_interaction, verify_signature
from pydantic import ValidationError

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
RID = uuid.UUID("00000000-0000-4000-8000-000000000001")
ALICE = Person(user_name="alice", user_id="u-alice", email="alice@elevate.example")
BOB = Person(user_name="bob", user_id="u-bob")
DETAILS: dict[str, Any] = {
    "request_id": RID,
    "requester": ALICE,
    "account_id": "111122223333",
    "account_name": "payments-prod",
    "permission_set_name": "AdministratorAccess",
    "permission_set_arn": "arn:aws:sso:::permissionSet/ssoins-1/ps-1",
    "start": NOW,
    "end": NOW + timedelta(hours=1),
    "justification": "<!channel> OPS-1 & more",
    "ticket": "OPS-1",
    "matched_rule": "sre-prod-admin",
    "policy_version": "v1",
}
SNAPSHOT = RequestSnapshot(**DETAILS, approvers=("bob",))
GRANT = {"grant_id": uuid.uuid4(), "snapshot": SNAPSHOT}


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (RequestSubmitted(**DETAILS), []),
        (
            ApprovalRequested(request_id=RID, approver_groups=("sre-leads",), required_approvals=1),
            [(Kind.APPROVAL_REQUESTED, "approvers")],
        ),
        (RequestApproved(snapshot=SNAPSHOT), [(Kind.APPROVED, "requester")]),
        (RequestRejected(request_id=RID, rejected_by=BOB), [(Kind.REJECTED, "requester")]),
        (
            RequestRejected(request_id=RID, rejected_by=BOB, reason_code="user_unknown"),
            [(Kind.REJECTED, "requester"), (Kind.REFUSED, "security")],
        ),
        (
            RequestExpired(request_id=RID, pending_since=NOW, expired_at=NOW),
            [(Kind.EXPIRED, "requester")],
        ),
        (RequestCancelled(request_id=RID, cancelled_by=ALICE), [(Kind.CANCELLED, "requester")]),
        (GrantActivated(**GRANT, activated_at=NOW), [(Kind.ACTIVE, "requester")]),
        (
            GrantEnded(**GRANT, reason="expired", ended_at=NOW, assignment_removed=True),
            [(Kind.ENDED, "requester")],
        ),
        (
            GrantEnded(**GRANT, reason="revoked", ended_at=NOW, assignment_removed=True),
            [(Kind.REVOKED, "requester")],
        ),
        (GrantEnded(**GRANT, reason="cancelled", ended_at=NOW, assignment_removed=True), []),
        (GrantFailed(**GRANT, reason="AWS said no"), [(Kind.GRANT_FAILED, "requester")]),
        (
            GrantFailed(**GRANT, reason="no longer eligible", reason_code="not_eligible"),
            [(Kind.GRANT_FAILED, "requester"), (Kind.REFUSED, "security")],
        ),
        (
            GrantRevocationFailed(**GRANT, error="AccessDenied", attempts=3),
            [(Kind.REVOCATION_FAILED, "security")],
        ),
        (
            BreakGlassUsed(
                request_id=RID,
                requester=ALICE,
                account_id="111122223333",
                permission_set_name="AdministratorAccess",
                start=NOW,
                end=NOW,
                justification="incident",
                matched_rule="sre-break-glass",
                policy_version="v1",
            ),
            [(Kind.BREAK_GLASS_USED, "security")],
        ),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, list) else "",
)
def test_who_hears_of_what(event: Any, expected: list[tuple[Kind, str]]) -> None:
    assert [(n.kind, n.audience) for n in notices_for(event)] == expected


@pytest.mark.parametrize(
    ("activated", "end", "lead", "due"),
    [
        (NOW, NOW + timedelta(hours=1), timedelta(minutes=10), NOW + timedelta(minutes=50)),
        (NOW, NOW + timedelta(minutes=10), timedelta(minutes=10), None),  # as long as the lead
        (NOW, NOW + timedelta(minutes=5), timedelta(minutes=10), None),  # shorter
        (NOW + timedelta(minutes=55), NOW + timedelta(hours=1), timedelta(minutes=10), None),
    ],
)
def test_ending_soon_is_due_the_lead_before_the_end_if_after_activation(
    activated: datetime, end: datetime, lead: timedelta, due: datetime | None
) -> None:
    assert ending_soon_at(activated=activated, end=end, lead=lead) == due


def test_a_message_carries_the_request_and_its_link() -> None:
    notice = Notice(Kind.APPROVAL_REQUESTED, "approvers", str(RID))
    message = render(notice, RequestDetails(**DETAILS), link="https://e.example/requests/x")
    facts = dict(message.facts)
    assert message.subject == "alice asks for AdministratorAccess on payments-prod"
    assert facts["Account"] == "payments-prod (111122223333)"
    assert facts["Window"] == "2026-12-02 12:00 UTC to 2026-12-02 13:00 UTC"
    assert facts["Ticket"] == "OPS-1"
    assert message.actions
    text = str(slack.blocks(message))
    assert "&lt;!channel&gt; OPS-1 &amp; more" in text  # no mention, no markup
    assert "<!channel>" not in text
    assert "elevate.approve" in text
    closed = render(
        Notice(Kind.APPROVED, "requester", str(RID)), RequestDetails(**DETAILS), link="l"
    )
    assert "elevate.approve" not in str(slack.blocks(closed))


def test_a_mail_subject_cannot_carry_a_header() -> None:
    notice = Notice(Kind.APPROVAL_REQUESTED, "approvers", str(RID))
    details = RequestDetails(**{**DETAILS, "account_name": "prod\r\nBcc: evil@example.com"})
    mail = email_message(render(notice, details, link="l"), sender="e@x", to="b@x", key="k")
    assert mail["Bcc"] is None
    assert "\n" not in str(mail["Subject"])
    again = email_message(render(notice, details, link="l"), sender="e@x", to="b@x", key="k")
    assert mail["Message-ID"] == again["Message-ID"]  # a retry is the same mail


KEY = b"shared"


def test_a_webhook_signature_verifies_and_refuses_any_alteration() -> None:
    body = b'{"kind":"approved"}'
    headers = webhooks.signed_headers(KEY, body, delivery="d1", now=1_000_000)
    stamp, sig = headers[webhooks.TIMESTAMP], headers[webhooks.SIGNATURE]
    webhooks.verify(KEY, timestamp=stamp, signature_header=sig, body=body, now=1_000_010)
    for t, s, b, now in (
        (stamp, sig, b'{"kind":"rejected"}', 1_000_010),  # body
        (str(int(stamp) + 1), sig, body, 1_000_010),  # timestamp
        (stamp, sig, body, 1_000_000 + 301),  # replayed too late
        (stamp, webhooks.signature(b"other", int(stamp), body), body, 1_000_010),  # key
        (None, sig, body, 1_000_010),
    ):
        with pytest.raises(webhooks.WebhookRejected):
            webhooks.verify(KEY, timestamp=t, signature_header=s, body=b, now=now)


def _slack_signature(secret: bytes, stamp: str, body: bytes) -> str:
    import hashlib
    import hmac

    return "v0=" + hmac.new(secret, f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()


def test_slacks_signature_is_required_fresh_and_exact() -> None:
    secret, body, stamp = b"signing", b"payload=%7B%7D", "1000000"
    good = _slack_signature(secret, stamp, body)
    verify_signature(secret, timestamp=stamp, signature=good, body=body, now=1_000_100)
    refused: list[dict[str, Any]] = [
        {"timestamp": stamp, "signature": good, "body": body + b"x", "now": 1_000_100},
        {"timestamp": stamp, "signature": good, "body": body, "now": 1_000_000 + 301},
        {"timestamp": stamp, "signature": good, "body": body, "now": 1_000_000 - 301},
        {"timestamp": stamp, "signature": None, "body": body, "now": 1_000_100},
        {"timestamp": None, "signature": good, "body": body, "now": 1_000_100},
        {
            "timestamp": stamp,
            "signature": _slack_signature(b"x", stamp, body),
            "body": body,
            "now": 1_000_100,
        },
    ]
    for case in refused:
        with pytest.raises(SlackSignatureError):
            verify_signature(secret, **case)


def test_only_elevates_buttons_are_interactions() -> None:
    import json
    from urllib.parse import urlencode

    def body(payload: dict[str, Any]) -> bytes:
        return urlencode({"payload": json.dumps(payload)}).encode()

    click = {
        "type": "block_actions",
        "user": {"id": "UBOB"},
        "container": {"channel_id": "D1", "message_ts": "1.2"},
        "actions": [{"action_id": "elevate.reject", "value": str(RID)}],
    }
    got = parse_interaction(body(click))
    assert (got.slack_user, got.decision, got.request_id, got.channel, got.message_ts) == (
        "UBOB",
        "reject",
        RID,
        "D1",
        "1.2",
    )
    for bad in (
        {**click, "actions": [{"action_id": "elevate.open", "value": str(RID)}]},
        {**click, "actions": [{"action_id": "elevate.approve", "value": "not-a-uuid"}]},
        {**click, "type": "view_submission"},
    ):
        with pytest.raises(InvalidRequestError):
            parse_interaction(body(bad))
    with pytest.raises(InvalidRequestError):
        parse_interaction(b"no payload")


def test_settings_refuse_clear_text_and_missing_secrets(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k")
    base: dict[str, Any] = {"mode": "test", "database_url": "sqlite+aiosqlite:///x.db"}
    with pytest.raises(ValidationError, match="smtp_starttls"):
        NotifierSettings(**base, smtp_host="mail", smtp_starttls=False)
    with pytest.raises(ValidationError, match="no such file"):
        NotifierSettings(**base, slack_bot_token_file=tmp_path / "missing")
    with pytest.raises(ValidationError, match="smtp_password_file"):
        NotifierSettings(**base, smtp_host="mail", smtp_username="elevate")
    hook = {"name": "ops", "url": "http://ops.example/hook", "key_file": str(key)}
    NotifierSettings(**base, webhooks=[hook])  # http is test mode's
    dev = NotifierSettings(**{**base, "mode": "dev"}, smtp_host="mail", smtp_starttls=False)
    assert not dev.smtp_starttls  # only the local mailbox may be spoken to in clear


def test_mail_reuses_one_tls_context_until_the_ca_file_is_rotated(tmp_path: Path) -> None:
    ca_file = tmp_path / "smtp-ca.pem"
    first, second = (BrokerTls(tmp_path / name).ensure() for name in ("one", "two"))
    ca_file.write_bytes(first.ca_file.read_bytes())
    settings = NotifierSettings(
        mode="test",
        database_url="sqlite+aiosqlite:///x.db",
        smtp_host="mail",
        smtp_ca_file=ca_file,
    )
    sender = EmailSender(settings)
    context = sender.tls_context()
    assert sender.tls_context() is context  # loading a trust store per mail costs ~40 ms CPU

    def serials(ctx: ssl.SSLContext) -> list[str]:
        return [str(cert["serialNumber"]) for cert in ctx.get_ca_certs()]

    ca_file.write_bytes(second.ca_file.read_bytes())
    os.utime(ca_file, ns=(ca_file.stat().st_atime_ns, ca_file.stat().st_mtime_ns + 1_000_000))
    rotated = sender.tls_context()
    assert serials(rotated) != serials(context)  # the new CA is trusted without a restart
    assert serials(rotated) == serials(ssl.create_default_context(cafile=str(second.ca_file)))
