"""approval as its own process, wired exactly as `elevate_approval.main` wires it but on a
clock `--clock-offset` seconds ahead of the wall clock: a crash test puts a process past
a deadline by starting it there, instead of waiting for the deadline to come.

python -m tests.integration.approval.service_process [--clock-offset SECONDS]
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from elevate_approval.main import SPEC, build
from elevate_approval.settings import ApprovalSettings
from elevate_core.app import bootstrap, create_service_app
from elevate_core.settings import Settings
from fastapi import FastAPI


class OffsetClock:
    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clock-offset", type=float, default=0.0)
    clock = OffsetClock(timedelta(seconds=parser.parse_args().clock_offset))

    def create_app(settings: Settings) -> FastAPI:
        ctx = bootstrap(settings)
        build(ctx, clock=clock)
        return create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)

    SPEC.run(create_app, ApprovalSettings)


if __name__ == "__main__":
    main()
