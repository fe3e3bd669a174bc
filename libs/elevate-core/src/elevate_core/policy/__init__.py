"""Policy as code: who may request what, who may approve it, and under which terms.

Load with `load_policy` / `parse_policy` (or keep one hot-reloaded with
`PolicyWatcher`), then evaluate with pure functions over injected directory data:
`Evaluator(policy, accounts).eligibility(user)` for everything a user may request,
`evaluate_request` / `approval_rule_for` for one request, `may_decide` for one
decision, and `explain` for the reason. See docs/policy.md for the file format.
"""

from elevate_core.policy.approvals import (
    DecisionCheck,
    Person,
    Requester,
    Tally,
    Vote,
    is_same_person,
    may_decide,
    pending_deadline,
    tally,
)
from elevate_core.policy.durations import format_duration, parse_duration
from elevate_core.policy.errors import (
    Issue,
    PolicyError,
    PolicyFileError,
    PolicyValidationError,
)
from elevate_core.policy.evaluate import (
    Eligibility,
    Entitlement,
    Evaluator,
    approval_rule_for,
    evaluate_request,
    is_standing,
)
from elevate_core.policy.explain import Explanation, RuleTrace, explain
from elevate_core.policy.loader import (
    CheckResult,
    check_policy,
    load_policy,
    parse_policy,
    policy_version,
)
from elevate_core.policy.model import Policy
from elevate_core.policy.reload import PolicyWatcher
from elevate_core.policy.schema import (
    AccountRef,
    ApprovalRule,
    EligibilityRule,
    PolicyDocument,
    StandingAssignment,
)
from elevate_core.policy.semantics import reachability_warnings
from elevate_core.policy.terms import BREAK_GLASS_APPROVAL, Terms, merge_terms

__all__ = [
    "BREAK_GLASS_APPROVAL",
    "AccountRef",
    "ApprovalRule",
    "CheckResult",
    "DecisionCheck",
    "Eligibility",
    "EligibilityRule",
    "Entitlement",
    "Evaluator",
    "Explanation",
    "Issue",
    "Person",
    "Policy",
    "PolicyDocument",
    "PolicyError",
    "PolicyFileError",
    "PolicyValidationError",
    "PolicyWatcher",
    "Requester",
    "RuleTrace",
    "StandingAssignment",
    "Tally",
    "Terms",
    "Vote",
    "approval_rule_for",
    "check_policy",
    "evaluate_request",
    "explain",
    "format_duration",
    "is_same_person",
    "is_standing",
    "load_policy",
    "may_decide",
    "merge_terms",
    "parse_duration",
    "parse_policy",
    "pending_deadline",
    "policy_version",
    "reachability_warnings",
    "tally",
]
