"""Wake-ups that say what changed (elevate_core.notify): a waiter that keeps payloads gets
every payload marked on its channels since it last took them; others get only the wake."""

from __future__ import annotations

from elevate_core.notify import Waiter, _wake_with_payload


async def test_a_keeping_waiter_gets_each_payload_once_and_a_plain_one_only_wakes() -> None:
    keeping = Waiter("work", keep_payloads=True)
    plain = Waiter("work")
    other = Waiter("elsewhere", keep_payloads=True)
    try:
        _wake_with_payload("work", "a|b|c")
        _wake_with_payload("work", "d|e|f")
        _wake_with_payload("work", "")  # a bare wake carries nothing
        assert await keeping.wait(1)
        assert await plain.wait(1)
        assert keeping.payloads() == {"a|b|c", "d|e|f"}
        assert keeping.payloads() == set()  # taken
        assert plain.payloads() == set()
        assert other.payloads() == set()
        assert not await other.wait(0.01)
    finally:
        for waiter in (keeping, plain, other):
            waiter.close()


async def test_a_closed_waiter_keeps_nothing() -> None:
    waiter = Waiter("work", keep_payloads=True)
    waiter.close()
    _wake_with_payload("work", "a|b|c")
    assert waiter.payloads() == set()
