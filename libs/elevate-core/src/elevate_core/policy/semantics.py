"""Checks that relate fields to each other, and warnings.

`check_document` returns errors (the policy must not load) and static warnings, each
with the exact field path. `reachability_warnings` needs directory data (who is in
which group) and says which approval rules can never gather their required count.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from elevate_core.policy.errors import Issue, Severity
from elevate_core.policy.model import FieldPath, Policy
from elevate_core.policy.schema import AccountRef, ApprovalRule, EligibilityRule, PolicyDocument


@dataclass(frozen=True, slots=True)
class Finding:
    path: FieldPath
    message: str
    severity: Severity = "error"


def _selector_problem(ref: AccountRef, *, exclude: bool) -> str | None:
    chosen = [
        key for key, value in (("id", ref.id), ("name", ref.name), ("ou", ref.ou)) if value
    ] + (["'*'"] if ref.all else [])
    if len(chosen) != 1:
        got = ", ".join(chosen) if chosen else "nothing"
        return f"give exactly one of id, name, ou or '*' (got {got})"
    if exclude and ref.all:
        return "'*' cannot be excluded: exclude names accounts by id, name or ou"
    return None


def _duplicates(names: list[str]) -> dict[int, int]:
    """index of each repeated name -> index of its first occurrence."""
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for index, name in enumerate(names):
        if name in first:
            repeats[index] = first[name]
        else:
            first[name] = index
    return repeats


def _duplicate_names(section: str, kind: str, names: list[str]) -> list[Finding]:
    return [
        Finding(
            (section, index, "name"),
            f"duplicate {kind} name {names[index]!r} (first defined at {section}[{first}])",
        )
        for index, first in _duplicates(names).items()
    ]


def _approval_rule_findings(at: FieldPath, rule: ApprovalRule) -> list[Finding]:
    """Auto-approval and approver groups exclude each other, and one of them is needed."""
    if not rule.auto_approve:
        if rule.approver_groups:
            return []
        return [
            Finding(
                (*at, "approver_groups"),
                "required: at least one group (or set auto_approve: true)",
            )
        ]
    found: list[Finding] = []
    if rule.approver_groups:
        found.append(
            Finding((*at, "approver_groups"), "an auto-approve rule takes no approver groups")
        )
    # the default count is harmless; only a count the author wrote contradicts auto_approve
    if "required_approvals" in rule.model_fields_set:
        found.append(
            Finding(
                (*at, "required_approvals"),
                "an auto-approve rule takes no required approvals",
            )
        )
    return found


def _who_and_where_findings(at: FieldPath, elig: EligibilityRule) -> list[Finding]:
    """The principals and the account selectors of one eligibility rule."""
    found: list[Finding] = []
    if not elig.principals.groups and not elig.principals.users:
        found.append(Finding((*at, "principals"), "name at least one group or user"))
    for field, refs, exclude in (
        ("accounts", elig.accounts, False),
        ("exclude", elig.exclude, True),
    ):
        for pos, ref in enumerate(refs):
            problem = _selector_problem(ref, exclude=exclude)
            if problem:
                found.append(Finding((*at, field, pos), problem))
    return found


def _approval_link_findings(
    at: FieldPath, elig: EligibilityRule, known: Collection[str]
) -> list[Finding]:
    """A break-glass rule takes no approval rule; any other rule names one that exists
    and, having no after-the-fact review, takes no review groups."""
    if elig.break_glass:
        if elig.approval is None:
            return []
        return [
            Finding(
                (*at, "approval"),
                "a break-glass rule grants at once and takes no approval rule "
                "(its grants are reviewed afterwards by review_groups)",
            )
        ]
    found: list[Finding] = []
    if elig.approval is None:
        found.append(
            Finding(
                (*at, "approval"),
                "required: the name of an approval rule (or set break_glass: true)",
            )
        )
    elif elig.approval not in known:
        listed = ", ".join(sorted(known)) or "none defined"
        found.append(
            Finding(
                (*at, "approval"),
                f"unknown approval rule {elig.approval!r} (known: {listed})",
            )
        )
    if elig.review_groups:
        found.append(Finding((*at, "review_groups"), "only break-glass rules take review_groups"))
    return found


def _eligibility_warnings(
    at: FieldPath, elig: EligibilityRule, auditor_groups: Collection[str]
) -> list[Finding]:
    found = [
        Finding(
            (*at, "permission_sets", pos),
            f"{elig.permission_sets[pos]!r} listed twice (also at permission_sets[{dup}])",
            "warning",
        )
        for pos, dup in _duplicates(list(elig.permission_sets)).items()
    ]
    if elig.break_glass and not elig.review_groups and not auditor_groups:
        found.append(
            Finding(
                (*at, "review_groups"),
                "break-glass grants will have no reviewers: set review_groups or auditor_groups",
                "warning",
            )
        )
    return found


def _eligibility_findings(
    at: FieldPath, elig: EligibilityRule, known: Collection[str], auditor_groups: Collection[str]
) -> list[Finding]:
    return [
        *_who_and_where_findings(at, elig),
        *_approval_link_findings(at, elig, known),
        *_eligibility_warnings(at, elig, auditor_groups),
    ]


def _unused_approval_warnings(doc: PolicyDocument) -> list[Finding]:
    # break-glass rules never go through an approval rule, so naming one does not count
    used = {elig.approval for elig in doc.eligibility if not elig.break_glass}
    return [
        Finding(
            ("approval_rules", index, "name"),
            f"approval rule {approval.name!r} is not used by any eligibility rule",
            "warning",
        )
        for index, approval in enumerate(doc.approval_rules)
        if approval.name not in used
    ]


def _standing_findings(doc: PolicyDocument) -> list[Finding]:
    return [
        Finding(("standing_assignments", index, "account"), "give exactly one of id or name")
        for index, standing in enumerate(doc.standing_assignments)
        if (standing.account.id is None) == (standing.account.name is None)
    ]


def check_document(doc: PolicyDocument) -> list[Finding]:
    """Errors and static warnings in document order: approval rules, eligibility rules,
    which approval rules nothing uses, standing assignments, then the document itself."""
    approvals = [rule.name for rule in doc.approval_rules]
    found = _duplicate_names("approval_rules", "approval rule", approvals)
    for index, rule in enumerate(doc.approval_rules):
        found += _approval_rule_findings(("approval_rules", index), rule)
    found += _duplicate_names("eligibility", "eligibility rule", [e.name for e in doc.eligibility])
    known = set(approvals)
    for index, elig in enumerate(doc.eligibility):
        found += _eligibility_findings(("eligibility", index), elig, known, doc.auditor_groups)
    found += _unused_approval_warnings(doc)
    found += _standing_findings(doc)
    if not doc.auditor_groups:
        found.append(
            Finding(
                ("auditor_groups",),
                "no auditor groups: only admins can read the audit trail",
                "warning",
            )
        )
    return found


def reachability_warnings(
    policy: Policy, group_members: Mapping[str, Collection[str]]
) -> tuple[Issue, ...]:
    """Warn about approval rules whose approver groups cannot reach the required count.

    `group_members` maps a group's display name to its members' user names (as the
    directory reports them). Two cases are reported:
      * fewer distinct people in the approver groups than `required_approvals`: no
        request under the rule can ever be approved;
      * exactly enough people, but some of them may also request under the rule:
        their own requests can never be approved, because nobody approves their own.
    """
    members = {group: set(users) for group, users in group_members.items()}
    issues: list[Issue] = []
    for index, rule in enumerate(policy.document.approval_rules):
        if rule.auto_approve:
            continue
        path: FieldPath = ("approval_rules", index, "required_approvals")
        people: set[str] = set()
        unknown = [g for g in rule.approver_groups if g not in members]
        for group in rule.approver_groups:
            people |= members.get(group, set())
        groups = ", ".join(rule.approver_groups)
        if len(people) < rule.required_approvals:
            note = f" (unknown group(s): {', '.join(unknown)})" if unknown else ""
            issues.append(
                policy.issue(
                    path,
                    (
                        f"approval rule {rule.name!r} needs {rule.required_approvals} approval(s) "
                        f"but its approver groups ({groups}) have only {len(people)} distinct "
                        f"member(s){note}: requests under it can never be approved"
                    ),
                )
            )
            continue
        requesters: set[str] = set()
        for elig in policy.document.eligibility:
            if elig.approval != rule.name:
                continue
            requesters |= set(elig.principals.users)
            for group in elig.principals.groups:
                requesters |= members.get(group, set())
        both = sorted(people & requesters)
        if both and len(people) - 1 < rule.required_approvals:
            issues.append(
                policy.issue(
                    path,
                    (
                        f"approval rule {rule.name!r} needs {rule.required_approvals} approval(s) "
                        f"from {len(people)} people, but {', '.join(both)} can also request "
                        "under it and cannot approve their own request: such requests can never "
                        "be approved"
                    ),
                )
            )
    return tuple(issues)
