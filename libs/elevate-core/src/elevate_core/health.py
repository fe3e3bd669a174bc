"""Liveness details and Prometheus metrics shared by every service.

Components (Kafka relay, consumers, timers) report their state here; it shows as
`elevate_component_up` (and the logs say why), never on the anonymous `/healthz`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

COMPONENT_UP = Gauge(
    "elevate_component_up",
    "1 when a component (kafka producer, consumer, timers) is working",
    ["component"],
)
COMPONENT_ERRORS = Counter(
    "elevate_component_errors_total",
    "Errors a component met and recovered from, by component",
    ["component"],
)


@dataclass
class ComponentState:
    ok: bool = False
    detail: str = "starting"
    since: float = field(default_factory=time.time)


class HealthRegistry:
    def __init__(self) -> None:
        self._states: dict[str, ComponentState] = {}

    def ok(self, component: str, detail: str = "ok") -> None:
        state = self._states.get(component)
        if state is None or not state.ok:
            self._states[component] = ComponentState(ok=True, detail=detail)
        COMPONENT_UP.labels(component).set(1)

    def failing(self, component: str, detail: str) -> None:
        state = self._states.get(component)
        if state is None or state.ok:
            self._states[component] = ComponentState(ok=False, detail=detail)
        else:
            state.detail = detail
        COMPONENT_UP.labels(component).set(0)
        COMPONENT_ERRORS.labels(component).inc()


health = HealthRegistry()
