"""approval's metrics. Updates that follow a state change are applied only once its
transaction commits (`after_commit`), so a rolled-back attempt counts nothing."""

from __future__ import annotations

from collections.abc import Callable

from elevate_core.db import Database, on_commit
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from elevate_approval.models import ApprovalRequest

PENDING = Gauge("elevate_approval_pending_requests", "Requests waiting for a decision")
OUTCOMES = Counter(
    "elevate_approval_outcomes", "Requests settled, by approval rule", ["rule", "outcome"]
)
POLICY_DIFFERED = Counter(
    "elevate_approval_policy_version_differed",
    "Steps decided under another policy version than their cause was checked under",
)
DECISIONS = Counter("elevate_approval_decisions", "Human decisions, counted or refused", ["result"])
TIME_TO_DECISION = Histogram(
    "elevate_approval_time_to_decision_seconds",
    "From submission to the request's outcome",
    ["rule", "outcome"],
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200),
)


_METRICS_KEY = "elevate_approval_metrics"


def after_commit(session: AsyncSession, apply: Callable[[], None]) -> None:
    session.info.setdefault(_METRICS_KEY, []).append(apply)


def _run_metrics(session: Session) -> None:
    for apply in session.info.get(_METRICS_KEY, ()):
        apply()


on_commit(_run_metrics)


async def refresh_pending_gauge(db: Database) -> int:
    async with db.sessions() as session:
        count = int(
            (
                await session.execute(
                    select(func.count())
                    .select_from(ApprovalRequest)
                    .where(ApprovalRequest.status == "pending")
                )
            ).scalar_one()
        )
    PENDING.set(count)
    return count
