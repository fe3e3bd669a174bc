"""Settings: malformed or unsafe values stop the process with one line naming them."""

from __future__ import annotations

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
    settings = load_settings(Settings)
    assert settings.mode is Mode.PROD
