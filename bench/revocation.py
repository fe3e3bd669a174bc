"""grant-worker revocation benchmarks: how soon access is gone, alone, in a wave, and while
the reconciler sweeps 2,000 accounts.

    uv run python bench/revocation.py [--calls-per-second 100] [--scattered 100]
                                      [--wave 1000] [--accounts 2000]

A local stack on PostgreSQL — the real Kafka broker and a PostgreSQL cluster of its own,
moto behind the project's fault proxy (no faults injected) — with grant-worker's consumers,
outbox relay and assignment worker running in this process on a real clock. The AWS budget
is raised from the default 10 calls/s (to `--calls-per-second`, below what moto sustains
here) so the waves finish in seconds; it says which it used. Figures, in one run:

- P1: revocation lag (end time → AWS confirmed the deletion and the grant ended) p50/p99/max
  for grants ending at scattered times; goal p99 <= 150 ms. Floor: one delete + status
  round trip on the same endpoint, measured here.
- P2: a wave of grants ending in the same second: time until all are gone ÷ the least the
  budget allows (2 calls each ÷ calls-per-second); goal <= 1.10.
- P7: revocation p99 while a sweep over `--accounts` accounts x 2 permission sets runs ÷
  the same without it (goal <= 1.1), and the sweep's AWS calls ÷ managed pairs provisioned
  (goal <= 1.2).

Results are printed and written to bench/out/revocation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from elevate_core.app import bootstrap
from elevate_core.events.envelope import encode, new_envelope
from elevate_core.events.models import Person, RequestApproved, RequestSnapshot
from elevate_core.events.signing import Signer
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.producer import idempotent_producer
from elevate_core.migrate import upgrade
from elevate_core.settings import TEST_MODE_OPT_IN
from elevate_grant_worker.aws import Triple
from elevate_grant_worker.main import SPEC, build
from elevate_grant_worker.models import Grant
from elevate_grant_worker.service import grant_id_for
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_grant_worker.worker import AssignmentWorker
from elevate_local import runs
from elevate_local.event_keys import LocalEventKeys
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import SeededOrganisation, seed_organisation
from elevate_local.ports import free_port, wait_for_port
from elevate_local.postgres import PostgresCluster
from sqlalchemy import func, select

from bench.stats import summary

OUT = Path(__file__).parent / "out"
PREFIX = "bench."


class ShiftedClock:
    """The real clock, which the bench can move forward (a wave ending 'now')."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.clock = ShiftedClock()
        self.scope: set[tuple[str, str]] = set()

    async def start(self) -> None:
        self.kafka = KafkaBroker(self.work / "kafka", ephemeral=True)
        self.kafka.start()
        self.pg = PostgresCluster(self.work / "pg", ephemeral=True)
        self.pg.start()
        self._start_aws()
        self.seeded: SeededOrganisation = seed_organisation(self.moto_url)
        self.accounts = self._accounts(self.args.accounts)
        self.kafka.allow(PREFIX)
        self.keys = LocalEventKeys.ensure(self.work / "keys")
        # The bench plays approval: its approvals carry approval's signature.
        self.signer = Signer.from_file(self.keys.private_key(Principal.APPROVAL))
        await ensure_topics(self.kafka.endpoint(Principal.ADMIN), prefix=PREFIX)
        self.settings = self._settings()
        await self._start_grant_worker()
        self.producer = idempotent_producer(self.kafka.endpoint(), client_id="bench")
        await self.producer.start()

    def _start_aws(self) -> None:
        """moto, and the fault proxy in front of it that grant-worker calls."""
        # moto and the proxy in processes of their own, as `make dev` runs them: in this
        # process they would share its GIL with the worker being measured.
        moto_port, proxy_port = free_port(), free_port()
        self.moto_url = f"http://127.0.0.1:{moto_port}"
        self.proxy_url = f"http://127.0.0.1:{proxy_port}"
        self.procs = [
            runs.spawn(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        ]
        wait_for_port(moto_port, timeout=60, what="moto")
        proxy = ["-m", "elevate_local.aws_proxy", "--target", self.moto_url]
        self.procs.append(
            runs.spawn(
                [sys.executable, *proxy, "--port", str(proxy_port)], stdout=subprocess.DEVNULL
            )
        )
        wait_for_port(proxy_port, timeout=60, what="AWS proxy")

    def _settings(self) -> GrantWorkerSettings:
        return GrantWorkerSettings(
            mode="test",
            service_name="grant-worker",
            database_url=self.pg.create_database("bench"),
            **self.kafka.endpoint(Principal.GRANT_WORKER).as_settings(),
            **self.keys.settings(Principal.GRANT_WORKER),
            topic_prefix=PREFIX,
            aws_endpoint_url=self.proxy_url,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_calls_per_second=self.args.calls_per_second,
            sweep_interval_seconds=24 * 3600,  # only the start sweep, and those we ask for
            log_json=False,
            log_level="WARNING",
        )

    async def _start_grant_worker(self) -> None:
        """grant-worker's consumers, relay and assignment worker, in this process."""
        self.ctx = bootstrap(self.settings)
        await upgrade(self.ctx.db, SPEC.migrations)

        async def scope() -> set[tuple[str, str]]:
            return set(self.scope)

        self.worker: AssignmentWorker = build(
            self.ctx, self.settings, clock=self.clock, scope=scope
        )
        self.tasks = [asyncio.create_task(w.run()) for w in self.ctx.workers]

    def _accounts(self, n: int) -> list[str]:
        org = boto3.client(
            "organizations",
            endpoint_url=self.moto_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        ids = []
        for i in range(n):
            created = org.create_account(Email=f"bench{i}@elevate.example", AccountName=f"b{i}")
            ids.append(created["CreateAccountStatus"]["AccountId"])
        return ids

    async def stop(self) -> None:
        await self.producer.stop()
        for w in self.ctx.workers:
            await w.stop()
        await asyncio.wait(self.tasks, timeout=20)
        await self.ctx.db.dispose()
        for proc in self.procs:
            proc.terminate()
            proc.wait(timeout=20)
        self.pg.stop()
        self.kafka.stop()

    # ---- grants ----

    async def approve(self, triples: list[Triple], ends: list[datetime]) -> list[uuid.UUID]:
        ids = []
        now = self.clock.now()
        for t, end in zip(triples, ends, strict=True):
            rid = uuid.uuid4()
            ids.append(rid)
            event = RequestApproved(
                snapshot=RequestSnapshot(
                    request_id=rid,
                    requester=Person(user_name=f"u{t.principal_id[:8]}", user_id=t.principal_id),
                    account_id=t.account_id,
                    permission_set_name="bench",
                    permission_set_arn=t.permission_set_arn,
                    start=now - timedelta(minutes=1),
                    end=end,
                    justification="bench",
                    matched_rule="bench",
                    policy_version="v1",
                )
            )
            value, headers = encode(new_envelope(event, source="elevate/bench", subject=str(rid)))
            covered = {k: v.decode() for k, v in headers}
            headers += [(k, v.encode()) for k, v in self.signer.sign(value, covered)]
            await self.producer.send(
                f"{PREFIX}{event.topic}", value=value, key=str(rid).encode(), headers=headers
            )
        await self.producer.flush()
        return ids

    async def wait_all(self, ids: list[uuid.UUID], state: str, timeout: float) -> None:
        gids = [grant_id_for(r) for r in ids]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.ctx.db.sessions() as s:
                n = (
                    await s.execute(
                        select(func.count())
                        .select_from(Grant)
                        .where(Grant.grant_id.in_(gids), Grant.state == state)
                    )
                ).scalar_one()
            if n == len(ids):
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{len(ids)} grants not {state} within {timeout:.0f}s")

    async def lags_ms(self, ids: list[uuid.UUID]) -> list[float]:
        gids = [grant_id_for(r) for r in ids]
        async with self.ctx.db.sessions() as s:
            rows = (
                await s.execute(
                    select(Grant.end_at, Grant.ended_at).where(Grant.grant_id.in_(gids))
                )
            ).all()
        return [(ended - end).total_seconds() * 1000 for end, ended in rows if end and ended]

    def triples(self, accounts: list[str], permission_set: str) -> list[Triple]:
        arn = self.seeded.permission_set_arns[permission_set]
        return [Triple(a, arn, str(uuid.uuid4())) for a in accounts]

    # ---- figures ----

    def floor_ms(self, rounds: int = 30) -> float:
        sso = boto3.client(
            "sso-admin",
            endpoint_url=self.proxy_url,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        target: dict[str, Any] = {
            "InstanceArn": self.seeded.instance_arn,
            "TargetId": self.accounts[0],
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": self.seeded.permission_set_arns["PowerUserAccess"],
            "PrincipalType": "USER",
        }
        times = []
        for _ in range(rounds):
            params = {**target, "PrincipalId": str(uuid.uuid4())}
            sso.create_account_assignment(**params)
            started = time.perf_counter()
            out = sso.delete_account_assignment(**params)
            sso.describe_account_assignment_deletion_status(
                InstanceArn=self.seeded.instance_arn,
                AccountAssignmentDeletionRequestId=out["AccountAssignmentDeletionStatus"][
                    "RequestId"
                ],
            )
            times.append((time.perf_counter() - started) * 1000)
        return round(float(statistics.median(times)), 1)

    def lead(self, n: int) -> float:
        """Seconds to wait before the first end: n activations (up to 4 calls each: the pair
        taken under management, the check, the create, its status) at the activation lane's
        share of the budget, with room to spare."""
        rate: float = self.args.calls_per_second
        return 5.0 + 1.5 * 4 * n / (0.8 * rate)

    async def during_sweep(self, accounts: list[str], n: int) -> tuple[list[float], Any]:
        """n grants ending 0.1 s apart while a sweep runs (it starts just before the first
        ends and outlasts the last)."""
        triples = self.triples(accounts[:n], "PowerUserAccess")
        first = self.clock.now() + timedelta(seconds=self.lead(n))
        ids = await self.approve(triples, [first + timedelta(seconds=0.1 * i) for i in range(n)])
        await self.wait_all(ids, "active", timeout=self.lead(n))
        await asyncio.sleep(max(0.0, (first - self.clock.now()).total_seconds() - 0.5))
        sweep = asyncio.create_task(self.worker.sweeper.sweep_once())
        await self.wait_all(ids, "ended", timeout=120)
        if sweep.done():
            raise RuntimeError("the sweep ended before the revocations did: make it longer")
        return await self.lags_ms(ids), await sweep

    async def scattered(self, n: int, accounts: list[str], spread: float) -> list[float]:
        """n grants ending `spread` seconds apart, after all are active."""
        triples = self.triples(accounts[:n], "PowerUserAccess")
        first = self.clock.now() + timedelta(seconds=self.lead(n))
        ends = [first + timedelta(seconds=spread * i) for i in range(n)]
        ids = await self.approve(triples, ends)
        await self.wait_all(ids, "active", timeout=self.lead(n))
        await self.wait_all(ids, "ended", timeout=self.lead(n) + spread * n + 60)
        return await self.lags_ms(ids)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="elevate-bench-") as tmp:
        bench = Bench(args, Path(tmp))
        await bench.start()
        try:
            return await measure(bench, args)
        finally:
            await bench.stop()


async def measure(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    rate = args.calls_per_second
    results: dict[str, Any] = {"calls_per_second": rate, "accounts": args.accounts}
    results["floor_delete_and_status_ms"] = bench.floor_ms()
    print(
        f"budget: {rate} calls/s (default 10); floor delete+status "
        f"{results['floor_delete_and_status_ms']} ms"
    )

    p1 = await bench.scattered(args.scattered, bench.accounts, spread=0.2)
    results["P1"] = {**summary(p1), "goal_p99_ms": 150}
    print(f"P1 revocation lag: {results['P1']}")

    # P2: a wave ending in the same second.
    wave = bench.triples(bench.accounts[: args.wave], "ReadOnlyAccess")
    end = bench.clock.now() + timedelta(seconds=bench.lead(args.wave))
    ids = await bench.approve(wave, [end] * len(wave))
    await bench.wait_all(ids, "active", timeout=bench.lead(args.wave))
    await asyncio.sleep(max(0.0, (end - bench.clock.now()).total_seconds()))
    started = time.monotonic()
    await bench.wait_all(ids, "ended", timeout=120 + 4 * args.wave / rate)
    elapsed = time.monotonic() - started
    least = 2 * args.wave / rate
    results["P2"] = {
        "grants": args.wave,
        "all_gone_s": round(elapsed, 2),
        "least_s": round(least, 2),
        "ratio": round(elapsed / least, 3),
        "goal_ratio": 1.10,
    }
    print(f"P2 wave: {results['P2']}")

    # P7: revocations with and without a sweep over the accounts x 2 permission sets.
    arns = [bench.seeded.permission_set_arns[n] for n in ("ReadOnlyAccess", "DatabaseAdmin")]
    bench.scope = {(a, p) for a in bench.accounts for p in arns}
    await bench.worker.sweeper.sweep_once()  # first sight of every pair: baseline
    quiet: list[float] = []
    busy: list[float] = []
    reports = []
    for round_ in range(2):  # interleaved, so drift of the machine hits both alike
        base = 1000 + 400 * round_
        quiet += await bench.scattered(100, bench.accounts[base:], spread=0.1)
        lags, report = await bench.during_sweep(bench.accounts[base + 200 :], 100)
        busy += lags
        reports.append(report)
    report = reports[-1]
    results["P7"] = {
        "revocations_each": len(quiet),
        "revocation_p99_without_sweep_ms": summary(quiet)["p99_ms"],
        "revocation_p99_during_sweep_ms": summary(busy)["p99_ms"],
        "p99_ratio": round(summary(busy)["p99_ms"] / max(0.1, summary(quiet)["p99_ms"]), 3),
        "goal_p99_ratio": 1.1,
        "sweep_pairs": report.pairs,
        "sweep_provisioned_pairs": report.provisioned,
        "sweep_calls": report.calls,
        "calls_per_provisioned_pair": round(report.calls / max(1, report.provisioned), 3),
        "goal_calls_per_provisioned_pair": 1.2,
    }
    print(f"P7 sweep: {results['P7']}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls-per-second", type=int, default=100)
    parser.add_argument("--scattered", type=int, default=100)
    parser.add_argument("--wave", type=int, default=1000)
    parser.add_argument("--accounts", type=int, default=2000)
    args = parser.parse_args()
    # The bench runs grant-worker in test mode (its own throwaway stack), as the tests do.
    os.environ[TEST_MODE_OPT_IN] = "1"
    results = asyncio.run(run(args))
    OUT.mkdir(exist_ok=True)
    (OUT / "revocation.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
