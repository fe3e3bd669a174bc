"""notifier's use cases (keyword-only), each in the caller's transaction: the consumer's
(with the event's `ce_id` recorded in it) or a timer's. They turn notices into delivery
rows — never a network call to a channel, so a channel that is down never holds up Kafka
and nothing said is lost: the delivery workers send the rows (`delivery.py`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from elevate_core import timers
from elevate_core.db import insert_for
from elevate_core.directory.models import User
from elevate_core.events.models import RequestDetails
from elevate_core.notify import mark
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_notifier.domain import (
    CLOSING,
    Kind,
    Message,
    Notice,
    ending_soon_at,
    render,
)
from elevate_notifier.models import Delivery, KnownRequest, ParkedNotice
from elevate_notifier.settings import NotifierSettings

log = logging.getLogger("elevate.notifier")

ENDING_SOON = "ending_soon"  # the timer kind
DELIVERIES = "elevate_notifier_deliveries"  # the wake-up channel of the delivery workers


class DirectoryPort(Protocol):
    async def group_members(self, group_names: Iterable[str]) -> dict[str, list[str]]: ...
    async def get_user(self, user_name: str) -> User: ...


@dataclass(frozen=True)
class Deps:
    settings: NotifierSettings
    directory: DirectoryPort
    channels: frozenset[str]  # the configured ones: slack, email, webhook


async def remember(
    session: AsyncSession,
    *,
    deps: Deps,
    details: RequestDetails,
    approval_rule: str | None,
    now: datetime,
) -> None:
    """Keep the request's details (the first copy wins: they never change), then send
    what was parked waiting for them."""
    row = await session.get(KnownRequest, str(details.request_id))
    if row is None:
        row = KnownRequest(
            request_id=str(details.request_id),
            details=details.model_dump(mode="json"),
            approval_rule=approval_rule,
            state="pending",
            updated_at=now,
        )
        session.add(row)
    elif approval_rule and not row.approval_rule:
        row.approval_rule = approval_rule
    parked = (
        await session.execute(
            select(ParkedNotice)
            .where(ParkedNotice.request_id == row.request_id)
            .order_by(ParkedNotice.id)
        )
    ).scalars()
    for waiting in list(parked):
        notice = _notice_of(waiting.notice)
        await _fan_out(
            session, deps=deps, notice=notice, known=row, event_id=waiting.event_id, now=now
        )
        await session.delete(waiting)


async def on_notice(
    session: AsyncSession, *, deps: Deps, notice: Notice, event_id: str, now: datetime
) -> None:
    """Queue the deliveries of `notice`; one about a request not read yet waits for it."""
    known = await session.get(KnownRequest, notice.request_id) if notice.request_id else None
    if known is None:
        session.add(
            ParkedNotice(
                event_id=event_id,
                request_id=notice.request_id or "",
                notice=_notice_json(notice),
                created_at=now,
            )
        )
        return
    await _fan_out(session, deps=deps, notice=notice, known=known, event_id=event_id, now=now)


async def _fan_out(
    session: AsyncSession,
    *,
    deps: Deps,
    notice: Notice,
    known: KnownRequest,
    event_id: str,
    now: datetime,
) -> None:
    details = RequestDetails.model_validate(known.details)
    await _track(session, deps=deps, notice=notice, known=known, details=details, now=now)
    message = render(notice, details, link=deps.settings.request_url(known.request_id))
    targets: list[tuple[str, str]]
    if notice.audience == "approvers":
        approvers = await _approvers(deps, notice.approver_groups, details.requester.user_id)
        targets = _approver_targets(deps, approvers, known.approval_rule)
        message = dataclasses.replace(message, extra={"approvers": sorted(approvers)})
    else:
        targets = audience_targets(deps, notice.audience, requester_email=details.requester.email)
    for channel, target in targets:
        await add_delivery(
            session, event_id=event_id, channel=channel, target=target, message=message, now=now
        )
    if notice.kind in CLOSING:
        await _close_approval_messages(
            session, notice=notice, details=details, event_id=event_id, link=message.link, now=now
        )


async def _track(
    session: AsyncSession,
    *,
    deps: Deps,
    notice: Notice,
    known: KnownRequest,
    details: RequestDetails,
    now: datetime,
) -> None:
    """Where the grant stands, and the "ending soon" timer that follows from it."""
    if notice.kind is Kind.ACTIVE:
        known.state = "active"
        lead = timedelta(seconds=deps.settings.ending_soon_seconds)
        due = ending_soon_at(activated=now, end=details.end, lead=lead)
        if due is not None:
            await timers.schedule(session, kind=ENDING_SOON, key=known.request_id, due_at=due)
    elif notice.kind in {Kind.ENDED, Kind.REVOKED, Kind.CANCELLED, Kind.GRANT_FAILED}:
        known.state = "over"
        await timers.cancel(session, kind=ENDING_SOON, key=known.request_id)
    known.updated_at = now


async def ending_soon(session: AsyncSession, *, deps: Deps, request_id: str, now: datetime) -> None:
    """The timer's use case: say so only while the grant is still active."""
    known = await session.get(KnownRequest, request_id)
    if known is None or known.state != "active":
        return
    notice = Notice(Kind.ENDING_SOON, "requester", request_id)
    await _fan_out(
        session,
        deps=deps,
        notice=notice,
        known=known,
        event_id=f"{ENDING_SOON}/{request_id}",
        now=now,
    )


