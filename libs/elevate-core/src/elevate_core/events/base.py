"""The event base class and the class-name ⇔ `ce_type` rule.

`RequestSubmitted` ⇔ `io.elevate.request.submitted.v1`: CamelCase words, lower-cased,
joined with dots, so the mapping is mechanical and reversible.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from elevate_core.errors import ElevateError
from elevate_core.events.topics import Topics

CE_TYPE_PREFIX = "io.elevate."
_WORD = re.compile(r"[A-Z][a-z0-9]*")
_registry: dict[str, type[Event]] = {}


def ce_type_for(class_name: str, version: int = 1) -> str:
    words = _WORD.findall(class_name)
    if "".join(words) != class_name:
        raise ValueError(f"event class name must be CamelCase words: {class_name}")
    return f"{CE_TYPE_PREFIX}{'.'.join(w.lower() for w in words)}.v{version}"


class UnknownEventTypeError(ElevateError):
    """No event class has this `ce_type`: permanent for this reader."""


def event_class_for(ce_type: str) -> type[Event]:
    try:
        return _registry[ce_type]
    except KeyError:
        raise UnknownEventTypeError(ce_type) from None


def registered_events() -> dict[str, type[Event]]:
    return dict(sorted(_registry.items()))


def is_security_relevant(ce_type: str) -> bool:
    """Whether losing an event of this type could leave access in place or hide it."""
    cls = _registry.get(ce_type)
    return cls is not None and cls.security_relevant


class Event(BaseModel):
    """Base of every event. Subclasses set `topic`; `ce_type` follows from the name.

    Tolerant reader: unknown fields are ignored, so a writer one release ahead (which may
    only add optional fields within `v1`, docs/runtime.md) never breaks an older reader."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: ClassVar[Topics]
    version: ClassVar[int] = 1
    ce_type: ClassVar[str]
    # Dead-lettering one of these raises an alert metric (a lost revoke is lost access).
    security_relevant: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__.startswith("_") or not hasattr(cls, "topic"):
            return  # abstract helpers without a topic are not on the wire
        cls.ce_type = ce_type_for(cls.__name__, cls.version)
        if cls.ce_type in _registry and _registry[cls.ce_type] is not cls:
            raise ValueError(f"two event classes for {cls.ce_type}")
        _registry[cls.ce_type] = cls
