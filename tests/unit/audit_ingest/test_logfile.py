"""CloudTrail log files read incrementally: the same records whatever the chunking, faults
refused (after the records before them), and memory bounded by a chunk and a record."""

from __future__ import annotations

import gzip
import json
import tracemalloc
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from elevate_audit_ingest.logfile import LogFileReader, read_all
from elevate_audit_ingest.schemas import LogFileError
from elevate_local.simulate_activity import call_record

AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
RECORDS: list[dict[str, Any]] = [
    call_record(
        user=f"user{n}",
        account_id="111122223333",
        permission_set="AdministratorAccess",
        at=AT,
        event_source="ec2.amazonaws.com",
        event_name="DescribeInstances",
        request_parameters={"n": n, "tag": "ünïcode ✓", "ratio": 0.5, "ok": n % 2 == 0},
    )
    for n in range(5)
]
FILE = json.dumps({"Records": RECORDS}, indent=1, ensure_ascii=False).encode()


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def drain(reader: LogFileReader, body: list[bytes], into: list[dict[str, Any]]) -> None:
    """Feed every chunk and the end; what was read stays in `into` if it raises."""
    for chunk in [*body, b""]:
        into.extend(reader.feed(chunk))


@pytest.mark.parametrize("size", [1, 7, 4096, len(FILE) * 3])
@pytest.mark.parametrize(
    "body",
    [
        FILE,
        gzip.compress(FILE),
        gzip.compress(FILE[:100]) + gzip.compress(FILE[100:]),  # two gzip members
        json.dumps({"Records": RECORDS}).encode(),
        json.dumps({"Records": RECORDS, "digest": {"x": [1, 2]}, "n": 12345}).encode(),
        json.dumps({"version": 1.5, "Records": RECORDS}).encode(),
    ],
    ids=["plain", "gzip", "multi-member gzip", "compact", "keys after", "key before"],
)
def test_every_chunking_yields_the_same_records(body: bytes, size: int) -> None:
    assert read_all(chunks(body, size)) == RECORDS


def test_an_empty_records_list() -> None:
    assert read_all([b'{"Records": [ ]}']) == []


PARTIAL = json.dumps({"Records": RECORDS[:2]})[:-2]  # two records, then the file goes on
BAD: list[tuple[str, bytes, str, int]] = [
    ("not gzip", b"\x1f\x8b\x08garbage", "gzip", 0),
    ("truncated gzip", gzip.compress(FILE)[:-40], "gzip", 4),
    ("truncated JSON", FILE[:-30], "truncated|not JSON", 4),
    ("empty", b"", "truncated", 0),
    ("not an object", b'[{"eventID": "1"}]', "expected", 0),
    ("no Records", json.dumps({"records": []}).encode(), 'no "Records"', 0),
    ("Records not a list", b'{"Records": {"eventID": "1"}}', "not a list", 0),
    ("a record not an object", (PARTIAL + ", 1]}").encode(), "not a JSON object", 2),
    ("content after the object", FILE + b"{}", "after its JSON object", 5),
    ("trailing comma in Records", (PARTIAL + ",]}").encode(), "not JSON", 2),
    ("trailing comma in the object", b'{"Records": [],}', "not JSON", 0),
    ("Records twice", b'{"Records": [], "Records": []}', "twice", 0),
    ("not UTF-8", b'{"Records": [{"eventID": "\xff"}]}', "UTF-8", 0),
    ("garbage in a record", (PARTIAL + ', {"eventID": x}]}').encode(), "not JSON", 2),
]


@pytest.mark.parametrize("size", [3, 1 << 16])
@pytest.mark.parametrize(
    ("body", "message", "before"), [c[1:] for c in BAD], ids=[c[0] for c in BAD]
)
def test_faults_are_refused_after_the_records_before_them(
    body: bytes, message: str, before: int, size: int
) -> None:
    reader = LogFileReader()
    records: list[dict[str, Any]] = []
    with pytest.raises(LogFileError, match=message):
        drain(reader, chunks(body, size), records)
    assert records == RECORDS[:before]


def test_a_record_larger_than_the_limit_is_refused_not_buffered() -> None:
    big = {"Records": [RECORDS[0], {"eventID": "2", "blob": "x" * 5000}, RECORDS[1]]}
    body = json.dumps(big).encode()
    reader = LogFileReader(max_record=2000)
    records: list[dict[str, Any]] = []
    with pytest.raises(LogFileError, match="exceeds 2000 characters"):
        drain(reader, chunks(body, 512), records)
    assert records == [RECORDS[0]]


def _big_gzip_file(records: int) -> Iterator[bytes]:
    """A gzip log file of `records` records, compressed as it is produced (never whole)."""
    z = zlib.compressobj(wbits=31)
    one = json.dumps(RECORDS[0]).encode()
    yield z.compress(b'{"Records": [' + one)
    for _ in range(records - 1):
        out = z.compress(b"," + one)
        if out:
            yield out
    yield z.compress(b"]}") + z.flush()


def test_memory_stays_bounded_whatever_the_file_size() -> None:
    count = 20_000  # ~30 MB of JSON once decompressed
    size = len(json.dumps(RECORDS[0]))
    reader = LogFileReader()
    seen = 0
    tracemalloc.start()
    try:
        for chunk in [*_big_gzip_file(count), b""]:
            for record in reader.feed(chunk):
                assert record["eventID"] == RECORDS[0]["eventID"]
                seen += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count
    assert count * size > 25_000_000
    assert peak < 8_000_000  # a chunk's expansion (1 MiB) and a record, not the file


def test_a_decompression_bomb_is_read_in_bounded_pieces() -> None:
    # 64 MiB of whitespace inside the list compresses to ~64 KiB.
    body = gzip.compress(b'{"Records": [' + b" " * (64 << 20) + b"]}", compresslevel=9)
    reader = LogFileReader()
    tracemalloc.start()
    try:
        records = [r for chunk in (body, b"") for r in reader.feed(chunk)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records == []
    assert peak < 8_000_000
