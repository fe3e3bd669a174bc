"""Settings: malformed or unsafe values stop the process with one line naming them."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from elevate_core.errors import ConfigurationError
from elevate_core.settings import (
    EXAMPLE_POLICY,
    TEST_MODE_OPT_IN,
    Mode,
    Settings,
    load_settings,
    load_settings_or_exit,
)

from tests.unit.production import set_production_env


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
        ({"ELEVATE_OIDC_ISSUER": "http://idp.internal"}, "ELEVATE_OIDC_ISSUER: must be an https"),
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


@pytest.fixture
def prod(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    set_production_env(monkeypatch, tmp_path)
    return monkeypatch


def _refusal(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for key, value in env.items():
        monkeypatch.setenv(f"ELEVATE_{key.upper()}", value)
    with pytest.raises(ConfigurationError) as err:
        load_settings(Settings)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_complete_production_configuration_loads(prod: pytest.MonkeyPatch) -> None:
    settings = load_settings(Settings)
    assert settings.mode is Mode.PROD
    assert settings.resolved_database_url() == "postgresql+asyncpg://elevate@db.internal/elevate"


@pytest.mark.parametrize(
    "issuer",
    ["http://idp.internal", "HTTP://idp.internal", "Http://idp.internal/realms/x", "idp.internal"],
)
def test_production_refuses_a_non_https_issuer_whatever_its_case(
    prod: pytest.MonkeyPatch, issuer: str
) -> None:
    assert _refusal(prod, oidc_issuer=issuer) == (
        "ELEVATE_OIDC_ISSUER: must be an https:// URL with a host in prod mode "
        "(plain HTTP is refused)"
    )


@pytest.mark.parametrize("issuer", ["https://", "https:///realms/x", "https://idp:port"])
def test_production_refuses_an_issuer_without_a_host(prod: pytest.MonkeyPatch, issuer: str) -> None:
    assert _refusal(prod, oidc_issuer=issuer).startswith("ELEVATE_OIDC_ISSUER: ")


def test_an_upper_case_https_issuer_is_accepted(prod: pytest.MonkeyPatch) -> None:
    prod.setenv("ELEVATE_OIDC_ISSUER", "HTTPS://Login.Example.com")
    assert load_settings(Settings).oidc_issuer == "HTTPS://Login.Example.com"


@pytest.mark.parametrize(
    "issuer",
    [
        "http://127.0.0.1:9400",
        "http://localhost:9400/",
        "https://LOCALHOST:9400",
        "HTTP://127.0.0.1:9400",
    ],
)
def test_production_refuses_the_local_oidc_provider(prod: pytest.MonkeyPatch, issuer: str) -> None:
    assert _refusal(prod, oidc_issuer=issuer) == (
        "ELEVATE_OIDC_ISSUER: the local OIDC provider (make dev) is refused in prod mode"
    )


def test_production_refuses_the_default_issuer(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _refusal(monkeypatch).startswith("ELEVATE_OIDC_ISSUER: the local OIDC provider")


@pytest.mark.parametrize("audience", ["", "  "])
def test_production_requires_an_audience(prod: pytest.MonkeyPatch, audience: str) -> None:
    assert _refusal(prod, oidc_audience=audience) == (
        "ELEVATE_OIDC_AUDIENCE: required in prod mode (the tokens' expected aud)"
    )


def test_production_requires_a_database_url_rather_than_falling_back_to_sqlite(
    prod: pytest.MonkeyPatch,
) -> None:
    assert _refusal(prod, database_url="").startswith(
        "ELEVATE_DATABASE_URL: required in prod mode, a postgresql+asyncpg:// URL"
    )


def test_production_refuses_an_sqlite_database(prod: pytest.MonkeyPatch) -> None:
    assert _refusal(prod, database_url="sqlite+aiosqlite:////var/lib/elevate.db") == (
        "ELEVATE_DATABASE_URL: SQLite is refused in prod mode; use PostgreSQL"
    )


def test_the_database_url_may_come_from_a_mounted_secret_file(
    prod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The Helm chart mounts the URL (it holds the password) instead of an env variable."""
    url_file = tmp_path / "database-url"
    url_file.write_text("postgresql+asyncpg://elevate:s3cret@db.internal/approval\n")
    prod.delenv("ELEVATE_DATABASE_URL")
    prod.setenv("ELEVATE_DATABASE_URL_FILE", str(url_file))
    settings = load_settings(Settings)
    assert settings.resolved_database_url() == (
        "postgresql+asyncpg://elevate:s3cret@db.internal/approval"
    )
    assert "s3cret" not in repr(settings)  # the URL itself is never a field to print


