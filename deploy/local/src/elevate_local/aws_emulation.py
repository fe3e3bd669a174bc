"""What moto lacks and the reconciler needs, emulated by the fault proxy (FIELD-NOTES):
`ListAccountsForProvisionedPermissionSet` (moto answers nothing) and pagination of
`ListAccountAssignments` (moto returns everything at once); for the session cut,
`ProvisionPermissionSet` to the `TargetId` asked for (moto reports the caller's account),
`DescribePermissionSetProvisioningStatus` (moto lacks it) and the `ProvisioningStatus`
filter: a change of the permission set's inline policy leaves every account it is
provisioned to `LATEST_PERMISSION_SET_NOT_PROVISIONED` until it is provisioned there again.

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
        self._stale: dict[str, set[str]] = {}  # permission set ARN → accounts behind
        self.provisionings: dict[str, dict[str, Any]] = {}  # request id → status

    def provisioned(self, account_id: str, permission_set_arn: str) -> None:
        with self._lock:
            self._provisioned.setdefault(permission_set_arn, set()).add(account_id)

    def provisioned_accounts(self, params: dict[str, Any]) -> bytes:
        ps = str(params.get("PermissionSetArn", ""))
        if ps not in self._scanned:
            self._scan(ps)
        with self._lock:
            accounts = self._provisioned.get(ps, set())
            stale = self._stale.get(ps, set()) & accounts
            wanted = params.get("ProvisioningStatus")
            if wanted == "LATEST_PERMISSION_SET_NOT_PROVISIONED":
                accounts = stale
            elif wanted == "LATEST_PERMISSION_SET_PROVISIONED":
                accounts = accounts - stale
            listed = sorted(accounts)
        return page(json.dumps({"AccountIds": listed}).encode(), params, "AccountIds", 20)

    def changed(self, permission_set_arn: str) -> None:
        """The permission set changed: every account it is provisioned to is behind."""
        if permission_set_arn not in self._scanned:
            self._scan(permission_set_arn)
        with self._lock:
            behind = self._provisioned.get(permission_set_arn, set())
            self._stale.setdefault(permission_set_arn, set()).update(behind)

    def provision(self, params: dict[str, Any], payload: bytes) -> bytes:
        """ProvisionPermissionSet as AWS answers it: for `TargetId`, its status kept."""
        data = json.loads(payload)
        status = data.get("PermissionSetProvisioningStatus", {})
        ps, account = str(params.get("PermissionSetArn")), str(params.get("TargetId"))
        status["AccountId"] = account
        with self._lock:
            self._provisioned.setdefault(ps, set()).add(account)
            self._stale.get(ps, set()).discard(account)
            self.provisionings[str(status.get("RequestId"))] = dict(status, Status="SUCCEEDED")
        return json.dumps(data).encode()

    def provisioning_status(self, params: dict[str, Any]) -> tuple[int, bytes]:
        with self._lock:
            status = self.provisionings.get(str(params.get("ProvisionPermissionSetRequestId")))
        if status is None:
            return 400, json.dumps(
                {"__type": "ResourceNotFoundException", "message": "no such request"}
            ).encode()
        return 200, json.dumps({"PermissionSetProvisioningStatus": status}, default=str).encode()

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
