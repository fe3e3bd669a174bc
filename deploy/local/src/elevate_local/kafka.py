"""Runs the real Apache Kafka broker (single-node KRaft) from the jars that
`deploy/local/kafka/pom.xml` fetches from Maven Central, secured as production is.

Used by `make dev` (fixed ports 9092/9093) and by the tests (free ports, temp dirs).

- Clients connect over SASL_SSL with SCRAM-SHA-512 only; nothing listens PLAINTEXT. The
  controller listener is SASL_SSL too (PLAIN, the broker's own identity); the broker talks
  to itself over the client listener with SCRAM as the super user `broker`.
- At the first start in a data dir it makes a CA and a broker certificate
  (`elevate_local.tls`, `<data_dir>/tls/`) and one random password per principal
  (`<data_dir>/credentials/<name>.password`, 0600); later starts reuse them.
- Deny by default: StandardAuthorizer, `allow.everyone.if.no.acl.found=false`, and
  `super.users=User:broker` alone. Each start upserts a SCRAM user for every
  `acls.Principal` and makes the broker's ACLs exactly `acls.grants(topic_prefix="")` (plus
  the prefixes this object allowed before a restart): an ACL no grant names is deleted, so
  a `make dev` data dir kept across changes to the table holds the table and nothing else.
  `allow(prefix)` adds the grants of one more topic prefix (the tests' per-test topics).

Which tool applies users and ACLs: a real Kafka client, Kafka's own Java `Admin` API, in
`deploy/local/kafka/ElevateKafkaAdmin.java` (`alterUserScramCredentials`, `createAcls`,
`describeAcls`, `deleteAcls`), authenticated as `broker`; aiokafka has no ACL or SCRAM
user API. One JVM stays up per broker and reads line commands on stdin
(`elevate_local.kafka_admin`); the class is compiled once per source version (javac, cached
under `deploy/local/kafka/target/`). A command returns once the broker itself reports the
change, so a client connecting afterwards meets the new rules. Measured on the 2-core dev
box: `kafka-acls.sh` costs 1.1 s a call (a JVM each); the warm JVM's first answer comes
0.8 s after its start from the cached class, 1.2 s by single-file source launch
(`java File.java` compiles at every start), and javac takes 0.95 s once; `allow()` then
takes ~50 ms (median of 20; max ~90 ms). A broker start, ready with its users and ACLs,
takes ~4.4 s in a fresh data dir and ~3.7 s on a restart (PLAINTEXT without ACLs it was
~2.8 s to an open port, ~2.0 s).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from elevate_core.errors import ElevateError
from elevate_core.kafka import acls
from elevate_core.kafka.security import (
    KafkaEndpoint,
    KafkaSecurity,
    SaslMechanism,
    SecurityProtocol,
)

from elevate_local import runs
from elevate_local.kafka_admin import AclEntry, AdminTool
from elevate_local.ports import free_port, wait_for_port
from elevate_local.runs import guarded
from elevate_local.tls import BrokerTls, password, write_private

KAFKA_DIR = Path(__file__).resolve().parents[2] / "kafka"
LIB_DIR = KAFKA_DIR / "lib"

#: The broker's own identity and its only super user; no service principal is one.
SUPERUSER = "broker"
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
PLAIN = "org.apache.kafka.common.security.plain.PlainLoginModule"

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "%d{HH:mm:ss.SSS} %-5p %c{1}: %m%n"
  Loggers:
    Root:
      level: {level}
      AppenderRef:
        - ref: STDOUT
    Logger:
      - name: kafka
        level: {level}
      - name: org.apache.kafka
        level: {level}
"""


class KafkaNotInstalledError(ElevateError):
    """The broker jars are missing; `make kafka-jars` (or `make dev`) fetches them."""


class ForeignAclError(ElevateError):
    """The broker holds ACLs that are not grants of the ACL table."""

    def __init__(self, entries: list[AclEntry]) -> None:
        super().__init__(f"ACLs on the broker that the table does not grant: {entries}")
        self.entries = entries


