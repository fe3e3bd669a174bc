"""Deterministic event ids (ARCHITECTURE.md §3, "replays publish the same ids").

An event a service publishes *in reaction* to another event — or to a timer — gets an id
derived from its cause: UUIDv5 of the cause's id, the new event's type and its index among
that cause's outputs. Handling the same cause again (a crash before commit, a replay into
an empty database) therefore publishes the same ids, and every consumer's dedupe drops
them. Events with no cause (a user's HTTP request) keep random ids.

The consumer and the timer runner open a cause around each handler attempt, so a retried
attempt starts counting from zero again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime

# A fixed namespace: changing it would change every derived id (and break replay dedupe).
NAMESPACE = uuid.UUID("6f0f6b53-6a54-4c55-9a43-3f5a3d2c9e10")


@dataclass(slots=True)
class Cause:
    id: str
    time: datetime
    _outputs: int = field(default=0)

    def next_id(self, event_type: str) -> str:
        index = self._outputs
        self._outputs += 1
        return str(uuid.uuid5(NAMESPACE, f"{self.id}\n{event_type}\n{index}"))


_current: ContextVar[Cause | None] = ContextVar("elevate_cause", default=None)


@contextmanager
def caused_by(cause_id: str, time: datetime) -> Iterator[Cause]:
    """Events added inside this block are derived from `cause_id` (index from 0)."""
    cause = Cause(cause_id, time)
    token = _current.set(cause)
    try:
        yield cause
    finally:
        _current.reset(token)


def current_cause() -> Cause | None:
    return _current.get()


def timer_cause_id(kind: str, key: str, due: datetime) -> str:
    return f"timer:{kind}:{key}:{due.isoformat()}"
