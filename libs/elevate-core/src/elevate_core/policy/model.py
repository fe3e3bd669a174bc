"""A loaded policy: the validated document plus its version, source and line map."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from elevate_core.directory.models import Account, User
from elevate_core.policy.errors import Issue, Severity
from elevate_core.policy.schema import (
    ApprovalRule,
    EligibilityRule,
    PolicyDocument,
    StandingAssignment,
)

FieldPath = tuple[str | int, ...]


def format_path(path: FieldPath) -> str:
    """('eligibility', 0, 'accounts', 1, 'ou') -> 'eligibility[0].accounts[1].ou'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def locate(lines: Mapping[FieldPath, int], path: FieldPath) -> int | None:
    """The line of `path`, or of its nearest ancestor present in the file."""
    for end in range(len(path), -1, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


class Policy:
    """An immutable, validated policy. `version` is the short sha256 of the file's bytes;
    every evaluation result carries it so decisions can be traced to the exact file."""

    __slots__ = (
        "_approvals",
        "account_ids",
        "document",
        "lines",
        "source",
        "user_ids",
        "version",
        "warnings",
    )

    def __init__(
        self,
        document: PolicyDocument,
        *,
        version: str,
        source: str,
        lines: Mapping[FieldPath, int] | None = None,
        warnings: tuple[Issue, ...] = (),
        user_ids: Mapping[str, str] | None = None,
        account_ids: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.document = document
        # Each `users:` entry → the Identity Store user id it named when a service loaded
        # the policy (policy.resolve); None: not resolved (offline), entries match exactly.
        self.user_ids: Mapping[str, str] | None = (
            None if user_ids is None else MappingProxyType(dict(user_ids))
        )
        # Each account `name:` selector → the account ids with that name at load; None: not
        # resolved (offline, or no name selectors), names match the account's name now.
        self.account_ids: Mapping[str, frozenset[str]] | None = (
            None if account_ids is None else MappingProxyType(dict(account_ids))
        )
        self.version = version
        self.source = source
        self.lines: Mapping[FieldPath, int] = MappingProxyType(dict(lines or {}))
        self.warnings = warnings
        self._approvals: Mapping[str, ApprovalRule] = MappingProxyType(
            {rule.name: rule for rule in document.approval_rules}
        )

    def __repr__(self) -> str:
        return f"Policy(source={self.source!r}, version={self.version!r})"

    @property
    def approval_rules(self) -> Mapping[str, ApprovalRule]:
        return self._approvals

    @property
    def eligibility_rules(self) -> tuple[EligibilityRule, ...]:
        return self.document.eligibility

    @property
    def standing_assignments(self) -> tuple[StandingAssignment, ...]:
        return self.document.standing_assignments

    @property
    def cut_sessions(self) -> frozenset[str]:
        """Permission sets (names) opted in to the session cut."""
        return frozenset(self.document.cut_sessions)

    @property
    def auditor_groups(self) -> frozenset[str]:
        return frozenset(self.document.auditor_groups)

    @property
    def admin_groups(self) -> frozenset[str]:
        return frozenset(self.document.admin_groups)

    def resolved(
        self,
        user_ids: Mapping[str, str],
        account_ids: Mapping[str, frozenset[str]] | None = None,
        *,
        warnings: tuple[Issue, ...] | None = None,
    ) -> Policy:
        """This policy with its `users:` entries (and account names) resolved to ids."""
        return Policy(
            self.document,
            version=self.version,
            source=self.source,
            lines=self.lines,
            warnings=self.warnings if warnings is None else warnings,
            user_ids=user_ids,
            account_ids=account_ids,
        )

    def names_account(self, name: str, account: Account) -> bool:
        """Whether an account `name:` selector is this account: resolved, by the ids the
        name had at load (a rename or a new account of that name changes nothing)."""
        if self.account_ids is not None:
            return account.id in self.account_ids.get(name, frozenset())
        return name == account.name

    def names_user(self, entry: str, user: User) -> bool:
        """Whether the `users:` entry is this user. Resolved: by user id only (a user
        renamed since, or a new user given the old name, is not who the policy named);
        unresolved: the exact user name or id, never case-folded."""
        if self.user_ids is not None:
            return self.user_ids.get(entry) == user.user_id
        return entry in (user.user_name, user.user_id)

    def is_auditor(self, user: User) -> bool:
        return not self.auditor_groups.isdisjoint(user.groups)

    def is_admin(self, user: User) -> bool:
        return not self.admin_groups.isdisjoint(user.groups)

    def line_of(self, path: FieldPath) -> int | None:
        return locate(self.lines, path)

    def issue(self, path: FieldPath, message: str, severity: Severity = "warning") -> Issue:
        return Issue(self.source, self.line_of(path), format_path(path), message, severity)