def test_a_database_url_file_is_checked_like_the_url(
    prod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url_file = tmp_path / "database-url"
    assert _refusal(prod, database_url_file=str(url_file)).startswith(
        "ELEVATE_DATABASE_URL_FILE: set it or ELEVATE_DATABASE_URL, not both"
    )
    prod.delenv("ELEVATE_DATABASE_URL")
    assert _refusal(prod).startswith("ELEVATE_DATABASE_URL_FILE: no such file")
    url_file.write_text("mysql://root:s3cret@db/x")
    refusal = _refusal(prod)
    assert refusal.startswith("ELEVATE_DATABASE_URL_FILE: must start with sqlite+aiosqlite://")
    assert "s3cret" not in refusal
    url_file.write_text("sqlite+aiosqlite:////var/lib/elevate.db")
    assert _refusal(prod) == "ELEVATE_DATABASE_URL: SQLite is refused in prod mode; use PostgreSQL"
    url_file.write_text("")
    assert _refusal(prod).startswith("ELEVATE_DATABASE_URL: required in prod mode")


def test_production_requires_a_policy_file(prod: pytest.MonkeyPatch) -> None:
    prod.delenv("ELEVATE_POLICY_FILE")
    assert _refusal(prod) == (
        "ELEVATE_POLICY_FILE: required in prod mode (the default is the make-dev example policy)"
    )


def test_production_refuses_the_example_policy_by_any_path_to_it(
    prod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    link = tmp_path / "policy-link.yaml"
    link.symlink_to(EXAMPLE_POLICY)
    for path in (EXAMPLE_POLICY, link, EXAMPLE_POLICY.parent / ".." / "local" / "policy.yaml"):
        assert _refusal(prod, policy_file=str(path)) == (
            f"ELEVATE_POLICY_FILE: {path} is the make-dev example policy, refused in prod mode"
        )


def test_production_refuses_a_copy_of_the_example_policy(
    prod: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copy = tmp_path / "org-policy.yaml"
    shutil.copy(EXAMPLE_POLICY, copy)
    assert _refusal(prod, policy_file=str(copy)) == (
        f"ELEVATE_POLICY_FILE: {copy} is a copy of the make-dev example policy, "
        "refused in prod mode"
    )


def test_production_refuses_a_missing_policy_file(prod: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert (
        _refusal(prod, policy_file=str(missing)) == f"ELEVATE_POLICY_FILE: no such file {missing}"
    )


def test_production_refuses_an_aws_endpoint_url(prod: pytest.MonkeyPatch) -> None:
    assert _refusal(prod, aws_endpoint_url="http://127.0.0.1:5000").startswith(
        "ELEVATE_AWS_ENDPOINT_URL: refused in prod mode"
    )


def test_test_mode_is_refused_without_the_harness_opt_in(prod: pytest.MonkeyPatch) -> None:
    prod.setenv("ELEVATE_MODE", "test")
    assert load_settings(Settings).mode is Mode.TEST  # the harness's opt-in is set
    for opt_in in (None, "true"):
        if opt_in is None:
            prod.delenv(TEST_MODE_OPT_IN)
        else:
            prod.setenv(TEST_MODE_OPT_IN, opt_in)
        assert _refusal(prod).startswith(
            "ELEVATE_MODE: test mode turns every production guard off and runs only under "
            f"the test harness ({TEST_MODE_OPT_IN}=1)"
        )
        with pytest.raises(ConfigurationError):
            load_settings(Settings, mode="test")  # constructed directly: the same guard


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"ELEVATE_OIDC_ISSUER": "HTTP://login.example.com"},
            "elevate: invalid setting ELEVATE_OIDC_ISSUER: must be an https:// URL",
        ),
        ({"ELEVATE_MODE": "test"}, "elevate: invalid setting ELEVATE_MODE: test mode turns"),
    ],
)
def test_the_process_stops_at_start_with_one_line_naming_the_setting(
    prod: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    env: dict[str, str],
    line: str,
) -> None:
    prod.delenv(TEST_MODE_OPT_IN)  # as in a production pod
    for key, value in env.items():
        prod.setenv(key, value)
    with pytest.raises(SystemExit) as stop:
        load_settings_or_exit(Settings)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(line)


