"""The policy file's schema: pydantic models, one per YAML mapping.

These models check each field on its own (types, formats, ranges); rules that
relate fields to each other (references, uniqueness, auto-approve vs approvers)
live in `semantics.py`, so that each problem can name its exact field and line.
Build policies with `elevate_core.policy.parse_policy` / `load_policy`, which run both.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints
from pydantic_core import PydanticCustomError

from elevate_core.policy.durations import parse_duration

OU_ID = re.compile(r"ou-[0-9a-z]{4,32}-[0-9a-z]{8,32}")
ACCOUNT_ID = re.compile(r"\d{12}")

Name = Annotated[
    str, StringConstraints(strict=True, min_length=1, max_length=256, strip_whitespace=True)
]
Text = Annotated[str, StringConstraints(strict=True, max_length=2000)]


def _custom(kind: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(kind, "{reason}", {"reason": message})


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise _custom("duration", "must be a duration string such as '30m', '4h' or '1d'")
    try:
        return parse_duration(value.strip())
    except ValueError as exc:
        raise _custom("duration", str(exc)) from None


def _account_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _custom(
            "account_id",
            "quote account ids (id: '012345678901'): YAML reads unquoted digits as a "
            "number and drops leading zeros",
        )
    if not isinstance(value, str) or ACCOUNT_ID.fullmatch(value.strip()) is None:
        raise _custom("account_id", "must be a 12-digit AWS account id in quotes")
    return value.strip()


def _ou(value: Any) -> str:
    if not isinstance(value, str):
        raise _custom("ou", "must be an OU path such as 'Workloads/Prod' or an OU id 'ou-…'")
    path = value.strip().strip("/")
    if not path or any(not part.strip() for part in path.split("/")):
        raise _custom("ou", f"invalid OU path {value!r}: use names from the root, e.g. 'A/B'")
    return "/".join(part.strip() for part in path.split("/"))


def _pattern(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _custom("ticket_pattern", "must be a non-empty regular expression string")
    try:
        re.compile(value)
    except re.error as exc:
        raise _custom("ticket_pattern", f"invalid regular expression: {exc}") from None
    return value


def _star(value: Any) -> Any:
    """`"*"` in an account list is shorthand for `{all: true}`."""
    if value == "*":
        return {"all": True}
    if isinstance(value, str):
        raise _custom(
            "account_ref",
            f"{value!r}: write '*' or a mapping with one of id, name, ou (e.g. - name: {value})",
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]
AccountId = Annotated[str, BeforeValidator(_account_id)]
OuRef = Annotated[str, BeforeValidator(_ou)]
TicketPattern = Annotated[str, BeforeValidator(_pattern)]
Count = Annotated[int, Field(strict=True, ge=1, le=50)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AccountRef(_Model):
    """One account selector: exactly one of `id`, `name`, `ou`, or `"*"` (all accounts).

    `ou` is a path of OU names from the root ("Workloads/Prod") or an OU id
    ("ou-ab12-cdef3456"); it covers every account in that OU and in OUs nested below it.
    """

    id: AccountId | None = None
    name: Name | None = None
    ou: OuRef | None = None
    all: Annotated[bool, Field(strict=True)] = False

    def describe(self) -> str:
        if self.all:
            return "'*'"
        if self.id is not None:
            return f"id {self.id}"
        if self.name is not None:
            return f"name {self.name}"
        return f"ou {self.ou}"

    @property
    def names_account_explicitly(self) -> bool:
        return self.id is not None or self.name is not None


AccountRefItem = Annotated[AccountRef, BeforeValidator(_star)]


class AccountName(_Model):
    """An account named by `id` or `name` (exactly one): standing assignments only."""

    id: AccountId | None = None
    name: Name | None = None


class Principals(_Model):
    """Who a rule applies to: Identity Store group display names and/or user names.

    `users` entries match a user name exactly (never case-folded) or an Identity Store user id.
    """

    groups: tuple[Name, ...] = ()
    users: tuple[Name, ...] = ()


class ApprovalRule(_Model):
    name: Name
    description: Text | None = None
    auto_approve: Annotated[bool, Field(strict=True)] = False
    approver_groups: tuple[Name, ...] = ()
    required_approvals: Count = 1
    one_rejection_rejects: Annotated[bool, Field(strict=True)] = True
    pending_timeout: Duration = timedelta(hours=24)

    @property
    def needed(self) -> int:
        """Human approvals this rule needs: 0 for auto-approve."""
        return 0 if self.auto_approve else self.required_approvals

    def describe(self) -> str:
        if self.auto_approve:
            return f"{self.name!r} (auto-approve)"
        groups = ", ".join(self.approver_groups)
        return f"{self.name!r} ({self.required_approvals} approval(s) from {groups})"


class EligibilityRule(_Model):
    name: Name
    description: Text | None = None
    principals: Principals
    accounts: Annotated[tuple[AccountRefItem, ...], Field(min_length=1)]
    exclude: tuple[AccountRefItem, ...] = ()
    permission_sets: Annotated[tuple[Name, ...], Field(min_length=1)]
    max_duration: Duration
    approval: Name | None = None
    ticket_required: Annotated[bool, Field(strict=True)] = False
    ticket_pattern: TicketPattern | None = None
    break_glass: Annotated[bool, Field(strict=True)] = False
    review_groups: tuple[Name, ...] = ()


class StandingAssignment(_Model):
    user: Name
    account: AccountName
    permission_set: Name
    description: Text | None = None


class PolicyDocument(_Model):
    schema_version: Literal[1]
    auditor_groups: tuple[Name, ...] = ()
    admin_groups: tuple[Name, ...] = ()
    approval_rules: tuple[ApprovalRule, ...] = ()
    eligibility: tuple[EligibilityRule, ...] = ()
    standing_assignments: tuple[StandingAssignment, ...] = ()
    # Permission sets whose already-issued role sessions are cut when Elevate removes an
    # assignment (a Deny in their inline policy; docs/grant-worker.md). Opt-in: Elevate
    # writes the inline policy of these permission sets only.
    cut_sessions: tuple[Name, ...] = ()
