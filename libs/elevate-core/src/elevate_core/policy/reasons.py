"""Why a request is refused: stable codes, shared by request-api's submission checks and
the re-check approval and grant-worker make before deciding and before granting.

The values appear in events (`RequestRejected.reason_code`, `GrantFailed.reason_code`),
metric labels and logs: never rename one, only add.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    USER_UNKNOWN = "user_unknown"  # no Identity Store user with the request's user name
    USER_MISMATCH = "user_mismatch"  # that user has another user id than the request's
    ACCOUNT_UNKNOWN = "account_unknown"  # no such account in the organization
    PERMISSION_SET_UNKNOWN = "permission_set_unknown"  # no permission set with that name
    PERMISSION_SET_ARN_MISMATCH = "permission_set_arn_mismatch"  # ARN is not the name's
    MANAGEMENT_ACCOUNT = "management_account"  # no rule names the management account
    NOT_ELIGIBLE = "not_eligible"  # no eligibility rule covers the request now
    OUT_OF_SCOPE = "out_of_scope"  # (account, permission set ARN) not in managed scope
    START_IN_PAST = "start_in_past"  # (request-api only) start before submission
    START_BEYOND_HORIZON = "start_beyond_horizon"  # start too far after submission
    DURATION_NOT_POSITIVE = "duration_not_positive"  # end not after start
    DURATION_TOO_LONG = "duration_too_long"  # longer than the rule's max_duration
    TICKET_REQUIRED = "ticket_required"  # the rule requires a ticket, none given
    TICKET_MISMATCH = "ticket_mismatch"  # the ticket does not match a rule's pattern
