"""Tables the contract tests' handlers write to (own metadata: not part of any service)."""

from __future__ import annotations

from sqlalchemy import Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TestBase(DeclarativeBase):
    __test__ = False  # a table base, not a test class
    metadata = MetaData()


class Effect(TestBase):
    """One row per state change a handler (or timer) made."""

    __tablename__ = "contract_effects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(String(255), default="")