def ensure_jars() -> list[Path]:
    jars = sorted(LIB_DIR.glob("*.jar")) if LIB_DIR.is_dir() else []
    if not any(j.name.startswith("kafka-tools-") for j in jars):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaNotInstalledError("Kafka jars missing and no `mvn` on PATH to fetch them")
        subprocess.run([mvn, "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "package"], check=True)
        jars = sorted(LIB_DIR.glob("*.jar"))
    return jars


def _classpath() -> str:
    return os.pathsep.join(str(j) for j in ensure_jars())


def broker_properties(
    *, secret: str, keystore: Path | str, truststore: Path | str, client_listeners: list[str]
) -> dict[str, str]:
    """A single-node KRaft broker's settings but its addresses, secured as Elevate runs it
    (`make dev`, the tests, docker-compose.yml): SASL_SSL + SCRAM-SHA-512 on every client
    listener, the controller link PLAIN over TLS as the broker itself, deny by default."""
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": client_listeners[0],
        "listener.security.protocol.map": ",".join(
            f"{name}:SASL_SSL" for name in [*client_listeners, "CONTROLLER"]
        ),
        "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
        # The controller link is the broker talking to itself: PLAIN over TLS, one user.
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": (
            f'{PLAIN} required username="{SUPERUSER}" password="{secret}" '
            f'user_{SUPERUSER}="{secret}";'
        ),
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(truststore),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": f"User:{SUPERUSER}",
        "num.partitions": "3",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
    }
    for name in client_listeners:
        props[f"listener.name.{name.lower()}.sasl.enabled.mechanisms"] = "SCRAM-SHA-512"
        props[f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config"] = (
            f'{SCRAM} required username="{SUPERUSER}" password="{secret}";'
        )
    return props


