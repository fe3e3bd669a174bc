"""audit-ingest at line rate: the service's pipeline vs. merely consuming and parsing.

    uv run python -m bench.audit [--records 200000] [--backends postgres,sqlite]

Starts its own Kafka broker (TLS + SASL/SCRAM with the table's ACLs, as `make dev` runs
it) and PostgreSQL cluster. Per database backend it puts a warm-up of records and then
`--records` realistic CloudTrail records (an Identity Center session in each of twelve
accounts, each covered by a grant) on `elevate.cloudtrail.v1`, starts the real service
(`elevate-audit-ingest`, its own process, as its own Kafka principal) and measures, once
the warm-up is behind it, until every record's OCSF record is committed:

1. pipeline: consume, claim (dedupe), correlate, map to OCSF and produce in Kafka
   transactions — records per second of wall time, and per second of CPU time of the
   service process *and* its PostgreSQL (postmaster and every backend) together;
2. baseline, in the same run: consuming the same records with the same consumer settings
   and JSON codec and parsing them as the service does (decode, dedupe key, parse_record);
3. their ratio, and the service's peak RSS over the run.

Issue 22's goals: ≥ 20,000 records/s per core on PostgreSQL, and ≥ 0.5 x the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from elevate_audit_ingest.consumers import cloudtrail_key
from elevate_audit_ingest.domain import digest_of_key, parse_record
from elevate_audit_ingest.grant_index import record_grant_event
from elevate_audit_ingest.main import SPEC
from elevate_audit_ingest.service import CorrelationConfig
from elevate_core.db import Database
from elevate_core.events.envelope import parse_json_object
from elevate_core.events.models import GrantActivated, Person, RequestSnapshot
from elevate_core.events.topics import CATALOG, Topics
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_core.kafka.security import KafkaEndpoint
from elevate_core.kafka.transactional import FETCH_RECORDS
from elevate_core.migrate import upgrade
from elevate_core.outbox import Outbox
from elevate_local import runs
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port
from elevate_local.postgres import PostgresCluster
from elevate_local.simulate_activity import call_record

from bench import audit_floors as floors
from bench.procstat import cpu_seconds, peak_rss_mib, tree_cpu_seconds

ACCOUNTS = [f"2109876543{n:02d}" for n in range(12)]
PS = "AdministratorAccess"
WARMUP = 4000
GROUP = "audit-ingest.cloudtrail"
GOAL_PER_CORE = 20_000  # issue 22: records/s per core of service + database CPU
GOAL_RATIO = 0.5  # issue 22: pipeline wall rate / consume + parse wall rate


def make_records(
    n: int, start: datetime, accounts: list[str] = ACCOUNTS
) -> list[tuple[bytes, bytes]]:
    """(key, value) of n records: alice's session calls, round robin over the accounts."""
    out = []
    for i in range(n):
        account = accounts[i % len(accounts)]
        record = call_record(
            user="alice",
            account_id=account,
            permission_set=PS,
            at=start + timedelta(microseconds=50 * i),
            event_source="s3.amazonaws.com",
            event_name="GetObject",
            request_parameters={"bucketName": "data", "key": f"obj/{i}"},
        )
        out.append((account.encode(), orjson.dumps(record)))
    return out


