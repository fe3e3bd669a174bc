"""Resolve a policy's `users:` entries to Identity Store user ids, once, when a service
loads it: from then on an entry is the user it named at load time, never whoever holds
that name later (user names are mutable) nor a name equal to it ignoring case.

An entry the directory does not know (neither a user name nor a user id) makes that
policy version invalid: the service keeps the last good policy and reports the failed
reload (policy.reload). `elevate policy check` has no directory and only warns.
"""

from __future__ import annotations

from collections.abc import Callable

from elevate_core.policy.errors import Issue, PolicyValidationError
from elevate_core.policy.model import FieldPath, Policy

#: A user name or user id → the Identity Store user id it is, or None: no such user.
UserIdLookup = Callable[[str], str | None]


def user_entries(policy: Policy) -> dict[str, FieldPath]:
    """Every distinct `users:` entry, with where it first appears."""
    found: dict[str, FieldPath] = {}
    for index, rule in enumerate(policy.eligibility_rules):
        for pos, entry in enumerate(rule.principals.users):
            found.setdefault(entry, ("eligibility", index, "principals", "users", pos))
    return found


def unknown_user(policy: Policy, path: FieldPath, entry: str) -> Issue:
    return policy.issue(
        path, f"no Identity Store user has the user name or user id {entry!r}", "error"
    )


def resolve_users(policy: Policy, lookup: UserIdLookup) -> Policy:
    """`policy` with every `users:` entry resolved to a user id (`lookup` may block or
    raise: a directory that cannot answer is the caller's to handle). Raises
    PolicyValidationError naming each unknown entry."""
    ids: dict[str, str] = {}
    issues: list[Issue] = []
    for entry, path in user_entries(policy).items():
        user_id = lookup(entry)
        if user_id is None:
            issues.append(unknown_user(policy, path, entry))
        else:
            ids[entry] = user_id
    if issues:
        raise PolicyValidationError(issues)
    return policy.with_user_ids(ids)
