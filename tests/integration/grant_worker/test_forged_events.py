"""A misconfigured cluster (ACLs opened so the SIEM's principal may write the requests and
decisions topics): forged approvals and stops reach grant-worker, which must refuse every
one for its signature — no AWS call, no state change, each on the DLQ with its reason —
while a genuine approval published again after its grant was revoked is a duplicate."""

from __future__ import annotations

import uuid
from datetime import timedelta

from elevate_core.events.models import Person, RequestCancelled, RevokeRequested
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_local.aws_proxy import AwsFaultProxy
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation

from tests import harness
from tests.forgery import ce_id, dead_letters, forged, open_the_acls, send_as_attacker
from tests.harness import eventually, metric
from tests.integration.grant_worker.conftest import (
    T0,
    Factory,
    Publisher,
    approval,
    assignment_exists,
    caught_up,
    new_triple,
    running,
)

HOUR = timedelta(hours=1)
ALICE = Person(user_name="alice", user_id=str(uuid.uuid4()))


async def test_forged_approvals_and_stops_cause_nothing_and_are_dead_lettered(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    kafka: KafkaBroker,
    topic_prefix: str,
) -> None:
    open_the_acls(kafka, topic_prefix)
    live_triple = new_triple(seeded)
    live = approval(live_triple, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    live_id = live.snapshot.request_id
    fakes = [approval(new_triple(seeded), start=T0, end=T0 + HOUR) for _ in range(4)]
    other = str(uuid.uuid4())
    cases = {
        "unsigned approval": (forged(fakes[0], prefix=topic_prefix, signed_by=None), "unsigned"),
        "approval signed by request-api": (
            forged(fakes[1], prefix=topic_prefix, signed_by=Principal.REQUEST_API),
            "wrong-writer",
        ),
        "genuine approval, ce_subject changed": (
            forged(
                fakes[2],
                prefix=topic_prefix,
                signed_by=Principal.APPROVAL,
                tamper={"ce_subject": other},
            ),
            "bad-signature",
        ),
        "genuine approval, ce_id changed": (
            forged(
                fakes[3], prefix=topic_prefix, signed_by=Principal.APPROVAL, tamper={"ce_id": other}
            ),
            "bad-signature",
        ),
        "unsigned revoke": (
            forged(
                RevokeRequested(request_id=live_id, requested_by=ALICE),
                prefix=topic_prefix,
                signed_by=None,
            ),
            "unsigned",
        ),
        "revoke signed by approval": (
            forged(
                RevokeRequested(request_id=live_id, requested_by=ALICE),
                prefix=topic_prefix,
                signed_by=Principal.APPROVAL,
            ),
            "wrong-writer",
        ),
        "unsigned cancel": (
            forged(
                RequestCancelled(request_id=live_id, cancelled_by=ALICE),
                prefix=topic_prefix,
                signed_by=None,
            ),
            "unsigned",
        ),
        "cancel signed by approval": (
            forged(
                RequestCancelled(request_id=live_id, cancelled_by=ALICE),
                prefix=topic_prefix,
                signed_by=Principal.APPROVAL,
            ),
            "wrong-writer",
        ),
    }
    rejected_before = {
        code: metric(
            "elevate_event_signature_rejected_total",
            {"consumer": f"{topic_prefix}grant-worker.decisions", "reason": code},
        )
        for code in ("unsigned", "wrong-writer", "bad-signature")
    }
    async with running(make_settings()) as w:
        await publish(live)
        await w.wait_state(live_id, "active")
        creates = len(proxy.calls_of("CreateAccountAssignment"))
        records = [record for record, _code in cases.values()]
        await send_as_attacker(kafka, *records)
        ids = {name: ce_id(record) for name, (record, _c) in cases.items()}

        async def all_dead_lettered() -> bool:
            return set(ids.values()) <= set(await dead_letters(kafka, topic_prefix))

        await eventually(all_dead_lettered, what="every forgery on the DLQ")
        dead = await dead_letters(kafka, topic_prefix)
        for name, (_record, code) in cases.items():
            assert f"signature {code}" in dead[ids[name]], name
        for fake in fakes:
            assert await w.grant(fake.snapshot.request_id) is None  # no state change
        assert len(proxy.calls_of("CreateAccountAssignment")) == creates  # no AWS call
        assert proxy.calls_of("DeleteAccountAssignment") == []
        g = await w.grant(live_id)
        assert g is not None
        assert (g.state, g.stop_kind) == ("active", None)  # the forged stops stopped nothing
    assert (
        metric(
            "elevate_event_signature_rejected_total",
            {"consumer": f"{topic_prefix}grant-worker.decisions", "reason": "unsigned"},
        )
        > rejected_before["unsigned"]
    )
    # The live grant's access is still there: the forged revoke and cancel removed nothing.
    assert assignment_exists(sso, seeded, live_triple) == 1  # type: ignore[arg-type]


async def test_a_genuine_approval_published_again_after_the_revoke_is_a_duplicate(
    make_settings: Factory,
    publish: Publisher,
    seeded: SeededOrganisation,
    sso: object,
    proxy: AwsFaultProxy,
    kafka: KafkaBroker,
    topic_prefix: str,
) -> None:
    t = new_triple(seeded)
    approved = approval(t, start=T0 - timedelta(minutes=1), end=T0 + HOUR)
    rid = approved.snapshot.request_id
    genuine = harness.envelope(approved, source="elevate/approval")
    decisions = f"{topic_prefix}{Topics.DECISIONS}"
    async with running(make_settings()) as w:
        await harness.publish(kafka.endpoint(), decisions, genuine)
        await w.wait_state(rid, "active")
        await publish(RevokeRequested(request_id=rid, requested_by=ALICE))
        await w.wait_state(rid, "ended")
        creates = len(proxy.calls_of("CreateAccountAssignment"))
        await harness.publish(kafka.endpoint(), decisions, genuine)  # the very same record
        await caught_up(kafka.endpoint(), f"{topic_prefix}grant-worker.decisions", decisions)
        assert len(proxy.calls_of("CreateAccountAssignment")) == creates
        g = await w.grant(rid)
        assert g is not None
        assert g.state == "ended"
        assert await w.events(rid) == ["activated", "ended"]
    assert assignment_exists(sso, seeded, t) == 0  # type: ignore[arg-type]
    assert genuine.id not in await dead_letters(kafka, topic_prefix)  # deduplicated
