"""A CSV export streams: the server's memory does not grow with the export's size.

10,000 and then 100,000 requests are exported from the same server (in this process, with
its client); how far the process's resident memory rises while each export runs (peak
RSS, reset before each) must stay about the same, and far below the size of the file.
The rows are written straight into the read model (COPY): the export reads that table,
and submitting 100,000 requests through the API would only make the test slow.
"""

from __future__ import annotations

import gc
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from elevate_request_api.main import SPEC
from elevate_request_api.models import AccessRequest

from tests.harness import database
from tests.integration.request_api.conftest import Api

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def rows(count: int, offset: int) -> Iterator[tuple[object, ...]]:
    columns = [c.name for c in AccessRequest.__table__.columns]
    for n in range(offset, offset + count):
        at = T0 + timedelta(seconds=n)
        values = {
            "id": uuid.uuid4(),
            "requester_user_name": f"user{n % 500}",
            "requester_user_id": f"id-{n % 500}",
            "requester_email": f"user{n % 500}@elevate.example",
            "account_id": f"{100000000000 + n % 2000}",
            "account_name": f"account-{n % 2000}",
            "ou_path": "Workloads/Prod/Team7",
            "permission_set_name": "AdministratorAccess",
            "permission_set_arn": "arn:aws:sso:::permissionSet/ssoins-1/ps-0123456789abcdef",
            "start": at,
            "end": at + timedelta(hours=1),
            "justification": f"INC-{n}: " + "restart the payments API after the deploy " * 4,
            "ticket": f"INC-{n}",
            "matched_rule": "sre-prod-admin",
            "approval_rule": "one-sre-lead",
            "approver_groups": '["sre-leads"]',
            "required_approvals": 1,
            "policy_version": "5d94fb125e5d",
            "break_glass": False,
            "review": None,
            "status": "ended",
            "approvers": '["grace"]',
            "approver_ids": '["id-grace"]',
            "sessions_valid_until": None,
            "sessions_cut": None,
            "created_at": at,
            "updated_at": at,
        }
        yield tuple(values[c] for c in columns)


async def insert(api: Api, count: int, offset: int) -> None:
    async with (
        database(api.settings.database_url, SPEC.migrations) as db,
        db.engine.connect() as conn,
    ):
        raw = await conn.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(  # type: ignore[union-attr]
            "requests",
            records=rows(count, offset),
            columns=[c.name for c in AccessRequest.__table__.columns],
        )


def _status(field: str) -> int:
    """A figure of this process from /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS, which it returns."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


async def export(api: Api, **params: str) -> tuple[int, int, int]:
    """(rows, bytes, how far the process's resident memory rose while exporting)."""
    before = _reset_peak()
    size = lines = 0
    async with (
        api.client("carol") as carol,
        carol.stream("GET", "/v1/audit/requests", params={"format": "csv", **params}) as r,
    ):
        assert r.status_code == 200
        async for chunk in r.aiter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\r\n")
    return lines - 1, size, _status("VmHWM") - before


async def test_csv_export_memory_does_not_grow_with_its_size(api: Api) -> None:
    await insert(api, 100_000, 0)
    first_10k = (T0 + timedelta(seconds=10_000)).isoformat()
    small_rows, small_size, small_rise = await export(api, created_before=first_10k)
    large_rows, large_size, large_rise = await export(api)
    assert (small_rows, large_rows) == (10_000, 100_000)
    figures = (
        f"memory rose {small_rise:,} B exporting {small_size:,} B, "
        f"{large_rise:,} B exporting {large_size:,} B"
    )
    print(figures)
    assert large_rise < 2 * small_rise + 4_000_000, figures  # flat, not x10
    assert large_rise < large_size / 5, figures  # never the file, nor its rows, at once
