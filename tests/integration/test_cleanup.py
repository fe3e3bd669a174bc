"""The local stack cleans up after itself: a test session stopped with SIGTERM (a CI
timeout, `timeout(1)`, an IDE's stop button) or killed with SIGKILL leaves no Kafka or
PostgreSQL behind, and a later start removes what a dead run left — never what a live
one (a `make dev` beside `make test`) is running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elevate_local import runs

ROOT = Path(__file__).resolve().parents[2]

INNER = """
import json, os, time
from pathlib import Path

def test_hold_the_stack(kafka, postgres):
    Path(os.environ["PIDS_FILE"]).write_text(json.dumps({
        "kafka": kafka.process.pid,
        "postgres": postgres.process.pid,
        "kafka_dir": str(kafka.data_dir),
    }))
    time.sleep(600)
"""


def _start_inner_session(tmp_path: Path) -> tuple[subprocess.Popen[bytes], dict[str, object]]:
    """A real pytest session of the project's own, holding its Kafka and PostgreSQL."""
    test = tmp_path / "inner" / "test_inner.py"
    test.parent.mkdir()
    test.write_text(INNER)
    pids_file = tmp_path / "pids.json"
    # Not through runs.spawn: this process must be able to die without us noticing.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "tests.conftest",
            "-p",
            "no:cacheprovider",
            f"--rootdir={ROOT}",
            "-c",
            str(ROOT / "pyproject.toml"),
            str(test),
        ],
        cwd=ROOT,
        env={**os.environ, "PIDS_FILE": str(pids_file)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not pids_file.exists():
        assert proc.poll() is None, "the inner session ended before starting its stack"
        assert time.monotonic() < deadline, "the inner session did not start its stack"
        time.sleep(0.2)
    return proc, json.loads(pids_file.read_text())


def _gone(pids: list[int], within: float = 20.0) -> list[int]:
    """The pids still alive after `within` seconds (waiting for an outcome, not a speed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(runs.alive(pid, None) for pid in pids):
            return []
        time.sleep(0.1)
    return [pid for pid in pids if runs.alive(pid, None)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_test_session_leaves_no_component_behind(
    tmp_path: Path, sig: signal.Signals
) -> None:
    proc, held = _start_inner_session(tmp_path)
    components = [int(held["kafka"]), int(held["postgres"])]  # type: ignore[call-overload]
    assert all(runs.alive(pid, None) for pid in components)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert _gone(components) == [], f"still running after {sig.name}"
    if sig is signal.SIGTERM:  # a normal teardown: its run record is gone too
        assert not (runs.run_dir() / f"test-{proc.pid}.json").exists()
    else:  # killed: the next start removes the record and the data it listed
        assert (runs.run_dir() / f"test-{proc.pid}.json").exists()
        runs.reap_dead_runs()
        assert not (runs.run_dir() / f"test-{proc.pid}.json").exists()
        assert not Path(str(held["kafka_dir"])).exists()


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "600"], start_new_session=True)


def test_the_next_start_removes_a_dead_runs_leftovers_but_never_a_live_runs(
    tmp_path: Path,
) -> None:
    """As if the kernel's parent-death signal had not reached them: only the registry."""
    live_owner, live_child = _sleeper(), _sleeper()  # a `make dev` that is running
    dead_owner, orphan = _sleeper(), _sleeper()  # a run whose owner was killed
    leftover = tmp_path / "leftover-data"
    leftover.mkdir()
    try:
        for owner, child, kind, dirs in (
            (live_owner, live_child, "dev", []),
            (dead_owner, orphan, "test", [leftover]),
        ):
            run = runs.Run(
                kind=kind,
                path=runs.run_dir() / f"{kind}-{owner.pid}.json",
                owner=owner.pid,
                owner_ticks=runs.start_ticks(owner.pid),
            )
            run.track("component", child.pid, data_dir=dirs[0] if dirs else None)
        dead_owner.kill()
        dead_owner.wait()

        handled = runs.reap_dead_runs()

        assert handled == [f"test-{dead_owner.pid}.json"]
        assert orphan.wait(timeout=30) is not None
        assert not leftover.exists()
        assert live_child.poll() is None, "a live run's component was touched"
        assert (runs.run_dir() / f"dev-{live_owner.pid}.json").exists()
    finally:
        for p in (live_owner, live_child, dead_owner, orphan):
            p.kill()
            p.wait()
        (runs.run_dir() / f"dev-{live_owner.pid}.json").unlink(missing_ok=True)


def test_a_recycled_pid_is_never_killed() -> None:
    stranger = _sleeper()
    try:
        record = {"name": "kafka", "pid": stranger.pid, "pgid": stranger.pid, "ticks": 1}
        runs.reap([record], [])  # the recorded start time is not this process's
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
