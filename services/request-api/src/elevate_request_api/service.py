"""request-api's use cases as plain functions (keyword-only arguments).

Each writes its state change and the events it implies in the caller's transaction,
so a request is accepted even while Kafka is away (the outbox publishes it later).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timedelta
from typing import Literal

from elevate_core.directory.errors import (
    AccountNotFoundError,
    DirectoryError,
    PermissionSetNotFoundError,
)
from elevate_core.directory.models import User
from elevate_core.events.models import (
    DecisionSubmitted,
    Person,
    RequestCancelled,
    RequestSubmitted,
    RevokeRequested,
)
from elevate_core.notify import mark
from elevate_core.policy import Policy
from elevate_core.policy.approvals import Requester, may_decide
from elevate_core.problems import Problem
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from elevate_request_api.deps import ApiState
from elevate_request_api.models import AccessRequest, IdempotencyKey, TimelineEntry
from elevate_request_api.schemas import EligibilityItem, RequestCreate
from elevate_request_api.status import CANCELLABLE, REVOCABLE, Status, after_event

STATUS_CHANNEL = "elevate_request_status"


def person(user: User) -> Person:
    return Person(user_name=user.user_name, user_id=user.user_id, email=user.email)


async def eligibility(*, state: ApiState, user: User) -> list[EligibilityItem]:
    evaluator = await state.access.evaluator()
    items = []
    for break_glass in (False, True):
        for entry in evaluator.eligibility(user, break_glass=break_glass):
            terms = entry.terms
            items.append(
                EligibilityItem(
                    account_id=entry.account.id,
                    account_name=entry.account.name,
                    ou_path=entry.account.ou_path_names,
                    permission_set=entry.permission_set,
                    max_duration_minutes=int(terms.max_duration.total_seconds() // 60),
                    approval_needed=terms.approval.needed > 0 and not break_glass,
                    approval_rule=terms.approval.name,
                    required_approvals=terms.approval.needed,
                    ticket_required=terms.ticket_required,
                    break_glass=break_glass,
                )
            )
    return items


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
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    result = await session.execute(insert(IdempotencyKey).values(**values).on_conflict_do_nothing())
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
        raise Problem(422, "this Idempotency-Key was used with a different request body")
    return earlier.request_id


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
    tolerance = timedelta(seconds=state.settings.start_tolerance_seconds)
    if start < now - tolerance:
        raise Problem(422, "start: must not be in the past")
    if start > now + timedelta(days=state.settings.request_horizon_days):
        raise Problem(422, f"start: must be within {state.settings.request_horizon_days} days")
    try:
        account = await state.access.directory.get_account(body.account_id)
        permission_set = await state.access.directory.get_permission_set(body.permission_set)
    except AccountNotFoundError:
        raise Problem(422, f"account_id: unknown account {body.account_id}") from None
    except PermissionSetNotFoundError:
        raise Problem(
            422, f"permission_set: unknown permission set {body.permission_set!r}"
        ) from None
    except DirectoryError as exc:
        raise Problem(
            503, "the AWS directory is unavailable; try again", headers={"Retry-After": "5"}
        ) from exc
    evaluator = await state.access.evaluator()
    terms = evaluator.terms(user, account.id, permission_set.name, break_glass=body.break_glass)
    if terms is None:
        kind = "break-glass access to" if body.break_glass else "access to"
        raise Problem(
            403,
            f"{user.user_name} is not eligible for {kind} "
            f"{permission_set.name} on {account.name} ({account.id})",
        )
    problems = terms.problems(duration=body.duration, ticket=body.ticket)
    if problems:
        raise Problem(422, "; ".join(problems), errors=list(problems))

    request_id = uuid.uuid4()
    if idempotency_key:
        earlier = await _claim_idempotency_key(
            session, user=user, key=idempotency_key, body=body, request_id=request_id, now=now
        )
        if earlier is not None:
            row = await session.get(AccessRequest, earlier)
            assert row is not None
            return row, False
    row = AccessRequest(
        id=request_id,
        requester_user_name=user.user_name,
        requester_user_id=user.user_id,
        requester_email=user.email,
        account_id=account.id,
        account_name=account.name,
        ou_path=account.ou_path_names,
        permission_set_name=permission_set.name,
        permission_set_arn=permission_set.arn,
        start=start,
        end=start + body.duration,
        justification=body.justification,
        ticket=body.ticket,
        matched_rule=terms.rule,
        approval_rule=terms.approval.name,
        approver_groups=list(terms.approval.approver_groups),
        required_approvals=terms.approval.needed,
        policy_version=terms.policy_version,
        break_glass=body.break_glass,
        review="pending" if body.break_glass else None,
        status=Status.PENDING,
        approvers=[],
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    await add_timeline(
        session, row, at=now, actor=user.user_name, action="submitted", comment=body.justification
    )
    await state.outbox.add(
        session,
        RequestSubmitted(
            request_id=request_id,
            requester=person(user),
            account_id=account.id,
            account_name=account.name,
            permission_set_name=permission_set.name,
            permission_set_arn=permission_set.arn,
            start=row.start,
            end=row.end,
            justification=row.justification,
            ticket=row.ticket,
            matched_rule=terms.rule,
            policy_version=terms.policy_version,
            break_glass=body.break_glass,
        ),
        subject=str(request_id),
    )
    return row, True


async def add_timeline(
    session: AsyncSession,
    row: AccessRequest,
    *,
    at: datetime,
    actor: str,
    action: str,
    comment: str | None = None,
) -> None:
    session.add(
        TimelineEntry(
            request_id=row.id,
            at=at,
            actor=actor,
            action=action,
            comment=comment,
            status=row.status,
            detail={},
        )
    )
    await mark(session, STATUS_CHANNEL, str(row.id))


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
    return (
        row.requester_user_name.casefold() == user.user_name.casefold()
        or row.requester_user_id == user.user_id
        or bool(set(row.approver_groups) & user.groups)
        or user.user_name in row.approvers
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
    stmt = select(AccessRequest).where(AccessRequest.id == request_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None or not may_view(state.access.policy, user, row):
        raise Problem(404, f"no request {request_id}")  # do not reveal others' requests
    return row


async def cancel(
    *, session: AsyncSession, state: ApiState, user: User, request_id: uuid.UUID, now: datetime
) -> AccessRequest:
    row = await load_visible(
        session=session, state=state, user=user, request_id=request_id, for_update=True
    )
    if row.requester_user_id != user.user_id:
        raise Problem(403, "only the requester may cancel a request")
    if row.status not in CANCELLABLE:
        raise Problem(
            409,
            f"a {row.status} request cannot be cancelled"
            + ("; revoke it instead" if row.status in REVOCABLE else ""),
        )
    row.status = after_event(Status(row.status), "RequestCancelled")
    row.updated_at = now
    await add_timeline(session, row, at=now, actor=user.user_name, action="cancelled")
    await state.outbox.add(
        session, RequestCancelled(request_id=row.id, cancelled_by=person(user)), subject=str(row.id)
    )
    return row


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
    # Deciding is authorised by the policy alone: a non-approver gets 403 (not 404), so
    # the refusal says why; request ids are random UUIDs, so this reveals nothing useful.
    row = await session.get(AccessRequest, request_id)
    if row is None:
        raise Problem(404, f"no request {request_id}")
    requester = Requester(user_name=row.requester_user_name, user_id=row.requester_user_id)
    rule = state.access.policy.approval_rules.get(row.approval_rule)
    if rule is None:
        raise Problem(409, f"approval rule {row.approval_rule!r} is no longer in the policy")
    check = may_decide(rule, requester=requester, decider=user)
    if not check:
        raise Problem(403, check.reason)
    if row.status != Status.PENDING:
        raise Problem(409, f"the request is already {row.status}")
    await add_timeline(
        session, row, at=now, actor=user.user_name, action=f"{decision}_submitted", comment=comment
    )
    await state.outbox.add(
        session,
        DecisionSubmitted(
            request_id=row.id, approver=person(user), decision=decision, comment=comment
        ),
        subject=str(row.id),
    )
    return row


async def revoke(
    *,
    session: AsyncSession,
    state: ApiState,
    user: User,
    request_id: uuid.UUID,
    comment: str | None,
    now: datetime,
) -> AccessRequest:
    row = await load_visible(session=session, state=state, user=user, request_id=request_id)
    policy = state.access.policy
    allowed = (
        row.requester_user_id == user.user_id
        or user.user_name in row.approvers
        or bool(set(row.approver_groups) & user.groups)
        or policy.is_admin(user)
    )
    if not allowed:
        raise Problem(403, "only the requester, an approver of it or an admin may revoke it")
    if row.status not in REVOCABLE:
        raise Problem(409, f"a {row.status} request has no access to revoke")
    await add_timeline(
        session, row, at=now, actor=user.user_name, action="revoke_requested", comment=comment
    )
    await state.outbox.add(
        session,
        RevokeRequested(request_id=row.id, requested_by=person(user), reason=comment),
        subject=str(row.id),
    )
    return row
