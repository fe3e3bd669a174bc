"""A generated organisation for load benches: accounts in nested OUs and many permission
sets, seeded into a moto server over its HTTP API (as AWS would be called).

    uv run python -m bench.org_gen [--accounts 2000] [--permission-sets 500]   # times a seeding

Layout: `Division-<d>/Team-<t>/{Prod,NonProd}` (4 divisions x 5 teams x 2 = 40 leaf OUs,
three levels deep), accounts spread evenly over the leaves and named after their place
(`d0-t0-prod-007`), permission sets `Bench-<nnn>` (session 1 h, no policies attached).

Seeding speed, measured on the 2-core CI machine: moto resolves the calling account on
every request by scanning the IAM backend of every account it knows
(`moto.iam.models.get_account_id_from`); once the organisation has 2,000 accounts each call
costs ~20 ms, so creating and moving 2,000 accounts took ~60 s serially. A moto server
started with `MOTO_ACCOUNT_ID` (`MOTO_ENV` below; it is what the dummy key resolves to
anyway) skips that scan, and the calls run in 8 threads (boto3 clients are thread-safe;
the rest is linear scans in moto's organizations backend): ~20 s for 2,000 accounts. Every
account is still created with CreateAccount and placed with MoveAccount, as AWS would have
it; nothing is written into moto's internals.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3

if TYPE_CHECKING:
    from mypy_boto3_organizations import OrganizationsClient
    from mypy_boto3_sso_admin import SSOAdminClient

MOTO_ENV = {"MOTO_ACCOUNT_ID": "123456789012"}  # moto's default account: the dummy key's
DIVISIONS = 4
TEAMS = 5
ENVIRONMENTS = ("Prod", "NonProd")
THREADS = 8


@dataclass(frozen=True, slots=True)
class BenchAccount:
    id: str
    name: str
    ou_path: str  # "Division-0/Team-0/Prod"


@dataclass(frozen=True)
class BenchOrg:
    accounts: list[BenchAccount]
    permission_sets: list[str]
    seconds: dict[str, float]  # what seeding took, by step

    def under(self, ou_path: str) -> list[BenchAccount]:
        return [a for a in self.accounts if f"{a.ou_path}/".startswith(f"{ou_path}/")]


def leaf_paths() -> list[str]:
    return [
        f"Division-{d}/Team-{t}/{env}"
        for d in range(DIVISIONS)
        for t in range(TEAMS)
        for env in ENVIRONMENTS
    ]


def account_name(ou_path: str, index: int) -> str:
    division, team, env = ou_path.split("/")
    return f"d{division.split('-')[1]}-t{team.split('-')[1]}-{env.lower()}-{index:03d}"


def _clients(endpoint_url: str) -> tuple[OrganizationsClient, SSOAdminClient]:
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    return (
        session.client("organizations", endpoint_url=endpoint_url),
        session.client("sso-admin", endpoint_url=endpoint_url),
    )


def _ensure_ous(org: OrganizationsClient) -> dict[str, str]:
    """The OU tree (an organisation must exist already); path → OU id."""
    root = org.list_roots()["Roots"][0]["Id"]
    ids: dict[str, str] = {"": root}
    for leaf in leaf_paths():
        parts = leaf.split("/")
        for depth in range(1, len(parts) + 1):
            path = "/".join(parts[:depth])
            if path not in ids:
                parent = ids["/".join(parts[: depth - 1])]
                created = org.create_organizational_unit(ParentId=parent, Name=parts[depth - 1])
                ids[path] = created["OrganizationalUnit"]["Id"]
    return ids


def _place(
    org: OrganizationsClient, root: str, ou_ids: dict[str, str], spec: tuple[str, str]
) -> BenchAccount:
    name, ou_path = spec
    status = org.create_account(Email=f"{name}@bench.elevate.example", AccountName=name)
    account_id = status["CreateAccountStatus"]["AccountId"]  # moto: SUCCEEDED at once
    org.move_account(AccountId=account_id, SourceParentId=root, DestinationParentId=ou_ids[ou_path])
    return BenchAccount(account_id, name, ou_path)


def _create_permission_set(sso: SSOAdminClient, instance_arn: str, name: str) -> str:
    sso.create_permission_set(InstanceArn=instance_arn, Name=name, SessionDuration="PT1H")
    return name


def seed_bench_org(endpoint_url: str, *, accounts: int, permission_sets: int) -> BenchOrg:
    """Create the OU tree, `accounts` accounts spread over its leaves and `permission_sets`
    permission sets, in a moto server whose organisation already exists."""
    org, sso = _clients(endpoint_url)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    ou_ids = _ensure_ous(org)
    leaves = leaf_paths()
    specs = [
        (account_name(leaves[i % len(leaves)], i // len(leaves)), leaves[i % len(leaves)])
        for i in range(accounts)
    ]
    with ThreadPoolExecutor(THREADS) as pool:
        placed = list(pool.map(lambda s: _place(org, ou_ids[""], ou_ids, s), specs))
        seconds["accounts"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        instance_arn = sso.list_instances()["Instances"][0]["InstanceArn"]
        names = [f"Bench-{i:03d}" for i in range(permission_sets)]
        created = list(pool.map(lambda n: _create_permission_set(sso, instance_arn, n), names))
        seconds["permission_sets"] = round(time.perf_counter() - started, 1)
    return BenchOrg(accounts=placed, permission_sets=created, seconds=seconds)


def main() -> None:
    from elevate_local import runs
    from elevate_local.ports import free_port, wait_for_port

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=2000)
    parser.add_argument("--permission-sets", type=int, default=500)
    args = parser.parse_args()
    port = free_port()
    moto = runs.spawn(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, **MOTO_ENV},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60, what="moto")
        url = f"http://127.0.0.1:{port}"
        _clients(url)[0].create_organization(FeatureSet="ALL")
        seeded = seed_bench_org(url, accounts=args.accounts, permission_sets=args.permission_sets)
        print(f"{len(seeded.accounts)} accounts, {len(seeded.permission_sets)} permission sets")
        print(f"seconds: {seeded.seconds}")
    finally:
        moto.terminate()
        moto.wait(timeout=20)


if __name__ == "__main__":
    main()
