"""What is said to whom, and how it reads — pure: no I/O, no clock of its own.

An event becomes zero or more `Notice`s (an audience and what happened); a notice and the
request it concerns become a `Message`, the one content every channel renders (Slack
blocks, a plain-text mail, a webhook's JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from elevate_core.events.base import Event
from elevate_core.events.models import (
    ApprovalRequested,
    BreakGlassUsed,
    GrantActivated,
    GrantEnded,
    GrantFailed,
    GrantRevocationFailed,
    RequestApproved,
    RequestCancelled,
    RequestDetails,
    RequestExpired,
    RequestRejected,
)

from elevate_notifier.settings import Audience


class Kind(StrEnum):
    APPROVAL_REQUESTED = "approval_requested"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    ACTIVE = "active"
    ENDING_SOON = "ending_soon"
    ENDED = "ended"
    REVOKED = "revoked"
    GRANT_FAILED = "grant_failed"
    REVOCATION_FAILED = "revocation_failed"
    BREAK_GLASS_USED = "break_glass_used"
    REFUSED = "refused"  # a re-check refused what was asked (security)
    FORGED_EVENT = "forged_event"  # an unsigned or forged event was dead-lettered
    OUTCOME = "outcome"  # an approval message updated with how the request ended


# What closes an approval message (its buttons are removed and the outcome shown).
CLOSING = frozenset({Kind.APPROVED, Kind.REJECTED, Kind.EXPIRED, Kind.CANCELLED})


@dataclass(frozen=True, slots=True)
class Notice:
    kind: Kind
    audience: Audience
    request_id: str | None
    detail: str | None = None  # a comment, a reason, an error
    approver_groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Message:
    """What one notification says, whatever the channel."""

    kind: str
    audience: str
    subject: str
    facts: tuple[tuple[str, str], ...] = ()
    link: str | None = None
    request_id: str | None = None
    actions: bool = False  # approve / reject buttons (Slack)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["facts"] = [list(f) for f in self.facts]
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Message:
        return cls(**{**doc, "facts": tuple(tuple(f) for f in doc.get("facts", ()))})


def notices_for(event: Event) -> list[Notice]:  # noqa: C901 — one line per event type
    """The notices an event implies (ARCHITECTURE's topics; issue "Notifications")."""
    match event:
        case ApprovalRequested():
            rid = str(event.request_id)
            return [Notice(Kind.APPROVAL_REQUESTED, "approvers", rid, None, event.approver_groups)]
        case RequestApproved():
            by = ", ".join(event.snapshot.approvers) or None
            detail = "approved automatically" if event.auto_approved else by and f"by {by}"
            return [Notice(Kind.APPROVED, "requester", str(event.snapshot.request_id), detail)]
        case RequestRejected():
            rid = str(event.request_id)
            said = f"by {event.rejected_by.user_name}" + (
                f": {event.comment}" if event.comment else ""
            )
            out = [Notice(Kind.REJECTED, "requester", rid, said)]
            if event.reason_code:  # approval's own re-check refused it
                out.append(Notice(Kind.REFUSED, "security", rid, f"{event.reason_code}: {said}"))
            return out
        case RequestExpired():
            return [Notice(Kind.EXPIRED, "requester", str(event.request_id), "nobody decided")]
        case RequestCancelled():
            detail = f"by {event.cancelled_by.user_name}" + (
                f": {event.reason}" if event.reason else ""
            )
            return [Notice(Kind.CANCELLED, "requester", str(event.request_id), detail)]
        case GrantActivated():
            return [Notice(Kind.ACTIVE, "requester", str(event.snapshot.request_id))]
        case GrantEnded():
            return _ended(event)
        case GrantFailed():
            rid = str(event.snapshot.request_id)
            out = [Notice(Kind.GRANT_FAILED, "requester", rid, event.reason)]
            if event.reason_code:  # grant-worker's re-check refused the approval
                detail = f"{event.reason_code}: {event.reason}"
                out.append(Notice(Kind.REFUSED, "security", rid, detail))
            return out
        case GrantRevocationFailed():
            detail = f"{event.error} (attempt {event.attempts}; still retrying)"
            return [
                Notice(Kind.REVOCATION_FAILED, "security", str(event.snapshot.request_id), detail)
            ]
        case BreakGlassUsed():
            return [Notice(Kind.BREAK_GLASS_USED, "security", str(event.request_id))]
    return []


def _ended(event: GrantEnded) -> list[Notice]:
    rid = str(event.snapshot.request_id)
    if event.reason == "cancelled":
        return []  # the cancellation itself was the requester's message
    kind = Kind.ENDED if event.reason == "expired" else Kind.REVOKED
    detail = "AWS sessions were cut" if event.sessions_cut else None
    if event.sessions_valid_until is not None and not event.sessions_cut:
        detail = f"open AWS sessions may work until {_when(event.sessions_valid_until)}"
    if event.reason == "drift":
        detail = "the assignment was changed outside Elevate"
    return [Notice(kind, "requester", rid, detail)]


def ending_soon_at(*, activated: datetime, end: datetime, lead: timedelta) -> datetime | None:
    """When to say "ending soon": `lead` before the end — unless that is not after the
    activation (a grant shorter than the lead: its activation already said when it ends)."""
    due = end - lead
    return due if due > activated else None


_SUBJECTS: dict[Kind, str] = {
    Kind.APPROVAL_REQUESTED: "{who} asks for {ps} on {account}",
    Kind.APPROVED: "Approved: {ps} on {account}",
    Kind.REJECTED: "Rejected: {ps} on {account}",
    Kind.EXPIRED: "Expired undecided: {ps} on {account}",
    Kind.CANCELLED: "Cancelled: {ps} on {account}",
    Kind.ACTIVE: "Active now: {ps} on {account} until {end}",
    Kind.ENDING_SOON: "Ending at {end}: {ps} on {account}",
    Kind.ENDED: "Ended: {ps} on {account}",
    Kind.REVOKED: "Revoked: {ps} on {account}",
    Kind.GRANT_FAILED: "Could not grant {ps} on {account}",
    Kind.REVOCATION_FAILED: "SECURITY: revocation failing — {who}'s {ps} on {account}",
    Kind.BREAK_GLASS_USED: "SECURITY: break-glass — {who} took {ps} on {account}",
    Kind.REFUSED: "SECURITY: refused by a re-check — {who}'s {ps} on {account}",
    Kind.OUTCOME: "{ps} on {account} for {who}: {outcome}",
}


def render(
    notice: Notice, details: RequestDetails, *, link: str, outcome: str | None = None
) -> Message:
    """The message for `notice` about the request `details`."""
    account = details.account_name or details.account_id
    words = {
        "who": details.requester.user_name,
        "ps": details.permission_set_name,
        "account": account,
        "end": _when(details.end),
        "outcome": outcome or notice.kind.value,
    }
    facts = [
        ("Requester", details.requester.user_name),
        ("Account", f"{account} ({details.account_id})"),
        ("Permission set", details.permission_set_name),
        ("Window", f"{_when(details.start)} to {_when(details.end)}"),
        ("Justification", details.justification),
    ]
    if details.ticket:
        facts.append(("Ticket", details.ticket))
    if details.break_glass:
        facts.append(("Break-glass", "yes — reviewed afterwards"))
    if notice.detail:
        facts.append(("Note", notice.detail))
    return Message(
        kind=notice.kind.value,
        audience=notice.audience,
        subject=_SUBJECTS[notice.kind].format(**words),
        facts=tuple(facts),
        link=link,
        request_id=str(details.request_id),
        actions=notice.kind is Kind.APPROVAL_REQUESTED,
    )


def forged_message(*, topic: str, ce_type: str, ce_id: str, error: str) -> Message:
    """A security message for an event its reader refused as unsigned or forged."""
    return Message(
        kind=Kind.FORGED_EVENT.value,
        audience="security",
        subject=f"SECURITY: a forged or unsigned {ce_type or 'event'} was refused",
        facts=(("Topic", topic), ("Event id", ce_id), ("Type", ce_type), ("Error", error)),
    )


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
