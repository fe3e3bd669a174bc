"""Hot reload: content changes (also ConfigMap symlink swaps) reload; bad files never win."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from pathlib import Path

import pytest
from elevate_core.clock import ManualClock
from elevate_core.policy import (
    Policy,
    PolicyFileError,
    PolicyValidationError,
    PolicyWatcher,
    policy_version,
)
from prometheus_client import CollectorRegistry

GOOD = """\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - {{name: auto, auto_approve: true}}
eligibility:
  - {{name: r, principals: {{groups: [g]}}, accounts: ["*"], permission_sets: [X],
     max_duration: {duration}, approval: auto}}
"""
BAD = GOOD.format(duration="4 hours")


def good(duration: str = "1h") -> str:
    return GOOD.format(duration=duration)


def metric(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    value: float | None = registry.get_sample_value(name, labels)
    return value


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def test_reload_cycle_keeps_last_good(
    tmp_path: Path,
    registry: CollectorRegistry,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(good("1h"))
    seen: list[Policy] = []
    watcher = PolicyWatcher(path, registry=registry, clock=clock, on_reload=seen.append)
    first = watcher.load()
    assert first.version == policy_version(path.read_bytes())
    assert watcher.loaded_at == clock.now()
    assert metric(registry, "elevate_policy_version_info", version=first.version) == 1
    assert metric(registry, "elevate_policy_loaded_timestamp_seconds") == clock.now().timestamp()
    assert watcher.poll() == "unchanged"

    clock.advance(timedelta(minutes=1))
    path.write_text(good("2h"))
    assert watcher.poll() == "reloaded"
    second = watcher.policy
    assert second.version != first.version
    assert second.eligibility_rules[0].max_duration == timedelta(hours=2)
    assert seen == [first, second]
    assert metric(registry, "elevate_policy_reloads_total") == 1
    assert metric(registry, "elevate_policy_version_info", version=first.version) is None
    assert metric(registry, "elevate_policy_version_info", version=second.version) == 1

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="elevate.policy"):
        path.write_text(BAD)
        assert watcher.poll() == "failed"
        assert watcher.poll() == "failed"  # same bad content: reported once
    assert watcher.policy is second
    assert watcher.failing
    assert isinstance(watcher.last_error, PolicyValidationError)
    assert metric(registry, "elevate_policy_reload_failing") == 1
    assert metric(registry, "elevate_policy_reload_failures_total") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"keeping version {second.version} in force" in errors[0]
    assert f"{path}:7: eligibility[0].max_duration: invalid duration '4 hours'" in errors[0]

    path.write_text(good("3h"))
    assert watcher.poll() == "reloaded"
    assert not watcher.failing
    assert metric(registry, "elevate_policy_reload_failing") == 0
    assert watcher.policy.eligibility_rules[0].max_duration == timedelta(hours=3)
    assert len(seen) == 3


def test_reverting_a_bad_edit_clears_the_failure(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(good())
    watcher = PolicyWatcher(path, registry=registry)
    first = watcher.load()
    path.write_text(BAD)
    assert watcher.poll() == "failed"
    path.write_text(good())
    assert watcher.poll() == "unchanged"
    assert watcher.policy is first
    assert not watcher.failing
    assert metric(registry, "elevate_policy_reload_failing") == 0
    assert metric(registry, "elevate_policy_reloads_total") == 0


def _configmap(directory: Path, generation: str, text: str, mtime: float) -> None:
    """What the kubelet does: write a new timestamped dir, then swap the ..data symlink."""
    target = directory / f"..{generation}"
    target.mkdir()
    (target / "policy.yaml").write_text(text)
    os.utime(target / "policy.yaml", (mtime, mtime))
    temp = directory / "..data_tmp"
    temp.symlink_to(target.name)
    os.replace(temp, directory / "..data")


def test_configmap_symlink_swap_is_detected_by_content(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    mount = tmp_path / "config"
    mount.mkdir()
    _configmap(mount, "2026_01_01_00_00_00.1", good("1h"), mtime=1_000_000)
    (mount / "policy.yaml").symlink_to("..data/policy.yaml")
    watcher = PolicyWatcher(mount / "policy.yaml", registry=registry)
    watcher.load()
    # same mtime, same size, different content: only the hash can tell
    _configmap(mount, "2026_01_01_00_01_00.2", good("2h"), mtime=1_000_000)
    assert watcher.poll() == "reloaded"
    assert watcher.policy.eligibility_rules[0].max_duration == timedelta(hours=2)
    _configmap(mount, "2026_01_01_00_02_00.3", BAD, mtime=1_000_000)
    assert watcher.poll() == "failed"
    assert watcher.policy.eligibility_rules[0].max_duration == timedelta(hours=2)


def test_missing_file_keeps_policy_and_is_retryable(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(good())
    watcher = PolicyWatcher(path, registry=registry)
    first = watcher.load()
    path.unlink()
    assert watcher.poll() == "failed"
    assert watcher.policy is first
    assert isinstance(watcher.last_error, PolicyFileError)
    assert watcher.last_error.retryable
    path.write_text(good())
    assert watcher.poll() == "unchanged"
    assert not watcher.failing


def test_start_refuses_a_bad_or_missing_file(tmp_path: Path, registry: CollectorRegistry) -> None:
    path = tmp_path / "policy.yaml"
    watcher = PolicyWatcher(path, registry=registry)
    with pytest.raises(PolicyFileError):
        watcher.load()
    path.write_text(BAD)
    with pytest.raises(PolicyValidationError):
        watcher.load()
    with pytest.raises(Exception, match="no policy loaded"):
        _ = watcher.policy


def test_reachability_warnings_are_logged_on_load(
    tmp_path: Path,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("""\
schema_version: 1
auditor_groups: [auditors]
approval_rules:
  - {name: two, approver_groups: [leads], required_approvals: 2}
eligibility:
  - {name: r, principals: {groups: [g]}, accounts: ["*"], permission_sets: [X],
     max_duration: 1h, approval: two}
""")
    watcher = PolicyWatcher(
        path, registry=registry, group_members=lambda: {"leads": ["bob"], "g": ["alice"]}
    )
    with caplog.at_level(logging.WARNING, logger="elevate.policy"):
        policy = watcher.load()
    assert len(policy.warnings) == 1
    assert any("have only 1 distinct member(s)" in r.getMessage() for r in caplog.records)


async def test_run_polls_until_stopped(tmp_path: Path, registry: CollectorRegistry) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(good("1h"))
    watcher = PolicyWatcher(path, registry=registry, interval=0.01)
    watcher.load()
    stop = asyncio.Event()
    task = asyncio.create_task(watcher.run(stop))
    path.write_text(good("5h"))
    for _ in range(500):
        if watcher.policy.eligibility_rules[0].max_duration == timedelta(hours=5):
            break
        await asyncio.sleep(0.01)
    assert watcher.policy.eligibility_rules[0].max_duration == timedelta(hours=5)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
