"""Identity Store ExternalIds, emulated by the fault proxy (moto stores none: FIELD-NOTES).

In AWS, users provisioned over SCIM by Okta or Entra ID carry `ExternalIds`
(`{Issuer, Id}`), and request-api finds a signed-in user by `GetUserId` with an
`ExternalId` alternate identifier. Here the proxy answers that from a table — the seeded
users linked for an issuer (`link_seeded`), or any user a test links — by rewriting the
call into moto's `GetUserId` by user name, and adds the table's `ExternalIds` to
`DescribeUser` answers. An ExternalId the table does not hold is `ResourceNotFoundException`,
as in AWS.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from elevate_local.seed_data import USERS

NOT_FOUND = json.dumps(
    {"__type": "ResourceNotFoundException", "message": "USER not found."}
).encode()


class ExternalIds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[tuple[str, str], str] = {}  # (issuer, id) → user name
        self._ids: dict[str, list[tuple[str, str]]] = {}  # user name → [(issuer, id)]

    def link(self, issuer: str, external_id: str, user_name: str) -> None:
        with self._lock:
            self._users[(issuer, external_id)] = user_name
            ids = self._ids.setdefault(user_name, [])
            if (issuer, external_id) not in ids:
                ids.append((issuer, external_id))

    def link_seeded(self, issuer: str) -> None:
        """Every seeded user, with the local identity provider's subject for them."""
        for spec in USERS:
            self.link(issuer, spec.external_id, spec.user_name)

    def request(self, operation: str, params: dict[str, Any]) -> tuple[bytes | None, bool]:
        """(the body to forward instead, or None to forward as is; whether it is unknown)."""
        wanted = params.get("AlternateIdentifier", {}).get("ExternalId")
        if operation != "GetUserId" or not isinstance(wanted, dict):
            return None, False
        with self._lock:
            user_name = self._users.get((str(wanted.get("Issuer")), str(wanted.get("Id"))))
        if user_name is None:
            return None, True
        rewritten = dict(params)
        rewritten["AlternateIdentifier"] = {
            "UniqueAttribute": {"AttributePath": "userName", "AttributeValue": user_name}
        }
        return json.dumps(rewritten).encode(), False

    def response(self, operation: str, payload: bytes) -> bytes:
        if operation != "DescribeUser":
            return payload
        data = json.loads(payload)
        with self._lock:
            ids = list(self._ids.get(str(data.get("UserName")), ()))
        if not ids:
            return payload
        data["ExternalIds"] = [{"Issuer": issuer, "Id": ident} for issuer, ident in ids]
        return json.dumps(data).encode()
