"""audit-ingest's per-record CPU cost, stage by stage (issue #22: 20,000 records/s/core).

    uv run python -m bench.audit_micro [--records 20000]

No broker, no database: N realistic CloudTrail records (bench/audit.py's S3 GetObject
calls of one Identity Center session under one grant) go through each stage the consumer
runs, and each stage's mean µs per record is printed — orjson.loads, the record key and
content digest, parse_record (with and without the key's digest), api_activity, encode.
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from elevate_audit_ingest import ocsf
from elevate_audit_ingest.domain import (
    Correlation,
    GrantWindow,
    Outcome,
    content_digest,
    keyed,
    parse_record,
    record_key,
)

from bench.audit import make_records as records_of

ACCOUNT = "210987654321"
PS = "AdministratorAccess"
START = datetime(2026, 3, 2, 9, tzinfo=UTC)
ROUNDS = 5


def make_records(n: int) -> list[bytes]:
    """bench/audit.py's records, in one account."""
    return [value for _, value in records_of(n, START, accounts=[ACCOUNT])]


def timed(label: str, items: Sequence[Any], stage: Callable[[Any], Any]) -> list[Any]:
    """Best of ROUNDS: the least disturbed by whatever else the machine runs. Without the
    cyclic GC, which would otherwise scan the ever larger list of outputs kept here (the
    service keeps none)."""
    best, out = float("inf"), list[Any]()
    for _ in range(ROUNDS):
        out = []
        gc.collect()
        gc.disable()
        began = time.perf_counter()
        out = [stage(item) for item in items]
        best = min(best, time.perf_counter() - began)
        gc.enable()
    print(f"{label:<28} {best / len(items) * 1e6:8.2f} µs/record")
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    n = parser.parse_args().records
    grant = GrantWindow(
        grant_id="g-1",
        request_id="r-1",
        user_name="alice",
        user_id="u-1",
        account_id=ACCOUNT,
        permission_set_name=PS,
        start=START - timedelta(minutes=1),
        end=START + timedelta(hours=1),
        justification="incident 42",
        approvers=("bob",),
    )
    correlation = Correlation(Outcome.GRANT, grant=grant)
    grace, processed = grant.until(timedelta(minutes=15)), START + timedelta(hours=2)
    values = make_records(n)
    dicts = timed("orjson.loads", values, orjson.loads)
    timed("content_digest", dicts, content_digest)
    keys = timed("keyed (key + digest)", dicts, keyed)
    timed("record_key", dicts, record_key)
    timed("parse_record", dicts, parse_record)
    pairs = [(d, k[1]) for d, k in zip(dicts, keys, strict=True)]
    parsed = timed("parse_record(digest=…)", pairs, lambda pair: parse_record(*pair))
    docs = timed(
        "api_activity",
        parsed,
        lambda p: ocsf.api_activity(p, correlation, grace_until=grace, processed_at=processed),
    )
    timed("encode", docs, ocsf.encode)


if __name__ == "__main__":
    main()
