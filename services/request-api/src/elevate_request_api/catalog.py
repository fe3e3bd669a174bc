"""What a caller may pick from: their eligibility (searchable, paginated) and the accounts
it covers. A user eligible for thousands of (account, permission set) pairs gets a page
without the server building the rest: the policy index answers the whole set cheaply
(`Evaluator.eligibility`), and only one page of it becomes response objects.
"""

from __future__ import annotations

import base64
import json
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from typing import TypeVar

from elevate_core.directory.models import Account, User
from elevate_core.policy import Entitlement, Evaluator

from elevate_request_api.deps import ApiState
from elevate_request_api.domain import InvalidCursorError
from elevate_request_api.schemas import AccountOut, EligibilityItem

T = TypeVar("T")
Key = tuple[str, ...]
_Found = tuple[Key, tuple[Account, EligibilityItem]]


def _encode(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode(cursor: str) -> Key:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except ValueError:
        raise InvalidCursorError("cursor: not a cursor this API returned") from None
    if not (isinstance(key, list) and all(isinstance(part, str) for part in key)):
        raise InvalidCursorError("cursor: not a cursor this API returned")
    return tuple(key)


def _page(
    pool: Sequence[tuple[Key, T]], *, cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """The `limit` items after `cursor` of `pool` (in key order), and the cursor of the
    next page. Keyset, not offset: a page stays right while the policy or organisation
    changes."""
    after = _decode(cursor) if cursor else None
    start = bisect_right(pool, after, key=lambda kv: kv[0]) if after is not None else 0
    chosen = pool[start : start + limit]
    more = len(pool) > start + limit
    return [value for _, value in chosen], _encode(chosen[-1][0]) if more else None


def _matches(account: Account, q: str | None, *extra: str) -> bool:
    if not q:
        return True
    needle = q.lower()
    haystack = (account.id, account.name, account.ou_path_names, *extra)
    return any(needle in part.lower() for part in haystack)


def _account_out(account: Account) -> AccountOut:
    return AccountOut(
        account_id=account.id, account_name=account.name, ou_path=account.ou_path_names
    )


def _item(entry: Entitlement, *, break_glass: bool) -> EligibilityItem:
    terms = entry.terms
    return EligibilityItem(
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


_SORTED_CAP = 4096  # users whose sorted eligibility is kept (the index is per replica)
_sorted: OrderedDict[tuple[str, frozenset[str]], tuple[Evaluator, list[_Found]]] = OrderedDict()


def _all_sorted(evaluator: Evaluator, user: User) -> list[_Found]:
    """The user's whole eligibility in page order, as response items, computed once per
    policy index and user (the index is a new object whenever the policy or the
    organisation changes)."""
    key = (user.user_id, frozenset(user.groups))
    cached = _sorted.get(key)
    if cached is not None and cached[0] is evaluator:
        _sorted.move_to_end(key)
        return cached[1]
    found: list[_Found] = []
    for break_glass in (False, True):
        for entry in evaluator.eligibility(user, break_glass=break_glass).entries():
            account = entry.account
            order = (account.name, account.id, entry.permission_set, str(int(break_glass)))
            found.append((order, (account, _item(entry, break_glass=break_glass))))
    found.sort(key=lambda kv: kv[0])
    _sorted[key] = (evaluator, found)
    while len(_sorted) > _SORTED_CAP:
        _sorted.popitem(last=False)
    return found


async def eligibility(
    *, state: ApiState, user: User, q: str | None, cursor: str | None, limit: int
) -> tuple[list[EligibilityItem], str | None]:
    """What `user` may request, ordered by account name, account, permission set, then
    break-glass last; `q` searches account name, id, OU path and permission set."""
    evaluator = await state.access.evaluator()
    everything = _all_sorted(evaluator, user)
    found = [kv for kv in everything if _matches(kv[1][0], q, kv[0][2])] if q else everything
    chosen, next_cursor = _page(found, cursor=cursor, limit=limit)
    return [item for _, item in chosen], next_cursor


async def accounts(
    *, state: ApiState, user: User, q: str | None, cursor: str | None, limit: int
) -> tuple[list[AccountOut], str | None]:
    """The accounts `user` may request something on (every account for auditors and
    admins), by name then id; `q` searches name, id and OU path."""
    evaluator = await state.access.evaluator()
    policy = state.access.policy
    pool: Sequence[Account]
    if policy.is_auditor(user) or policy.is_admin(user):
        pool = evaluator.accounts
    else:
        seen: dict[str, Account] = {}
        for break_glass in (False, True):
            for entry in evaluator.eligibility(user, break_glass=break_glass).entries():
                seen.setdefault(entry.account.id, entry.account)
        pool = list(seen.values())
    found = sorted((((a.name, a.id), a) for a in pool if _matches(a, q)), key=lambda kv: kv[0])
    chosen, next_cursor = _page(found, cursor=cursor, limit=limit)
    return [_account_out(a) for a in chosen], next_cursor


async def requestable_accounts(
    *, state: ApiState, user: User, q: str | None, limit: int
) -> tuple[list[AccountOut], bool]:
    """The portal's picker: up to `limit` accounts `user` may request something on whose
    name, id or OU path contains `q`, by name; and whether more match. Served from the
    user's cached eligibility, so each keystroke costs a scan, not a policy evaluation."""
    evaluator = await state.access.evaluator()
    seen: dict[str, Account] = {}
    for _, (account, _item) in _all_sorted(evaluator, user):
        if account.id not in seen and _matches(account, q):
            seen[account.id] = account
            if len(seen) > limit:
                break
    chosen = list(seen.values())
    return [_account_out(a) for a in chosen[:limit]], len(chosen) > limit


async def options(*, state: ApiState, user: User, account_id: str) -> list[EligibilityItem]:
    """What `user` may request on one account (each permission set, then its break-glass
    variant where the policy allows it)."""
    evaluator = await state.access.evaluator()
    return [item for _, (a, item) in _all_sorted(evaluator, user) if a.id == account_id]
