"""Slack message layout (Block Kit). Whatever a requester typed is escaped, so a
justification cannot mention `@channel`, link elsewhere or break the layout."""

from __future__ import annotations

from typing import Any

from elevate_notifier.domain import Message

APPROVE, REJECT = "elevate.approve", "elevate.reject"  # request-api's interaction route
MAX_FIELD = 1900  # Slack's section fields take 2,000 characters


def escape(text: str) -> str:
    """Slack's three control characters (api.slack.com, "Escaping text")."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def blocks(message: Message) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{escape(message.subject)}*"}}
    ]
    fields = [
        {"type": "mrkdwn", "text": f"*{escape(label)}*\n{escape(value)[:MAX_FIELD]}"}
        for label, value in message.facts
    ]
    for start in range(0, len(fields), 10):  # at most ten fields a section
        out.append({"type": "section", "fields": fields[start : start + 10]})
    elements: list[dict[str, Any]] = []
    if message.actions and message.request_id:
        elements += [
            _button("Approve", APPROVE, message.request_id, style="primary"),
            _button("Reject", REJECT, message.request_id, style="danger"),
        ]
    if message.link:
        elements.append(
            {
                "type": "button",
                "text": {"type": "plain_text", "text": "Open in Elevate"},
                "url": message.link,
                "action_id": "elevate.open",
            }
        )
    if elements:
        out.append({"type": "actions", "block_id": "elevate", "elements": elements})
    return out


def _button(text: str, action_id: str, value: str, *, style: str) -> dict[str, Any]:
    return {
        "type": "button",
        "text": {"type": "plain_text", "text": text},
        "action_id": action_id,
        "value": value,
        "style": style,
    }
