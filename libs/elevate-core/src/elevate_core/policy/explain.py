"""Why a user may (or may not) request a permission set on an account."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elevate_core.directory.models import Account, User
from elevate_core.policy.durations import format_duration
from elevate_core.policy.matching import account_match, describe_account, principal_match
from elevate_core.policy.model import Policy
from elevate_core.policy.schema import EligibilityRule
from elevate_core.policy.terms import Terms, merge_terms


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """One eligibility rule's verdict on the question, with a reason per dimension."""

    rule: str
    matched: bool
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Explanation:
    user: str
    account: str
    permission_set: str
    break_glass: bool
    terms: Terms | None
    traces: tuple[RuleTrace, ...]
    hints: tuple[str, ...]
    policy_version: str

    @property
    def eligible(self) -> bool:
        return self.terms is not None

    @property
    def matched_rules(self) -> tuple[str, ...]:
        return tuple(t.rule for t in self.traces if t.matched)

    def summary(self) -> str:
        what = f"{self.user} -> {self.permission_set} on {self.account}"
        mode = " (break-glass)" if self.break_glass else ""
        if self.terms is None:
            return f"NOT ELIGIBLE{mode}: {what}: no rule matched"
        t = self.terms
        parts = [
            f"rule {t.rule!r}",
            f"approval {t.approval.describe()}",
            f"max {format_duration(t.max_duration)}",
        ]
        if t.ticket_required:
            parts.append("ticket required")
        if t.ticket_patterns:
            parts.append("ticket must match " + " and ".join(t.ticket_patterns))
        if t.break_glass:
            parts.append("reviewed afterwards by " + (", ".join(t.review_groups) or "nobody"))
        return f"ELIGIBLE{mode}: {what}: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        """The explanation as JSON (`elevate policy explain --json`, `/v1/policy/explain`)."""
        payload: dict[str, Any] = {
            "eligible": self.eligible,
            "summary": self.summary(),
            "policy_version": self.policy_version,
            "user": self.user,
            "account": self.account,
            "permission_set": self.permission_set,
            "break_glass": self.break_glass,
            "matched_rules": list(self.matched_rules),
            "traces": [
                {"rule": t.rule, "matched": t.matched, "reasons": list(t.reasons)}
                for t in self.traces
            ],
            "hints": list(self.hints),
        }
        t = self.terms
        if t is not None:
            payload["terms"] = {
                "rule": t.rule,
                "rules": list(t.rules),
                "max_duration": format_duration(t.max_duration),
                "approval_rule": t.approval.name,
                "auto_approve": t.approval.auto_approve,
                "approver_groups": list(t.approval.approver_groups),
                "required_approvals": t.approval.needed,
                "ticket_required": t.ticket_required,
                "ticket_patterns": list(t.ticket_patterns),
                "review_groups": list(t.review_groups),
            }
        return payload

    def render(self) -> str:
        lines = [self.summary(), f"policy version {self.policy_version}"]
        if self.terms is not None and len(self.terms.rules) > 1:
            lines.append(
                f"strictest of {len(self.terms.rules)} matching rules: "
                + ", ".join(self.terms.rules)
            )
        for trace in self.traces:
            mark = "match" if trace.matched else "no   "
            lines.append(f"  [{mark}] {trace.rule}: " + "; ".join(trace.reasons))
        lines.extend(f"  hint: {hint}" for hint in self.hints)
        return "\n".join(lines)


def _trace(
    policy: Policy,
    rule: EligibilityRule,
    user: User,
    account: Account,
    permission_set: str,
    break_glass: bool,
) -> RuleTrace:
    reasons: list[str] = []
    ok = True
    if rule.break_glass != break_glass:
        ok = False
        reasons.append(
            "break-glass rule: applies to break-glass requests only"
            if rule.break_glass
            else "not a break-glass rule: break-glass requests use break-glass rules only"
        )
    via = principal_match(rule, user, policy)
    if via is None:
        ok = False
        groups = ", ".join(sorted(user.groups)) or "none"
        named = []
        if rule.principals.users:
            named.append(f"not among users [{', '.join(rule.principals.users)}]")
        if rule.principals.groups:
            named.append(f"in none of groups [{', '.join(rule.principals.groups)}]")
        reasons.append(f"{user.user_name} is {' and '.join(named)} (their groups: {groups})")
    else:
        reasons.append(f"applies to {user.user_name} via {via}")
    match = account_match(rule, account, policy)
    ok = ok and match.matched
    reasons.append(match.reason)
    if permission_set in rule.permission_sets:
        reasons.append(f"permission set {permission_set} listed")
    else:
        ok = False
        reasons.append(
            f"permission set {permission_set} not in [{', '.join(rule.permission_sets)}]"
        )
    return RuleTrace(rule.name, ok, tuple(reasons))


def explain(
    policy: Policy, user: User, account: Account, permission_set: str, *, break_glass: bool = False
) -> Explanation:
    """Which rule matched and why, or why none did. Same verdict as evaluate_request."""
    traces = tuple(
        _trace(policy, rule, user, account, permission_set, break_glass)
        for rule in policy.eligibility_rules
    )
    rules = [r for r, t in zip(policy.eligibility_rules, traces, strict=True) if t.matched]
    terms = merge_terms(policy, rules) if rules else None
    hints: list[str] = []
    if terms is None and not policy.eligibility_rules:
        hints.append("the policy has no eligibility rules")
    if terms is None and not break_glass:
        other = [
            _trace(policy, r, user, account, permission_set, True)
            for r in policy.eligibility_rules
            if r.break_glass
        ]
        names = [t.rule for t in other if t.matched]
        if names:
            hints.append(
                "as a break-glass request this would be allowed by "
                + ", ".join(repr(n) for n in names)
            )
    return Explanation(
        user.user_name,
        describe_account(account),
        permission_set,
        break_glass,
        terms,
        traces,
        tuple(hints),
        policy.version,
    )
