"""Resolve a policy's `users:` entries to Identity Store user ids, once, when a service
loads it: from then on an entry is the user it named at load time, never whoever holds
that name later (user names are mutable) nor a name equal to it ignoring case.

An entry the directory does not know (neither a user name nor a user id) makes that
policy version invalid: the service keeps the last good policy and reports the failed
reload (policy.reload). `elevate policy check` has no directory and only warns.

Account `name:` selectors are resolved the same way, to the ids the name has at load (a
name no account has matches nothing, as before; the evaluator warns). Names are mutable
(anyone who may rename an account moves it in or out of a rule): outside dev a service
warns about each (`account_name_warnings`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from elevate_core.policy.errors import Issue, PolicyValidationError
from elevate_core.policy.model import FieldPath, Policy

#: A user name or user id → the Identity Store user id it is, or None: no such user.
UserIdLookup = Callable[[str], str | None]
#: The organisation's accounts now, as account name → the ids of the accounts so named.
AccountIdsLookup = Callable[[], Mapping[str, frozenset[str]]]


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


def _account_names(policy: Policy) -> list[tuple[FieldPath, str]]:
    found: list[tuple[FieldPath, str]] = []
    for index, rule in enumerate(policy.eligibility_rules):
        for key, refs in (("accounts", rule.accounts), ("exclude", rule.exclude)):
            found += [
                (("eligibility", index, key, pos), r.name) for pos, r in enumerate(refs) if r.name
            ]
    for index, standing in enumerate(policy.standing_assignments):
        if standing.account.name:
            found.append((("standing_assignments", index, "account"), standing.account.name))
    return found


def account_name_warnings(policy: Policy) -> tuple[Issue, ...]:
    """One warning per account selected by its (mutable) name."""
    return tuple(
        policy.issue(
            path,
            f"account selected by name {name!r}: account names can be changed, so the "
            "selection can move to another account; select it by id",
        )
        for path, name in _account_names(policy)
    )


def offline_user_warnings(policy: Policy) -> tuple[Issue, ...]:
    """What `elevate policy check` says instead of resolving (it has no directory)."""
    return tuple(
        policy.issue(
            path,
            f"user {entry!r} is not checked offline: a service resolves it to an Identity "
            "Store user id when it loads the policy, and refuses this version if no user "
            "has that exact user name or id",
        )
        for entry, path in user_entries(policy).items()
    )


def resolve_users(
    policy: Policy,
    lookup: UserIdLookup,
    accounts: AccountIdsLookup | None = None,
    *,
    warn_account_names: bool = False,
) -> Policy:
    """`policy` with every `users:` entry resolved to a user id and, given `accounts`,
    every account name selector to the ids of the accounts so named now (the lookups may
    block or raise: a directory that cannot answer is the caller's to handle), and the
    account name warnings added if asked. Raises PolicyValidationError naming each
    unknown user."""
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
    names = {name for _, name in _account_names(policy)}
    account_ids = None
    if accounts is not None and names:
        in_org = accounts()
        account_ids = {name: in_org.get(name, frozenset()) for name in names}
    extra = account_name_warnings(policy) if warn_account_names else ()
    return policy.resolved(ids, account_ids, warnings=(*policy.warnings, *extra))
