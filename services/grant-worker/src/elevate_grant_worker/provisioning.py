"""The Identity Center calls of the session cut: a permission set's inline policy, its
session duration, provisioning it to one account (and that provisioning's status), the
accounts where it has unprovisioned changes, and whether a group assignment of the pair
serves the user too. All go through `IdentityCenter.call` — the same budget, lanes,
fencing and waiting out of throttling and conflicts as the assignment writes — at
revocation priority."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from elevate_grant_worker.aws import REVOKE, AwsError, IdentityCenter

NOT_PROVISIONED = "LATEST_PERMISSION_SET_NOT_PROVISIONED"


class PermissionSets:
    def __init__(self, ic: IdentityCenter) -> None:
        self.ic = ic
        s = ic.settings
        self.identity_store_id = s.identity_store_id or ""
        self.store = boto3.session.Session(
            region_name=s.aws_region,
            aws_access_key_id=s.aws_access_key_id,
            aws_secret_access_key=s.aws_secret_access_key,
        ).client(
            "identitystore",
            endpoint_url=s.aws_endpoint_url,
            config=Config(
                retries={"total_max_attempts": 1},
                connect_timeout=s.aws_timeout_seconds,
                read_timeout=s.aws_timeout_seconds,
            ),
        )
        self.store.meta.events.register("before-send", ic.fence_hook)

    async def _sso(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        kwargs["InstanceArn"] = await self.ic.discover()
        method = getattr(self.ic.client, _snake(operation))
        out: dict[str, Any] = await self.ic.call(operation, REVOKE, lambda: method(**kwargs))
        return out

    async def session_duration(self, permission_set_arn: str) -> str | None:
        out = await self._sso("DescribePermissionSet", PermissionSetArn=permission_set_arn)
        duration = out["PermissionSet"].get("SessionDuration")
        return str(duration) if duration else None

    async def inline_policy(self, permission_set_arn: str) -> str:
        out = await self._sso(
            "GetInlinePolicyForPermissionSet", PermissionSetArn=permission_set_arn
        )
        return str(out.get("InlinePolicy") or "")

    async def write_inline_policy(self, permission_set_arn: str, text: str | None) -> None:
        """Put `text` as the inline policy; None deletes it."""
        if text is None:
            await self._sso(
                "DeleteInlinePolicyFromPermissionSet", PermissionSetArn=permission_set_arn
            )
        else:
            await self._sso(
                "PutInlinePolicyToPermissionSet",
                PermissionSetArn=permission_set_arn,
                InlinePolicy=text,
            )

    async def provision(self, permission_set_arn: str, account_id: str) -> str:
        """ProvisionPermissionSet to that one account; returns AWS's request id."""
        out = await self._sso(
            "ProvisionPermissionSet",
            PermissionSetArn=permission_set_arn,
            TargetType="AWS_ACCOUNT",
            TargetId=account_id,
        )
        return str(out["PermissionSetProvisioningStatus"]["RequestId"])

    async def provisioning_status(self, request_id: str) -> tuple[str, str | None]:
        out = await self._sso(
            "DescribePermissionSetProvisioningStatus", ProvisionPermissionSetRequestId=request_id
        )
        status = out["PermissionSetProvisioningStatus"]
        return str(status.get("Status", "IN_PROGRESS")), status.get("FailureReason")

    async def unprovisioned_accounts(self, permission_set_arn: str) -> set[str]:
        """Accounts where the permission set has changes not provisioned yet (all pages)."""
        accounts: set[str] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"PermissionSetArn": permission_set_arn, "MaxResults": 100}
            kwargs["ProvisioningStatus"] = NOT_PROVISIONED
            if token:
                kwargs["NextToken"] = token
            page = await self._sso("ListAccountsForProvisionedPermissionSet", **kwargs)
            accounts.update(str(a) for a in page.get("AccountIds", []))
            token = page.get("NextToken")
            if not token:
                return accounts

    async def group_holds(self, account_id: str, permission_set_arn: str, user_id: str) -> bool:
        """Whether a GROUP assignment of the pair includes the user (the same role serves
        it, so cutting the user's sessions would cut access that group still grants)."""
        groups = sorted(
            await self.ic.principals(account_id, permission_set_arn, "GROUP", priority=REVOKE)
        )
        for start in range(0, len(groups), 100):  # IsMemberInGroups takes up to 100 ids
            if await self._member(user_id, groups[start : start + 100]):
                return True
        return False

    async def _member(self, user_id: str, group_ids: list[str]) -> bool:
        store = await self._store_id()
        out: Any = await self.ic.call(
            "IsMemberInGroups",
            REVOKE,
            lambda: self.store.is_member_in_groups(
                IdentityStoreId=store, MemberId={"UserId": user_id}, GroupIds=group_ids
            ),
        )
        return any(r.get("MembershipExists") for r in out.get("Results", []))

    async def _store_id(self) -> str:
        if not self.identity_store_id:
            out = await self.ic.call(
                "ListInstances", REVOKE, lambda: self.ic.client.list_instances()
            )
            instances = out.get("Instances", [])
            if not instances:
                raise AwsError(
                    "NoInstance", "no Identity Center instance", retryable=False, ambiguous=False
                )
            self.identity_store_id = str(instances[0]["IdentityStoreId"])
        return self.identity_store_id


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")
