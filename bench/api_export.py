"""The CSV export phase of the API bench: `rows` requests put straight into request-api's
read model with PostgreSQL COPY (a submit through the API would make the same row, plus
its events and outbox entry, at a few hundred per second), then one streamed
GET /v1/audit/requests?format=csv as the auditor, while the server's RSS is sampled.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from bench.api_stack import Stack

COLUMNS = (
    "id", "requester_user_name", "requester_user_id", "requester_email", "account_id",
    "account_name", "ou_path", "permission_set_name", "permission_set_arn", "start", "end",
    "justification", "ticket", "matched_rule", "approval_rule", "approver_groups",
    "required_approvals", "policy_version", "break_glass", "review", "status", "approvers",
    "approver_ids", "created_at", "updated_at",
)  # fmt: skip
ARN = "arn:aws:sso:::permissionSet/ssoins-bench"
# Every 1,000th justification is a formula: the export must escape it.
STATUSES = ("ended", "ended", "ended", "revoked", "cancelled", "rejected", "expired", "active")


def _records(stack: Stack, n: int) -> list[tuple[Any, ...]]:
    accounts = stack.org.accounts
    sets = stack.org.permission_sets
    now = datetime.now(UTC)
    out = []
    for i in range(n):
        account = accounts[i % len(accounts)]
        created = now - timedelta(minutes=5 * (n - i))
        user = f"user{i % 300:03d}"
        glass = i % 97 == 0
        out.append(
            (
                uuid.uuid4(), user, str(uuid.uuid5(uuid.NAMESPACE_OID, user)),
                f"{user}@elevate.example", account.id, account.name, account.ou_path,
                sets[i % len(sets)], f"{ARN}/ps-{i % len(sets):04d}",
                created + timedelta(minutes=1), created + timedelta(hours=1),
                f"=cmd|' /C calc'!A0 row {i}" if i % 1000 == 0 else f"bench export row {i}",
                f"OPS-{i}" if i % 3 == 0 else None, "bench-team", "auto", json.dumps([]), 0, "v1",
                glass, "pending" if glass else None, STATUSES[i % len(STATUSES)], json.dumps([]),
                json.dumps([]), created, created + timedelta(hours=1),
            )
        )  # fmt: skip
    return out


async def _insert(database_url: str, records: list[tuple[Any, ...]]) -> None:
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.copy_records_to_table("requests", records=records, columns=COLUMNS)
        await conn.execute("ANALYZE requests")
    finally:
        await conn.close()


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


class RssSampler(threading.Thread):
    """The peak of a process's VmRSS, sampled every 20 ms (VmHWM covers its whole life)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.peak_kib = max(self.peak_kib, _status_kib(self.pid, "VmRSS"))
            time.sleep(0.02)


def _stream(url: str, token: str, pid: int) -> dict[str, Any]:
    sampler = RssSampler(pid)
    before = _status_kib(pid, "VmRSS")
    sampler.start()
    started = time.perf_counter()
    lines = size = 0
    with httpx.stream(
        "GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=600
    ) as response:
        if response.status_code in (404, 405):
            sampler.stopping.set()
            return {"status": response.status_code}
        response.raise_for_status()
        for chunk in response.iter_bytes():
            size += len(chunk)
            lines += chunk.count(b"\n")
        content_type = response.headers.get("content-type", "")
    seconds = time.perf_counter() - started
    sampler.stopping.set()
    sampler.join()
    return {
        "status": response.status_code,
        "content_type": content_type,
        "lines": lines,
        "bytes": size,
        "seconds": round(seconds, 2),
        "rss_before_mib": round(before / 1024, 1),
        "rss_peak_during_mib": round(sampler.peak_kib / 1024, 1),
        "vmhwm_after_mib": round(_status_kib(pid, "VmHWM") / 1024, 1),
    }


def measure(stack: Stack, token: str, rows: int) -> dict[str, Any] | str:
    url = f"{stack.api}/v1/audit/requests?format=csv"
    probe = httpx.get(
        url.replace("format=csv", "limit=1"), headers={"Authorization": f"Bearer {token}"}
    )
    if probe.status_code in (404, 405):
        print("export: GET /v1/audit/requests not available on this request-api", flush=True)
        return "not available"
    started = time.perf_counter()
    asyncio.run(_insert(stack.database_url, _records(stack, rows)))
    inserted_s = round(time.perf_counter() - started, 1)
    got = _stream(url, token, stack.server.pid)
    if "lines" not in got:
        return "not available"
    data_rows = got["lines"] - 1  # the header line
    got.update(
        requests_in_table=rows,
        insert_seconds=inserted_s,
        rows_exported=data_rows,
        rows_per_s=round(data_rows / got["seconds"]),
    )
    print(f"export: {json.dumps(got)}", flush=True)
    return got
