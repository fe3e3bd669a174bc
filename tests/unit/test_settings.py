"""Settings: malformed or unsafe values stop the process with one line naming them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from elevate_core.errors import ConfigurationError
from elevate_core.settings import Mode, Settings, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ELEVATE_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ELEVATE_DATABASE_URL": "mysql://db/elevate"}, "ELEVATE_DATABASE_URL: must start with"),
        ({"ELEVATE_HTTP_PORT": "eighty"}, "ELEVATE_HTTP_PORT: "),
        ({"ELEVATE_HTTP_PORT": "70000"}, "ELEVATE_HTTP_PORT: "),
        ({"ELEVATE_KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "ELEVATE_KAFKA_BOOTSTRAP_SERVERS: "),
        ({"ELEVATE_MODE": "staging"}, "ELEVATE_MODE: "),
        ({"ELEVATE_LOG_LEVEL": "chatty"}, "ELEVATE_LOG_LEVEL: "),
        ({"ELEVATE_DATABSE_URL": "sqlite+aiosqlite:///x"}, "ELEVATE_DATABSE_URL: unknown setting"),
        (
            {"ELEVATE_AWS_SECRET_ACCESS_KEY": "testing", "ELEVATE_OIDC_ISSUER": "https://idp"},
            "ELEVATE_AWS_ACCESS_KEY_ID: moto's dummy key is refused outside dev mode",
        ),
        ({"ELEVATE_OIDC_ISSUER": "http://idp.internal"}, "ELEVATE_OIDC_ISSUER: plain-HTTP"),
        ({"ELEVATE_MODE": "dev", "ELEVATE_FAIL_POINTS": "x"}, "ELEVATE_FAIL_POINTS: "),
    ],
)
def test_bad_settings_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as err:
        load_settings(Settings)
    assert str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_dev_mode_accepts_local_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_MODE", "dev")
    monkeypatch.setenv("ELEVATE_AWS_ACCESS_KEY_ID", "testing")
    settings = load_settings(Settings, service_name="approval")
    assert settings.mode is Mode.DEV
    assert settings.resolved_database_url().endswith("approval.db")
    assert settings.resolved_database_url().startswith("sqlite+aiosqlite:///")


def test_production_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_OIDC_ISSUER", "https://login.example.com")
    monkeypatch.setenv("ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS", "true")
    settings = load_settings(Settings)
    assert settings.mode is Mode.PROD


def test_dedupe_horizon_defaults_to_retention_plus_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_OIDC_ISSUER", "https://login.example.com")
    monkeypatch.setenv("ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS", "true")
    monkeypatch.setenv("ELEVATE_TOPIC_RETENTION_DAYS", "14")
    monkeypatch.setenv("ELEVATE_PURGE_MARGIN_HOURS", "36")
    assert load_settings(Settings).dedupe_keep == timedelta(days=14, hours=36)
    monkeypatch.setenv("ELEVATE_DEDUPE_KEEP_HOURS", str(60 * 24))  # longer is always fine
    assert load_settings(Settings).dedupe_keep == timedelta(days=60)


def test_a_dedupe_horizon_inside_retention_is_refused_outside_dev_and_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ELEVATE_OIDC_ISSUER", "https://login.example.com")
    monkeypatch.setenv("ELEVATE_KAFKA_ALLOW_PLAINTEXT_ANYONE_CAN_FORGE_EVENTS", "true")
    monkeypatch.setenv("ELEVATE_DEDUPE_KEEP_HOURS", str(30 * 24))  # retention 30 d, margin 1 d
    with pytest.raises(ConfigurationError) as err:
        load_settings(Settings)
    assert str(err.value).startswith("ELEVATE_DEDUPE_KEEP_HOURS: must be at least")
    monkeypatch.setenv("ELEVATE_MODE", "test")
    assert load_settings(Settings).dedupe_keep == timedelta(days=30)
