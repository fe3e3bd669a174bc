"""How a signed-in user is looked up in the Identity Store, and checked again on the answer."""

from __future__ import annotations

from typing import Any

import pytest
from elevate_core.directory.identity import UserKey

ISSUER = "https://login.example.com"
BOB: dict[str, Any] = {
    "UserName": "bob",
    "Emails": [{"Value": "bob@example.com", "Primary": True}],
    "ExternalIds": [{"Issuer": ISSUER, "Id": "00u-bob"}],
}


def test_an_external_id_is_looked_up_with_its_issuer() -> None:
    key = UserKey("externalId", "00u-bob", ISSUER)
    assert key.alternate_identifier() == {"ExternalId": {"Issuer": ISSUER, "Id": "00u-bob"}}
    assert UserKey.user_name("bob").alternate_identifier() == {
        "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": "bob"}
    }


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (UserKey("externalId", "00u-bob", ISSUER), True),
        (UserKey("externalId", "00u-bob", "https://another-idp.example"), False),
        (UserKey("externalId", "00u-dave", ISSUER), False),
        (UserKey.user_name("bob"), True),
        (UserKey.user_name("Bob"), False),  # exact, never case-folded
        (UserKey("emails.value", "bob@example.com"), True),
        (UserKey("emails.value", "dave@example.com"), False),
    ],
)
def test_the_described_user_must_carry_the_key_it_was_found_by(key: UserKey, found: bool) -> None:
    assert key.matches(BOB) is found


def test_a_user_without_external_ids_matches_no_external_id() -> None:
    assert not UserKey("externalId", "00u-bob", ISSUER).matches({"UserName": "bob"})
