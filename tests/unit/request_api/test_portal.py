"""The portal's pure parts: its production settings, the form parser and the request
form's refusals by field, where a sign-in may send the browser afterwards, and PKCE."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest
from elevate_core.errors import ConfigurationError
from elevate_core.settings import load_settings
from elevate_request_api.domain import InvalidRequestError, NotEligibleError
from elevate_request_api.portal import forms
from elevate_request_api.portal.login import safe_next
from elevate_request_api.portal.signin import pkce_pair
from elevate_request_api.settings import RequestApiSettings

from tests.unit.production import set_production_env

ACCOUNT = "123456789012"


@pytest.fixture
def prod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("ELEVATE_"):
            monkeypatch.delenv(key)
    set_production_env(monkeypatch, tmp_path)
    monkeypatch.setenv("ELEVATE_OIDC_AUDIENCE", "elevate")
    return monkeypatch


def test_production_accepts_an_https_portal_address(prod: pytest.MonkeyPatch) -> None:
    prod.setenv("ELEVATE_PORTAL_BASE_URL", "https://elevate.example.com/")
    settings = load_settings(RequestApiSettings)
    assert settings.portal_url == "https://elevate.example.com"


@pytest.mark.parametrize("url", ["", "http://elevate.example.com", "https://", "elevate.example"])
def test_production_refuses_a_portal_address_that_is_not_https(
    prod: pytest.MonkeyPatch, url: str
) -> None:
    prod.setenv("ELEVATE_PORTAL_BASE_URL", url)
    with pytest.raises(ConfigurationError, match=r"(?i)portal_base_url"):
        load_settings(RequestApiSettings)


def _form(**values: str) -> forms.RequestForm:
    base = {
        "account_id": ACCOUNT,
        "permission_set": "ReadOnlyAccess",
        "duration_minutes": "30",
        "start_mode": "now",
        "justification": "look at the logs",
    }
    return forms.RequestForm({**base, **values})


def test_a_complete_form_becomes_the_same_request_as_the_api_takes() -> None:
    body = _form(ticket=" INC-7 ").request()
    assert body is not None
    assert (body.account_id, body.permission_set, body.duration_minutes) == (
        ACCOUNT,
        "ReadOnlyAccess",
        30,
    )
    assert body.ticket == "INC-7"
    assert body.start is None  # now
    assert body.break_glass is False


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"justification": "  "}, "justification"),
        ({"duration_minutes": "half an hour"}, "duration_minutes"),
        ({"permission_set": ""}, "permission_set"),
        ({"start_mode": "later", "start": "tomorrow"}, "start"),
    ],
)
def test_each_mistake_is_put_by_its_field(change: dict[str, str], field: str) -> None:
    form = _form(**change)
    assert form.request() is None
    assert list(form.errors) == [field]
    assert form.errors[field].strip()


def test_a_later_start_is_read_in_the_browsers_time_zone() -> None:
    body = _form(start_mode="later", start="2026-12-24T09:30", tz="Europe/Paris").request()
    assert body is not None
    assert body.start is not None
    assert body.start.isoformat() == "2026-12-24T08:30:00+00:00"
    # an unknown zone is UTC, not an error or the server's local time
    body = _form(start_mode="later", start="2026-12-24T09:30", tz="Mars/Olympus").request()
    assert body is not None
    assert body.start is not None
    assert body.start.isoformat() == "2026-12-24T09:30:00+00:00"


def test_a_later_start_is_ignored_when_now_is_chosen() -> None:
    body = _form(start_mode="now", start="not a time").request()
    assert body is not None
    assert body.start is None


def test_the_services_refusals_go_by_their_fields() -> None:
    form = _form()
    form.refused(
        InvalidRequestError(
            "x",
            errors=["duration exceeds the maximum of 1h", "a ticket is required", "odd"],
        )
    )
    assert form.errors == {
        "duration_minutes": "duration exceeds the maximum of 1h",
        "ticket": "a ticket is required",
        "form": "odd",
    }
    form = _form()
    form.refused(NotEligibleError("you are not eligible for access to X on account 1"))
    assert list(form.errors) == ["permission_set"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{}"),
        ("multipart/form-data; boundary=x", b"--x--"),
        ("", b"a=b"),
        (forms.FORM, b"\xff\xfe"),
    ],
)
def test_only_a_utf8_urlencoded_form_is_read(content_type: str, body: bytes) -> None:
    with pytest.raises(forms.FormError):
        forms.parse(body, content_type)


def test_a_form_keeps_the_first_value_of_a_repeated_field() -> None:
    fields = forms.parse(b"csrf=one&csrf=two&empty=", f"{forms.FORM}; charset=utf-8")
    assert fields == {"csrf": "one", "empty": ""}


@pytest.mark.parametrize(
    ("asked", "sent_to"),
    [
        (None, "/requests"),
        ("/requests/abc", "/requests/abc"),
        ("/request?account=1", "/request?account=1"),
        ("https://evil.example/", "/requests"),
        ("//evil.example/", "/requests"),
        ("/\\evil.example", "/requests"),
        ("/requests\r\nSet-Cookie: x=1", "/requests"),
        ("/login?next=/login", "/requests"),
        ("requests", "/requests"),
    ],
)
def test_after_sign_in_the_browser_goes_only_to_a_portal_path(
    asked: str | None, sent_to: str
) -> None:
    assert safe_next(asked) == sent_to


def test_pkce_uses_s256_of_a_long_random_verifier() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()
    assert pkce_pair()[0] != verifier
