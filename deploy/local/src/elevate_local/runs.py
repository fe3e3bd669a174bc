"""What a test session or `make dev` launched, so nothing outlives it.

Three layers, from the most to the least graceful:

1. **Signals**: the test session and `make dev` tear down on SIGTERM and SIGHUP exactly as
   on Ctrl-C or a normal exit.
2. **Parent death**: every component is started through `guarded()`, which asks the kernel
   (`setpriv --pdeathsig`) to signal it when the process that started it dies — even by
   SIGKILL, which no handler sees.
3. **The run registry**: each run records its owner (pid and start time) and what it
   launched (pids, process groups, temporary data directories) in a file under
   `$ELEVATE_RUN_DIR` (default: the system temp dir, `elevate-runs/`). The next start of any
   run removes the leftovers of runs whose owner is dead — and never touches a run whose
   owner is alive, such as a `make dev` running beside `make test`. Pids are matched with
   their start time, so a recycled pid is never killed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def run_dir() -> Path:
    base = Path(os.environ.get("ELEVATE_RUN_DIR") or Path(tempfile.gettempdir()) / "elevate-runs")
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return base


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), or None if it is gone/a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(pid: int, ticks: int | None) -> bool:
    """Whether this very process (pid and start time) still runs."""
    current = start_ticks(pid)
    return current is not None and (ticks is None or current == ticks)


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (Linux)."""
    import ctypes
    import ctypes.util

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG


def guarded(
    argv: Sequence[str], *, on_parent_death: str = "TERM", user: str | None = None
) -> list[str]:
    """`argv` wrapped so the kernel signals it when its parent dies (and, with `user`,
    run as that user: the signal setting survives the switch, unlike through `runuser`)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:  # not Linux util-linux: the registry still cleans up later
        return [*(["runuser", "-u", user, "--"] if user else []), *argv]
    wrapper = [setpriv, "--pdeathsig", on_parent_death]
    if user:
        wrapper += ["--reuid", user, "--regid", user, "--init-groups"]
    return [*wrapper, "--", *argv]


@dataclass
class Run:
    """One test session, `make dev`, or script: its owner and what it launched."""

    kind: str
    path: Path
    owner: int = field(default_factory=os.getpid)
    owner_ticks: int | None = None
    processes: list[dict[str, Any]] = field(default_factory=list)
    dirs: list[str] = field(default_factory=list)

    def _save(self) -> None:
        data = {
            "kind": self.kind,
            "owner": self.owner,
            "owner_ticks": self.owner_ticks,
            "processes": self.processes,
            "dirs": self.dirs,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def track(self, name: str, pid: int, *, data_dir: Path | None = None) -> None:
        """Record a launched process (its own process group if it leads one)."""
        with contextlib.suppress(ProcessLookupError):
            pgid = os.getpgid(pid)
            self.processes.append(
                {
                    "name": name,
                    "pid": pid,
                    "pgid": pgid if pgid == pid else None,
                    "ticks": start_ticks(pid),
                }
            )
        if data_dir is not None and str(data_dir) not in self.dirs:
            self.dirs.append(str(data_dir))
        self._save()

    def untrack(self, pid: int) -> None:
        self.processes = [p for p in self.processes if p["pid"] != pid]
        self._save()

    def end(self) -> None:
        """Stop whatever is still recorded (a normal exit did its own teardown first)."""
        reap(self.processes, [])
        self.processes = []
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


_current: Run | None = None


def begin(kind: str) -> Run:
    """Start this process's run: remove dead runs' leftovers, then record ourselves."""
    global _current
    if _current is not None and _current.owner == os.getpid():
        return _current
    reap_dead_runs()
    pid = os.getpid()
    _current = Run(kind=kind, path=run_dir() / f"{kind}-{pid}.json", owner_ticks=start_ticks(pid))
    _current._save()
    return _current


def current() -> Run:
    """This process's run (a script that did not `begin` one gets one of kind `script`)."""
    return _current if _current is not None and _current.owner == os.getpid() else begin("script")


def reap_dead_runs() -> list[str]:
    """Remove what runs with a dead owner left behind; returns the run files handled."""
    handled: list[str] = []
    for path in sorted(run_dir().glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if alive(int(data.get("owner", 0)), data.get("owner_ticks")):
            continue
        reap(data.get("processes", []), data.get("dirs", []))
        log.warning("removed the leftovers of dead %s run %s", data.get("kind"), path.name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        handled.append(path.name)
    return handled


def reap(processes: Sequence[dict[str, Any]], dirs: Sequence[str], *, grace: float = 10) -> None:
    """SIGTERM each still-running recorded process (its group where it led one), SIGKILL
    what is left after `grace` seconds, then remove the data directories."""
    live = [p for p in processes if alive(int(p["pid"]), p.get("ticks"))]
    for p in live:
        _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(int(p["pid"]), p.get("ticks")) for p in live):
        time.sleep(0.05)
    for p in live:
        if alive(int(p["pid"]), p.get("ticks")):
            _signal(p, signal.SIGKILL)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def _signal(process: dict[str, Any], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process.get("pgid"):
            os.killpg(int(process["pgid"]), sig)
        else:
            os.kill(int(process["pid"]), sig)


def spawn(
    argv: Sequence[str], *, name: str | None = None, on_parent_death: str = "TERM", **popen: Any
) -> subprocess.Popen[Any]:
    """`subprocess.Popen` for a component of this run: in a process group of its own,
    signalled when we die, and recorded so a later start can remove it if we are killed."""
    popen.setdefault("start_new_session", True)
    proc: subprocess.Popen[Any] = subprocess.Popen(
        guarded(argv, on_parent_death=on_parent_death), **popen
    )
    current().track(name or Path(argv[0]).name, proc.pid)
    return proc
