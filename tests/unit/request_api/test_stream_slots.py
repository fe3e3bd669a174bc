"""The per-user cap on open status streams (one replica's count)."""

from __future__ import annotations

import pytest
from elevate_request_api.domain import TooManyStreamsError
from elevate_request_api.stream import StreamSlots


def test_each_user_has_their_own_cap_and_a_closed_stream_frees_its_slot() -> None:
    slots = StreamSlots(per_user=2)
    slots.take("alice")
    slots.take("alice")
    with pytest.raises(TooManyStreamsError) as refused:
        slots.take("alice")
    assert refused.value.slug == "too-many-streams"
    slots.take("bob")  # alice's streams do not count against bob
    slots.give_back("alice")
    slots.take("alice")
    assert (slots.held("alice"), slots.held("bob")) == (2, 1)
