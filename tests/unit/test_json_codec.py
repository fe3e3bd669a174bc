"""The consumers' JSON codec (`parse_json_object`: orjson, with json where orjson would
change or refuse a value): what json read before is read the same, value for value."""

from __future__ import annotations

import json

import pytest
from elevate_core.events.envelope import EnvelopeError, parse_json_object

SAME_AS_JSON = [
    b'{"eventID": "e1", "n": 12, "nested": {"list": [1, 2.5, true, null, "x"]}}',
    # beyond 64 bits: orjson alone would turn it into a float and lose digits
    b'{"requestParameters": {"size": 123456789012345678901234567890}}',
    b'{"big": -98765432109876543210, "in": "a string of 12345678901234567890 digits"}',
    b'{"max": 18446744073709551615, "min": -9223372036854775808}',
    b'{"nan": NaN, "inf": Infinity}',  # json accepts these; orjson does not
    b'{"lone": "\\ud800"}',  # a lone surrogate escape
    '{"unicode": "caf\u00e9 \u2028 \U0001f600", "ctl": "\\u0001"}'.encode(),
    b'{"dup": 1, "dup": 2}',
]


@pytest.mark.parametrize("value", SAME_AS_JSON, ids=range(len(SAME_AS_JSON)))
def test_values_read_exactly_as_json_reads_them(value: bytes) -> None:
    parsed = parse_json_object(value)
    assert repr(parsed) == repr(json.loads(value))  # repr: 1e29 != 10**29 shows, NaN too


def test_a_big_integer_keeps_every_digit() -> None:
    parsed = parse_json_object(b'{"id": 123456789012345678901234567890}')
    assert parsed["id"] == 123456789012345678901234567890
    assert isinstance(parsed["id"], int)


@pytest.mark.parametrize(
    "value", [b"", b"[1, 2]", b'"text"', b"{not json", b"\xff\xfe{}", None], ids=repr
)
def test_what_is_not_a_json_object_is_an_envelope_error(value: bytes | None) -> None:
    with pytest.raises(EnvelopeError):
        parse_json_object(value)
