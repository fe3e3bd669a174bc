"""request-api's HTTP input and output (pydantic), with OpenAPI examples."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

T = TypeVar("T")
ACCOUNT_ID = r"^[0-9]{12}$"
# Control (Cc) and format (Cf) characters: NUL (PostgreSQL refuses it), zero-width
# spaces that fake a justification, bidi overrides that disguise text in the SIEM.
_REFUSED = frozenset({"Cc", "Cf"})


def clean_text(value: str, *, lines: bool = False) -> str:
    """NFKC-normalised and trimmed, so look-alikes are stored as what they look like;
    refused if it holds a control or format character — but for line breaks (as `\n`)
    where `lines` allows them: a justification may be a paragraph."""
    value = unicodedata.normalize("NFKC", value).strip()
    allowed = ""
    if lines:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
        allowed = "\n"
    bad = next((c for c in value if unicodedata.category(c) in _REFUSED and c not in allowed), None)
    if bad is not None:
        raise PydanticCustomError(
            "control_character",
            "control or format character U+{code} is not allowed",
            {"code": f"{ord(bad):04X}"},
        )
    return value


def _justified(value: str) -> str:
    if not any(unicodedata.category(c).startswith("L") for c in value):
        raise PydanticCustomError("no_letters", "a justification must contain letters")
    return value


def _ticket(value: str) -> str | None:
    return value or None  # a blank ticket is no ticket


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+05:00 has no UTC time
        raise PydanticCustomError("datetime_range", "the time is out of range in UTC") from None


def _paragraphs(value: str) -> str:
    return clean_text(value, lines=True)


Text = Annotated[str, AfterValidator(clean_text)]
Paragraphs = Annotated[str, AfterValidator(_paragraphs)]  # free text: line breaks allowed
# A time with its zone (naive ones are refused), as UTC: what the database stores.
UtcDateTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Me(_Out):
    user_name: str
    user_id: str
    email: str | None
    display_name: str | None
    groups: list[str]
    roles: list[Literal["requester", "approver", "auditor", "admin"]]


class EligibilityItem(_Out):
    account_id: str
    account_name: str
    ou_path: str
    permission_set: str
    max_duration_minutes: int
    approval_needed: bool
    approval_rule: str
    required_approvals: int
    ticket_required: bool
    break_glass: bool


class AccountOut(_Out):
    account_id: str
    account_name: str
    ou_path: str


class RequestCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "account_id": "123456789012",
                    "permission_set": "AdministratorAccess",
                    "duration_minutes": 60,
                    "justification": "INC-4211: restart the payments API",
                    "ticket": "INC-4211",
                }
            ]
        },
    )

    account_id: str = Field(pattern=ACCOUNT_ID, description="12-digit AWS account id")
    # Lengths count the normalised text (NFKC may lengthen it).
    permission_set: Annotated[Text, Field(min_length=1, max_length=32)]
    start: UtcDateTime | None = Field(default=None, description="default: now")
    duration_minutes: int = Field(ge=1, le=60 * 24 * 14)
    justification: Annotated[
        Paragraphs, AfterValidator(_justified), Field(max_length=2000, description="with letters")
    ]
    ticket: Annotated[Text, Field(max_length=128), AfterValidator(_ticket)] | None = None
    break_glass: bool = False

    @property
    def duration(self) -> timedelta:
        return timedelta(minutes=self.duration_minutes)


class Comment(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"comment": "Approved for the incident window"}]},
    )

    comment: Annotated[Paragraphs, Field(max_length=2000)] | None = None


class TimelineOut(_Out):
    at: datetime
    actor: str
    action: str
    comment: str | None
    status: str


class ActivityOut(_Out):
    at: datetime
    operation: str
    service: str | None
    severity: str | None
    source_ip: str | None
    result: str | None = Field(default=None, description="Success, or Failure (error code)")
    outlived: bool | None = Field(default=None, description="after its grant had ended")


class RequestOut(_Out):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0b9d7c8e-6a55-4a4b-9b1e-1b2f3c4d5e6f",
                    "status": "pending",
                    "requester": "alice",
                    "account_id": "123456789012",
                    "account_name": "payments-prod",
                    "permission_set": "AdministratorAccess",
                    "start": "2026-11-29T10:00:00Z",
                    "end": "2026-11-29T11:00:00Z",
                    "justification": "INC-4211",
                    "ticket": "INC-4211",
                    "approval_rule": "one-sre-lead",
                    "required_approvals": 1,
                    "approver_groups": ["sre-leads"],
                    "approvers": [],
                    "break_glass": False,
                    "review": None,
                    "policy_version": "5d94fb125e5d",
                    "created_at": "2026-11-29T09:58:12Z",
                    "updated_at": "2026-11-29T09:58:12Z",
                }
            ]
        },
    )

    id: uuid.UUID
    status: str
    requester: str
    account_id: str
    account_name: str | None
    permission_set: str
    start: datetime
    end: datetime
    justification: str
    ticket: str | None
    approval_rule: str
    required_approvals: int
    approver_groups: list[str]
    approvers: list[str]
    break_glass: bool
    review: str | None
    policy_version: str
    created_at: datetime
    updated_at: datetime
    sessions_valid_until: datetime | None = Field(
        default=None,
        description=(
            "Once access ended without a session cut (its permission set is not opted in): "
            "until when role sessions issued before the end could still work"
        ),
    )

    sessions_cut: bool = Field(
        default=False,
        description="Once access ended: the role sessions issued before the end were cut",
    )

    @classmethod
    def of(cls, row: Any) -> RequestOut:
        return cls(
            id=row.id,
            status=row.status,
            requester=row.requester_user_name,
            account_id=row.account_id,
            account_name=row.account_name,
            permission_set=row.permission_set_name,
            start=row.start,
            end=row.end,
            justification=row.justification,
            ticket=row.ticket,
            approval_rule=row.approval_rule,
            required_approvals=row.required_approvals,
            approver_groups=list(row.approver_groups),
            approvers=list(row.approvers),
            break_glass=row.break_glass,
            review=row.review,
            policy_version=row.policy_version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sessions_valid_until=row.sessions_valid_until,
            sessions_cut=bool(row.sessions_cut),
        )


class RequestDetail(RequestOut):
    timeline: list[TimelineOut]
    activity: list[ActivityOut]


class Review(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"comment": "Checked against INC-4211: justified"}]},
    )

    comment: Annotated[Paragraphs, Field(min_length=1, max_length=2000)]


class ExplainQuery(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user": "alice",
                    "account": "payments-prod",
                    "permission_set": "AdministratorAccess",
                    "break_glass": False,
                }
            ]
        },
    )

    user: Annotated[Text, Field(min_length=1, max_length=128, description="a user name")]
    account: Annotated[Text, Field(min_length=1, max_length=255, description="an id or name")]
    permission_set: Annotated[Text, Field(min_length=1, max_length=64)]
    break_glass: bool = False


class RuleTraceOut(BaseModel):
    rule: str
    matched: bool
    reasons: list[str]


class ExplanationOut(BaseModel):
    eligible: bool
    summary: str
    policy_version: str
    user: str
    account: str
    permission_set: str
    break_glass: bool
    matched_rules: list[str]
    traces: list[RuleTraceOut]
    hints: list[str]
    terms: dict[str, Any] | None = None


class PolicyOut(BaseModel):
    version: str = Field(description="short sha256 of the policy file in force")
    loaded_at: datetime | None = Field(description="when this replica loaded it")
    names_resolved: bool = Field(
        description="false while the policy's user and account names could not be "
        "resolved through the directory (it then matches them exactly)"
    )
    document: dict[str, Any] = Field(description="the policy as parsed (docs/policy.md)")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class Accepted(BaseModel):
    id: uuid.UUID
    status: str
