"""Elevate grant worker: process entry point (`elevate-grant-worker`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from elevate_core.access import AccessControl
from elevate_core.app import (
    ServiceContext,
    ServiceSpec,
    add_consumer,
    add_outbox,
    add_purge_hook,
    bootstrap,
    consumer_group,
    listen,
)
from elevate_core.app import create_service_app as _create_service_app
from elevate_core.clock import Clock, SystemClock
from elevate_core.directory.errors import DirectoryError
from elevate_core.errors import ConfigurationError
from elevate_core.events.topics import Topics
from elevate_core.kafka.consumer import Committed, Handler, Wants
from elevate_core.notify import wake
from elevate_core.outbox import Outbox
from elevate_core.policy import Evaluator
from elevate_core.progress import TopicProgress
from elevate_core.settings import Mode, Settings
from fastapi import FastAPI

from elevate_grant_worker import consumers, purge, service
from elevate_grant_worker.aws import IdentityCenter, Triple
from elevate_grant_worker.cuts import Durations, OptedIn
from elevate_grant_worker.recheck import GrantRecheck, policy_recheck
from elevate_grant_worker.settings import GrantWorkerSettings
from elevate_grant_worker.standing import PolicyStanding
from elevate_grant_worker.sweep import ScopeProvider
from elevate_grant_worker.worker import AssignmentWorker

log = logging.getLogger(__name__)

SPEC = ServiceSpec(
    name="grant-worker",
    port=8002,
    title="Elevate grant worker",
    migrations=Path(__file__).parent / "migrations",
)

StandingProvider = Callable[[], Iterable[Triple]]
UserNames = Callable[[str], Awaitable[str | None]]


STOPS_CONSUMER = "grant-worker.requests"
HISTORY_CONSUMER = "grant-worker.history"


def _consumer(
    ctx: ServiceContext,
    settings: GrantWorkerSettings,
    name: str,
    topic: Topics,
    handler: Handler,
    wants: Wants,
    *,
    on_committed: Committed | None = None,
) -> str:
    consumer = add_consumer(
        ctx,
        name=name,
        topics=[topic],
        handler=handler,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        on_committed=on_committed,
        wants=wants,
    )
    return consumer.config.group_id or consumer.config.name


def _never_unchecked(settings: GrantWorkerSettings, recheck: GrantRecheck | None) -> None:
    """Without the re-check an approval is served as it says: tests of other behaviour."""
    if recheck is None and settings.mode is not Mode.TEST:
        raise ConfigurationError("grant-worker serves no approval without its re-check")


def build(
    ctx: ServiceContext,
    settings: GrantWorkerSettings,
    *,
    clock: Clock | None = None,
    standing: StandingProvider | None = None,
    user_names: UserNames | None = None,
    scope: ScopeProvider | None = None,
    recheck: GrantRecheck | None = None,
    cut_sessions: OptedIn | None = None,
    session_durations: Durations | None = None,
) -> AssignmentWorker:
    """The composition root: grant-worker's consumers, timers and assignment worker onto
    `ctx`, all on the same injected clock; only tests may leave out the re-check."""
    _never_unchecked(settings, recheck)
    clock = clock or SystemClock()
    outbox = add_outbox(ctx)
    listen(ctx, service.WORK_CHANNEL)  # decisions and stops another replica recorded
    progress = _stops_consumer(ctx, settings, clock)
    _consumer(
        ctx,
        settings,
        "grant-worker.decisions",
        Topics.DECISIONS,
        consumers.decisions_handler(outbox=outbox, clock=clock, gate=progress.end_offsets),
        consumers.wants_decision,
    )
    history_group = _consumer(
        ctx,
        settings,
        HISTORY_CONSUMER,
        Topics.GRANTS,
        consumers.history_handler(clock=clock),
        consumers.wants_history,
    )
    history = _progress(settings, Topics.GRANTS, history_group)
    worker = AssignmentWorker(
        ctx.db,
        aws=IdentityCenter(settings),
        outbox=outbox,
        settings=settings,
        clock=clock,
        progress=progress,
        history=history,
        user_names=user_names,
        scope=scope,
        recheck=recheck,
        cut_sessions=cut_sessions,
        session_durations=session_durations,
    )
    ctx.workers.append(worker)
    add_purge_hook(ctx, purge.TABLE, purge.purge_ended_grants)  # grants over for good
    add_purge_hook(ctx, purge.CUTS_TABLE, purge.purge_settled_cuts)
    if standing is not None:
        ctx.startup.append(_standing_recorder(ctx, standing, outbox, clock))
    return worker


def _stops_consumer(
    ctx: ServiceContext, settings: GrantWorkerSettings, clock: Clock
) -> TopicProgress:
    """The requests consumer (stops, revokes) and the replay gate its commits open."""
    progress = _progress(settings, Topics.REQUESTS, consumer_group(settings, STOPS_CONSUMER))

    def stops_committed(tp: TopicPartition, next_offset: int) -> None:
        # Its commits open replay gates: known here without asking the broker, and the
        # worker is woken for the grants waiting on them.
        progress.observed(tp, next_offset)
        wake(service.WORK_CHANNEL)

    _consumer(
        ctx,
        settings,
        STOPS_CONSUMER,
        Topics.REQUESTS,
        consumers.requests_handler(clock=clock),
        consumers.wants_stop,
        on_committed=stops_committed,
    )
    return progress


def _progress(settings: GrantWorkerSettings, topic: Topics, group: str) -> TopicProgress:
    return TopicProgress(kafka=settings.kafka, topic=settings.topic(topic), group=group)


def _standing_recorder(
    ctx: ServiceContext, provider: StandingProvider, outbox: Outbox, clock: Clock
) -> Callable[[], Coroutine[Any, Any, None]]:
    """At start: record the standing assignments the caller names (policy standing)."""

    async def record_policy_standing() -> None:
        async with ctx.db.transaction() as session:
            for triple in provider():
                await service.record_standing(
                    session, triple, source="policy", outbox=outbox, now=clock.now()
                )

    return record_policy_standing


class _PolicyScope:
    """The (account id, permission set ARN) pairs the policy makes requestable. Asked before
    every grant is served (the re-check) and by every sweep: recomputed only when the
    policy, the org snapshot or a permission set's ARN changed. Do not modify the set."""

    def __init__(self, access: AccessControl) -> None:
        self.access = access
        self._evaluator: Evaluator | None = None
        self._accounts: dict[str, list[str]] = {}  # permission set name -> account ids
        self._key: tuple[tuple[str, str], ...] = ()
        self._pairs: set[tuple[str, str]] = set()

    async def _arn(self, name: str) -> str:
        try:
            return (await self.access.directory.get_permission_set(name)).arn
        except DirectoryError as exc:
            if exc.retryable:
                raise
            log.warning("managed scope: permission set %r unknown: %s", name, exc)
            return ""

    async def __call__(self) -> set[tuple[str, str]]:
        evaluator = await self.access.evaluator()
        if evaluator is not self._evaluator:
            accounts: dict[str, list[str]] = {}
            for account_id, name in sorted(evaluator.managed_scope()):
                accounts.setdefault(name, []).append(account_id)
            self._evaluator, self._accounts, self._key = evaluator, accounts, ()
        key = tuple([(name, await self._arn(name)) for name in self._accounts])
        if key != self._key:
            self._pairs = {
                (account_id, arn) for name, arn in key if arn for account_id in self._accounts[name]
            }
            self._key = key
        return self._pairs


