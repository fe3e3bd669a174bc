"""The portal's tables (migration request_api_0005)."""

from __future__ import annotations

from datetime import datetime

from elevate_core.db import Base, UTCDateTime
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column


class PortalLogin(Base):
    """A sign-in in progress: what the callback needs to finish the code flow. Keyed by
    the SHA-256 of `state`, used once."""

    __tablename__ = "portal_logins"

    state_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    code_verifier: Mapped[str] = mapped_column(String(128))
    nonce: Mapped[str] = mapped_column(String(64))
    next_path: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class PortalSession(Base):
    """A signed-in browser. Keyed by the SHA-256 of the cookie's value; the user is kept
    as the key the identity binding found them by, and looked up again on each request
    (a user removed from the Identity Store is signed out at once)."""

    __tablename__ = "portal_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(32))
    user_value: Mapped[str] = mapped_column(String(512))
    user_issuer: Mapped[str] = mapped_column(String(512))
    user_id: Mapped[str] = mapped_column(String(128))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
