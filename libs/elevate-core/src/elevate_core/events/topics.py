"""The topic catalog: one writer per topic, so Kafka ACLs decide who may say what."""

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
    writer: str
    partitions: int = 6


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(Topics.REQUESTS, "request-api"),
    TopicSpec(Topics.DECISIONS, "approval"),
    TopicSpec(Topics.GRANTS, "grant-worker"),
    TopicSpec(Topics.CLOUDTRAIL, "audit-ingest"),
    TopicSpec(Topics.AUDIT, "audit-ingest"),
    TopicSpec(Topics.DLQ, "every consumer", partitions=1),
)
