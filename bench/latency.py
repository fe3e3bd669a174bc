"""End-to-end latency, as an on-call engineer feels it: approval to usable access, revoke to
gone — on the system as `make dev` runs it (or the same on PostgreSQL).

    uv run python -m bench.latency [--samples 200] [--warmup 20] [--postgres]

It starts `make dev`'s own supervisor on free ports in a throwaway directory (SQLite, the
real Kafka broker with SASL_SSL + ACLs, moto behind the AWS proxy, the local OIDC
provider), and then, one request at a time:

- submit → active: alice asks for ReadOnlyAccess on sandbox-alice (auto-approved), timed
  from the POST until her request's Server-Sent Events stream says `active`;
- revoke → gone / → revoked: she ends it; timed from the POST until AWS (moto, asked
  directly every ~5 ms) no longer lists the assignment, and until the stream says `revoked`;
- approve → active: alice asks for AdministratorAccess on payments-prod (one SRE lead);
  once it is pending, bob approves; timed from his POST until her stream says `active`.

Between two requests the bench waits `--pause` seconds (default 1.1: longer than the AWS
budget's 1.05 s window). A cycle makes five Identity Center calls, so cycles back to back
run at about make dev's budget of 10 calls/s, and the rate limiter — doing its job — holds
the next request's first call until the window turns: that measures the budget, not the
path. `--pause 0` runs them back to back.

The per-hop breakdown comes from the events themselves, read from Kafka beside the
services: each event's `ce_time` (its writer committed it) and its record's CreateTime
(the relay handed it to Kafka). The floors are measured in the same run: one Kafka
produce → consume round trip with the services' client settings, and one AWS create +
status round trip on grant-worker's endpoint.

Results are printed and written to bench/out/latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import httpx
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from elevate_core.events.models import (
    DecisionSubmitted,
    GrantActivated,
    GrantEnded,
    RequestApproved,
    RequestSubmitted,
    RevokeRequested,
)
from elevate_core.kafka.producer import idempotent_producer

from bench.latency_stack import DevStack, Follower, Observer
from bench.stats import summary

OUT = Path(__file__).resolve().parent / "out"
GOALS_MS = {
    "approve_to_active": 150,
    "submit_to_active": 150,
    "revoke_to_gone": 100,
    "revoke_to_revoked": 150,
}
Hops = list[tuple[str, str, str]]  # (name, from mark, to mark)
SUBMIT_HOPS: Hops = [
    ("request-api: POST → commit", "t0", "submitted.c"),
    ("relay request-api", "submitted.c", "submitted.k"),
    ("approval: decide", "submitted.k", "approved.c"),
    ("relay approval", "approved.c", "approved.k"),
    ("grant-worker: AWS + record", "approved.k", "activated.c"),
    ("relay grant-worker", "activated.c", "activated.k"),
    ("request-api: read model → stream", "activated.k", "end"),
]
APPROVE_HOPS: Hops = [
    ("request-api: POST → commit", "t0", "decision.c"),
    ("relay request-api", "decision.c", "decision.k"),
    ("approval: decide", "decision.k", "approved.c"),
    *SUBMIT_HOPS[3:],
]
REVOKE_HOPS: Hops = [
    ("request-api: POST → commit", "t0", "revoke.c"),
    ("relay request-api", "revoke.c", "revoke.k"),
    ("grant-worker: AWS delete + record", "revoke.k", "ended.c"),
    ("relay grant-worker", "ended.c", "ended.k"),
    ("request-api: read model → stream", "ended.k", "end"),
]
MARKS = {
    "submitted": RequestSubmitted.ce_type,
    "decision": DecisionSubmitted.ce_type,
    "approved": RequestApproved.ce_type,
    "activated": GrantActivated.ce_type,
    "revoke": RevokeRequested.ce_type,
    "ended": GrantEnded.ce_type,
}


class Sso:
    """moto's Identity Center, asked directly (the truth, not through grant-worker's proxy)."""

    def __init__(self, endpoint: str) -> None:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )
        self.sso = session.client("sso-admin", endpoint_url=endpoint)
        self.org = session.client("organizations", endpoint_url=endpoint)
        self.ids = session.client("identitystore", endpoint_url=endpoint)
        instance = self.sso.list_instances()["Instances"][0]
        self.instance = instance["InstanceArn"]
        self.store = instance["IdentityStoreId"]

    def account(self, name: str) -> str:
        accounts = self.org.list_accounts()["Accounts"]
        return next(a["Id"] for a in accounts if a["Name"] == name)

    def permission_set(self, name: str) -> str:
        for arn in self.sso.list_permission_sets(InstanceArn=self.instance)["PermissionSets"]:
            described = self.sso.describe_permission_set(
                InstanceArn=self.instance, PermissionSetArn=arn
            )
            if described["PermissionSet"]["Name"] == name:
                return arn
        raise LookupError(name)

    def user(self, name: str) -> str:
        users = self.ids.list_users(IdentityStoreId=self.store)["Users"]
        return next(u["UserId"] for u in users if u["UserName"] == name)

    def holds(self, account: str, permission_set: str, principal: str) -> bool:
        listed = self.sso.list_account_assignments(
            InstanceArn=self.instance, AccountId=account, PermissionSetArn=permission_set
        )["AccountAssignments"]
        return any(a["PrincipalId"] == principal for a in listed)

    def gone_at(self, account: str, permission_set: str, principal: str, timeout: float) -> float:
        """Epoch time the assignment was first seen absent (asked every ~5 ms: back to back
        would take moto's time from grant-worker's own calls)."""
        deadline = time.monotonic() + timeout
        while self.holds(account, permission_set, principal):
            if time.monotonic() > deadline:
                raise TimeoutError("the assignment is still there")
            time.sleep(0.005)
        return time.time()


class Bench:
    def __init__(self, stack: DevStack, observer: Observer) -> None:
        self.stack = stack
        self.observer = observer
        self.sso = Sso(stack.url("moto"))
        self.alice_id = self.sso.user("alice")
        self.sandbox = self.sso.account("sandbox-alice")
        self.prod = self.sso.account("payments-prod")
        self.read_only = self.sso.permission_set("ReadOnlyAccess")
        self.admin = self.sso.permission_set("AdministratorAccess")
        self._tokens: dict[str, tuple[float, str]] = {}
        self.samples: dict[str, list[float]] = {k: [] for k in GOALS_MS}
        self.hops: dict[str, list[dict[str, float]]] = {"submit": [], "approve": [], "revoke": []}

    def headers(self, user: str) -> dict[str, str]:
        fetched, token = self._tokens.get(user, (0.0, ""))
        if time.monotonic() - fetched > 120:  # well inside the local tokens' lifetime
            token = self.stack.token(user)
            self._tokens[user] = (time.monotonic(), token)
        return {"Authorization": f"Bearer {token}"}

    def client(self, user: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.stack.url("request_api"), headers=self.headers(user), timeout=30
        )

    async def _marks(self, rid: str, names: list[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for name in names:
            seen = await self.observer.wait_for(rid, MARKS[name])
            if seen is not None:
                out[f"{name}.c"], out[f"{name}.k"] = seen.committed, seen.produced
        return out

    async def submit(self, alice: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, float]:
        t0 = time.time()
        created = await alice.post("/v1/requests", json=body)
        if created.status_code != 202:
            raise RuntimeError(f"submit refused: {created.status_code} {created.text}")
        return str(created.json()["id"]), t0

    async def cycle_auto(self, keep: bool) -> None:
        async with self.client("alice") as alice:
            rid, t0 = await self.submit(alice, self._body(self.sandbox, "ReadOnlyAccess"))
            follow = Follower(alice, rid)
            try:
                active = await follow.reached("active")
                marks = {"t0": t0, "end": active, **await self._marks(rid, ["submitted"])}
                marks |= await self._marks(rid, ["approved", "activated"])
                if keep:
                    self.samples["submit_to_active"].append((active - t0) * 1000)
                    self.hops["submit"].append(marks)
                await self.revoke(alice, follow, rid, self.sandbox, self.read_only, keep)
            finally:
                await follow.close()

    async def cycle_approve(self, keep: bool) -> None:
        async with self.client("alice") as alice, self.client("bob") as bob:
            body = self._body(self.prod, "AdministratorAccess") | {"ticket": "OPS-1234"}
            rid, _ = await self.submit(alice, body)
            follow = Follower(alice, rid)
            try:
                await follow.reached("pending")
                await self._pending_for(bob, rid)
                t0 = time.time()
                decided = await bob.post(f"/v1/requests/{rid}/approve", json={"comment": "ok"})
                if decided.status_code != 202:
                    raise RuntimeError(f"approve refused: {decided.status_code} {decided.text}")
                active = await follow.reached("active")
                marks = {"t0": t0, "end": active}
                marks |= await self._marks(rid, ["decision", "approved", "activated"])
                if keep:
                    self.samples["approve_to_active"].append((active - t0) * 1000)
                    self.hops["approve"].append(marks)
                await self.revoke(alice, follow, rid, self.prod, self.admin, keep=False)
            finally:
                await follow.close()

    async def _pending_for(self, bob: httpx.AsyncClient, rid: str) -> None:
        """Approval has opened the request for decisions (not only request-api)."""
        for _ in range(2000):
            listed = await bob.get("/v1/approvals")
            if any(r["id"] == rid for r in listed.json()):
                return
            await asyncio.sleep(0.005)
        raise TimeoutError(f"{rid} never awaited bob's approval")

    async def revoke(
        self,
        alice: httpx.AsyncClient,
        follow: Follower,
        rid: str,
        account: str,
        permission_set: str,
        keep: bool,
    ) -> None:
        assert self.sso.holds(account, permission_set, self.alice_id), "active but not in AWS"
        t0 = time.time()
        gone = asyncio.create_task(
            asyncio.to_thread(self.sso.gone_at, account, permission_set, self.alice_id, 20)
        )
        answer = await alice.post(f"/v1/requests/{rid}/revoke", json={"comment": "done"})
        if answer.status_code != 202:
            raise RuntimeError(f"revoke refused: {answer.status_code} {answer.text}")
        revoked = await follow.reached("revoked")
        gone_at = await gone
        if keep:
            self.samples["revoke_to_gone"].append((gone_at - t0) * 1000)
            self.samples["revoke_to_revoked"].append((revoked - t0) * 1000)
            marks = {"t0": t0, "end": revoked, **await self._marks(rid, ["revoke", "ended"])}
            self.hops["revoke"].append(marks)

    @staticmethod
    def _body(account: str, permission_set: str) -> dict[str, Any]:
        return {
            "account_id": account,
            "permission_set": permission_set,
            "duration_minutes": 30,
            "justification": "latency bench",
        }


def breakdown(samples: list[dict[str, float]], hops: Hops) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, start, end in hops:
        values = [(s[end] - s[start]) * 1000 for s in samples if start in s and end in s]
        if values:
            out[name] = summary(values)
    return out


async def kafka_floor(stack: DevStack, rounds: int = 50) -> dict[str, float]:
    """Produce → consume on a topic of its own, with the relay's producer settings and the
    services' consumer settings (read_committed), as the broker's super user."""
    endpoint = stack.broker().endpoint()
    topic = f"bench.latency.{uuid.uuid4().hex[:8]}"
    producer = idempotent_producer(endpoint, client_id="bench-latency")
    consumer = endpoint.consumer(enable_auto_commit=False, isolation_level="read_committed")
    admin = endpoint.admin()
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"warm-up")
        await consumer.start()
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        await consumer.getone()
        times = []
        for i in range(rounds):
            t0 = time.perf_counter()
            await producer.send(topic, str(i).encode())
            await consumer.getone()
            times.append((time.perf_counter() - t0) * 1000)
        return summary(times)
    finally:
        await consumer.stop()
        await producer.stop()


def aws_floor(stack: DevStack, rounds: int = 30) -> dict[str, dict[str, float]]:
    """Create + status and delete + status of one assignment on grant-worker's endpoint
    (the AWS proxy in front of moto), for a user and account the bench does not touch."""
    sso = Sso(stack.url("aws_proxy"))
    account, ps = sso.account("sandbox-shared"), sso.permission_set("PowerUserAccess")
    user = sso.user("dave")
    target = {"TargetId": account, "TargetType": "AWS_ACCOUNT", "PermissionSetArn": ps}
    who = {"PrincipalType": "USER", "PrincipalId": user, "InstanceArn": sso.instance}

    def round_trip(call: Callable[..., Any], status: Callable[..., Any], kind: str) -> float:
        key = f"AccountAssignment{kind}Status"
        t0 = time.perf_counter()
        rid = call(**target, **who)[key]["RequestId"]
        while True:
            state = status(InstanceArn=sso.instance, **{f"AccountAssignment{kind}RequestId": rid})
            if state[key]["Status"] != "IN_PROGRESS":
                return (time.perf_counter() - t0) * 1000

    creates, deletes = [], []
    for _ in range(rounds):
        creates.append(
            round_trip(
                sso.sso.create_account_assignment,
                sso.sso.describe_account_assignment_creation_status,
                "Creation",
            )
        )
        deletes.append(
            round_trip(
                sso.sso.delete_account_assignment,
                sso.sso.describe_account_assignment_deletion_status,
                "Deletion",
            )
        )
    return {"create_and_status": summary(creates), "delete_and_status": summary(deletes)}


async def idle_cpu(stack: DevStack, seconds: float = 10) -> dict[str, float]:
    """CPU seconds per second each component spends with no request in flight."""
    before = stack.cpu_seconds()
    await asyncio.sleep(seconds)
    after = stack.cpu_seconds()
    return {name: (after[name] - before.get(name, 0.0)) / seconds for name in after}


async def measure(args: argparse.Namespace, stack: DevStack) -> dict[str, Any]:
    floors = {"kafka_round_trip": await kafka_floor(stack), **aws_floor(stack)}
    print("floors: " + json.dumps(floors), flush=True)
    observer = Observer(stack.broker())
    await observer.start()
    try:
        bench = Bench(stack, observer)
        cpu_before = stack.cpu_seconds()
        started = time.monotonic()
        for flow in (bench.cycle_auto, bench.cycle_approve):
            for i in range(args.warmup + args.samples):
                await flow(keep=i >= args.warmup)
                await asyncio.sleep(args.pause)  # the budget's window clears (module doc)
                if (i + 1) % 20 == 0:
                    print(f"{flow.__name__}: {i + 1} done", flush=True)
        seconds = round(time.monotonic() - started, 1)
        cpu_after = stack.cpu_seconds()
        idle = await idle_cpu(stack)  # warm and quiet, as in the pauses
    finally:
        await observer.stop()
    cycles = 2 * (args.warmup + args.samples)
    paused = cycles * args.pause  # the stack idles then: its idle CPU is not the requests'
    figures = {k: summary(v) | {"goal_p99_ms": GOALS_MS[k]} for k, v in bench.samples.items()}
    return {
        "database": "postgresql" if args.postgres else "sqlite",
        "samples": args.samples,
        "warmup": args.warmup,
        "pause_s": args.pause,
        "seconds": seconds,
        "figures": figures,
        "met": all(f["p99_ms"] <= f["goal_p99_ms"] for f in figures.values()),
        "floors": floors,
        # CPU each component spent per request (both flows; a cycle is request + revoke),
        # less what it spends idle over the pauses; and that idle CPU itself.
        "cpu_ms_per_cycle": {
            name: round(
                (cpu_after[name] - cpu_before.get(name, 0.0) - idle.get(name, 0.0) * paused)
                * 1000
                / cycles,
                1,
            )
            for name in sorted(cpu_after)
        },
        "idle_cpu_ms_per_s": {name: round(v * 1000, 1) for name, v in sorted(idle.items())},
        "wall_ms_per_cycle": round((seconds - paused) * 1000 / cycles, 1),
        "hops": {
            "submit_to_active": breakdown(bench.hops["submit"], SUBMIT_HOPS),
            "approve_to_active": breakdown(bench.hops["approve"], APPROVE_HOPS),
            "revoke_to_revoked": breakdown(bench.hops["revoke"], REVOKE_HOPS),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--postgres", action="store_true", help="the stack on PostgreSQL")
    parser.add_argument(
        "--pause", type=float, default=1.1, help="seconds between requests (module doc)"
    )
    parser.add_argument("--work", type=Path, help="keep the stack's files (stack.log) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="elevate-latency-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        stack = DevStack(work, postgres=args.postgres)
        try:
            stack.start()
            results = asyncio.run(measure(args, stack))
        finally:
            stack.stop()
    OUT.mkdir(exist_ok=True)
    name = "latency-postgres.json" if args.postgres else "latency.json"
    (OUT / name).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