def test_dedupe_horizon_defaults_to_retention_plus_margin(prod: pytest.MonkeyPatch) -> None:
    monkeypatch = prod
    monkeypatch.setenv("ELEVATE_TOPIC_RETENTION_DAYS", "14")
    monkeypatch.setenv("ELEVATE_PURGE_MARGIN_HOURS", "36")
    assert load_settings(Settings).dedupe_keep == timedelta(days=14, hours=36)
    monkeypatch.setenv("ELEVATE_DEDUPE_KEEP_HOURS", str(60 * 24))  # longer is always fine
    assert load_settings(Settings).dedupe_keep == timedelta(days=60)


def test_a_dedupe_horizon_inside_retention_is_refused_outside_dev_and_test(
    prod: pytest.MonkeyPatch,
) -> None:
    monkeypatch = prod
    monkeypatch.setenv("ELEVATE_DEDUPE_KEEP_HOURS", str(30 * 24))  # retention 30 d, margin 1 d
    with pytest.raises(ConfigurationError) as err:
        load_settings(Settings)
    assert str(err.value).startswith("ELEVATE_DEDUPE_KEEP_HOURS: must be at least")
    monkeypatch.setenv("ELEVATE_MODE", "test")
    assert load_settings(Settings).dedupe_keep == timedelta(days=30)


@pytest.mark.parametrize("claim", ["preferred_username", "email", "upn", "name"])
def test_production_refuses_a_claim_users_can_change(prod: pytest.MonkeyPatch, claim: str) -> None:
    assert _refusal(prod, oidc_user_claim=claim).startswith(
        f"ELEVATE_OIDC_USER_CLAIM: {claim!r} can be changed by users or is not unique"
    )


def test_test_mode_refuses_a_claim_users_can_change(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_MODE", "test")
    assert _refusal(monkeypatch, oidc_user_claim="preferred_username").startswith(
        "ELEVATE_OIDC_USER_CLAIM: 'preferred_username' can be changed by users"
    )


def test_identity_binding_defaults_to_sub_as_an_external_id_of_the_issuer(
    prod: pytest.MonkeyPatch,
) -> None:
    settings = load_settings(Settings)
    assert (settings.oidc_user_claim, settings.oidc_user_attribute) == ("sub", "externalId")
    assert settings.external_id_issuer == "https://login.example.com"
    assert not settings.user_claim_is_mutable
    prod.setenv("ELEVATE_OIDC_USER_CLAIM", "oid")  # Entra ID's immutable object id
    prod.setenv("ELEVATE_OIDC_EXTERNAL_ID_ISSUER", "https://scim.example")
    settings = load_settings(Settings)
    assert (settings.oidc_user_claim, settings.external_id_issuer) == (
        "oid",
        "https://scim.example",
    )


def test_dev_mode_may_bind_to_preferred_username(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ELEVATE_MODE", "dev")
    monkeypatch.setenv("ELEVATE_OIDC_USER_CLAIM", "preferred_username")
    assert load_settings(Settings).user_claim_is_mutable  # request-api warns at start


def test_an_unknown_identity_store_attribute_is_refused(prod: pytest.MonkeyPatch) -> None:
    assert _refusal(prod, oidc_user_attribute="displayName").startswith(
        "ELEVATE_OIDC_USER_ATTRIBUTE: "
    )
