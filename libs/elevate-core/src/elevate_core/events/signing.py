"""Signed security-relevant events (docs/security.md, "Signed events").

Every event on `elevate.requests.v1` and `elevate.decisions.v1` carries an Ed25519
signature by its topic's one writer (the ACL table): ACLs can be misconfigured, and
`ce_source` is only a header the sender writes. The signature covers the value and the
headers that identify the event — `ce_id`, `ce_type`, `ce_source`, `ce_subject`, `ce_time`
— so a genuine event cannot be re-addressed to another request or given a fresh id to slip
past deduplication. Headers: `elevate_sig_kid` (the key's id: the first 16 hex digits of the
SHA-256 of its raw public key) and `elevate_sig` (base64).

Keys come from files: the writer's private key (PEM, PKCS#8), and a directory of public
keys named `<writer principal>[.<label>].pub`, several per writer so a key can be rotated
without a gap. Readers send anything unsigned, signed by an unknown key or by another
service's key, or altered, to the DLQ with the reason — never to a handler.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from prometheus_client import Counter

from elevate_core.errors import ConfigurationError
from elevate_core.events.envelope import Envelope, EnvelopeError, header_map
from elevate_core.events.topics import Topics
from elevate_core.kafka import acls

#: The topics whose every event must be signed by the topic's writer.
SIGNED_TOPICS: frozenset[Topics] = frozenset({Topics.REQUESTS, Topics.DECISIONS})
KID_HEADER = "elevate_sig_kid"
SIG_HEADER = "elevate_sig"
_COVERED = ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time")
_VERSION = "elevate-sig-v1"
log = logging.getLogger(__name__)


class SignatureError(EnvelopeError):
    """An event on a signed topic that its writer did not sign as it is (never retryable:
    it goes to the DLQ). `code` is stable: unsigned | unknown-key | wrong-writer |
    bad-signature | no-keys."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"signature {code}: {message}")
        self.code = code


def writer_of(topic: Topics) -> acls.Principal:
    """The one principal that signs `topic`'s events (the ACL table's writer)."""
    [writer] = acls.access_of(topic).writers
    return writer


def signed_topics_of(service: str) -> tuple[frozenset[Topics], frozenset[Topics]]:
    """(signed topics `service` writes, signed topics it reads), from the ACL table."""
    try:
        principal = acls.Principal(service)
    except ValueError:
        return frozenset(), frozenset()
    return acls.writes(principal) & SIGNED_TOPICS, acls.reads(principal) & SIGNED_TOPICS


def signing_input(value: bytes, headers: Mapping[str, str]) -> bytes:
    """What is signed: the covered headers (absent ones as null) and the value's digest,
    as a JSON array — unambiguous whatever the header values contain."""
    covered = [headers.get(name) for name in _COVERED]
    digest = hashlib.sha256(value).hexdigest()
    return json.dumps([_VERSION, *covered, digest], separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{what}: cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True, slots=True)
class Signer:
    """The writer's private key."""

    private_key: Ed25519PrivateKey

    @classmethod
    def from_file(cls, path: Path) -> Signer:
        try:
            key = serialization.load_pem_private_key(
                _load(path, "event_signing_key_file"), password=None
            )
        except ValueError:
            raise ConfigurationError(f"event_signing_key_file: {path} is not a PEM key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(f"event_signing_key_file: {path} is not an Ed25519 key")
        return cls(key)

    @property
    def kid(self) -> str:
        return key_id(self.private_key.public_key())

    def sign(self, value: bytes, headers: Mapping[str, str]) -> list[tuple[str, str]]:
        """The signature headers to add to an event with this value and these headers."""
        signature = self.private_key.sign(signing_input(value, headers))
        return [(KID_HEADER, self.kid), (SIG_HEADER, base64.b64encode(signature).decode())]


@dataclass(frozen=True, slots=True)
class PublicKey:
    writer: acls.Principal
    key: Ed25519PublicKey
    path: Path


class Verifier:
    """The public keys of every writer, by key id."""

    def __init__(self, keys: Iterable[PublicKey]) -> None:
        self.keys = {key_id(k.key): k for k in keys}

    @classmethod
    def from_dir(cls, directory: Path) -> Verifier:
        keys = [_public_key(path) for path in sorted(directory.glob("*.pub"))]
        if not keys:
            raise ConfigurationError(f"event_verify_keys_dir: no *.pub keys in {directory}")
        return cls(keys)

    def verify(self, topic: Topics, value: bytes | None, headers: Mapping[str, str]) -> None:
        """Raise SignatureError unless `topic`'s writer signed exactly this event."""
        kid, signature = headers.get(KID_HEADER), headers.get(SIG_HEADER)
        if not kid or not signature:
            raise SignatureError("unsigned", f"no {KID_HEADER}/{SIG_HEADER} headers")
        known = self.keys.get(kid)
        if known is None:
            raise SignatureError("unknown-key", f"key {kid} is not a configured public key")
        writer = writer_of(topic)
        if known.writer is not writer:
            raise SignatureError(
                "wrong-writer", f"signed by {known.writer}'s key {kid}; {topic} is {writer}'s"
            )
        try:
            known.key.verify(
                base64.b64decode(signature, validate=True), signing_input(value or b"", headers)
            )
        except (InvalidSignature, binascii.Error, ValueError):
            raise SignatureError(
                "bad-signature", f"{writer}'s key {kid} did not sign this event as it is"
            ) from None


SIGNATURE_REJECTED = Counter(
    "elevate_event_signature_rejected_total",
    "Events on signed topics refused for their signature (unsigned, unknown key, another "
    "writer's key, altered): a forgery or a misconfiguration — alert on any increase",
    ["consumer", "reason"],
)


def check_signature(
    verifier: Verifier | None, topic: Topics, message: Any, envelope: Envelope, *, consumer: str
) -> None:
    """A consumer's check, before dedupe and before any handler: an event its writer did
    not sign as it is is refused (then dead-lettered) — a forgery must not even claim a
    genuine ce_id. Counted and logged as a security event."""
    try:
        if verifier is None:
            raise SignatureError("no-keys", "no public keys configured to verify with")
        verifier.verify(topic, message.value, header_map(message.headers))
    except SignatureError as exc:
        SIGNATURE_REJECTED.labels(consumer, exc.code).inc()
        log.error(
            "SECURITY: consumer %s refused %s (ce_id %s, ce_source %s) on %s: %s",
            consumer,
            envelope.type,
            envelope.id,
            envelope.source,
            message.topic,
            exc,
        )
        raise


def _public_key(path: Path) -> PublicKey:
    name = path.name.split(".", 1)[0]
    try:
        writer = acls.Principal(name)
    except ValueError:
        raise ConfigurationError(
            f"event_verify_keys_dir: {path.name} must be named <writer principal>[.label].pub"
        ) from None
    try:
        key = serialization.load_pem_public_key(_load(path, "event_verify_keys_dir"))
    except ValueError:
        raise ConfigurationError(f"event_verify_keys_dir: {path} is not a PEM key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"event_verify_keys_dir: {path} is not an Ed25519 key")
    return PublicKey(writer, key, path)


def generate_keys(directory: Path, writers: Iterable[acls.Principal]) -> dict[str, Path]:
    """Dev and tests: `<dir>/<writer>.key` (0600) and `<dir>/public/<writer>.pub` for each
    writer that has none yet. Returns the private key files by writer."""
    public = directory / "public"
    public.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for writer in writers:
        private, pub = directory / f"{writer}.key", public / f"{writer}.pub"
        if not private.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            private.touch(mode=0o600)
            private.write_bytes(pem)
            pub.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        out[str(writer)] = private
    return out
