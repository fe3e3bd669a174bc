"""request-api's use cases as plain functions (keyword-only arguments).

Each writes the events it implies in the caller's transaction and folds them into the
read model at once (store.record), so a request is accepted even while Kafka is away
(the outbox publishes it later) and the requester sees it immediately. Refusals are
domain errors (domain.py); api.py maps them to problems.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from typing import Literal

from elevate_core.db import insert_for
from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
    UserNotFoundError,
)
from elevate_core.directory.models import Account, PermissionSet, User
from elevate_core.events.base import Event
from elevate_core.events.models import (
    DecisionSubmitted,
    Person,
    RequestCancelled,
    RequestSubmitted,
    RevokeRequested,
)
from elevate_core.policy import Policy, Terms
from elevate_core.policy.approvals import Requester, may_decide
from elevate_core.policy.recheck import INELIGIBLE, Found, Limits, RequestFacts, check_start, judge
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api import store
from elevate_request_api.deps import ApiState
from elevate_request_api.domain import (
    CANCELLABLE,
    REVOCABLE,
    DirectoryUnavailableError,
    InvalidRequestError,
    NotAllowedError,
    NotEligibleError,
    RequestNotFoundError,
    StateConflictError,
    Status,
)
from elevate_request_api.models import AccessRequest, IdempotencyKey
from elevate_request_api.schemas import RequestCreate


def person(user: User) -> Person:
    return Person(user_name=user.user_name, user_id=user.user_id, email=user.email)


def _body_hash(body: RequestCreate) -> str:
    return hashlib.sha256(
        json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


async def _claim_idempotency_key(
    session: AsyncSession,
    *,
    user: User,
    key: str,
    body: RequestCreate,
    request_id: uuid.UUID,
    now: datetime,
) -> uuid.UUID | None:
    """Record the key; return the earlier request's id if the key was already used."""
    values = {
        "user_name": user.user_name,
        "key": key,
        "body_hash": _body_hash(body),
        "request_id": request_id,
        "created_at": now,
    }
    result = await session.execute(
        insert_for(session, IdempotencyKey).values(**values).on_conflict_do_nothing()
    )
    if getattr(result, "rowcount", 0):
        return None
    earlier = (
        await session.execute(
            select(IdempotencyKey).where(
                IdempotencyKey.user_name == user.user_name, IdempotencyKey.key == key
            )
        )
    ).scalar_one()
    if earlier.body_hash != values["body_hash"]:
        raise InvalidRequestError("this Idempotency-Key was used with a different request body")
    return earlier.request_id


async def publish(
    session: AsyncSession, state: ApiState, event: Event, *, request_id: uuid.UUID, now: datetime
) -> AccessRequest:
    """Queue the event and fold it into the read model in the same transaction (the
    caller holds the request's lock, or the request is new and nobody else knows it)."""
    envelope = await state.outbox.add_envelope(session, event, subject=str(request_id), time=now)
    row = await store.fold_in(session, envelope, request_id)
    assert row is not None  # the request is known: it was checked or just submitted
    return row


def _limits(state: ApiState) -> Limits:
    return Limits(
        horizon=state.settings.request_horizon,
        start_tolerance=timedelta(seconds=state.settings.start_tolerance_seconds),
    )


def _check_start(state: ApiState, start: datetime, now: datetime) -> None:
    problem = check_start(start, submitted_at=now, limits=_limits(state))
    if problem is not None:
        raise InvalidRequestError(problem.message)


def _not_eligible(body: RequestCreate) -> NotEligibleError:
    """One answer for "no such account", "not for you" and "the management account":
    it names only what the caller sent, so it tells them nothing of accounts they
    cannot see (names, existence, which one is the management account)."""
    kind = "break-glass access to" if body.break_glass else "access to"
    return NotEligibleError(
        f"you are not eligible for {kind} {body.permission_set} on account {body.account_id}"
    )


async def _target(state: ApiState, body: RequestCreate) -> tuple[Account, PermissionSet]:
    try:
        account = await state.access.directory.get_account(body.account_id)
        permission_set = await state.access.directory.get_permission_set(body.permission_set)
    except (AccountNotFoundError, PermissionSetNotFoundError):
        raise _not_eligible(body) from None
    except DirectoryError as exc:
        raise DirectoryUnavailableError("the AWS directory is unavailable; try again") from exc
    return account, permission_set


def _terms(
    state: ApiState,
    user: User,
    account: Account,
    permission_set: PermissionSet,
    body: RequestCreate,
    *,
    start: datetime,
    now: datetime,
) -> Terms:
    """The request's terms, judged as approval and grant-worker re-check it later."""
    request = RequestFacts(
        user_name=user.user_name,
        user_id=user.user_id,
        account_id=account.id,
        permission_set_name=permission_set.name,
        permission_set_arn=permission_set.arn,
        start=start,
        end=start + body.duration,
        ticket=body.ticket,
        break_glass=body.break_glass,
        submitted_at=now,
    )
    verdict = judge(
        request,
        Found(user, account, permission_set),
        policy=state.access.policy,
        limits=_limits(state),
    )
    if isinstance(verdict, Terms):
        return verdict
    if verdict.code in INELIGIBLE:
        raise _not_eligible(body)
    messages = [p.message for p in verdict.problems]
    raise InvalidRequestError("; ".join(messages), errors=messages)


