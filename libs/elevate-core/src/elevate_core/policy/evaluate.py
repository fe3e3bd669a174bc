"""Who may request what: pure evaluation of a policy against injected directory data.

See terms.py for how several matching rules combine (strictest wins). Break-glass
rules are separate: they are considered only for break-glass requests, and only
they are considered for such requests.

`Evaluator` indexes one policy against one snapshot of the organisation (accounts
as bit masks) so that a user's whole eligibility is a handful of integer operations.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from elevate_core.directory.models import Account, User
from elevate_core.policy.errors import Issue
from elevate_core.policy.matching import account_match, ou_prefixes, principal_match
from elevate_core.policy.model import Policy
from elevate_core.policy.schema import OU_ID, ApprovalRule, EligibilityRule
from elevate_core.policy.terms import Terms, merge_terms


def matching_rules(
    policy: Policy, user: User, account: Account, permission_set: str, *, break_glass: bool
) -> list[EligibilityRule]:
    return [
        rule
        for rule in policy.eligibility_rules
        if rule.break_glass == break_glass
        and permission_set in rule.permission_sets
        and principal_match(rule, user, policy) is not None
        and account_match(rule, account, policy).matched
    ]


def evaluate_request(
    policy: Policy,
    user: User,
    account: Account,
    permission_set: str,
    *,
    break_glass: bool = False,
) -> Terms | None:
    """The terms under which `user` may request `permission_set` on `account`, or None."""
    rules = matching_rules(policy, user, account, permission_set, break_glass=break_glass)
    return merge_terms(policy, rules) if rules else None


def approval_rule_for(
    policy: Policy,
    user: User,
    account: Account,
    permission_set: str,
    *,
    break_glass: bool = False,
) -> ApprovalRule | None:
    """The approval rule that governs this request, or None if the user is not eligible."""
    terms = evaluate_request(policy, user, account, permission_set, break_glass=break_glass)
    return terms.approval if terms else None


class Entitlement(NamedTuple):
    """One requestable (account, permission set) and its terms."""

    account: Account
    permission_set: str
    terms: Terms


def _bits(mask: int) -> list[int]:
    """Positions of the set bits, lowest first."""
    text = bin(mask)[:1:-1]  # least significant bit first
    found: list[int] = []
    position = text.find("1")
    while position != -1:
        found.append(position)
        position = text.find("1", position + 1)
    return found


class Eligibility:
    """Every (account, permission set) a user may request, with terms; cheap to build,
    cheap to query. Iterating yields `Entitlement`s (permission set, then account order)."""

    __slots__ = ("_accounts", "_bit", "_regions", "break_glass", "policy_version", "user")

    def __init__(
        self,
        user: User,
        *,
        policy_version: str,
        break_glass: bool,
        regions: Mapping[str, tuple[tuple[int, Terms], ...]],
        accounts: Sequence[Account],
        bit: Mapping[str, int],
    ) -> None:
        self.user = user
        self.policy_version = policy_version
        self.break_glass = break_glass
        self._regions = regions
        self._accounts = accounts
        self._bit = bit

    def get(self, account_id: str, permission_set: str) -> Terms | None:
        position = self._bit.get(account_id)
        if position is None:
            return None
        for mask, terms in self._regions.get(permission_set, ()):
            if mask >> position & 1:
                return terms
        return None

    def __contains__(self, pair: object) -> bool:
        if not isinstance(pair, tuple) or len(pair) != 2:
            return False
        return self.get(str(pair[0]), str(pair[1])) is not None

    def __len__(self) -> int:
        return sum(mask.bit_count() for regions in self._regions.values() for mask, _ in regions)

    def __bool__(self) -> bool:
        return bool(self._regions)

    @property
    def permission_sets(self) -> tuple[str, ...]:
        return tuple(sorted(self._regions))

    def account_ids(self, permission_set: str) -> frozenset[str]:
        return frozenset(
            self._accounts[pos].id
            for mask, _ in self._regions.get(permission_set, ())
            for pos in _bits(mask)
        )

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((e.account.id, e.permission_set) for e in self)

    def __iter__(self) -> Iterator[Entitlement]:
        return iter(self.entries())

    def entries(self) -> list[Entitlement]:
        """Every entitlement, by permission set name, then in the directory's account order."""
        accounts = self._accounts
        out: list[Entitlement] = []
        for permission_set in sorted(self._regions):
            regions = self._regions[permission_set]
            if len(regions) == 1:
                mask, terms = regions[0]
                out.extend([Entitlement(accounts[p], permission_set, terms) for p in _bits(mask)])
                continue
            slots: dict[int, Terms] = {}
            union = 0
            for mask, terms in regions:
                union |= mask
                slots.update(dict.fromkeys(_bits(mask), terms))
            out.extend([Entitlement(accounts[p], permission_set, slots[p]) for p in _bits(union)])
        return out


