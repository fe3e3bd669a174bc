"""`make dev` end to end: the supervisor brings up all seven processes (on free ports
here, so this runs beside a developer's own `make dev`), the topics exist, moto holds
the seeded organisation, and SIGTERM (what `timeout`, CI and IDEs send; Ctrl-C and SIGHUP
take the same path) stops every process it started."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import httpx
from elevate_core.kafka.acls import Principal
from elevate_local import runs
from elevate_local.kafka import KafkaBroker
from elevate_local.ports import port_open

from tests.harness import eventually

ROOT = Path(__file__).resolve().parents[2]


async def test_dev_stack_starts_everything_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = runs.spawn(
        [
            sys.executable,
            "-m",
            "elevate_local.supervisor",
            "--free-ports",
            "--data-dir",
            str(tmp_path / "dev"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("ELEVATE_")},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def pump() -> None:
        for raw in stdout:
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 240
    try:
        while not ports and time.monotonic() < deadline and proc.poll() is None:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if "elevate-dev | ports " in line:
                ports = json.loads(line.split("elevate-dev | ports ", 1)[1])
        assert ports, "stack did not come up:\n" + "".join(seen[-40:])

        async with httpx.AsyncClient(timeout=10) as client:
            for name in ("request_api", "approval", "grant_worker", "audit_ingest"):
                response = await client.get(f"http://127.0.0.1:{ports[name]}/healthz")
                assert response.status_code == 200, name

        # The broker takes only authenticated clients: the developer's way in is the
        # credentials the supervisor wrote (and printed).
        assert any("client configs for Kafka's CLI tools" in line for line in seen)
        broker = KafkaBroker(tmp_path / "dev" / "kafka", port=ports["kafka"])
        admin = broker.endpoint(Principal.ADMIN).admin()
        await admin.start()
        try:
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        assert {
            "elevate.requests.v1",
            "elevate.decisions.v1",
            "elevate.grants.v1",
            "elevate.cloudtrail.v1",
            "elevate.audit.v1",
            "elevate.dlq.v1",
        } <= topics

        moto = f"http://127.0.0.1:{ports['moto']}"
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
        )

        accounts = {
            a["Name"]
            for a in session.client("organizations", endpoint_url=moto).list_accounts()["Accounts"]
        }
        assert {
            "payments-prod",
            "data-prod",
            "payments-staging",
            "sandbox-alice",
            "sandbox-shared",
            "log-archive",
        } <= accounts
        sso = session.client("sso-admin", endpoint_url=moto)
        instance = sso.list_instances()["Instances"][0]
        names = {
            sso.describe_permission_set(InstanceArn=instance["InstanceArn"], PermissionSetArn=arn)[
                "PermissionSet"
            ]["Name"]
            for arn in sso.list_permission_sets(InstanceArn=instance["InstanceArn"])[
                "PermissionSets"
            ]
        }
        assert {
            "AdministratorAccess",
            "PowerUserAccess",
            "ReadOnlyAccess",
            "DatabaseAdmin",
        } <= names
        ids = session.client("identitystore", endpoint_url=moto)
        users = {
            u["UserName"]
            for u in ids.list_users(IdentityStoreId=instance["IdentityStoreId"])["Users"]
        }
        assert {"alice", "erin", "bob", "frank", "grace", "carol", "dave"} <= users
        groups = {
            g["DisplayName"]
            for g in ids.list_groups(IdentityStoreId=instance["IdentityStoreId"])["Groups"]
        }
        assert {"engineers", "sre", "sre-leads", "auditors", "elevate-admins"} <= groups

        token = (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "elevate_local.oidc",
                    "token",
                    "--issuer",
                    f"http://127.0.0.1:{ports['oidc']}",
                    "--user",
                    "alice",
                ],
                cwd=ROOT,
                capture_output=True,
                check=True,
                timeout=60,
            )
            .stdout.decode()
            .strip()
        )
        assert token.count(".") == 2  # a signed JWT

        # The whole flow across the four services: an auto-approved request becomes an
        # Identity Center assignment in moto.
        api = f"http://127.0.0.1:{ports['request_api']}"
        sandbox = next(
            a["Id"]
            for a in session.client("organizations", endpoint_url=moto).list_accounts()["Accounts"]
            if a["Name"] == "sandbox-alice"
        )
        async with httpx.AsyncClient(
            base_url=api, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as alice:
            created = await alice.post(
                "/v1/requests",
                json={
                    "account_id": sandbox,
                    "permission_set": "ReadOnlyAccess",
                    "duration_minutes": 30,
                    "justification": "look around",
                },
            )
            assert created.status_code == 202, created.text

            async def active() -> bool:
                response = await alice.get(created.headers["Location"])
                return bool(response.json()["status"] == "active")

            await eventually(active, timeout=120, interval=0.5, what="the request active")
        assignments = sso.list_account_assignments(
            InstanceArn=instance["InstanceArn"],
            AccountId=sandbox,
            PermissionSetArn=next(
                arn
                for arn in sso.list_permission_sets(InstanceArn=instance["InstanceArn"])[
                    "PermissionSets"
                ]
                if sso.describe_permission_set(
                    InstanceArn=instance["InstanceArn"], PermissionSetArn=arn
                )["PermissionSet"]["Name"]
                == "ReadOnlyAccess"
            ),
        )["AccountAssignments"]
        alice_id = next(
            u["UserId"]
            for u in ids.list_users(IdentityStoreId=instance["IdentityStoreId"])["Users"]
            if u["UserName"] == "alice"
        )
        assert [a["PrincipalId"] for a in assignments] == [alice_id]
        assert any("request-api |" in line for line in seen + list(lines.queue))
    finally:
        record = runs.run_dir() / f"dev-{proc.pid}.json"
        launched = json.loads(record.read_text())["processes"] if record.exists() else []
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0
    assert {p["name"] for p in launched} >= {"kafka", "moto", "oidc", "request-api"}
    still = [p["name"] for p in launched if runs.alive(p["pid"], p["ticks"])]
    assert still == [], f"left running after SIGTERM: {still}"
    assert not record.exists()
    for name, port in ports.items():
        assert not port_open(port), f"{name} still listening on {port} after SIGTERM"
