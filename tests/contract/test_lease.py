"""The leadership lease with an epoch (fencing), on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from elevate_core.db import Database
from elevate_core.lease import FencedError, Lease, LeaseRow

from tests.helpers import eventually


async def test_one_holder_at_a_time_and_an_old_epoch_is_fenced(db: Database) -> None:
    lost: list[str] = []
    first = Lease(db, "work", ttl=0.6, on_lost=lambda: lost.append("first"))
    second = Lease(db, "work", ttl=0.6)
    assert await first.acquire()
    assert first.usable()
    assert not await second.acquire()  # held and unexpired

    async with db.transaction() as session:
        assert await first.check(session) == first.epoch  # a final write may go on

    # The first stops renewing (its session is gone): the lease expires, the second takes
    # it with a new epoch, and everything the first still tries is refused.
    old_epoch = first.epoch
    await eventually(second.acquire, what="the second takes the expired lease", interval=0.05)
    assert second.epoch == (old_epoch or 0) + 1
    with pytest.raises(FencedError):
        async with db.transaction() as session:
            await first.check(session)
    assert not await first.renew()
    assert lost == ["first"]
    assert first.epoch is None
    with pytest.raises(FencedError):
        first.ensure_usable()  # the check before an AWS call


async def test_a_lease_is_only_usable_with_the_margin_a_call_needs(db: Database) -> None:
    lease = Lease(db, "calls", ttl=2.0)
    assert await lease.acquire()
    assert lease.usable(margin=1.0)
    assert not lease.usable(margin=5.0)  # a call that might outlive the lease never starts
    with pytest.raises(FencedError):
        lease.ensure_usable(margin=5.0)


async def test_release_hands_over_at_once(db: Database) -> None:
    first, second = Lease(db, "handover", ttl=60), Lease(db, "handover", ttl=60)
    assert await first.acquire()
    await first.release()
    assert await second.acquire()  # no need to wait out the 60 s
    async with db.sessions() as s:
        row = await s.get(LeaseRow, "handover")
    assert row is not None
    assert row.epoch == 2
