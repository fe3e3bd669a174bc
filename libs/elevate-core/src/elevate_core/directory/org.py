"""A full snapshot of the AWS Organizations tree, so account lookups are dict reads.

`load_org_snapshot` walks the tree breadth-first from the root (OUs with
ListOrganizationalUnitsForParent, accounts with ListAccountsForParent). It makes
blocking boto3 calls: run it in a thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from elevate_core.directory.errors import AccountNotFoundError
from elevate_core.directory.models import Account, OrgUnit

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient


@dataclass(frozen=True, slots=True)
class OrgSnapshot:
    organization_id: str
    root_id: str
    management_account_id: str
    # Account id → account (with its OU path root → leaf).
    accounts: Mapping[str, Account]
    # OU id → OU path root → leaf, ending with the OU itself.
    ou_paths: Mapping[str, tuple[OrgUnit, ...]]
    # Child id (account or OU) → parent id (OU or root).
    parents: Mapping[str, str]
    # When it was fetched, on the directory's clock.
    fetched_at: float

    def account(self, account_id: str) -> Account:
        try:
            return self.accounts[account_id]
        except KeyError:
            raise AccountNotFoundError(account_id) from None

    def account_by_name(self, name: str) -> Account:
        """Account names are not unique in AWS; the lowest account id wins."""
        matches = sorted((a for a in self.accounts.values() if a.name == name), key=lambda a: a.id)
        if not matches:
            raise AccountNotFoundError(name)
        return matches[0]

    def parent_id(self, child_id: str) -> str | None:
        return self.parents.get(child_id)

    def ou_by_path(self, path: str) -> OrgUnit | None:
        """`"Workloads/Prod"` → that OU, or None."""
        wanted = tuple(part for part in path.split("/") if part)
        for ou_path in self.ou_paths.values():
            if tuple(ou.name for ou in ou_path) == wanted:
                return ou_path[-1]
        return None

    def accounts_under(self, ou_id: str) -> list[Account]:
        """Accounts in the OU or any OU nested below it (nested OUs inherit)."""
        if ou_id == self.root_id:
            return sorted(self.accounts.values(), key=lambda a: a.id)
        return sorted(
            (a for a in self.accounts.values() if any(ou.id == ou_id for ou in a.ou_path)),
            key=lambda a: a.id,
        )


def load_org_snapshot(client: OrganizationsClient, *, fetched_at: float) -> OrgSnapshot:
    """One full, consistent-enough listing of the organization (blocking)."""
    organization = client.describe_organization()["Organization"]
    management_id = organization["MasterAccountId"]
    root_id = client.list_roots()["Roots"][0]["Id"]

    ou_pager = client.get_paginator("list_organizational_units_for_parent")
    account_pager = client.get_paginator("list_accounts_for_parent")

    ou_paths: dict[str, tuple[OrgUnit, ...]] = {}
    parents: dict[str, str] = {}
    accounts: dict[str, Account] = {}

    # (parent id, OU path of that parent); the root's path is empty.
    queue: list[tuple[str, tuple[OrgUnit, ...]]] = [(root_id, ())]
    while queue:
        parent_id, parent_path = queue.pop(0)
        for account_page in account_pager.paginate(ParentId=parent_id):
            for raw in account_page["Accounts"]:
                account_id = raw["Id"]
                parents[account_id] = parent_id
                accounts[account_id] = Account(
                    id=account_id,
                    name=raw.get("Name", account_id),
                    ou_path=parent_path,
                    is_management=account_id == management_id,
                )
        for ou_page in ou_pager.paginate(ParentId=parent_id):
            for raw_ou in ou_page["OrganizationalUnits"]:
                ou = OrgUnit(id=raw_ou["Id"], name=raw_ou["Name"])
                path = (*parent_path, ou)
                ou_paths[ou.id] = path
                parents[ou.id] = parent_id
                queue.append((ou.id, path))

    return OrgSnapshot(
        organization_id=organization["Id"],
        root_id=root_id,
        management_account_id=management_id,
        accounts=accounts,
        ou_paths=ou_paths,
        parents=parents,
        fetched_at=fetched_at,
    )
