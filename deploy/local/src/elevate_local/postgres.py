"""A throwaway PostgreSQL cluster from Debian's `postgresql` package, in a temp dir,
on a free port. `initdb` refuses root, so as root the cluster runs as `postgres`."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from elevate_core.errors import ElevateError

from elevate_local import runs
from elevate_local.ports import free_port, wait_for_port
from elevate_local.runs import guarded


class PostgresNotInstalledError(ElevateError):
    """Debian's `postgresql` package is missing (`apt-get install -y postgresql`)."""


def _bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    for cand in reversed(candidates):
        if (Path(cand) / "initdb").exists():
            return Path(cand)
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PostgresNotInstalledError("no initdb found: install Debian's `postgresql` package")


_THROWAWAY_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)


def _superuser() -> str:
    """The cluster's superuser: `postgres` as root (initdb refuses root), else ourselves."""
    return "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.getuid()).pw_name


@dataclass
class PostgresCluster:
    data_dir: Path
    port: int = field(default_factory=free_port)
    # A throwaway cluster (tests): its data dir goes with it if its run dies.
    ephemeral: bool = False
    process: subprocess.Popen[bytes] | None = None

    @property
    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{_superuser()}@127.0.0.1:{self.port}/{database}"

    def start(self, *, timeout: float = 60.0) -> None:
        bindir = _bindir()
        self._prepare_data_dir()
        pgdata = self.data_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(bindir, pgdata)
        self.process = self._launch(bindir, pgdata)
        runs.current().track(
            "postgres", self.process.pid, data_dir=self.data_dir if self.ephemeral else None
        )
        wait_for_port(self.port, timeout=timeout, what="PostgreSQL")
        self._wait_accepting(bindir, timeout)

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        shutil.chown(self.data_dir, "postgres", "postgres")
        # The parent chain must be traversable by `postgres` (pytest temp dirs are 0700).
        for parent in self.data_dir.parents:
            if str(parent) in ("/", "/tmp"):  # noqa: S108 - stop at the shared root
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o711)  # noqa: S103 - traverse only

    def _initdb(self, bindir: Path, pgdata: Path) -> None:
        argv = [str(bindir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", _superuser()]
        subprocess.run(
            guarded([*argv, "-E", "UTF8", "--no-sync"], user=self._user),
            check=True,
            stdout=subprocess.DEVNULL,
        )

    def _launch(self, bindir: Path, pgdata: Path) -> subprocess.Popen[bytes]:
        argv = [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(self.port)]
        argv += ["-k", str(self.data_dir), "-h", "127.0.0.1"]
        # a throwaway cluster: no durability to pay for
        for setting in _THROWAWAY_SETTINGS:
            argv += ["-c", setting]
        return subprocess.Popen(
            guarded(
                argv,
                user=self._user,
                on_parent_death="INT",  # fast shutdown: clients are dying too
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _wait_accepting(self, bindir: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                check=False,
            )
            if ok.returncode == 0:
                return
            time.sleep(0.2)
        raise TimeoutError("PostgreSQL did not accept connections")

    def create_database(self, name: str) -> str:
        bindir = _bindir()
        subprocess.run(
            [
                str(bindir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                _superuser(),
                name,
            ],
            check=True,
        )
        return self.url(name)

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "pgdata" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT to the postmaster: clients are disconnected, as on a
        server restart), then make sure the postmaster is gone. Signals go to the
        postmaster itself: `runuser` in between does not pass them on."""
        pid = self.postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.process and self.process.poll() is None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None:
            runs.current().untrack(self.process.pid)
        self.process = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
