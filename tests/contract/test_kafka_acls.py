"""The local broker enforces the ACL table (`elevate_core.kafka.acls`) as production does:
nobody gets in without SASL_SSL and a valid SCRAM password, each principal may do exactly
what the table grants and is refused the rest by the broker, and the broker's ACLs are the
table's and nothing else — no principal of it is a super user."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from elevate_core.events.topics import CATALOG, Topics
from elevate_core.kafka import acls
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint, KafkaSecurity, SecurityProtocol
from elevate_local.kafka import SUPERUSER, ForeignAclError, KafkaBroker
from elevate_local.kafka_admin import AclEntry, KafkaAdminError

OK = "ok"
SEED = b"seed"  # the super user's record on every topic, for readers to find


async def outcome(action: Callable[[], Awaitable[Any]]) -> str:
    """OK, or the name of the Kafka error the broker's answer raised."""
    try:
        await action()
    except KafkaError as exc:
        return type(exc).__name__
    return OK


@pytest.fixture
async def topics(kafka: KafkaBroker, topic_prefix: str) -> dict[Topics, str]:
    """The catalog's topics under this test's prefix, made by the super user, each holding
    one record on partition 0."""
    kafka.allow(topic_prefix)
    names = {spec.name: f"{topic_prefix}{spec.name}" for spec in CATALOG}
    admin = kafka.endpoint().admin()
    await admin.start()
    try:
        created = await admin.create_topics(
            [NewTopic(names[spec.name], spec.partitions, 1) for spec in CATALOG]
        )
    finally:
        await admin.close()
    assert [error for _, error, *_ in created.topic_errors] == [0] * len(CATALOG)
    producer = kafka.endpoint().producer()
    await producer.start()
    try:
        await asyncio.gather(
            *(producer.send_and_wait(n, SEED, partition=0) for n in names.values())
        )
    finally:
        await producer.stop()
    return names


async def produce(endpoint: KafkaEndpoint, topic: str) -> None:
    producer = endpoint.producer()
    try:
        await producer.start()
        await producer.send_and_wait(topic, b"probe")
    finally:
        await producer.stop()


