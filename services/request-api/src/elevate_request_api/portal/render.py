"""Pages: Jinja2 templates, autoescaped, rendered with the portal's strict
Content-Security-Policy (no inline script or style, nothing from elsewhere)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from elevate_request_api.domain import CANCELLABLE, IN_FORCE
from elevate_request_api.stream import CLOSING

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store"}
TZ_COOKIE = "tz"  # set by portal.js from the browser's own time zone

_env = Environment(
    loader=PackageLoader("elevate_request_api.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


_env.globals.update(
    CANCELLABLE=sorted(CANCELLABLE),
    IN_FORCE=sorted(IN_FORCE),
    STREAM_CLOSING=" ".join(sorted(CLOSING)),
)


def zone_of(request: Request) -> ZoneInfo | None:
    """The browser's time zone (the `tz` cookie), if it is a real one; else UTC."""
    name = request.cookies.get(TZ_COOKIE, "")
    if not name or len(name) > 64:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _when(value: datetime | None, zone: ZoneInfo | None) -> Markup:
    if value is None:
        return Markup("—")
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    shown = value.astimezone(zone or UTC)
    label = shown.strftime("%Y-%m-%d %H:%M ") + (shown.tzname() or "UTC")
    return Markup('<time datetime="{}">{}</time>').format(
        value.astimezone(UTC).isoformat(), escape(label)
    )


def page(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """`template` rendered; who is signed in (`user`, `csrf`, `roles`) comes from the
    request unless given."""
    visitor = getattr(request.state, "portal_visitor", None)
    context.setdefault("user", visitor.user if visitor is not None else None)
    context.setdefault("csrf", visitor.csrf if visitor is not None else "")
    context.setdefault("roles", visitor.roles if visitor is not None else ())
    zone = zone_of(request)
    html = _env.get_template(template).render(
        when=lambda v: _when(v, zone), zone=zone.key if zone else "UTC", **context
    )
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def error_page(request: Request, status: int, title: str, detail: str) -> HTMLResponse:
    """A refusal as a page, with the navigation when someone is signed in."""
    return page(request, "error.html", status=status, title=title, detail=detail, back=None)
