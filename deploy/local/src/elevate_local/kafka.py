"""Runs the real Apache Kafka broker (single-node KRaft) from the jars that
`deploy/local/kafka/pom.xml` fetches from Maven Central.

Used by `make dev` (fixed ports 9092/9093) and by the tests (free ports, temp dirs).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from elevate_core.errors import ElevateError

from elevate_local import runs
from elevate_local.ports import free_port, wait_for_port
from elevate_local.runs import guarded

KAFKA_DIR = Path(__file__).resolve().parents[2] / "kafka"
LIB_DIR = KAFKA_DIR / "lib"

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


def ensure_jars() -> list[Path]:
    jars = sorted(LIB_DIR.glob("*.jar")) if LIB_DIR.is_dir() else []
    if not any(j.name.startswith("kafka-tools-") for j in jars):
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaNotInstalledError("Kafka jars missing and no `mvn` on PATH to fetch them")
        subprocess.run([mvn, "-q", "-B", "-f", str(KAFKA_DIR / "pom.xml"), "package"], check=True)
        jars = sorted(LIB_DIR.glob("*.jar"))
    return jars


@dataclass
class KafkaBroker:
    """One single-node KRaft broker. `start()` formats its log dir and waits until it
    accepts clients; `stop()`/`kill()` end it (tests use both)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    heap: str = "512m"
    log_level: str = "WARN"
    retention_hours: int = 24 * 30
    stdout: int | None = subprocess.DEVNULL
    # StandardAuthorizer that allows what no ACL mentions (tests add DENY ACLs).
    authorizer: bool = False
    # A throwaway broker (tests): its data dir goes with it if its run dies.
    ephemeral: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "logs"),
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
            "log.retention.hours": str(self.retention_hours),
        }
        if self.authorizer:
            props["authorizer.class.name"] = (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            )
            props["allow.everyone.if.no.acl.found"] = "true"
        path = self.data_dir / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2.replace("{level}", self.log_level))
        return path

    def _java(self, main_class: str, *args: str) -> list[str]:
        classpath = os.pathsep.join(str(j) for j in ensure_jars())
        return [
            shutil.which("java") or "java",
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
            "-cp",
            classpath,
            main_class,
            *args,
        ]

    def format(self) -> None:
        config = self._write_config()
        if (self.data_dir / "logs" / "meta.properties").exists():
            return
        subprocess.run(
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                uuid.uuid4().hex[:22],
                "-c",
                str(config),
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
            wait_for_port(self.port, timeout=timeout, what="Kafka broker")
        except TimeoutError:
            self.kill()
            raise

    def acl(self, *args: str) -> None:
        """Run the broker's own ACL tool (`kafka-acls.sh`) against this broker."""
        subprocess.run(
            self._java(
                "org.apache.kafka.tools.AclCommand", "--bootstrap-server", self.bootstrap, *args
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._forget()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._forget()

    def _forget(self) -> None:
        if self.process is not None:
            runs.current().untrack(self.process.pid)
        self.process = None
