"""The local stack of the API bench (bench/api.py): the real Kafka broker (SASL_SSL +
SCRAM, ACLs), a PostgreSQL cluster of its own, moto (the example organisation plus a
generated one, bench/org_gen.py) behind the project's AWS proxy, the local OIDC provider, and
request-api in a process of its own, started with the environment `make dev` gives it
(elevate_local.supervisor.service_env) except for its database (PostgreSQL) and policy.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from elevate_core.kafka.acls import Principal
from elevate_core.kafka.admin import ensure_topics
from elevate_local import runs
from elevate_local.event_keys import LocalEventKeys
from elevate_local.kafka import KafkaBroker
from elevate_local.moto_seed import seed_organisation
from elevate_local.oidc import fetch_token, subject_of
from elevate_local.ports import free_port, wait_for_port
from elevate_local.postgres import PostgresCluster
from elevate_local.supervisor import Ports, principal_of, service_env

from bench.org_gen import MOTO_ENV, BenchOrg, seed_bench_org

BENCH_USER = "alice"  # a seeded Identity Store user, linked to the OIDC provider's sub
AUDITOR = "carol"  # in the auditors group
TEAM_OU = "Division-0/Team-0"  # the bench user's eligible accounts (2 leaf OUs)
ELIGIBLE_PERMISSION_SETS = 4


def policy_yaml(permission_sets: list[str]) -> str:
    """The bench user: every account of TEAM_OU x the first permission sets, auto-approved."""
    sets = ", ".join(permission_sets[:ELIGIBLE_PERMISSION_SETS])
    return f"""schema_version: 1
auditor_groups: [auditors]
admin_groups: [elevate-admins]
approval_rules:
  - name: auto
    description: Granted without a human decision.
    auto_approve: true
eligibility:
  - name: bench-team
    description: The bench user's team accounts.
    principals:
      users: [{BENCH_USER}]
    accounts:
      - ou: {TEAM_OU}
    permission_sets: [{sets}]
    max_duration: 8h
    approval: auto
"""


class Stack:
    def __init__(
        self,
        work: Path,
        *,
        accounts: int,
        permission_sets: int,
        profile: Path | None = None,
        policy: Callable[[list[str]], str] = policy_yaml,
    ) -> None:
        self.work = work
        self.policy = policy  # the policy file's text, from the generated permission sets
        self.profile = profile  # cProfile the server into this file (it slows the server)
        self.n_accounts = accounts
        self.n_permission_sets = permission_sets
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports = Ports(**{name: free_port() for name in vars(Ports())})
        self.seconds: dict[str, float] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.request_api}"

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.ports.oidc}"

    def start(self) -> None:
        started = time.perf_counter()
        self.kafka = KafkaBroker(self.work / "kafka", ephemeral=True)
        self.kafka.start()
        asyncio.run(ensure_topics(self.kafka.endpoint(Principal.ADMIN)))
        self.pg = PostgresCluster(self.work / "pg", ephemeral=True)
        self.pg.start()
        self.keys = LocalEventKeys.ensure(self.work / "keys")
        self.seconds["kafka_postgres"] = round(time.perf_counter() - started, 1)
        self._start_aws()
        self._spawn("oidc", ["-m", "elevate_local.oidc", "serve", "--port", str(self.ports.oidc)])
        wait_for_port(self.ports.oidc, timeout=60, what="OIDC provider")
        proxy = ["-m", "elevate_local.aws_proxy", "--target", self.moto_url]
        proxy += ["--external-id-issuer", self.issuer, "--port", str(self.ports.aws_proxy)]
        self._spawn("aws-proxy", proxy)
        wait_for_port(self.ports.aws_proxy, timeout=60, what="AWS proxy")
        self._start_request_api()

    def _spawn(
        self, name: str, args: list[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        proc: subprocess.Popen[bytes] = runs.spawn(
            [sys.executable, *args],
            name=name,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def _start_aws(self) -> None:
        moto = ["-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports.moto)]
        self._spawn("moto", moto, MOTO_ENV)
        wait_for_port(self.ports.moto, timeout=60, what="moto")
        self.moto_url = f"http://127.0.0.1:{self.ports.moto}"
        started = time.perf_counter()
        seed_organisation(self.moto_url)  # the example org: its users, groups, OUs
        self.org: BenchOrg = seed_bench_org(
            self.moto_url, accounts=self.n_accounts, permission_sets=self.n_permission_sets
        )
        self.seconds["seed_moto"] = round(time.perf_counter() - started, 1)

    def _start_request_api(self) -> None:
        policy = self.work / "policy.yaml"
        policy.write_text(self.policy(self.org.permission_sets))
        env = service_env(
            "request_api",
            ports=self.ports,
            data_dir=self.work,
            kafka=self.kafka.endpoint(principal_of("request_api")),
            keys=self.keys,
            moto_url=self.moto_url,
            proxy_url=f"http://127.0.0.1:{self.ports.aws_proxy}",
            database_url=self.pg.url("elevate"),
        )
        env["ELEVATE_POLICY_FILE"] = str(policy)
        started = time.perf_counter()
        profiler = ["-m", "cProfile", "-o", str(self.profile)] if self.profile else []
        self.server = self._spawn("request-api", [*profiler, "-m", "elevate_request_api.main"], env)
        wait_for_port(self.ports.request_api, timeout=180, what="request-api")
        self._wait_ready()
        self.seconds["request_api_start"] = round(time.perf_counter() - started, 1)
        self.database_url = env["ELEVATE_DATABASE_URL"]

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.api}/readyz", timeout=10).status_code == 200:
                return
            time.sleep(0.5)
        raise TimeoutError(f"request-api not ready within {timeout:.0f}s (see its log)")

    def token(self, user: str) -> str:
        """An ID token from the local provider, as `make token USER=…` prints it."""
        return fetch_token(self.issuer, subject_of(user)).id_token

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.pg.stop()
        self.kafka.stop()
