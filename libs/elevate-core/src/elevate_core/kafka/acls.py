"""Who may say what on Kafka: the one ACL table (ARCHITECTURE.md, "one writer per topic").

Every topic has one writer — a forged `RequestApproved` from anyone but approval must be
refused by the broker, not noticed later — and the readers that consume it. Two rows are
explicit exceptions: `elevate.dlq.v1`, written by every service that consumes, and
`elevate.cloudtrail.v1`, written by audit-ingest's ingest and, optionally, by one external
CloudTrail producer. Consumer groups are granted by prefix (a replay's new
`ELEVATE_CONSUMER_GROUP_SUFFIX` stays inside it), and so are transactional ids: only
audit-ingest produces in Kafka transactions (its CloudTrail consumer, one id per input
partition, `kafka/transactional.py`). Creating topics is the admin principal's alone, and no
principal of the table may change ACLs (the broker's operator does, from this table).

This table is the only declaration: the local broker's ACLs, the docs and (later) the
Helm chart's Strimzi `KafkaUser`s and MSK IAM policies are derived from it, and a test
checks it against the consumers and writers each service actually builds.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from elevate_core.events.topics import Topics


class Principal(StrEnum):
    """Kafka principals (SCRAM user names; Strimzi KafkaUser / IAM role names)."""

    REQUEST_API = "request-api"
    APPROVAL = "approval"
    GRANT_WORKER = "grant-worker"
    AUDIT_INGEST = "audit-ingest"
    NOTIFIER = "notifier"
    # Outside Elevate: an operator's tools, a CloudTrail producer, the SIEM.
    ADMIN = "elevate-admin"
    CLOUDTRAIL_PRODUCER = "cloudtrail-producer"
    SIEM = "siem"


SERVICES: tuple[Principal, ...] = (
    Principal.REQUEST_API,
    Principal.APPROVAL,
    Principal.GRANT_WORKER,
    Principal.AUDIT_INGEST,
    Principal.NOTIFIER,
)


@dataclass(frozen=True, slots=True)
class TopicAccess:
    topic: Topics
    writers: tuple[Principal, ...]
    readers: tuple[Principal, ...]
    why: str = ""


ACL_TABLE: tuple[TopicAccess, ...] = (
    TopicAccess(
        Topics.REQUESTS,
        writers=(Principal.REQUEST_API,),
        readers=(
            Principal.APPROVAL,
            Principal.GRANT_WORKER,
            Principal.REQUEST_API,
            Principal.NOTIFIER,
        ),
    ),
    TopicAccess(
        Topics.DECISIONS,
        writers=(Principal.APPROVAL,),
        readers=(Principal.GRANT_WORKER, Principal.REQUEST_API, Principal.NOTIFIER),
    ),
    TopicAccess(
        Topics.GRANTS,
        writers=(Principal.GRANT_WORKER,),
        readers=(
            Principal.AUDIT_INGEST,
            Principal.GRANT_WORKER,
            Principal.REQUEST_API,
            Principal.NOTIFIER,
        ),
    ),
    TopicAccess(
        Topics.CLOUDTRAIL,
        writers=(Principal.AUDIT_INGEST, Principal.CLOUDTRAIL_PRODUCER),
        readers=(Principal.AUDIT_INGEST,),
        why="exception: an external producer may deliver CloudTrail records directly",
    ),
    TopicAccess(
        Topics.AUDIT,
        writers=(Principal.AUDIT_INGEST,),
        readers=(Principal.REQUEST_API, Principal.SIEM),
    ),
    TopicAccess(
        Topics.DLQ,
        writers=SERVICES,
        readers=(Principal.ADMIN, Principal.NOTIFIER),
        why="exception: every consumer dead-letters what it cannot handle; operators read "
        "it to re-drive (through the original writer's outbox, never by producing); "
        "notifier reads it to tell the security channel of forged events",
    ),
)

#: Consumer-group prefix each principal may use (its consumers' names start with it).
GROUP_PREFIXES: dict[Principal, str] = {
    Principal.REQUEST_API: "request-api.",
    Principal.APPROVAL: "approval",
    Principal.GRANT_WORKER: "grant-worker.",
    Principal.AUDIT_INGEST: "audit-ingest.",
    Principal.NOTIFIER: "notifier.",
    # Outside Elevate: the SIEM's connector and an operator's tools consume in groups too.
    Principal.SIEM: "siem.",
    Principal.ADMIN: "elevate-admin.",
}


#: Transactional-id prefix each principal may use (WRITE + DESCRIBE on TRANSACTIONAL_ID).
TRANSACTIONAL_PREFIXES: dict[Principal, str] = {Principal.AUDIT_INGEST: "audit-ingest."}


def access_of(topic: Topics) -> TopicAccess:
    return next(row for row in ACL_TABLE if row.topic is topic)


def writes(principal: Principal) -> frozenset[Topics]:
    return frozenset(row.topic for row in ACL_TABLE if principal in row.writers)


def reads(principal: Principal) -> frozenset[Topics]:
    return frozenset(row.topic for row in ACL_TABLE if principal in row.readers)


#: What the admin principal may do on Elevate's topics (all named `<prefix>elevate.…`):
#: create them and set their retention. It changes no ACL and writes no event.
ADMIN_TOPIC_OPERATIONS = ("CREATE", "DESCRIBE", "DESCRIBE_CONFIGS", "ALTER_CONFIGS")
TOPIC_NAMESPACE = "elevate."


@dataclass(frozen=True, slots=True, order=True)
class Grant:
    """One allowed (principal, operation, resource) — what the broker is told to allow.
    Names follow Kafka's AclOperation / ResourceType / PatternType enums."""

    principal: Principal
    operation: str  # READ | WRITE | DESCRIBE | DESCRIBE_CONFIGS | CREATE | ALTER_CONFIGS
    resource: str  # TOPIC | GROUP | TRANSACTIONAL_ID
    name: str
    pattern: str = "LITERAL"  # LITERAL | PREFIXED


def grants(*, topic_prefix: str = "") -> list[Grant]:
    """Every ACL the broker should hold for topics named `topic_prefix` + catalog name, and
    nothing else (the broker denies what no ACL allows)."""
    out: set[Grant] = set()
    for row in ACL_TABLE:
        name = f"{topic_prefix}{row.topic}"
        for principal in row.writers:
            out |= {Grant(principal, op, "TOPIC", name) for op in ("WRITE", "DESCRIBE")}
        for principal in row.readers:
            # DESCRIBE_CONFIGS: the purge reads how long the broker keeps what it consumes.
            ops = ("READ", "DESCRIBE", "DESCRIBE_CONFIGS")
            out |= {Grant(principal, op, "TOPIC", name) for op in ops}
    for principal, group in GROUP_PREFIXES.items():
        out.add(Grant(principal, "READ", "GROUP", f"{topic_prefix}{group}", "PREFIXED"))
    for principal, txn in TRANSACTIONAL_PREFIXES.items():
        name = f"{topic_prefix}{txn}"
        out |= {
            Grant(principal, op, "TRANSACTIONAL_ID", name, "PREFIXED")
            for op in ("WRITE", "DESCRIBE")
        }
    namespace = f"{topic_prefix}{TOPIC_NAMESPACE}"
    out |= {
        Grant(Principal.ADMIN, op, "TOPIC", namespace, "PREFIXED") for op in ADMIN_TOPIC_OPERATIONS
    }
    return sorted(out)