@dataclass(frozen=True, slots=True)
class _Rule:
    index: int
    rule: EligibilityRule
    # The user ids the rule's `users:` resolved to; unresolved (offline): the entries as
    # written, matched exactly against user name or id (Policy.names_user), never folded.
    users: frozenset[str]
    resolved: bool
    groups: frozenset[str]
    mask: int

    def applies_to(self, user: User) -> bool:
        if user.user_id in self.users:
            return True
        if not self.resolved and user.user_name in self.users:
            return True
        return not self.groups.isdisjoint(user.groups)


class Evaluator:
    """One policy indexed against one organisation snapshot. Immutable once built;
    rebuild it when the policy or the directory cache changes (cost: O(accounts x depth
    + rules x selectors))."""

    def __init__(self, policy: Policy, accounts: Iterable[Account]) -> None:
        self.policy = policy
        unique: dict[str, Account] = {}
        for account in accounts:
            unique.setdefault(account.id, account)
        self._accounts: tuple[Account, ...] = tuple(unique.values())
        self._bit: dict[str, int] = {a.id: i for i, a in enumerate(self._accounts)}
        self._by_name: dict[str, int] = {}
        self._by_ou: dict[str, int] = {}
        all_mask = management = 0
        for position, account in enumerate(self._accounts):
            bit = 1 << position
            self._by_name[account.name] = self._by_name.get(account.name, 0) | bit
            keys = set(ou_prefixes(account)) | {ou.id for ou in account.ou_path}
            for key in keys:
                self._by_ou[key] = self._by_ou.get(key, 0) | bit
            if account.is_management:
                management |= bit
            else:
                all_mask |= bit
        self._all, self._management = all_mask, management
        self.unresolved: list[Issue] = []
        self._rules = tuple(self._compile(i, r) for i, r in enumerate(policy.eligibility_rules))
        self._standing = self._resolve_standing()
        self._terms: dict[tuple[int, ...], Terms] = {}

    def _ref_mask(
        self, path: tuple[str | int, ...], ref_id: str | None, name: str | None, ou: str | None
    ) -> int:
        if ref_id is not None:
            found = 1 << self._bit[ref_id] if ref_id in self._bit else 0
            what = f"no account with id {ref_id}"
        elif name is not None:
            found, what = self._by_name.get(name, 0), f"no account named {name!r}"
            if self.policy.account_ids is not None:  # the accounts the name had at load
                ids = self.policy.account_ids.get(name, frozenset())
                found = sum(1 << self._bit[i] for i in ids if i in self._bit)
        else:
            found, what = self._by_ou.get(ou or "", 0), f"no account in OU {ou!r}"
            if ou and not OU_ID.fullmatch(ou):
                what += " (OU paths start at the root, e.g. 'Workloads/Prod')"
        if not found:
            self.unresolved.append(self.policy.issue(path, f"{what} in the organisation"))
        return found

    def _compile(self, index: int, rule: EligibilityRule) -> _Rule:
        at = ("eligibility", index)
        covered = explicit = excluded = 0
        for pos, ref in enumerate(rule.accounts):
            if ref.all:
                covered |= self._all
            elif ref.names_account_explicitly:
                explicit |= self._ref_mask((*at, "accounts", pos), ref.id, ref.name, None)
            else:
                covered |= self._ref_mask((*at, "accounts", pos), None, None, ref.ou)
        for pos, ref in enumerate(rule.exclude):
            excluded |= self._ref_mask((*at, "exclude", pos), ref.id, ref.name, ref.ou)
        mask = ((covered & ~self._management) | explicit) & ~excluded
        ids = self.policy.user_ids
        entries = rule.principals.users
        users = frozenset(entries if ids is None else (ids[u] for u in entries if u in ids))
        return _Rule(index, rule, users, ids is not None, frozenset(rule.principals.groups), mask)

    @property
    def accounts(self) -> tuple[Account, ...]:
        return self._accounts

    def account(self, id_or_name: str) -> Account | None:
        """An account by id, else by name (the first, if names repeat)."""
        if id_or_name in self._bit:
            return self._accounts[self._bit[id_or_name]]
        mask = self._by_name.get(id_or_name, 0)
        return self._accounts[_bits(mask)[0]] if mask else None

    def _merged(self, combo: tuple[int, ...]) -> Terms:
        terms = self._terms.get(combo)
        if terms is None:
            rules = [self._rules[i].rule for i in combo]
            terms = self._terms[combo] = merge_terms(self.policy, rules)
        return terms

    def eligibility(self, user: User, *, break_glass: bool = False) -> Eligibility:
        """Everything `user` may request (break-glass rules only if `break_glass`)."""
        per_set: dict[str, list[tuple[int, tuple[int, ...]]]] = {}
        for compiled in self._rules:
            if compiled.rule.break_glass != break_glass or not compiled.mask:
                continue
            if not compiled.applies_to(user):
                continue
            for permission_set in compiled.rule.permission_sets:
                regions = per_set.setdefault(permission_set, [])
                remaining = compiled.mask
                split: list[tuple[int, tuple[int, ...]]] = []
                for mask, combo in regions:
                    both = mask & remaining
                    if both:
                        if mask & ~remaining:
                            split.append((mask & ~remaining, combo))
                        split.append((both, (*combo, compiled.index)))
                        remaining &= ~mask
                    else:
                        split.append((mask, combo))
                if remaining:
                    split.append((remaining, (compiled.index,)))
                per_set[permission_set] = split
        regions_out = {
            ps: tuple((mask, self._merged(combo)) for mask, combo in regions)
            for ps, regions in per_set.items()
        }
        return Eligibility(
            user,
            policy_version=self.policy.version,
            break_glass=break_glass,
            regions=regions_out,
            accounts=self._accounts,
            bit=self._bit,
        )

    def terms(
        self, user: User, account_id: str, permission_set: str, *, break_glass: bool = False
    ) -> Terms | None:
        """The terms for one request (None: not eligible). Same answer as evaluate_request."""
        position = self._bit.get(account_id)
        if position is None:
            return None
        combo = tuple(
            c.index
            for c in self._rules
            if c.rule.break_glass == break_glass
            and c.mask >> position & 1
            and permission_set in c.rule.permission_sets
            and c.applies_to(user)
        )
        return self._merged(combo) if combo else None

    def managed_scope(self) -> frozenset[tuple[str, str]]:
        """Every (account id, permission set) some rule makes requestable: the scope in
        which Elevate manages user assignments."""
        masks: dict[str, int] = {}
        for compiled in self._rules:
            for permission_set in compiled.rule.permission_sets:
                masks[permission_set] = masks.get(permission_set, 0) | compiled.mask
        return frozenset(
            (self._accounts[pos].id, ps) for ps, mask in masks.items() for pos in _bits(mask)
        )

    def _resolve_standing(self) -> tuple[tuple[str, str, str], ...]:
        out: list[tuple[str, str, str]] = []
        for index, standing in enumerate(self.policy.standing_assignments):
            path = ("standing_assignments", index, "account")
            mask = self._ref_mask(path, standing.account.id, standing.account.name, None)
            out.extend(
                (self._accounts[pos].id, standing.permission_set, standing.user)
                for pos in _bits(mask)
            )
        return tuple(out)

    def standing_assignments(self) -> tuple[tuple[str, str, str], ...]:
        """(account id, permission set, user as written in the policy) for each standing
        assignment whose account exists: Elevate must never remove these."""
        return self._standing


def is_standing(policy: Policy, account: Account, permission_set: str, user: User) -> bool:
    """Whether policy lists (user, account, permission set) as a standing assignment."""
    for standing in policy.standing_assignments:
        ref = standing.account
        if standing.permission_set != permission_set:
            continue
        if ref.id != account.id and not (ref.name and policy.names_account(ref.name, account)):
            continue
        if standing.user in (user.user_name, user.user_id):  # exact: names differ by case
            return True
    return False
