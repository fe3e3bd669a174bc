"""Portal sessions, server-side (request-api runs several replicas; the database is what
they share). The cookie holds 32 random bytes; the database only their SHA-256, so a
read of the table signs nobody in. A session ends when unused for the idle timeout, at
the absolute timeout after sign-in, or at sign-out (the row is deleted: server-side)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from elevate_core.directory.identity import UserKey
from elevate_core.purge import Horizons, delete_batch
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api.portal.models import PortalLogin, PortalSession

COOKIE = "elevate_session"
LOGIN_COOKIE = "elevate_login"
LOGIN_TTL = timedelta(minutes=10)  # a sign-in left at the IdP longer than this is void
# last_seen_at is written at most this often: a page view is not a write each time.
TOUCH_EVERY = timedelta(seconds=30)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Timeouts:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True, slots=True)
class Live:
    """A valid session, as a request sees it (plain values: usable after the request's
    database session has closed, e.g. by an error page)."""

    key: UserKey
    user_id: str
    csrf_token: str
    expires_at: datetime

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token)


async def start(
    session: AsyncSession, *, key: UserKey, user_id: str, timeouts: Timeouts, now: datetime
) -> str:
    """A new session for the user; returns the cookie's value."""
    secret = secrets.token_urlsafe(32)
    session.add(
        PortalSession(
            id_hash=digest(secret),
            user_key=key.attribute,
            user_value=key.value,
            user_issuer=key.issuer,
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            created_at=now,
            last_seen_at=now,
            expires_at=now + timeouts.absolute,
        )
    )
    return secret


async def load(
    session: AsyncSession, cookie: str | None, *, timeouts: Timeouts, now: datetime
) -> Live | None:
    """The cookie's session if it is still valid (and marked as used); None otherwise
    (an ended one is deleted)."""
    if not cookie or len(cookie) > 128:
        return None
    row = await session.get(PortalSession, digest(cookie))
    if row is None:
        return None
    if now >= row.expires_at or now >= row.last_seen_at + timeouts.idle:
        await session.delete(row)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    key = UserKey(row.user_key, row.user_value, row.user_issuer)
    return Live(key, row.user_id, row.csrf_token, row.expires_at)


async def end(session: AsyncSession, cookie: str | None) -> None:
    if cookie and len(cookie) <= 128:
        row = await session.get(PortalSession, digest(cookie))
        if row is not None:
            await session.delete(row)


async def begin_login(
    session: AsyncSession, *, code_verifier: str, nonce: str, next_path: str, now: datetime
) -> str:
    """Record a sign-in in progress; returns its `state` (also the login cookie)."""
    state = secrets.token_urlsafe(32)
    session.add(
        PortalLogin(
            state_hash=digest(state),
            code_verifier=code_verifier,
            nonce=nonce,
            next_path=next_path,
            created_at=now,
        )
    )
    return state


async def take_login(session: AsyncSession, state: str, *, now: datetime) -> PortalLogin | None:
    """The sign-in `state` names, used up (deleted) by this call; None if unknown or old."""
    if not state or len(state) > 128:
        return None
    row = await session.get(PortalLogin, digest(state))
    if row is None:
        return None
    await session.delete(row)
    return row if now - row.created_at <= LOGIN_TTL else None


async def purge_ended(session: AsyncSession, horizons: Horizons, now: datetime, limit: int) -> int:
    """Sessions past their absolute end and sign-ins never finished (purge hook)."""
    del horizons  # their own lifetimes decide, not the dedupe horizon
    ended = await delete_batch(
        session, PortalSession, (PortalSession.id_hash,), PortalSession.expires_at < now, limit
    )
    stale = PortalLogin.created_at < now - LOGIN_TTL
    return ended + await delete_batch(session, PortalLogin, (PortalLogin.state_hash,), stale, limit)
