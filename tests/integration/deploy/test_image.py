"""The container image, rehearsed without a container engine: the Dockerfile's own build
steps (tests/dockerfile.py reads them) install into a fresh directory standing for the
image, then every service starts from it against the test stack — as the image's numeric
non-root user, with the whole image read-only to it and only a temporary directory
writable, as under Kubernetes' readOnlyRootFilesystem — until `/readyz` answers and the
image's HEALTHCHECK passes. A file the image lacks, or a write at run time, fails here.

The user may read (not write) outside the image: the stack's secret files and this
machine's Python, which stands for the base image's (CAP_DAC_READ_SEARCH only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from elevate_core.settings import TEST_MODE_OPT_IN
from elevate_local.kafka import KafkaBroker
from elevate_local.postgres import PostgresCluster

from tests.dockerfile import Image, rehearse
from tests.stack import ROOT, Launch, start_stack

SERVICES = ("request_api", "approval", "grant_worker", "audit_ingest", "notifier")


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    # Outside pytest's temporary directories (mode 0700): the image's user must reach it
    # by ordinary permissions, as access(2) checks without capabilities.
    where = Path(tempfile.mkdtemp(prefix="elevate-image-"))
    where.chmod(0o755)
    try:
        yield rehearse(ROOT / "Dockerfile", where / "root")
    finally:
        shutil.rmtree(where)


def as_image_user(image: Image, argv: list[str]) -> list[str]:
    uid, gid = image.user
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={gid}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        "--pdeathsig=TERM",
        "--",
        *image.command(argv),
    ]


def writable_tmp(image: Image, where: Path) -> Path:
    """The one writable directory (an emptyDir at /tmp in the chart)."""
    where.mkdir()
    os.chown(where, *image.user)
    return where


def test_the_image_holds_the_services_and_nothing_else(image: Image) -> None:
    uid, _ = image.user
    assert uid != 0
    assert image.exposed == [8000]
    assert image.cmd == ["elevate-request-api"]
    for name in SERVICES:
        image.command([f"elevate-{name.replace('_', '-')}"])  # on the image's PATH
    site = next(image.root.glob("opt/elevate/venv/lib/python3.11/site-packages"))
    installed = {p.name.split("-")[0].lower() for p in site.glob("*.dist-info")}
    assert {"elevate_core", "elevate_request_api", "elevate_notifier"} <= installed
    # No sources, no build tools, none of the local stack's or tests' packages.
    assert not (image.root / "src").exists()
    assert not (image.root / "opt/uv").exists()
    assert installed.isdisjoint({"moto", "pytest", "elevate_local", "uv", "oidc_provider_mock"})
    # No editable installs pointing back at the build's sources.
    assert not [p for p in site.glob("*.pth") if "/src/" in p.read_text()]


def test_the_image_is_read_only_to_its_user(image: Image, tmp_path: Path) -> None:
    """The control the start test relies on: the image's user cannot write the image."""
    target = image.workdir / "written-at-run-time"
    denied = subprocess.run(
        [*as_image_user(image, ["python"]), "-c", f"open({str(target)!r}, 'w')"],
        capture_output=True,
        text=True,
    )
    assert denied.returncode != 0
    assert "Permission denied" in denied.stderr
    tmp = writable_tmp(image, tmp_path / "tmp")
    allowed = subprocess.run(
        [*as_image_user(image, ["python"]), "-c", f"open({str(tmp / 'x')!r}, 'w')"],
        capture_output=True,
        text=True,
    )
    assert allowed.returncode == 0, allowed.stderr


async def test_every_service_starts_from_the_read_only_image(
    image: Image,
    kafka: KafkaBroker,
    postgres: PostgresCluster,
    moto_endpoint: str,
    catalog: str,
    tmp_path: Path,
) -> None:
    tmp = writable_tmp(image, tmp_path / "tmp")

    def launch(name: str) -> Launch:
        command = f"elevate-{name.replace('_', '-')}"
        # the stack runs in test mode, which only starts under the harness
        env = {**image.env, "HOME": str(tmp), "TMPDIR": str(tmp), TEST_MODE_OPT_IN: "1"}
        return Launch(as_image_user(image, [command]), image.workdir, env)

    before = _tree(image.root)
    async with start_stack(
        kafka, postgres, moto_endpoint, catalog, tmp_path, env={"notifier": {}}, launcher=launch
    ) as stack:
        assert set(stack.processes) == set(SERVICES)
        for name, process in stack.processes.items():
            check = subprocess.run(
                [*as_image_user(image, image.healthcheck)],
                env={**image.env, "ELEVATE_HTTP_PORT": str(process.port)},
                capture_output=True,
                text=True,
            )
            assert check.returncode == 0, (name, check.stdout, check.stderr)
    assert _tree(image.root) == before  # nothing was written into the image


def _tree(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))
