"""Which person an Identity Store user is (ELEVATE_PERSON_KEY), from a DescribeUser answer.

moto stores no enterprise extension, so the employee-number path is tested here only; the
email path also end to end (tests/integration/approval, tests/integration/request_api)."""

from __future__ import annotations

from typing import Any

import pytest
from elevate_core.directory.identity import ENTERPRISE, person_key_of
from elevate_core.directory.models import PersonKey
from elevate_core.settings import Settings

PRIMARY_SECOND = {
    "Emails": [
        {"Value": "old@example.com", "Primary": False},
        {"Value": "Ann@Example.com ", "Primary": True},
    ]
}


@pytest.mark.parametrize(
    ("described", "kind", "key"),
    [
        pytest.param(PRIMARY_SECOND, "email", "email:ann@example.com", id="primary-email"),
        pytest.param(
            {"Emails": [{"Value": "ann@example.com"}]},
            "email",
            "email:ann@example.com",
            id="only-email-without-primary-flag",
        ),
        pytest.param({"Emails": []}, "email", None, id="no-email"),
        pytest.param({}, "email", None, id="no-emails-attribute"),
        pytest.param({"Emails": [{"Value": "  ", "Primary": True}]}, "email", None, id="blank"),
        pytest.param(
            {"Extensions": {ENTERPRISE: {"employeeNumber": "E-0042"}}, **PRIMARY_SECOND},
            "employee_number",
            "employee_number:e-0042",
            id="employee-number",
        ),
        pytest.param(PRIMARY_SECOND, "employee_number", None, id="no-extension-no-email-fallback"),
        pytest.param(
            {"Extensions": {ENTERPRISE: {"department": "ops"}}},
            "employee_number",
            None,
            id="extension-without-employee-number",
        ),
        pytest.param(
            {"Extensions": {ENTERPRISE: "E-1"}}, "employee_number", None, id="malformed-extension"
        ),
    ],
)
def test_person_key_of(described: dict[str, Any], kind: PersonKey, key: str | None) -> None:
    assert person_key_of(described, kind) == key


def test_person_key_setting_defaults_to_email_and_refuses_others() -> None:
    assert Settings(mode="dev").person_key == "email"
    assert Settings(mode="dev", person_key="employee_number").person_key == "employee_number"
    with pytest.raises(ValueError, match="person_key"):
        Settings(mode="dev", person_key="user_name")
