"""`make dev`: the whole system on one laptop, on its embedded defaults.

Starts the real Kafka broker (KRaft), moto (seeded with the example organisation),
the local OIDC provider and the four services on SQLite; prefixes every line with
its process name; stops everything, in reverse order, on Ctrl-C, SIGTERM or SIGHUP.
Every child also dies with the supervisor if it is SIGKILLed (parent-death signal), and
the next `make dev` or `make test` removes anything a dead run left (`elevate_local.runs`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from elevate_core.kafka.acls import Principal
from elevate_core.kafka.security import KafkaEndpoint

from elevate_local import runs
from elevate_local.event_keys import LocalEventKeys
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import free_port, port_open, wait_for_port
from elevate_local.runs import guarded
from elevate_local.seed_data import CLOUDTRAIL_BUCKET

ROOT = Path(__file__).resolve().parents[4]
COLOURS = ["36", "33", "35", "32", "34", "31", "96", "93"]


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    moto: int = 5000
    aws_proxy: int = 5001
    oidc: int = 9400
    request_api: int = 8000
    approval: int = 8001
    grant_worker: int = 8002
    audit_ingest: int = 8003
    notifier: int = 8004
    mailbox: int = 1025


SERVICES = (
    ("request-api", "request_api"),
    ("approval", "approval"),
    ("grant-worker", "grant_worker"),
    ("audit-ingest", "audit_ingest"),
    ("notifier", "notifier"),
)


class Supervisor:
    def __init__(self, data_dir: Path, ports: Ports) -> None:
        self.data_dir = data_dir
        self.ports = ports
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.kafka: KafkaBroker | None = None
        self._colour = 0
        self._print_lock = threading.Lock()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        colour = COLOURS[self._colour % len(COLOURS)]
        self._colour += 1
        prefix = f"\x1b[{colour}m{name:>12} |\x1b[0m " if sys.stdout.isatty() else f"{name:>12} | "
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            with self._print_lock:
                print(prefix + line, flush=True)

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.Popen(
            guarded(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
            start_new_session=True,
        )
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(name, proc.stdout), daemon=True).start()
        self.children.append((name, proc))
        runs.current().track(name, proc.pid)

    def say(self, message: str) -> None:
        with self._print_lock:
            print(f"{'elevate-dev':>12} | {message}", flush=True)

    def check_ports_free(self) -> None:
        taken = [f"{name} ({port})" for name, port in vars(self.ports).items() if port_open(port)]
        if taken:
            raise SystemExit(
                "elevate-dev: ports already in use: "
                + ", ".join(taken)
                + " — is another `make dev` running?"
            )

    def start(self, database_url: str | None) -> None:
        """Kafka, moto and its proxy, the OIDC provider, then the four services, each
        waited for before what depends on it starts."""
        self.check_ports_free()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        broker = self._start_kafka()
        keys = LocalEventKeys.ensure(self.data_dir / "keys")
        self.say(f"event-signing keys in {keys.directory} (Ed25519, one per writer)")
        moto_url, proxy_url = self._start_aws()
        self.spawn(
            "oidc",
            [sys.executable, "-m", "elevate_local.oidc", "serve", "--port", str(self.ports.oidc)],
        )
        wait_for_port(self.ports.oidc, timeout=60, what="OIDC provider")
        # Where the notifier's mails land (printed here), over STARTTLS as in production.
        mailbox = [sys.executable, "-m", "elevate_local.mailbox", "--port", str(self.ports.mailbox)]
        self.spawn("mailbox", [*mailbox, "--starttls", str(self.data_dir / "mail-tls")])
        wait_for_port(self.ports.mailbox, timeout=60, what="mailbox")
        for name, attr in SERVICES:
            env = service_env(
                attr,
                ports=self.ports,
                data_dir=self.data_dir,
                kafka=broker.endpoint(principal_of(attr)),
                keys=keys,
                moto_url=moto_url,
                proxy_url=proxy_url,
                database_url=database_url,
            )
            self.spawn(name, [sys.executable, "-m", f"elevate_{attr}.main"], env)
        for name, attr in SERVICES:
            wait_for_port(getattr(self.ports, attr), timeout=60, what=name)
        self._say_all_up()

    def _start_kafka(self) -> KafkaBroker:
        """The broker (its users and ACLs from the table), its log pumped like a child's,
        and the topics."""
        self.say("starting Kafka (KRaft, real broker) …")
        self.kafka = KafkaBroker(
            self.data_dir / "kafka",
            port=self.ports.kafka,
            controller_port=self.ports.kafka_controller,
            stdout=subprocess.PIPE,
            log_level="WARN",
        )
        self.kafka.start()
        assert self.kafka.process is not None
        assert self.kafka.process.stdout is not None
        threading.Thread(
            target=self._pump, args=("kafka", self.kafka.process.stdout), daemon=True
        ).start()
        self._create_topics()
        return self.kafka

    def _start_aws(self) -> tuple[str, str]:
        """moto seeded with the example organisation, and the AWS proxy in front of it:
        their URLs."""
        py = sys.executable
        self.spawn("moto", [py, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports.moto)])
        wait_for_port(self.ports.moto, timeout=60, what="moto")
        moto_url = f"http://127.0.0.1:{self.ports.moto}"
        subprocess.run(
            [py, "-m", "elevate_local.moto_seed", "--endpoint-url", moto_url],
            check=True,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
        )
        self.say(f"moto seeded with the example organisation at {moto_url}")
        # The seeded users carry ExternalIds of the local OIDC provider, as SCIM would
        # have written them: request-api binds sign-ins to them as in production.
        issuer = f"http://127.0.0.1:{self.ports.oidc}"
        proxy = [py, "-m", "elevate_local.aws_proxy", "--target", moto_url]
        proxy += ["--external-id-issuer", issuer]
        self.spawn("aws-proxy", [*proxy, "--port", str(self.ports.aws_proxy)])
        wait_for_port(self.ports.aws_proxy, timeout=60, what="AWS proxy")
        return moto_url, f"http://127.0.0.1:{self.ports.aws_proxy}"

    def _say_all_up(self) -> None:
        p = self.ports
        self.say(
            f"all up: request-api :{p.request_api}, approval :{p.approval}, grant-worker "
            f":{p.grant_worker}, audit-ingest :{p.audit_ingest}, notifier :{p.notifier}, "
            f"mailbox (SMTP) :{p.mailbox}, Kafka :{p.kafka}, "
            f"moto :{p.moto}, OIDC :{p.oidc}"
        )
        self.say("ports " + json.dumps(vars(p)))
        self.say("`make token USER=alice` prints a bearer token; Ctrl-C stops everything")

    def _create_topics(self) -> None:
        from elevate_core.kafka.admin import ensure_topics

        assert self.kafka is not None
        created = asyncio.run(ensure_topics(self.kafka.endpoint(Principal.ADMIN)))
        self.say(f"topics ready ({len(created)} created by {Principal.ADMIN})")
        clients = [self.kafka.client_properties(p) for p in Principal]
        self.say(
            f"Kafka is SASL_SSL + SCRAM-SHA-512 with ACLs on :{self.ports.kafka}; client configs "
            f"for Kafka's CLI tools, one per principal: {clients[0].parent}/<principal>.properties"
            " (README, 'make dev')"
        )

    def watch(self) -> int:
        while True:
            for name, proc in self.children:
                code = proc.poll()
                if code is not None:
                    self.say(f"{name} exited with {code}; stopping everything")
                    return 1
            if self.kafka and self.kafka.process and self.kafka.process.poll() is not None:
                self.say("Kafka exited; stopping everything")
                return 1
            time.sleep(0.5)

    def stop(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.children):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.say(f"{name} did not stop in time; killing it")
                proc.kill()
        if self.kafka is not None:
            self.kafka.stop()
        self.say("stopped")


def service_env(
    service: str,
    *,
    ports: Ports,
    data_dir: Path,
    kafka: KafkaEndpoint,
    keys: LocalEventKeys,
    moto_url: str,
    proxy_url: str,
    database_url: str | None,
) -> dict[str, str]:
    """The environment of one service (`service` as in its module, e.g. grant_worker): dev
    mode on the local components, and its own database when one is configured."""
    # grant-worker and request-api reach moto through the proxy that emulates what moto
    # lacks: ListAccountsForProvisionedPermissionSet and pagination for the reconciler,
    # Identity Store ExternalIds for request-api's identity binding.
    aws_url = proxy_url if service in ("grant_worker", "request_api") else moto_url
    env = {
        "ELEVATE_MODE": "dev",
        "ELEVATE_HTTP_PORT": str(getattr(ports, service)),
        "ELEVATE_DATA_DIR": str(data_dir / "db"),
        "ELEVATE_AWS_ENDPOINT_URL": aws_url,
        "ELEVATE_AWS_ACCESS_KEY_ID": "testing",
        "ELEVATE_AWS_SECRET_ACCESS_KEY": "testing",
        "ELEVATE_OIDC_ISSUER": f"http://127.0.0.1:{ports.oidc}",
        "ELEVATE_POLICY_FILE": str(ROOT / "deploy/local/policy.yaml"),
        "ELEVATE_LOG_JSON": os.environ.get("ELEVATE_LOG_JSON", "false"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        **kafka.environment(),
        **keys.environment(principal_of(service)),
    }
    if service == "request_api":  # the local provider's access tokens are opaque: ID tokens
        env["ELEVATE_OIDC_TOKEN_TYPES"] = '["access_token", "id_token"]'  # noqa: S105 - types
    if service == "audit_ingest":  # fetch only the local trail's objects
        env["ELEVATE_CLOUDTRAIL_SOURCES"] = f"{CLOUDTRAIL_BUCKET}/AWSLogs"
    if service == "notifier":
        env.update(notifier_env(ports, data_dir))
    if database_url:
        env["ELEVATE_DATABASE_URL"] = per_service_database(database_url, service)
    return env


def notifier_env(ports: Ports, data_dir: Path) -> dict[str, str]:
    """The notifier mails the local mailbox (each mail is printed by `make dev`); Slack and
    webhooks stay off until configured (docs/notifications.md)."""
    return {
        "ELEVATE_PORTAL_URL": f"http://127.0.0.1:{ports.request_api}",
        "ELEVATE_SMTP_HOST": "127.0.0.1",
        "ELEVATE_SMTP_PORT": str(ports.mailbox),
        "ELEVATE_SMTP_CA_FILE": str(data_dir / "mail-tls" / "ca.pem"),
        "ELEVATE_SMTP_FROM": "elevate@elevate.example",
        "ELEVATE_SMTP_SECURITY_RECIPIENTS": '["security@elevate.example"]',
    }


def principal_of(service: str) -> Principal:
    """The Kafka principal of a service, by its module name (`grant_worker`)."""
    return Principal(service.replace("_", "-"))


def per_service_database(url: str, service: str) -> str:
    """Each service owns its own database: `…/elevate` becomes `…/elevate_approval`."""
    if url.startswith("sqlite"):
        base, _, name = url.rpartition("/")
        stem = name.removesuffix(".db")
        return f"{base}/{stem}_{service}.db"
    base, _, rest = url.rpartition("/")
    name, sep, query = rest.partition("?")
    db_name = f"{name}_{service}"
    _create_pg_database(f"{base}/postgres{sep}{query}", db_name)
    return f"{base}/{db_name}{sep}{query}"


def _create_pg_database(admin_url: str, name: str) -> None:
    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(admin_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="elevate-dev", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=ROOT / ".elevate")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="pick free ports instead of the standard ones (tests)",
    )
    args = parser.parse_args(argv)
    ports = Ports(**{name: free_port() for name in vars(Ports())}) if args.free_ports else Ports()
    supervisor = Supervisor(args.data_dir, ports)
    stopping = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stopping.set()
        raise KeyboardInterrupt

    runs.begin("dev")
    runs.die_with_parent(signal.SIGTERM)  # `make` killed outright: stop like on SIGTERM
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)  # the terminal went away: stop, do not linger
    # Explicitly: a shell that starts us in the background hands us SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    try:
        supervisor.start(os.environ.get("ELEVATE_DATABASE_URL"))
        return supervisor.watch()
    except KeyboardInterrupt:
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        supervisor.stop()
        runs.current().end()


if __name__ == "__main__":
    raise SystemExit(main())
