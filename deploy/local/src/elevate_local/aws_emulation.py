"""What moto lacks and the reconciler needs, emulated by the fault proxy (FIELD-NOTES):
`ListAccountsForProvisionedPermissionSet` (moto answers nothing) and pagination of
`ListAccountAssignments` (moto returns everything at once).

A permission set counts as provisioned to an account once an assignment of it was made
there — through the proxy, noted by a test (`provisioned`), or found by a one-time scan of
moto per permission set — and stays so after the assignment goes, as in AWS.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

PAGING = ("MaxResults", "NextToken")


def page(payload: bytes, params: dict[str, Any], key: str, default_size: int) -> bytes:
    """One page of `key`'s list, as AWS pages it (`NextToken` is an opaque offset)."""
    data = json.loads(payload)
    items = list(data.get(key, []))
    start = int(params.get("NextToken") or 0)
    size = int(params.get("MaxResults") or default_size)
    data[key] = items[start : start + size]
    data.pop("NextToken", None)
    if start + size < len(items):
        data["NextToken"] = str(start + size)
    return json.dumps(data).encode()


class MotoGaps:
    def __init__(self, host: str, port: int, *, page_size: int = 20) -> None:
        self.host = host
        self.port = port
        self.page_size = page_size
        self._lock = threading.Lock()
        self._provisioned: dict[str, set[str]] = {}  # permission set ARN → accounts
        self._scanned: set[str] = set()

    def provisioned(self, account_id: str, permission_set_arn: str) -> None:
        with self._lock:
            self._provisioned.setdefault(permission_set_arn, set()).add(account_id)

    def provisioned_accounts(self, params: dict[str, Any]) -> bytes:
        ps = str(params.get("PermissionSetArn", ""))
        if ps not in self._scanned:
            self._scan(ps)
        with self._lock:
            accounts = sorted(self._provisioned.get(ps, set()))
        return page(json.dumps({"AccountIds": accounts}).encode(), params, "AccountIds", 20)

    def _scan(self, ps: str) -> None:
        instance = self._call("SWBExternalService.ListInstances", {})["Instances"][0]
        accounts = self._call("AWSOrganizationsV20161128.ListAccounts", {})["Accounts"]
        found = set()
        for account in accounts:
            listed = self._call(
                "SWBExternalService.ListAccountAssignments",
                {
                    "InstanceArn": instance["InstanceArn"],
                    "AccountId": account["Id"],
                    "PermissionSetArn": ps,
                },
            )
            if listed.get("AccountAssignments"):
                found.add(str(account["Id"]))
        with self._lock:
            self._provisioned.setdefault(ps, set()).update(found)
            self._scanned.add(ps)

    def _call(self, target: str, params: dict[str, Any]) -> dict[str, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        service = "organizations" if "Organizations" in target else "sso"
        try:
            conn.request(
                "POST",
                "/",
                body=json.dumps(params).encode(),
                headers={
                    "X-Amz-Target": target,
                    "Content-Type": "application/x-amz-json-1.1",
                    "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/"
                    f"{service}/aws4_request, SignedHeaders=host, Signature=0",
                },
            )
            result: dict[str, Any] = json.loads(conn.getresponse().read() or b"{}")
            return result
        finally:
            conn.close()
