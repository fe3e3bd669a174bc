"""The local broker's operator: one warm JVM running `deploy/local/kafka/ElevateKafkaAdmin.java`
(Kafka's own Java `Admin` API, authenticated as the broker's super user), fed line commands.

A JVM costs a second or two to start; the tests allow ACLs for a new topic prefix in nearly
every test, so one process per broker takes every command and a command costs one round
trip to the broker. The class is compiled once per source version (cached beside the
source, keyed by its hash), not at each start.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path

from elevate_core.errors import ElevateError
from elevate_core.kafka.acls import Grant, Principal

from elevate_local import runs
from elevate_local.runs import guarded

KAFKA_DIR = Path(__file__).resolve().parents[2] / "kafka"
SOURCE = KAFKA_DIR / "ElevateKafkaAdmin.java"
CLASS_CACHE = KAFKA_DIR / "target" / "admin-classes"  # ignored by git, as is Maven's output
MAIN_CLASS = "ElevateKafkaAdmin"

LOG4J2 = """\
Configuration:
  status: warn
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "%d{HH:mm:ss.SSS} %-5p %c{1}: %m%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
"""


class KafkaAdminError(ElevateError):
    """The admin tool refused a command or died."""


@dataclass(frozen=True, slots=True, order=True)
class AclEntry:
    """One ACL exactly as the broker reports it (Kafka enum names)."""

    principal: str  # e.g. User:approval
    host: str
    permission: str  # ALLOW | DENY
    operation: str
    resource: str
    name: str
    pattern: str

    @classmethod
    def of(cls, grant: Grant) -> AclEntry:
        return cls(
            f"User:{grant.principal.value}",
            "*",
            "ALLOW",
            grant.operation,
            grant.resource,
            grant.name,
            grant.pattern,
        )

    def fields(self) -> tuple[str, ...]:
        return astuple(self)

    def grant(self) -> Grant | None:
        """This entry as a row of the ACL table's grants, or None if it is not one (a DENY,
        a host restriction, a principal the table does not know)."""
        kind, _, user = self.principal.partition(":")
        known = {p.value for p in Principal}
        if kind != "User" or user not in known or self.host != "*" or self.permission != "ALLOW":
            return None
        return Grant(Principal(user), self.operation, self.resource, self.name, self.pattern)


def compiled_classes(java: str, classpath: str) -> Path:
    """The directory holding the compiled tool, compiling it if this source is new.
    Concurrent first runs each compile into their own directory; one rename wins."""
    digest = hashlib.sha256(SOURCE.read_bytes() + classpath.encode()).hexdigest()[:16]
    target = CLASS_CACHE / digest
    if (target / f"{MAIN_CLASS}.class").exists():
        return target
    javac = shutil.which("javac") or str(Path(java).with_name("javac"))
    scratch = CLASS_CACHE / f".{digest}.{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(
        [javac, "-nowarn", "-cp", classpath, "-d", str(scratch), str(SOURCE)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    try:
        scratch.rename(target)
    except OSError:  # another run got there first: its classes are the same
        shutil.rmtree(scratch, ignore_errors=True)
    return target


class AdminTool:
    """The warm admin JVM of one broker; thread-safe (one command at a time)."""

    def __init__(self, *, bootstrap: str, client_properties: Path, classpath: str, log: Path):
        self.bootstrap = bootstrap
        self.client_properties = client_properties
        self.classpath = classpath
        self.log = log
        self.process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        java = shutil.which("java") or "java"
        classes = compiled_classes(java, self.classpath)
        log4j = self.log.with_name("admin-log4j2.yaml")
        log4j.write_text(LOG4J2)
        argv = [
            java,
            "-Xmx128m",
            "-XX:TieredStopAtLevel=1",  # a short-lived client: start fast, peak speed is moot
            "-XX:+UseSerialGC",
            f"-Dlog4j2.configurationFile={log4j}",
            "-cp",
            os.pathsep.join([str(classes), self.classpath]),
            MAIN_CLASS,
            self.bootstrap,
            str(self.client_properties),
        ]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                guarded(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        runs.current().track("kafka-admin", self.process.pid)

    def command(self, lines: Sequence[str]) -> list[str]:
        """Send `lines` (queueing commands, then one acting command); return the reply's
        fields after OK and any ACL lines before it."""
        with self._lock:
            proc = self.process
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise KafkaAdminError("the Kafka admin tool is not running")
            try:
                proc.stdin.write("".join(f"{line}\n" for line in lines))
                proc.stdin.flush()
            except BrokenPipeError:
                raise KafkaAdminError(f"the Kafka admin tool died; see {self.log}") from None
            rows: list[str] = []
            while True:
                reply = proc.stdout.readline()
                if not reply:
                    raise KafkaAdminError(f"the Kafka admin tool died; see {self.log}")
                reply = reply.rstrip("\n")
                if reply.startswith("ACL\t"):
                    rows.append(reply)
                elif reply == "OK" or reply.startswith("OK "):
                    return rows
                else:
                    raise KafkaAdminError(f"Kafka admin tool: {reply.removeprefix('ERROR ')}")

    def apply(
        self,
        entries: Iterable[AclEntry],
        *,
        users: Mapping[str, Path] | None = None,
        only: bool = False,
    ) -> None:
        """Create the ACLs `entries` (and upsert SCRAM `users`: name -> password file); with
        `only`, also delete every ACL on the broker that is not one of `entries`."""
        lines = [f"USER\t{name}\t{path}" for name, path in (users or {}).items()]
        lines += ["\t".join(("ACL", *entry.fields())) for entry in entries]
        self.command([*lines, "RECONCILE" if only else "APPLY"])

    def acls(self) -> list[AclEntry]:
        rows = self.command(["LIST"])
        return sorted(AclEntry(*row.split("\t")[1:]) for row in rows)

    def stop(self) -> None:
        """End the JVM: EOF on its stdin makes it close its client and exit."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()

    def _forget(self) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            runs.current().untrack(proc.pid)