async def _approvers(deps: Deps, groups: Iterable[str], requester_id: str) -> dict[str, str]:
    """Approver user name -> email (the requester never: nobody approves their own)."""
    members = await deps.directory.group_members(groups)
    out: dict[str, str] = {}
    for name in sorted({n for names in members.values() for n in names}):
        user = await deps.directory.get_user(name)
        if user.user_id != requester_id and user.email:
            out[user.user_name] = user.email
    return out


def _approver_targets(
    deps: Deps, approvers: dict[str, str], rule: str | None
) -> list[tuple[str, str]]:
    settings, out = deps.settings, []
    if "slack" in deps.channels:
        channel = settings.slack_approval_channels.get(rule or "")
        if channel:
            out.append(("slack", f"channel:{channel}"))
        else:
            out += [("slack", f"email:{email}") for email in approvers.values()]
    if "email" in deps.channels:
        out += [("email", email) for email in approvers.values()]
    return out + _webhook_targets(deps, "approvers")


def audience_targets(
    deps: Deps, audience: str, *, requester_email: str | None = None
) -> list[tuple[str, str]]:
    """Where a requester's or the security team's message goes."""
    settings, out = deps.settings, []
    if audience == "requester" and requester_email:
        if "slack" in deps.channels and settings.slack_dm_requesters:
            out.append(("slack", f"email:{requester_email}"))
        if "email" in deps.channels:
            out.append(("email", requester_email))
    elif audience == "security":
        if "slack" in deps.channels and settings.slack_security_channel:
            out.append(("slack", f"channel:{settings.slack_security_channel}"))
        if "email" in deps.channels:
            out += [("email", address) for address in settings.smtp_security_recipients]
    return out + _webhook_targets(deps, audience)


def _webhook_targets(deps: Deps, audience: str) -> list[tuple[str, str]]:
    if "webhook" not in deps.channels:
        return []
    return [("webhook", hook.name) for hook in deps.settings.webhooks if audience in hook.audiences]


async def _close_approval_messages(
    session: AsyncSession,
    *,
    notice: Notice,
    details: RequestDetails,
    event_id: str,
    link: str | None,
    now: datetime,
) -> None:
    """The approval messages already in Slack lose their buttons and show the outcome."""
    sent = (
        await session.execute(
            select(Delivery.slack_channel, Delivery.slack_ts).where(
                Delivery.request_id == str(details.request_id),
                Delivery.kind == Kind.APPROVAL_REQUESTED.value,
                Delivery.channel == "slack",
                Delivery.slack_ts.is_not(None),
            )
        )
    ).all()
    outcome = notice.kind.value + (f" ({notice.detail})" if notice.detail else "")
    closed = render(
        Notice(Kind.OUTCOME, "approvers", notice.request_id),
        details,
        link=link or "",
        outcome=outcome,
    )
    for channel, ts in sent:
        await add_delivery(
            session,
            event_id=event_id,
            channel="slack",
            target=f"update:{channel}:{ts}",
            message=closed,
            now=now,
        )


async def add_delivery(
    session: AsyncSession,
    *,
    event_id: str,
    channel: str,
    target: str,
    message: Message,
    now: datetime,
) -> None:
    """One row per (event, channel, target): a replayed event adds nothing."""
    await session.execute(
        insert_for(session, Delivery.__table__)
        .values(
            event_id=event_id,
            channel=channel,
            target=target,
            kind=message.kind,
            request_id=message.request_id,
            message=message.to_json(),
            status="pending",
            attempts=0,
            due_at=now,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["event_id", "channel", "target"])
    )
    await mark(session, DELIVERIES, channel)


def _notice_json(notice: Notice) -> dict[str, object]:
    return {
        "kind": notice.kind.value,
        "audience": notice.audience,
        "request_id": notice.request_id,
        "detail": notice.detail,
        "approver_groups": list(notice.approver_groups),
    }


def _notice_of(doc: dict[str, object]) -> Notice:
    groups = doc.get("approver_groups") or []
    assert isinstance(groups, list)
    return Notice(
        kind=Kind(str(doc["kind"])),
        audience=str(doc["audience"]),  # type: ignore[arg-type]
        request_id=str(doc["request_id"]) if doc.get("request_id") else None,
        detail=str(doc["detail"]) if doc.get("detail") else None,
        approver_groups=tuple(str(g) for g in groups),
    )
