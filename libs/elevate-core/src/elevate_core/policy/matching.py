"""Does one rule cover one user / one account? Pure, per-item matching with reasons.

The bulk evaluator (`evaluate.Evaluator`) precomputes the same answers as bit masks;
these functions are the reference it is tested against, and what `explain` reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from elevate_core.directory.models import Account, User
from elevate_core.policy.model import Policy
from elevate_core.policy.schema import OU_ID, AccountRef, EligibilityRule


def ou_names(account: Account) -> tuple[str, ...]:
    """OU names root → leaf, without the organisation root itself."""
    return tuple(ou.name for ou in account.ou_path if not ou.id.startswith("r-"))


def ou_prefixes(account: Account) -> tuple[str, ...]:
    """'A', 'A/B', 'A/B/C' for an account in A/B/C: an OU selector matches any of them."""
    names = ou_names(account)
    return tuple("/".join(names[: end + 1]) for end in range(len(names)))


def ref_matches(ref: AccountRef, account: Account, policy: Policy) -> bool:
    if ref.all:
        return True
    if ref.id is not None:
        return ref.id == account.id
    if ref.name is not None:
        return policy.names_account(ref.name, account)
    if ref.ou is None:
        return False
    if OU_ID.fullmatch(ref.ou):
        return any(ou.id == ref.ou for ou in account.ou_path)
    return ref.ou in ou_prefixes(account)


def principal_match(rule: EligibilityRule, user: User, policy: Policy) -> str | None:
    """How the rule names this user ("user alice", "group sre"), or None. A `users:` entry
    is one user id (`Policy.names_user`): `ALICE`, or a name that only case-folds to it,
    is not `alice`."""
    for entry in rule.principals.users:
        if policy.names_user(entry, user):
            return f"user {entry}"
    for group in rule.principals.groups:
        if group in user.groups:
            return f"group {group}"
    return None


def describe_account(account: Account) -> str:
    where = "/".join(ou_names(account)) or "root"
    mgmt = ", management account" if account.is_management else ""
    return f"{account.name} ({account.id}, in {where}{mgmt})"


@dataclass(frozen=True, slots=True)
class AccountMatch:
    matched: bool
    reason: str


def account_match(rule: EligibilityRule, account: Account, policy: Policy) -> AccountMatch:
    """Whether the rule's accounts cover this account, and why (or why not).

    Order of precedence: an `exclude` entry always wins; the management account is
    covered only when an `id` or `name` entry names it (never through `*` or `ou`).
    """
    for ref in rule.exclude:
        if ref_matches(ref, account, policy):
            return AccountMatch(False, f"account excluded by {ref.describe()}")
    hits = [ref for ref in rule.accounts if ref_matches(ref, account, policy)]
    if not hits:
        listed = ", ".join(ref.describe() for ref in rule.accounts)
        return AccountMatch(False, f"account {describe_account(account)} matches none of: {listed}")
    if account.is_management:
        named = [ref for ref in hits if ref.names_account_explicitly]
        if not named:
            via = ", ".join(ref.describe() for ref in hits)
            return AccountMatch(
                False,
                (f"management account is covered only when named by id or name, not via {via}"),
            )
        return AccountMatch(True, f"account named by {named[0].describe()}")
    return AccountMatch(True, f"account matched by {hits[0].describe()}")
