"""A misconfigured cluster lets the SIEM's principal write the requests topic: forged
decisions naming real approvers (unsigned, or signed with approval's own key — not the
requests topic's writer) reach approval, which refuses them for their signature. The
request stays pending; each forgery is on the DLQ with its reason."""

from __future__ import annotations

from elevate_approval.models import DecisionLogEntry
from elevate_core.app import ServiceContext
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.kafka import KafkaBroker
from sqlalchemy import select

from tests.forgery import ce_id, dead_letters, forged, open_the_acls, send_as_attacker
from tests.harness import eventually
from tests.integration.approval.conftest import DecisionsReader, Requests, envelope, produce
from tests.integration.approval.test_kafka import service  # noqa: F401  (the fixture)


async def test_forged_decisions_naming_real_approvers_change_nothing(
    service: ServiceContext,  # noqa: F811
    kafka: KafkaBroker,
    topic_prefix: str,
    requests: Requests,
) -> None:
    open_the_acls(kafka, topic_prefix)
    req = requests.submitted("DatabaseAdmin")  # two approvals from sre-leads needed
    rid = req.request_id
    await produce(kafka.endpoint(), f"{topic_prefix}{Topics.REQUESTS}", envelope(req, subject=rid))
    decisions = f"{topic_prefix}{Topics.DECISIONS}"
    async with DecisionsReader(kafka.endpoint(), decisions) as reader:
        await reader.wait_for(lambda: bool(reader.of(rid, "ApprovalRequested")), what="pending")
        fakes = [
            forged(requests.decision(req, "bob"), prefix=topic_prefix, signed_by=None),
            forged(
                requests.decision(req, "frank"),
                prefix=topic_prefix,
                signed_by=Principal.APPROVAL,
                source="elevate/request-api",
            ),
        ]
        await send_as_attacker(kafka, *fakes)

        async def dead_lettered() -> bool:
            return {ce_id(f) for f in fakes} <= set(await dead_letters(kafka, topic_prefix))

        await eventually(dead_lettered, what="both forged decisions on the DLQ")
        await reader.poll()
    dead = await dead_letters(kafka, topic_prefix)
    assert "signature unsigned" in dead[ce_id(fakes[0])]
    assert "signature wrong-writer" in dead[ce_id(fakes[1])]
    assert [name for name, _id, _data in reader.of(rid)] == ["ApprovalRequested"]
    async with service.db.sessions() as s:
        actors = await s.execute(
            select(DecisionLogEntry.actor_user_name).where(DecisionLogEntry.request_id == str(rid))
        )
    # Only the submission is logged: the forgeries were not even refused — never handled.
    assert list(actors.scalars()) == ["alice"]
