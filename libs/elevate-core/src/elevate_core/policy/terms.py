"""The terms of a request: the strictest combination of every eligibility rule that matched.

Strictest wins. When several eligibility rules cover the same (user, account,
permission set), their terms combine as:
  * max_duration    — the smallest of the rules' max durations;
  * ticket          — required if any rule requires one; a ticket must match every
                      rule's `ticket_pattern` (each as a full match);
  * approval rule   — the one needing the most approvals (auto-approve counts as 0,
                      so it governs only if every matching rule auto-approves); on a
                      tie, the rule listed first in the file;
  * review_groups   — (break-glass) the union; the auditor groups if none is set.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from elevate_core.policy.durations import format_duration
from elevate_core.policy.model import Policy
from elevate_core.policy.reasons import Reason
from elevate_core.policy.schema import ApprovalRule, EligibilityRule

#: The approval rule of every break-glass grant: immediate, reviewed afterwards.
BREAK_GLASS_APPROVAL = ApprovalRule(name="break-glass", auto_approve=True)


@dataclass(frozen=True, slots=True)
class Terms:
    """What the policy allows for one (user, account, permission set): the strictest
    combination of every rule that matched. `rule` is the eligibility rule whose
    approval rule governs; `rules` lists all that matched, in file order."""

    rule: str
    rules: tuple[str, ...]
    max_duration: timedelta
    approval: ApprovalRule
    ticket_required: bool
    ticket_patterns: tuple[str, ...]
    break_glass: bool
    review_groups: tuple[str, ...]
    policy_version: str

    def violations(
        self, *, duration: timedelta, ticket: str | None
    ) -> tuple[tuple[Reason, str], ...]:
        """How a request with this duration and ticket breaks these terms, as (reason
        code, message) pairs (empty if fine)."""
        found: list[tuple[Reason, str]] = []
        if duration <= timedelta(0):
            found.append((Reason.DURATION_NOT_POSITIVE, "duration must be positive"))
        elif duration > self.max_duration:
            maximum = format_duration(self.max_duration)
            found.append((Reason.DURATION_TOO_LONG, f"duration exceeds the maximum of {maximum}"))
        ticket = (ticket or "").strip() or None
        if ticket is None:
            if self.ticket_required:
                found.append((Reason.TICKET_REQUIRED, "a ticket is required"))
        else:
            found.extend(
                (Reason.TICKET_MISMATCH, f"ticket {ticket!r} does not match {pattern!r}")
                for pattern in self.ticket_patterns
                if re.fullmatch(pattern, ticket) is None
            )
        return tuple(found)

    def problems(self, *, duration: timedelta, ticket: str | None) -> tuple[str, ...]:
        """Why a request with this duration and ticket breaks these terms (empty if fine)."""
        return tuple(message for _, message in self.violations(duration=duration, ticket=ticket))


def merge_terms(policy: Policy, rules: Sequence[EligibilityRule]) -> Terms:
    """Combine matching rules (all break-glass or none, in file order): strictest wins."""
    if not rules:
        raise ValueError("merge_terms needs at least one rule")
    break_glass = rules[0].break_glass
    if break_glass:
        governing, approval = rules[0], BREAK_GLASS_APPROVAL
    else:
        candidates = [(policy.approval_rules[r.approval or ""], r) for r in rules]
        approval, governing = candidates[0]
        for candidate, rule in candidates[1:]:
            if candidate.needed > approval.needed:
                approval, governing = candidate, rule
    patterns = tuple(dict.fromkeys(r.ticket_pattern for r in rules if r.ticket_pattern))
    review: tuple[str, ...] = ()
    if break_glass:
        review = tuple(dict.fromkeys(g for r in rules for g in r.review_groups))
        review = review or tuple(policy.document.auditor_groups)
    return Terms(
        rule=governing.name,
        rules=tuple(r.name for r in rules),
        max_duration=min(r.max_duration for r in rules),
        approval=approval,
        ticket_required=any(r.ticket_required for r in rules),
        ticket_patterns=patterns,
        break_glass=break_glass,
        review_groups=review,
        policy_version=policy.version,
    )