async def produce(kafka: KafkaEndpoint, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = kafka.producer(linger_ms=20, max_batch_size=1 << 20, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@dataclass
class Figures:
    records: int
    seconds: float
    cpu: float  # service (+ database) CPU seconds
    database_cpu: float = 0.0
    rss_mib: float = 0.0

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def per_core(self) -> float:
        return self.records / self.cpu


async def baseline(kafka: KafkaEndpoint, topic: str, n: int) -> Figures:
    """Consume and parse as the service's consumer does: same settings, same codec."""
    consumer = floors.reader(kafka, topic)
    await consumer.start()
    seen, first, cpu = 0, 0.0, 0.0
    try:
        while seen < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=FETCH_RECORDS)
            for messages in batch.values():
                for message in messages:
                    if seen == 0:
                        first, cpu = time.perf_counter(), time.process_time()
                    data = parse_json_object(message.value)
                    key = cloudtrail_key(data)
                    parse_record(data, digest=digest_of_key(key) if key else None)
                    seen += 1
    finally:
        elapsed, used = time.perf_counter() - first, time.process_time() - cpu
        await consumer.stop()
    return Figures(n, elapsed, used)


async def seed_grants(db: Database, prefix: str) -> None:
    """An active grant for alice in every account, so every record correlates to one."""
    now = datetime.now(UTC)
    outbox = Outbox(source="elevate/audit-ingest", topic_prefix=prefix)
    config = CorrelationConfig(grace=timedelta(hours=1), wait=timedelta(minutes=15))
    for account in ACCOUNTS:
        snapshot = RequestSnapshot(
            request_id=uuid.uuid4(),
            requester=Person(user_name="alice", user_id="uid-alice"),
            account_id=account,
            permission_set_name=PS,
            permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
            start=now - timedelta(hours=1),
            end=now + timedelta(hours=2),
            justification="bench",
            matched_rule="bench",
            policy_version="v1",
            approvers=("bob",),
        )
        event = GrantActivated(
            grant_id=uuid.uuid4(), snapshot=snapshot, activated_at=now - timedelta(hours=1)
        )
        async with db.transaction() as session:
            await record_grant_event(
                session,
                event=event,
                event_uid=str(uuid.uuid4()),
                outbox=outbox,
                config=config,
                now=now,
            )


def start_service(
    kafka: KafkaEndpoint, database_url: str, prefix: str, workdir: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")}
    env.update(
        {f"ELEVATE_{k.upper()}": str(v) for k, v in kafka.as_settings().items()},
        ELEVATE_MODE="dev",  # as `make dev` runs it
        ELEVATE_SERVICE_NAME="audit-ingest",
        ELEVATE_DATABASE_URL=database_url,
        ELEVATE_TOPIC_PREFIX=prefix,
        ELEVATE_HTTP_PORT=str(free_port()),
        ELEVATE_MANAGED_PERMISSION_SETS=PS,
        ELEVATE_CLOUDTRAIL_QUEUE="",
        ELEVATE_LOG_JSON="false",
    )
    log = (workdir / f"audit-ingest-{prefix}log").open("wb")
    proc: subprocess.Popen[bytes] = runs.spawn(
        [sys.executable, "-m", "elevate_audit_ingest.main"],
        name="audit-ingest",
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc


class Progress:
    """The service consumer group's committed offsets on the CloudTrail topic: records
    whose OCSF records are committed (offsets commit in the same Kafka transaction)."""

    def __init__(self, kafka: KafkaEndpoint, group: str, topic: str) -> None:
        self.admin = kafka.admin(client_id="bench-progress")
        self.group, self.topic = group, topic

    async def __aenter__(self) -> Progress:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def done(self) -> int:
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.group)
        except KafkaError:  # the group (or the offsets topic) does not exist yet
            return 0
        return sum(o.offset for tp, o in offsets.items() if tp.topic == self.topic and o.offset > 0)


def _cost(service: int, postmaster: int | None) -> tuple[float, float]:
    return cpu_seconds(service), tree_cpu_seconds(postmaster) if postmaster else 0.0


async def pipeline(
    kafka: KafkaEndpoint,
    proc: subprocess.Popen[bytes],
    prefix: str,
    total: int,
    postmaster: int | None,
    profile: Path | None = None,
) -> Figures:
    """From the first observation past the warm-up to the last record committed (with
    `profile`, py-spy samples the service for the first part of that)."""
    topic = f"{prefix}elevate.cloudtrail.v1"
    async with Progress(kafka, f"{prefix}{GROUP}", topic) as progress:
        start: tuple[float, int, float, float] | None = None
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"audit-ingest exited with {proc.returncode}")
            done = await progress.done()
            now = time.perf_counter()
            if start is None and done >= WARMUP:
                start = (now, done, *_cost(proc.pid, postmaster))
                if profile is not None:
                    floors.start_profile(proc.pid, (total - done) / 20_000, profile)
            if done >= total and start is not None:
                service, database = _cost(proc.pid, postmaster)
                return Figures(
                    records=total - start[1],
                    seconds=now - start[0],
                    cpu=service - start[2] + database - start[3],
                    database_cpu=database - start[3],
                    rss_mib=peak_rss_mib(proc.pid),
                )
            await asyncio.sleep(0.05)
    raise TimeoutError("the pipeline did not finish in 30 minutes")


async def committed_activity(kafka: KafkaEndpoint, topic: str) -> int:
    """API Activity records committed on the audit topic (none lost, none twice)."""
    consumer = kafka.consumer(
        auto_offset_reset="earliest", group_id=None, isolation_level="read_committed"
    )
    await consumer.start()
    seen: set[bytes] = set()
    count = 0
    try:
        spec = next(t for t in CATALOG if t.name is Topics.AUDIT)
        parts = [TopicPartition(topic, p) for p in range(spec.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for message in messages:
                    if dict(message.headers).get("ocsf_class_uid") == b"6003":
                        count += 1
                        seen.add(orjson.loads(message.value)["metadata"]["uid"].encode())
    finally:
        await consumer.stop()
    if len(seen) != count:
        raise AssertionError(f"{count - len(seen)} OCSF records published twice")
    return count


@dataclass
class Floors:
    consume_rate: float
    consume_us: float
    produce_rate: float
    produce_us: float


async def run_backend(
    broker: KafkaBroker,
    database_url: str,
    postmaster: int | None,
    records: int,
    workdir: Path,
    profile: Path | None,
) -> tuple[Figures, Figures, Floors]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    broker.allow(prefix)
    admin = broker.endpoint()
    await ensure_topics(admin, prefix=prefix)
    db = Database(database_url)
    await upgrade(db, SPEC.migrations)
    await seed_grants(db, prefix)
    await db.dispose()
    topic = f"{prefix}elevate.cloudtrail.v1"
    total = WARMUP + records
    await produce(admin, topic, make_records(total, datetime.now(UTC) - timedelta(minutes=30)))
    service = broker.endpoint(Principal.AUDIT_INGEST)
    proc = start_service(service, database_url, prefix, workdir)
    try:
        figures = await pipeline(admin, proc, prefix, total, postmaster, profile)
    except BaseException:
        log = (workdir / f"audit-ingest-{prefix}log").read_text(errors="replace")
        print(log[-4000:], file=sys.stderr)
        raise
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 60)
    audit = f"{prefix}elevate.audit.v1"
    emitted = await committed_activity(admin, audit)
    if emitted != total:
        raise AssertionError(f"{emitted} OCSF records for {total} CloudTrail records")
    base = await baseline(service, topic, total)
    outputs = await floors.sample_outputs(admin, audit, floors.SAMPLE)  # SIEM-like reader
    per_transaction = FETCH_RECORDS // 6  # a partition's share of a fetch
    produced = await floors.produce_only(service, prefix, outputs, per_transaction=per_transaction)
    consumed = await floors.consume_only(service, topic, total)
    return figures, base, Floors(*consumed, *produced)


def report(backend: str, pipe: Figures, base: Figures, floor: Floors) -> None:
    print(f"--- {backend}: {pipe.records} records after a warm-up of {WARMUP}")
    print(
        f"consume + parse (baseline):      {base.rate:9.0f} records/s  "
        f"{base.per_core:9.0f} records/s/core"
    )
    print("pipeline (claim, correlate, OCSF, Kafka transactions):")
    print(f"  wall:                          {pipe.rate:9.0f} records/s")
    print(
        f"  per core (service + database): {pipe.per_core:9.0f} records/s/core  "
        f"(database {pipe.database_cpu / pipe.cpu:.0%} of {pipe.cpu:.1f} s CPU)"
    )
    print(f"ratio pipeline / baseline:       {pipe.rate / base.rate:9.2f}")
    print(f"service peak RSS:                {pipe.rss_mib:9.0f} MiB")
    print("floors (not Elevate's code), CPU per record:")
    print(
        f"  consume only (aiokafka, TLS):  {floor.consume_us:9.1f} µs  "
        f"({floor.consume_rate:.0f} records/s)"
    )
    print(
        f"  produce only (transactions):   {floor.produce_us:9.1f} µs  "
        f"({floor.produce_rate:.0f} records/s)"
    )
    print(
        f"  pipeline, all included:        {1e6 / pipe.per_core:9.1f} µs  "
        f"(goal: {1e6 / GOAL_PER_CORE:.1f} µs)"
    )
    print(f"  of which the database:         {pipe.database_cpu / pipe.records * 1e6:9.1f} µs")
    room(pipe, base, floor)


def room(pipe: Figures, base: Figures, floor: Floors) -> None:
    """What each goal leaves for the rest of the pipeline (claim, correlate, map to OCSF,
    encode) once this run's baseline (consume + decode + parse), the transactional produce
    floor and the database's share are paid, next to what the pipeline spends on it."""
    database = pipe.database_cpu / pipe.records * 1e6
    fixed_cpu = 1e6 / base.per_core + floor.produce_us + database
    fixed_wall = 1e6 / base.rate + floor.produce_us
    print("room left for the rest (claim, correlate, OCSF, encode), µs per record:")
    print(
        f"  per-core goal:  {1e6 / GOAL_PER_CORE - fixed_cpu:6.1f} µs of CPU"
        f"   (the pipeline spends {1e6 / pipe.per_core - fixed_cpu:.1f})"
    )
    print(
        f"  ratio goal:     {1e6 / (GOAL_RATIO * base.rate) - fixed_wall:6.1f} µs of wall"
        f"   (the pipeline spends {1e6 / pipe.rate - fixed_wall:.1f})"
    )


async def main_async(
    records: int, backends: list[str], workdir: Path, profile: Path | None
) -> None:
    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    cluster: PostgresCluster | None = None
    try:
        for backend in backends:
            postmaster = None
            if backend == "postgres":
                cluster = PostgresCluster(workdir / "postgres")
                cluster.start()
                url = cluster.create_database(f"bench{uuid.uuid4().hex[:6]}")
                postmaster = cluster.postmaster_pid()
            else:
                url = f"sqlite+aiosqlite:///{workdir / 'audit.db'}"
            raw = workdir / f"profile-{backend}.txt" if profile else None
            pipe, base, floor = await run_backend(broker, url, postmaster, records, workdir, raw)
            report("PostgreSQL" if postmaster else "SQLite", pipe, base, floor)
            if raw is not None and profile is not None and raw.exists():
                (profile.parent / f"{profile.name}.{backend}.txt").write_bytes(raw.read_bytes())
                print("where the service's busy CPU went (py-spy, main thread):")
                print(floors.summarise(raw))
    finally:
        if cluster is not None:
            cluster.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument(
        "--profile", type=Path, default=None, help="also profile the service (py-spy) to FILE.*"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="elevate-bench-") as tmp:
        asyncio.run(main_async(args.records, args.backends.split(","), Path(tmp), args.profile))


if __name__ == "__main__":
    main()