@dataclass
class KafkaBroker:
    """One single-node KRaft broker. `start()` formats its log dir, waits until it accepts
    clients and applies the ACL table; `stop()`/`kill()` end it (tests use both)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "512m"
    log_level: str = "WARN"
    retention_hours: int = 24 * 30
    stdout: int | None = subprocess.DEVNULL
    # A throwaway broker (tests): its data dir goes with it if its run dies.
    ephemeral: bool = False
    process: subprocess.Popen[bytes] | None = None
    admin_tool: AdminTool | None = field(default=None, init=False, repr=False)
    # Prefixes whose grants this object applied; a restart keeps them, a new object not.
    _allowed: set[str] = field(default_factory=lambda: {""}, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # ---- credentials and clients ----

    @property
    def tls(self) -> BrokerTls:
        return BrokerTls(self.data_dir / "tls")

    @property
    def ca_file(self) -> Path:
        return self.tls.ca_file

    def password_file(self, principal: str) -> Path:
        if principal != SUPERUSER and principal not in {p.value for p in acls.Principal}:
            raise ValueError(f"{principal!r} is not a principal of this broker")
        return self.data_dir / "credentials" / f"{principal}.password"

    def endpoint(self, principal: str = SUPERUSER) -> KafkaEndpoint:
        """How `principal` connects: SASL_SSL, SCRAM-SHA-512, its password, the local CA."""
        security = KafkaSecurity(
            protocol=SecurityProtocol.SASL_SSL,
            mechanism=SaslMechanism.SCRAM_SHA_512,
            username=principal,
            password_file=self.password_file(principal),
            ca_file=self.ca_file,
        )
        return KafkaEndpoint(self.bootstrap, security)

    def client_properties(self, principal: str) -> Path:
        """A Kafka CLI client config for `principal` (`--command-config` of
        kafka-console-consumer and friends), 0600: it holds the password."""
        path = self.data_dir / "credentials" / f"{principal}.properties"
        secret = password(self.password_file(principal))
        props = {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": f'{SCRAM} required username="{principal}" password="{secret}";',
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }
        write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()).encode())
        return path

    # ---- ACLs ----

    @property
    def allowed_prefixes(self) -> frozenset[str]:
        """Topic prefixes whose grants this broker holds ("" is the catalog's own names)."""
        return frozenset(self._allowed)

    def allow(self, topic_prefix: str) -> None:
        """Apply `acls.grants(topic_prefix=...)`; returns once the broker enforces them."""
        if topic_prefix in self._allowed:
            return
        self._admin().apply(AclEntry.of(g) for g in acls.grants(topic_prefix=topic_prefix))
        self._allowed.add(topic_prefix)

    def reconcile(self) -> None:
        """Make the broker's users and ACLs the table's again: upsert a SCRAM user for every
        principal, create the grants of every allowed prefix, delete every other ACL."""
        users = {p.value: self.password_file(p) for p in acls.Principal}
        self._admin().apply((AclEntry.of(g) for g in self._wanted()), users=users, only=True)

    def add_acls(self, entries: Iterable[AclEntry]) -> None:
        """Create ACLs the table does not grant (a test's stray or DENY rule); `reconcile()`
        and the next start delete them again."""
        self._admin().apply(entries)

    def acl_entries(self) -> list[AclEntry]:
        """Every ACL the broker holds now, as it reports them."""
        return self._admin().acls()

    def broker_acls(self) -> set[acls.Grant]:
        """Every ACL the broker holds now, as grants; `ForeignAclError` if any is not one
        (a DENY, a host restriction, a principal the table does not know)."""
        entries = self.acl_entries()
        foreign = [e for e in entries if e.grant() is None]
        if foreign:
            raise ForeignAclError(foreign)
        return {g for e in entries if (g := e.grant()) is not None}

    def acl(self, *args: str) -> None:
        """Run the broker's own ACL tool (`kafka-acls.sh`) against this broker, as `broker`."""
        subprocess.run(
            self._java(
                "org.apache.kafka.tools.AclCommand",
                "--bootstrap-server",
                self.bootstrap,
                "--command-config",
                str(self.client_properties(SUPERUSER)),
                *args,
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _admin(self) -> AdminTool:
        if self.admin_tool is None or self.admin_tool.process is None:
            raise ElevateError("the Kafka broker is not running")
        return self.admin_tool

    def _wanted(self) -> set[acls.Grant]:
        return {g for p in self._allowed for g in acls.grants(topic_prefix=p)}

    # ---- configuration ----

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tls = self.tls.ensure()
        props = {
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"CLIENT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"CLIENT://127.0.0.1:{self.port}",
            **broker_properties(
                secret=password(self.password_file(SUPERUSER)),
                keystore=tls.keystore_file,
                truststore=tls.ca_file,
                client_listeners=["CLIENT"],
            ),
            "log.dirs": str(self.data_dir / "logs"),
            "log.retention.hours": str(self.retention_hours),
        }
        for principal in acls.Principal:
            password(self.password_file(principal))
        path = self.data_dir / "server.properties"  # 0600: it holds the broker's password
        write_private(path, "".join(f"{k}={v}\n" for k, v in props.items()).encode())
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2.replace("{level}", self.log_level))
        return path

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            shutil.which("java") or "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            _classpath(),
            main_class,
            *args,
        ]

    # ---- lifecycle ----

    def format(self) -> None:
        formatted = (self.data_dir / "logs" / "meta.properties").exists()
        if formatted and not self.password_file(SUPERUSER).exists():
            raise ElevateError(
                f"{self.data_dir}: formatted, but the broker's password is gone; "
                "remove the data dir to start afresh"
            )
        config = self._write_config()
        if formatted:
            return
        secret = password(self.password_file(SUPERUSER))
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                uuid.uuid4().hex[:22],
                "-c",
                str(config),
                # The super user's credential must exist before anything can log in.
                "--add-scram",
                f"SCRAM-SHA-512=[name={SUPERUSER},password={secret}]",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def start(self, *, timeout: float = 90.0) -> None:
        self.format()
        self.process = subprocess.Popen(
            guarded(self._java("kafka.Kafka", str(self.data_dir / "server.properties"))),
            stdout=self.stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        runs.current().track(
            "kafka", self.process.pid, data_dir=self.data_dir if self.ephemeral else None
        )
        try:
            # The admin JVM starts while the broker does; its client waits for the port.
            self.admin_tool = AdminTool(
                bootstrap=self.bootstrap,
                client_properties=self.client_properties(SUPERUSER),
                classpath=_classpath(),
                log=self.data_dir / "admin.log",
            )
            self.admin_tool.start()
            wait_for_port(self.port, timeout=timeout, what="Kafka broker")
            self.reconcile()
        except BaseException:
            self.kill()
            raise

    def stop(self) -> None:
        if self.admin_tool is not None:
            self.admin_tool.stop()
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._forget()

    def kill(self) -> None:
        if self.admin_tool is not None:
            self.admin_tool.kill()
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._forget()

    def _forget(self) -> None:
        if self.process is not None:
            runs.current().untrack(self.process.pid)
        self.process = None
