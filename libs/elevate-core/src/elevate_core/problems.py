"""RFC 9457 problem details for every HTTP error Elevate returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
PROBLEM_TYPE = "urn:elevate:problem:"  # + a stable slug, per kind of refusal
INVALID_INPUT = PROBLEM_TYPE + "invalid-input"
# Input refusals a client may want to tell apart, by pydantic error type; any other
# validation error is INVALID_INPUT.
# FastAPI's own 400 for a body it cannot decode before validating it (fastapi/routing.py).
_UNPARSABLE_BODY = "There was an error parsing the body"
VALIDATION_TYPES = {
    "timezone_aware": PROBLEM_TYPE + "naive-datetime",
    "datetime_range": PROBLEM_TYPE + "datetime-out-of-range",
    "control_character": PROBLEM_TYPE + "control-character",
    "no_letters": PROBLEM_TYPE + "justification-without-letters",
    "json_invalid": PROBLEM_TYPE + "malformed-json",
}
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(HTTPException):
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        type_: str = "about:blank",
        title: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.type_ = type_
        self.title = title or _TITLES.get(status, "Error")
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str,
    type_: str = "about:blank",
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    body = {
        "type": type_,
        "title": title or _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "instance": instance,
        **extensions,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(
            exc.status_code,
            str(exc.detail),
            instance=request.url.path,
            type_=exc.type_,
            title=exc.title,
            headers=exc.headers,
            **exc.extensions,
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == _UNPARSABLE_BODY:
            # A body FastAPI cannot even decode (not UTF-8): malformed JSON like any other.
            return problem_response(
                422,
                "the body is not JSON (not UTF-8 text)",
                instance=request.url.path,
                type_=VALIDATION_TYPES["json_invalid"],
            )
        return problem_response(
            exc.status_code,
            str(exc.detail),
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        raw = list(exc.errors())
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in raw]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
        type_ = (
            VALIDATION_TYPES.get(str(raw[0].get("type")), INVALID_INPUT) if raw else INVALID_INPUT
        )
        return problem_response(422, detail, instance=request.url.path, type_=type_, errors=errors)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Never leak internals (or secrets in messages) to the caller; the log has it.
        return problem_response(500, "internal error", instance=request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(Exception, on_unexpected)