async def submit(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    body: RequestCreate,
    idempotency_key: str | None,
    now: datetime,
) -> tuple[AccessRequest, bool]:
    """Validate and store a request; returns (request, created)."""
    start = body.start or now
    _check_start(state, start, now)
    account, permission_set = await _target(state, body)
    terms = _terms(state, user, account, permission_set, body, start=start, now=now)
    request_id = uuid.uuid4()
    if idempotency_key:
        earlier = await _claim_idempotency_key(
            session, user=user, key=idempotency_key, body=body, request_id=request_id, now=now
        )
        if earlier is not None:
            row = await session.get(AccessRequest, earlier)
            assert row is not None
            return row, False
    event = RequestSubmitted(
        request_id=request_id,
        requester=person(user),
        account_id=account.id,
        account_name=account.name,
        permission_set_name=permission_set.name,
        permission_set_arn=permission_set.arn,
        start=start,
        end=start + body.duration,
        justification=body.justification,
        ticket=body.ticket,
        matched_rule=terms.rule,
        policy_version=terms.policy_version,
        break_glass=body.break_glass,
        ou_path=account.ou_path_names,
        approval_rule=terms.approval.name,
        approver_groups=tuple(terms.approval.approver_groups),
        required_approvals=terms.approval.needed,
    )
    return await publish(session, state, event, request_id=request_id, now=now), True


def roles(policy: Policy, user: User) -> list[Literal["requester", "approver", "auditor", "admin"]]:
    found: list[Literal["requester", "approver", "auditor", "admin"]] = ["requester"]
    if any(set(rule.approver_groups) & user.groups for rule in policy.approval_rules.values()):
        found.append("approver")
    if policy.is_auditor(user):
        found.append("auditor")
    if policy.is_admin(user):
        found.append("admin")
    return found


def may_view(policy: Policy, user: User, row: AccessRequest) -> bool:
    # The requester is their user id: a name differing only by case is someone else.
    return (
        row.requester_user_id == user.user_id
        or bool(set(row.approver_groups) & user.groups)
        or user.user_id in (row.approver_ids or ())
        or policy.is_auditor(user)
        or policy.is_admin(user)
    )


async def load_visible(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    request_id: uuid.UUID,
    for_update: bool = False,
) -> AccessRequest:
    if for_update:
        row = await store.lock(session, request_id)
    else:
        row = await session.get(AccessRequest, request_id)
    if row is None or not may_view(state.access.policy, user, row):
        raise RequestNotFoundError(f"no request {request_id}")  # do not reveal others'
    return row


async def cancel(
    *, session: AsyncSession, state: ApiState, user: User, request_id: uuid.UUID, now: datetime
) -> AccessRequest:
    row = await load_visible(
        session=session, state=state, user=user, request_id=request_id, for_update=True
    )
    if row.requester_user_id != user.user_id:
        raise NotAllowedError("only the requester may cancel a request")
    if row.status not in CANCELLABLE:
        raise StateConflictError(
            f"a {row.status} request cannot be cancelled"
            + ("; revoke it instead" if row.status in REVOCABLE else "")
        )
    event = RequestCancelled(request_id=row.id, cancelled_by=person(user))
    return await publish(session, state, event, request_id=row.id, now=now)


async def requester_of(state: ApiState, row: AccessRequest) -> Requester:
    """The row's requester with the person key the directory has for them now, so their
    other accounts cannot decide for them; unknown, or the name now someone else's: no
    key (compared by user id only)."""
    try:
        found = await state.access.directory.get_user(row.requester_user_name)
    except UserNotFoundError:
        found = None
    except DirectoryError as exc:
        raise DirectoryUnavailableError("the AWS directory is unavailable; try again") from exc
    same = found is not None and found.user_id == row.requester_user_id
    key = found.person_key if found is not None and same else None
    return Requester(row.requester_user_name, row.requester_user_id, key)


async def decide(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    request_id: uuid.UUID,
    decision: Literal["approve", "reject"],
    comment: str | None,
    now: datetime,
) -> AccessRequest:
    # A request the caller may not see is not found, as everywhere (its approval rule
    # and state stay unsaid); one they see is decided by the policy alone (403 why not).
    row = await load_visible(
        session=session, state=state, user=user, request_id=request_id, for_update=True
    )
    requester = await requester_of(state, row)
    policy = state.access.policy
    rule = policy.approval_rules.get(row.approval_rule)
    if rule is None:
        raise StateConflictError(f"approval rule {row.approval_rule!r} is no longer in the policy")
    check = may_decide(rule, requester=requester, decider=user)
    if not check:
        raise NotAllowedError(check.reason)
    if row.status != Status.PENDING:
        raise StateConflictError(f"the request is already {row.status}")
    if await store.decided_by(session, row.id, user.user_id):
        # A repeat (a second click, a retried call) says nothing new: nothing is published.
        raise StateConflictError("you have already decided this request")
    event = DecisionSubmitted(
        request_id=row.id,
        approver=person(user),
        decision=decision,
        comment=comment,
        policy_version=policy.version,
    )
    return await publish(session, state, event, request_id=row.id, now=now)


def may_end(policy: Policy, user: User, row: AccessRequest) -> bool:
    """Who may end a request's access: its requester, an approver of it, an admin."""
    return (
        row.requester_user_id == user.user_id
        or user.user_id in (row.approver_ids or ())
        or bool(set(row.approver_groups) & user.groups)
        or policy.is_admin(user)
    )


async def revoke(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    request_id: uuid.UUID,
    comment: str | None,
    now: datetime,
) -> AccessRequest:
    row = await load_visible(
        session=session, state=state, user=user, request_id=request_id, for_update=True
    )
    if not may_end(state.access.policy, user, row):
        raise NotAllowedError("only the requester, an approver of it or an admin may revoke it")
    if row.status not in REVOCABLE:
        raise StateConflictError(f"a {row.status} request has no access to revoke")
    event = RevokeRequested(request_id=row.id, requested_by=person(user), reason=comment)
    return await publish(session, state, event, request_id=row.id, now=now)