async def fetch_seed(endpoint: KafkaEndpoint, topic: str, group: str | None = None) -> None:
    """Read the super user's record: by assignment, or by joining `group`."""
    consumer = endpoint.consumer(
        *([topic] if group else []),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        await consumer.start()
        if group is None:
            partition = TopicPartition(topic, 0)
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
        record = await consumer.getone()
        assert record.value == SEED
    finally:
        await consumer.stop()


# ---- nobody gets in without credentials ----


def _endpoints(kafka: KafkaBroker, wrong: Path) -> dict[str, tuple[KafkaEndpoint, str]]:
    """Each way in that must fail, and the reason aiokafka logs for it."""
    tls = KafkaSecurity(protocol=SecurityProtocol.SSL, ca_file=kafka.ca_file)

    def scram(user: str) -> KafkaSecurity:
        return KafkaSecurity(
            protocol=SecurityProtocol.SASL_SSL,
            username=user,
            password_file=wrong,
            ca_file=kafka.ca_file,
        )

    refused_sasl = r"SaslAuthenticationFailed: .*invalid credentials"
    return {
        # The TLS listener hangs up on a client speaking Kafka in clear.
        "plaintext": (
            KafkaEndpoint(kafka.bootstrap),
            r"Unable connect to .*: .*Connection at .* closed",
        ),
        "plaintext-to-controller": (
            KafkaEndpoint(f"127.0.0.1:{kafka.controller_port}"),
            r"Unable connect to .*: .*Connection at .* closed",
        ),
        # TLS works (the broker answers ApiVersions), but any request before SASL ends it.
        "tls-without-sasl": (
            KafkaEndpoint(kafka.bootstrap, tls),
            r"Unable to request metadata from .*: .*Connection at .* closed",
        ),
        "wrong-password": (KafkaEndpoint(kafka.bootstrap, scram(Principal.APPROVAL)), refused_sasl),
        "unknown-user": (KafkaEndpoint(kafka.bootstrap, scram("mallory")), refused_sasl),
    }


@pytest.mark.parametrize(
    "way_in",
    ["plaintext", "plaintext-to-controller", "tls-without-sasl", "wrong-password", "unknown-user"],
)
async def test_an_unauthenticated_client_can_neither_produce_nor_consume(
    kafka: KafkaBroker,
    topics: dict[Topics, str],
    way_in: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    endpoint, reason = _endpoints(kafka, wrong)[way_in]
    topic = topics[Topics.REQUESTS]  # exists, and holds a record
    caplog.set_level(logging.WARNING, logger="aiokafka")
    for attempt in (produce, fetch_seed):
        caplog.clear()
        with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
            await attempt(endpoint, topic)
        logged = [r.getMessage() for r in caplog.records if r.name == "aiokafka"]
        assert any(re.search(reason, message) for message in logged), logged


# ---- each principal may do what the table grants, and nothing else ----


async def test_only_approval_may_publish_decisions(
    kafka: KafkaBroker, topics: dict[Topics, str]
) -> None:
    decisions = topics[Topics.DECISIONS]
    forged = await outcome(partial(produce, kafka.endpoint(Principal.REQUEST_API), decisions))
    assert forged == "TopicAuthorizationFailedError"
    assert await outcome(partial(produce, kafka.endpoint(Principal.APPROVAL), decisions)) == OK


async def test_every_principal_writes_and_reads_exactly_what_the_table_says(
    kafka: KafkaBroker, topics: dict[Topics, str]
) -> None:
    refused = "TopicAuthorizationFailedError"
    pairs = [(p, t) for p in Principal for t in topics]
    # Writes add records elsewhere; every read fetches offset 0 of partition 0, the seed.
    wrote, read = await asyncio.gather(
        asyncio.gather(
            *(outcome(partial(produce, kafka.endpoint(p), topics[t])) for p, t in pairs)
        ),
        asyncio.gather(*(_read(kafka, p, topics[t]) for p, t in pairs)),
    )
    assert dict(zip(pairs, wrote, strict=True)) == {
        (p, t): OK if t in acls.writes(p) else refused for p, t in pairs
    }
    assert dict(zip(pairs, read, strict=True)) == {
        (p, t): OK if t in acls.reads(p) else refused for p, t in pairs
    }


async def _read(kafka: KafkaBroker, principal: Principal, topic: str) -> str:
    """A consumer first asks for the topic's metadata, then fetches. aiokafka's consumer
    retries a metadata refusal for ever, so the refusal is read from the same request made
    by the principal's admin client; a topic it may describe is then really fetched."""
    endpoint = kafka.endpoint(principal)
    admin = endpoint.admin()
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    if described["error_code"]:
        refusal: str = for_code(described["error_code"]).__name__
        return refusal
    return await outcome(partial(fetch_seed, endpoint, topic))


async def test_a_principal_joins_consumer_groups_only_under_its_own_prefix(
    kafka: KafkaBroker, topics: dict[Topics, str], topic_prefix: str
) -> None:
    # Each principal that reads a topic tries a group under every principal's prefix.
    cases = {
        (principal, group_prefix): (topics[min(acls.reads(principal))], group_prefix)
        for principal in Principal
        if acls.reads(principal)
        for group_prefix in acls.GROUP_PREFIXES.values()
    }
    joined = await asyncio.gather(
        *(
            outcome(partial(fetch_seed, kafka.endpoint(p), t, f"{topic_prefix}{g}probe.{p}"))
            for (p, _), (t, g) in cases.items()
        )
    )
    assert dict(zip(cases, joined, strict=True)) == {
        (p, g): OK if acls.GROUP_PREFIXES.get(p) == g else "GroupAuthorizationFailedError"
        for p, g in cases
    }


async def test_only_the_admin_principal_creates_topics(
    kafka: KafkaBroker, topic_prefix: str
) -> None:
    kafka.allow(topic_prefix)
    name = f"{topic_prefix}elevate.x.v1"
    # Outside Elevate's namespace no ACL names the topic: deny by default, even the admin.
    unnamed = f"{topic_prefix}not-elevate.v1"
    others = [p for p in Principal if p is not Principal.ADMIN]
    refused = await asyncio.gather(
        *(_create(kafka.endpoint(p), name) for p in others),
        *(_create(kafka.endpoint(p), unnamed) for p in Principal),
    )
    assert refused == ["TopicAuthorizationFailedError"] * (len(others) + len(Principal))
    assert await _create(kafka.endpoint(Principal.ADMIN), name) == OK
    admin = kafka.endpoint().admin()
    await admin.start()
    try:
        created = {name, unnamed} & set(await admin.list_topics())
    finally:
        await admin.close()
    assert created == {name}


async def _create(endpoint: KafkaEndpoint, name: str) -> str:
    admin = endpoint.admin()
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    ((_, code, *_),) = response.topic_errors
    refusal: str = for_code(code).__name__
    return OK if code == 0 else refusal


# ---- the broker's ACLs are the table's ----


def _super_users(kafka: KafkaBroker) -> list[str]:
    lines = (kafka.data_dir / "server.properties").read_text().splitlines()
    return [line.partition("=")[2] for line in lines if line.startswith("super.users=")]


def _table(kafka: KafkaBroker) -> set[acls.Grant]:
    return {g for prefix in kafka.allowed_prefixes for g in acls.grants(topic_prefix=prefix)}


def test_the_broker_holds_the_tables_acls_and_only_the_broker_is_a_super_user(
    kafka: KafkaBroker, topic_prefix: str
) -> None:
    kafka.allow(topic_prefix)
    assert _super_users(kafka) == [f"User:{SUPERUSER}"]
    assert "" in kafka.allowed_prefixes
    assert topic_prefix in kafka.allowed_prefixes
    assert [e for e in kafka.acl_entries() if e.principal == f"User:{SUPERUSER}"] == []
    assert kafka.broker_acls() == _table(kafka)


def test_a_refused_admin_command_applies_nothing_and_leaves_the_tool_in_step(
    kafka: KafkaBroker, topic_prefix: str
) -> None:
    kafka.allow(topic_prefix)
    audit = f"{topic_prefix}{Topics.AUDIT}"
    typo = AclEntry("User:siem", "*", "ALLOW", "WRTIE", "TOPIC", audit, "LITERAL")
    valid = AclEntry("User:siem", "*", "ALLOW", "WRITE", "TOPIC", audit, "LITERAL")
    with pytest.raises(KafkaAdminError, match="WRTIE"):
        kafka.add_acls([typo, valid])
    assert kafka.broker_acls() == _table(kafka)


def _secrets(broker: KafkaBroker) -> dict[Path, bytes]:
    files = [broker.password_file(p) for p in (SUPERUSER, *Principal)]
    files += [broker.tls.ca_key_file, broker.tls.keystore_file]
    return {f: f.read_bytes() for f in files}


async def test_a_restart_keeps_the_credentials_and_deletes_acls_the_table_does_not_grant(
    own_kafka: KafkaBroker, topic_prefix: str
) -> None:
    broker, audit = own_kafka, f"{topic_prefix}{Topics.AUDIT}"
    secrets, ca = _secrets(broker), broker.ca_file.read_bytes()
    assert {f.name: f.stat().st_mode & 0o777 for f in secrets} == {f.name: 0o600 for f in secrets}
    broker.allow(topic_prefix)
    stray = [
        AclEntry("User:mallory", "*", "ALLOW", "READ", "TOPIC", audit, "LITERAL"),
        AclEntry("User:approval", "*", "DENY", "READ", "GROUP", topic_prefix, "PREFIXED"),
        # Shaped like a grant, but the table makes SIEM a reader of the audit log only.
        AclEntry(f"User:{Principal.SIEM}", "*", "ALLOW", "WRITE", "TOPIC", audit, "LITERAL"),
    ]
    broker.add_acls(stray)
    with pytest.raises(ForeignAclError) as foreign:
        broker.broker_acls()
    assert set(foreign.value.entries) == set(stray[:2])
    admin = broker.endpoint().admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(audit, 1, 1)])
    finally:
        await admin.close()
    siem = broker.endpoint(Principal.SIEM)
    assert await outcome(partial(produce, siem, audit)) == OK  # the stray grant works …

    await asyncio.to_thread(broker.stop)
    await asyncio.to_thread(broker.start)

    assert (_secrets(broker), broker.ca_file.read_bytes()) == (secrets, ca)
    assert broker.broker_acls() == _table(broker)  # … until the start reconciled
    assert await outcome(partial(produce, siem, audit)) == "TopicAuthorizationFailedError"
    writer = broker.endpoint(Principal.AUDIT_INGEST)  # old password, old CA: still in
    assert await outcome(partial(produce, writer, audit)) == OK
