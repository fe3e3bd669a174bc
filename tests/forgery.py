"""Forging events as an attacker would, on a cluster whose ACLs were opened by mistake
(the signatures, not the broker, must then stop the forgery)."""

from __future__ import annotations

from collections.abc import Iterable

from elevate_core.events.base import Event
from elevate_core.events.envelope import encode
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker
from elevate_local.kafka_admin import AclEntry

from tests import harness
from tests.harness import Record, headers_of, read_to_end

ATTACKER = Principal.SIEM


def open_the_acls(
    kafka: KafkaBroker, prefix: str, topics: Iterable[Topics] = (Topics.REQUESTS, Topics.DECISIONS)
) -> None:
    """The misconfiguration: the SIEM's principal may write what only request-api and
    approval should."""
    kafka.add_acls(
        AclEntry(f"User:{ATTACKER}", "*", "ALLOW", op, "TOPIC", f"{prefix}{topic}", "LITERAL")
        for topic in topics
        for op in ("WRITE", "DESCRIBE")
    )


def forged(
    event: Event,
    *,
    prefix: str,
    signed_by: Principal | None,
    tamper: dict[str, str] | None = None,
    source: str = "elevate/approval",
) -> Record:
    """A record of `event` signed with `signed_by`'s key (None: unsigned), then changed."""
    env = harness.envelope(event, source=source)
    value, headers = encode(env)
    if signed_by is not None:
        covered = {k: v.decode() for k, v in headers}
        headers += [(k, v.encode()) for k, v in harness.signer_of(signed_by).sign(value, covered)]
    for name, new in (tamper or {}).items():
        headers = [(k, new.encode() if k == name else v) for k, v in headers]
    key = env.subject.encode() if env.subject else None
    return f"{prefix}{event.topic}", value, headers, key


def ce_id(record: Record) -> str:
    return next(v.decode() for k, v in record[2] if k == "ce_id")


async def send_as_attacker(kafka: KafkaBroker, *records: Record) -> None:
    await harness.produce(kafka.endpoint(ATTACKER), list(records), sign=False)


async def dead_letters(kafka: KafkaBroker, prefix: str) -> dict[str, str]:
    """ce_id → dlq_error of everything dead-lettered on this test's DLQ so far."""
    records = await read_to_end(kafka.endpoint(), f"{prefix}{Topics.DLQ}")
    return {headers_of(r)["ce_id"]: headers_of(r)["dlq_error"] for r in records}
