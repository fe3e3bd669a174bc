"""The one ACL table (elevate_core.kafka.acls): one writer per topic but for the two
explicit exceptions, no service with admin rights — and it matches what every service
really builds: each consumer reads only topics its principal may read, under its group
prefix, and each principal may read no topic that none of its consumers reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from elevate_core.app import ServiceContext
from elevate_core.events.topics import Topics
from elevate_core.kafka import acls
from elevate_core.kafka.acls import ACL_TABLE, GROUP_PREFIXES, SERVICES, Principal
from elevate_core.kafka.consumer import Consumer
from elevate_core.kafka.transactional import TransactionalConsumer
from elevate_notifier.refusals import RefusalWatcher

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "t."


def test_every_topic_has_one_row_and_one_writer_but_the_two_exceptions() -> None:
    assert sorted(row.topic for row in ACL_TABLE) == sorted(Topics)
    for row in ACL_TABLE:
        if row.topic is Topics.DLQ:
            assert row.writers == SERVICES
            assert row.why
        elif row.topic is Topics.CLOUDTRAIL:
            assert row.writers == (Principal.AUDIT_INGEST, Principal.CLOUDTRAIL_PRODUCER)
            assert row.why
        else:
            assert len(row.writers) == 1, row.topic
            assert not row.why
    assert acls.access_of(Topics.DECISIONS).writers == (Principal.APPROVAL,)


def test_no_service_may_create_or_alter_anything() -> None:
    granted = acls.grants(topic_prefix=PREFIX)
    services = [g for g in granted if g.principal is not Principal.ADMIN]
    assert {g.operation for g in services} == {"READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"}
    # no CLUSTER: no ACL changes; transactional ids for audit-ingest's consumer alone
    assert {g.resource for g in granted} == {"TOPIC", "GROUP", "TRANSACTIONAL_ID"}
    transactional = {g for g in granted if g.resource == "TRANSACTIONAL_ID"}
    assert transactional == {
        acls.Grant(
            Principal.AUDIT_INGEST, op, "TRANSACTIONAL_ID", f"{PREFIX}audit-ingest.", "PREFIXED"
        )
        for op in ("WRITE", "DESCRIBE")
    }
    admin = {g.operation for g in granted if g.principal is Principal.ADMIN}
    assert "WRITE" not in admin
    assert "CREATE" in admin
    # request-api may not write decisions; approval may.
    decisions = f"{PREFIX}{Topics.DECISIONS}"
    writers = {g.principal for g in granted if g.name == decisions and g.operation == "WRITE"}
    assert writers == {Principal.APPROVAL}


def _settings(service: str, tmp_path: Path) -> Any:
    from elevate_approval.settings import ApprovalSettings
    from elevate_audit_ingest.settings import AuditSettings
    from elevate_grant_worker.settings import GrantWorkerSettings
    from elevate_notifier.settings import NotifierSettings
    from elevate_request_api.settings import RequestApiSettings

    cls = {
        "request-api": RequestApiSettings,
        "approval": ApprovalSettings,
        "grant-worker": GrantWorkerSettings,
        "audit-ingest": AuditSettings,
        "notifier": NotifierSettings,
    }[service]
    return cls(
        mode="test",
        service_name=service,
        database_url=f"sqlite+aiosqlite:///{tmp_path / service}.db",
        kafka_bootstrap_servers="127.0.0.1:9",
        topic_prefix=PREFIX,
        policy_file=ROOT / "deploy/local/policy.yaml",
        aws_endpoint_url="http://127.0.0.1:9",
    )


def _built(service: str, tmp_path: Path) -> ServiceContext:
    from elevate_approval.main import create_app as approval
    from elevate_audit_ingest.main import create_app as audit
    from elevate_grant_worker.main import create_app as grant_worker
    from elevate_notifier.main import create_app as notifier
    from elevate_request_api.main import create_app as request_api

    create = {
        "request-api": request_api,
        "approval": approval,
        "grant-worker": grant_worker,
        "audit-ingest": audit,
        "notifier": notifier,
    }[service]
    ctx: ServiceContext = create(_settings(service, tmp_path)).state.ctx
    return ctx


@pytest.mark.parametrize("principal", SERVICES, ids=str)
def test_each_service_reads_exactly_what_the_table_lets_it(
    principal: Principal, tmp_path: Path
) -> None:
    ctx = _built(principal.value, tmp_path)
    consumers = [w for w in ctx.workers if isinstance(w, Consumer)]
    assert consumers
    may_read = {f"{PREFIX}{t}" for t in acls.reads(principal)}
    read = {t for c in consumers for t in c.config.topics}
    # notifier's forged-event watcher reads the DLQ outside the consumer runtime.
    watchers = [w for w in ctx.workers if isinstance(w, RefusalWatcher)]
    read |= {w.topic for w in watchers}
    assert all(w.group.startswith(PREFIX + GROUP_PREFIXES[principal]) for w in watchers)
    assert read == may_read  # nothing it cannot read, no right it does not use
    for consumer in consumers:
        group = consumer.config.group_id or consumer.config.name
        assert group.startswith(PREFIX + GROUP_PREFIXES[principal]), group
        assert consumer.config.dlq_topic == f"{PREFIX}{Topics.DLQ}"
    # Transactional ids only where the table grants them, and under the granted prefix.
    transactional = [c for c in consumers if isinstance(c, TransactionalConsumer)]
    if principal in acls.TRANSACTIONAL_PREFIXES:
        assert transactional
    for consumer in transactional:
        assert consumer.output.prefix.startswith(PREFIX + acls.TRANSACTIONAL_PREFIXES[principal])
    assert principal in acls.access_of(Topics.DLQ).writers