def policy_scope(access: AccessControl) -> ScopeProvider:
    """The (account id, permission set ARN) pairs the policy makes requestable."""
    return _PolicyScope(access)


def create_app(settings: Settings, *, access: AccessControl | None = None) -> FastAPI:
    assert isinstance(settings, GrantWorkerSettings)
    ctx = bootstrap(settings)
    # The policy's standing list: never removed, whatever grant ends on top of it.
    access = access or AccessControl.from_settings(settings)
    access.load()
    scope = policy_scope(access)
    worker = build(
        ctx,
        settings,
        user_names=access.directory.user_name_of,
        scope=scope,
        recheck=policy_recheck(access, scope, horizon=settings.request_horizon),
        # Read at each cut: a policy reload that opts a permission set out stops its cuts.
        cut_sessions=lambda name: name is not None and name in access.policy.cut_sessions,
        session_durations=_durations(access),
    )
    ctx.workers += [
        access,
        PolicyStanding(ctx.db, access, outbox=worker.outbox, clock=SystemClock()),
    ]
    return _create_service_app(ctx, title=SPEC.title, migrations=SPEC.migrations)


def _durations(access: AccessControl) -> Durations:
    async def duration(name: str) -> str | None:
        return (await access.directory.get_permission_set(name)).session_duration

    return duration


def run() -> None:
    SPEC.run(create_app, GrantWorkerSettings)


if __name__ == "__main__":
    run()
