"""Event signatures: what they cover, who may sign which topic, rotation, settings."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from elevate_core.errors import ConfigurationError
from elevate_core.events.envelope import encode
from elevate_core.events.models import Person, RevokeRequested
from elevate_core.events.signing import SignatureError, Signer, Verifier, generate_keys
from elevate_core.events.topics import Topics
from elevate_core.kafka.acls import Principal
from elevate_core.settings import Settings, load_settings

from tests.harness import envelope
from tests.unit.production import set_production_env

REVOKE = RevokeRequested(
    request_id=uuid.UUID("3f0c1a8e-6a53-4f7e-9a44-2d7c5c1b9e10"),
    requested_by=Person(user_name="alice", user_id="u-1"),
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path, [Principal.REQUEST_API, Principal.APPROVAL])
    return tmp_path


def _signed(keys: Path, writer: Principal = Principal.REQUEST_API) -> tuple[bytes, dict[str, str]]:
    value, encoded = encode(envelope(REVOKE, source="elevate/request-api"))
    headers = {k: v.decode() for k, v in encoded}
    headers |= dict(Signer.from_file(keys / f"{writer}.key").sign(value, headers))
    return value, headers


def _refusal(verifier: Verifier, value: bytes, headers: dict[str, str]) -> str:
    with pytest.raises(SignatureError) as err:
        verifier.verify(Topics.REQUESTS, value, headers)
    return err.value.code


def test_the_writers_signature_verifies(keys: Path) -> None:
    value, headers = _signed(keys)
    Verifier.from_dir(keys / "public").verify(Topics.REQUESTS, value, headers)


@pytest.mark.parametrize("header", ["ce_id", "ce_type", "ce_source", "ce_subject", "ce_time"])
def test_every_identifying_header_is_covered(keys: Path, header: str) -> None:
    value, headers = _signed(keys)
    headers[header] = headers[header] + "x"
    assert _refusal(Verifier.from_dir(keys / "public"), value, headers) == "bad-signature"


def test_the_body_is_covered_and_trace_headers_are_not(keys: Path) -> None:
    value, headers = _signed(keys)
    verifier = Verifier.from_dir(keys / "public")
    assert _refusal(verifier, value.replace(b"alice", b"mallory"), headers) == "bad-signature"
    verifier.verify(Topics.REQUESTS, value, headers | {"traceparent": "00-" + "1" * 32 + "-x"})


def test_unsigned_unknown_and_wrong_writer_are_refused(keys: Path, tmp_path: Path) -> None:
    value, headers = _signed(keys)
    verifier = Verifier.from_dir(keys / "public")
    unsigned = {k: v for k, v in headers.items() if not k.startswith("elevate_sig")}
    assert _refusal(verifier, value, unsigned) == "unsigned"
    stranger = tmp_path / "stranger"
    generate_keys(stranger, [Principal.REQUEST_API])  # a key nobody configured
    assert _refusal(verifier, *_signed(stranger)) == "unknown-key"
    # approval's genuine key, but approval does not write the requests topic
    assert _refusal(verifier, *_signed(keys, Principal.APPROVAL)) == "wrong-writer"


def test_two_keys_per_writer_let_a_key_rotate(keys: Path, tmp_path: Path) -> None:
    new = tmp_path / "new"
    generate_keys(new, [Principal.REQUEST_API])
    (keys / "public" / "request-api.next.pub").write_bytes(
        (new / "public" / "request-api.pub").read_bytes()
    )
    verifier = Verifier.from_dir(keys / "public")
    verifier.verify(Topics.REQUESTS, *_signed(keys))  # the old key, still in flight
    verifier.verify(Topics.REQUESTS, *_signed(new))  # the new one


def test_public_keys_are_named_after_their_writer(tmp_path: Path) -> None:
    generate_keys(tmp_path, [Principal.APPROVAL])
    (tmp_path / "public" / "approval.pub").rename(tmp_path / "public" / "someone.pub")
    with pytest.raises(ConfigurationError, match="<writer principal>"):
        Verifier.from_dir(tmp_path / "public")


def test_private_keys_are_owner_only(keys: Path) -> None:
    assert (keys / "request-api.key").stat().st_mode & 0o077 == 0


@pytest.fixture
def prod_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("ELEVATE_"):
            monkeypatch.delenv(key)
    set_production_env(monkeypatch, tmp_path)
    return monkeypatch


def test_production_writers_need_their_key_and_readers_the_public_keys(
    prod_env: pytest.MonkeyPatch, keys: Path
) -> None:
    def error(service: str) -> str:
        with pytest.raises(ConfigurationError) as err:
            load_settings(Settings, service_name=service)
        return str(err.value)

    assert error("approval").startswith("ELEVATE_EVENT_SIGNING_KEY_FILE: approval writes")
    prod_env.setenv("ELEVATE_EVENT_SIGNING_KEY_FILE", str(keys / "approval.key"))
    assert error("approval").startswith("ELEVATE_EVENT_VERIFY_KEYS_DIR: approval reads")
    prod_env.setenv("ELEVATE_EVENT_VERIFY_KEYS_DIR", str(keys / "public"))
    assert load_settings(Settings, service_name="approval").event_signer() is not None
    prod_env.delenv("ELEVATE_EVENT_SIGNING_KEY_FILE")
    # audit-ingest writes no signed topic and reads none: it needs neither
    assert load_settings(Settings, service_name="audit-ingest").event_signer() is None
