"""The topic catalog. Who may write and read each topic: elevate_core.kafka.acls."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topics(StrEnum):
    REQUESTS = "elevate.requests.v1"
    DECISIONS = "elevate.decisions.v1"
    GRANTS = "elevate.grants.v1"
    CLOUDTRAIL = "elevate.cloudtrail.v1"
    AUDIT = "elevate.audit.v1"
    DLQ = "elevate.dlq.v1"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: Topics
    partitions: int = 6


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(Topics.REQUESTS),
    TopicSpec(Topics.DECISIONS),
    TopicSpec(Topics.GRANTS),
    TopicSpec(Topics.CLOUDTRAIL),
    TopicSpec(Topics.AUDIT),
    TopicSpec(Topics.DLQ, partitions=1),
)
