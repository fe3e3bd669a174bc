"""Do the chart's pods start? Each rendered Deployment's and hook Job's environment, loaded
by the settings model of the service it runs, in prod mode, with every mounted file in place.

A chart can pass every schema and still hand a service a setting it refuses (an unknown
`ELEVATE_*` name, a file path nothing mounts, a guard it trips): the pods would crash-loop.
This builds, for each container, the environment the kubelet would give it — values as
written, files from its volumes (Secrets: placeholders of the right kind; ConfigMaps: the
chart's policy, or a stand-in) under a temporary root — and loads the settings the command
loads (`elevate-<service>`: that service's model; `elevate migrate`: the database settings;
`elevate topics create`: the Kafka settings). Run by scripts/chart-check.sh:

    python deploy/helm/checks/check_settings.py RENDERED.yaml
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from elevate_core.events.signing import generate_keys
from elevate_core.kafka.acls import Principal
from elevate_core.settings import (
    DatabaseSettings,
    KafkaSettings,
    ProcessSettings,
    Settings,
    load_settings,
)

SETTINGS = {
    "request-api": ("elevate_request_api.settings", "RequestApiSettings"),
    "approval": ("elevate_approval.settings", "ApprovalSettings"),
    "grant-worker": ("elevate_grant_worker.settings", "GrantWorkerSettings"),
    "audit-ingest": ("elevate_audit_ingest.settings", "AuditSettings"),
    "notifier": ("elevate_notifier.settings", "NotifierSettings"),
}
POLICY_STAND_IN = "schema_version: 1\neligibility: []\napproval_rules: []\n"


def _settings_class(command: list[str]) -> type[ProcessSettings]:
    if command[:2] == ["elevate", "migrate"]:
        return DatabaseSettings
    if command[:3] == ["elevate", "topics", "create"]:
        return KafkaSettings
    service = command[0].removeprefix("elevate-")
    module, name = SETTINGS[service]
    cls: type[ProcessSettings] = getattr(importlib.import_module(module), name)
    return cls


WRITERS = (Principal.REQUEST_API, Principal.APPROVAL)
KEYS = generate_keys(Path(tempfile.mkdtemp(prefix="chart-keys-")), WRITERS)


def _secret_value(key: str, path: str) -> str:
    if path == "private.pem":
        return KEYS[str(WRITERS[0])].read_text()
    if path == "url":
        return "postgresql+asyncpg://elevate:placeholder@db.internal/elevate"
    return f"placeholder for {key}\n"


def _materialise(
    pod: dict[str, Any], container: dict[str, Any], root: Path, docs: dict[str, str]
) -> None:
    """Write what the container's volume mounts would show, under `root`."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        target = root / mount["mountPath"].lstrip("/")
        target.mkdir(parents=True, exist_ok=True)
        volume = volumes[mount["name"]]
        if "secret" in volume:
            for item in volume["secret"].get("items", []):
                (target / item["path"]).write_text(_secret_value(item["key"], item["path"]))
        elif "configMap" in volume:
            name = volume["configMap"]["name"]
            if name.endswith("-policy"):
                (target / "policy.yaml").write_text(docs.get(name) or POLICY_STAND_IN)
            else:  # the writers' public keys
                for writer in WRITERS:
                    public = KEYS[str(writer)].parent / "public" / f"{writer}.pub"
                    (target / public.name).write_text(public.read_text())


def _environment(container: dict[str, Any], root: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        assert "valueFrom" not in item, f"{item['name']}: a secret in the environment"
        value = str(item.get("value", ""))
        env[item["name"]] = str(root / value.lstrip("/")) if value.startswith("/etc/") else value
    return env


def check(rendered: Path) -> list[str]:
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    policies = {
        d["metadata"]["name"]: d["data"]["policy.yaml"] for d in docs if d["kind"] == "ConfigMap"
    }
    problems: list[str] = []
    checked = 0
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                _materialise(pod, container, root, policies)
                env = _environment(container, root)
                saved = {k: v for k, v in os.environ.items() if k.startswith("ELEVATE_")}
                for k in saved:
                    del os.environ[k]
                os.environ.update(env)
                try:
                    settings = load_settings(_settings_class(container["command"]))
                    if isinstance(settings, Settings):  # the keys load, not only exist
                        settings.event_signer()
                        settings.event_verifier()
                    checked += 1
                except Exception as exc:  # any refusal is a finding, named with its pod
                    problems.append(f"{doc['kind']} {doc['metadata']['name']}: {exc}")
                finally:
                    for k in env:
                        os.environ.pop(k, None)
                    os.environ.update(saved)
    if checked == 0 and not problems:
        problems.append("no Deployment or Job found")
    print(f"check_settings: {checked} containers load their settings in prod mode", file=sys.stderr)
    return problems


def main() -> int:
    problems = [p for path in sys.argv[1:] for p in check(Path(path))]
    for problem in problems:
        print(f"check_settings: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
