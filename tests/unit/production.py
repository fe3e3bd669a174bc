"""A production environment that is valid but for the setting a test changes."""

from __future__ import annotations

from pathlib import Path

import pytest

PROD_ENV = {
    "ELEVATE_OIDC_ISSUER": "https://login.example.com",
    "ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS": "true",
    "ELEVATE_DATABASE_URL": "postgresql+asyncpg://elevate@db.internal/elevate",
}


def set_production_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Set every setting production requires; returns the (operator's own) policy file."""
    policy = tmp_path / "policy.yaml"
    policy.write_text("# Acme's access policy\nschema_version: 1\n")
    for key, value in PROD_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("ELEVATE_POLICY_FILE", str(policy))
    return policy
