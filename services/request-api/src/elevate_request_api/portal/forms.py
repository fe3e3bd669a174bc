"""Form posts: parsed from `application/x-www-form-urlencoded` bodies (what a browser
sends without JavaScript), turned into the same `RequestCreate` as `/v1`, with each
refusal put next to its field."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ValidationError

from elevate_request_api.domain import InvalidRequestError, NotEligibleError, RequestError
from elevate_request_api.schemas import RequestCreate

M = TypeVar("M", bound=BaseModel)
FORM = "application/x-www-form-urlencoded"
FIELDS = ("permission_set", "duration_minutes", "start", "justification", "ticket")
# What `service.submit` refuses a form for: shown on the form, by the field it is about.
REFUSALS = (InvalidRequestError, NotEligibleError)
# The word a refusal's message starts with or names → the field it is shown by.
_FIELD_WORDS = (
    ("ticket", "ticket"),
    ("duration", "duration_minutes"),
    ("start", "start"),
    ("justification", "justification"),
)


class FormError(Exception):
    """The body is not a form this portal sends."""


def parse(body: bytes, content_type: str) -> dict[str, str]:
    """The form's fields (the first value of each)."""
    if content_type.split(";")[0].strip().lower() != FORM:
        raise FormError("expected a form post")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise FormError("the form is not UTF-8") from None
    parsed = parse_qs(text, keep_blank_values=True, max_num_fields=32)
    return {k: v[0] for k, v in parsed.items()}


@dataclass
class RequestForm:
    """What the user typed, shown back with errors by field (`form`: the whole form)."""

    values: dict[str, str]
    errors: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:  # the template reads form.<field>
        if name in ("values", "errors"):
            raise AttributeError(name)
        return self.values.get(name, "")

    def request(self) -> RequestCreate | None:
        """The request, or None with `errors` filled."""
        data: dict[str, Any] = {
            "account_id": self.values.get("account_id", ""),
            "permission_set": self.values.get("permission_set", ""),
            "justification": self.values.get("justification", ""),
            "break_glass": self.values.get("break_glass") == "on",
        }
        ticket = self.values.get("ticket", "").strip()
        if ticket:
            data["ticket"] = ticket
        duration = self.values.get("duration_minutes", "").strip()
        if not duration.isdigit():
            self.errors["duration_minutes"] = "Give the duration as a whole number of minutes."
        else:
            data["duration_minutes"] = int(duration)
        if not data["permission_set"]:
            self.errors["permission_set"] = "Choose a permission set."
        if not data["justification"].strip():
            self.errors["justification"] = "Say why you need this access."
        if self.values.get("start_mode") == "later":
            start = self._start()
            if start is not None:
                data["start"] = start
        if self.errors:
            return None
        try:
            return RequestCreate.model_validate(data)
        except ValidationError as exc:
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else "form"
                self.errors.setdefault(name if name in FIELDS else "form", _message(error))
            return None

    def refused(self, exc: RequestError) -> None:
        """Put each of a use case's refusals by the field it is about."""
        if isinstance(exc, NotEligibleError):
            self.errors["permission_set"] = str(exc)
            return
        for message in exc.errors or [str(exc)]:
            self.errors.setdefault(field_of(message), message)

    def _start(self) -> datetime | None:
        raw = self.values.get("start", "").strip()
        try:
            zone = ZoneInfo(self.values.get("tz") or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        try:
            local = datetime.fromisoformat(raw)
        except ValueError:
            self.errors["start"] = "Give the start as a date and time."
            return None
        if local.tzinfo is None:
            local = local.replace(tzinfo=zone)
        return local.astimezone(UTC)


def validated(model: type[M], **fields: object) -> M:
    """`fields` as `model` (the checks /v1 applies to the same body); a refusal names its
    field (a 422 page)."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "form"
        raise InvalidRequestError(f"{name}: {error['msg']}") from None


def field_of(message: str) -> str:
    lowered = message.lower()
    return next((name for word, name in _FIELD_WORDS if word in lowered), "form")


def _message(error: Any) -> str:
    message = str(error.get("msg", "invalid"))
    return message.removeprefix("Value error, ")
