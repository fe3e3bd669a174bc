"""The local broker's TLS material and passwords: made once per data dir, reused after.

A private CA signs the broker's certificate (SAN `IP:127.0.0.1`, `DNS:localhost`), so a
client verifies the broker exactly as it would a production one: against a CA file, with
host-name checking on. Keys and passwords are written 0600; only the CA certificate is
meant to be handed out.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=3650)  # a dev data dir outlives any sensible rotation


def write_private(path: Path, data: bytes) -> None:
    """Write a secret: created 0600 (never briefly world-readable), replaced atomically."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    tmp.replace(path)


def password(path: Path) -> str:
    """The password stored at `path`, generated (URL-safe, 256 bits) on first use."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32).encode())
    return path.read_text().strip()


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """PEM files under `<data_dir>/tls/`."""

    directory: Path
    # Names the broker is also reached by (docker-compose.yml's `kafka`).
    hosts: tuple[str, ...] = ()

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca-key.pem"

    @property
    def keystore_file(self) -> Path:
        """The broker's key then its certificate chain: Kafka's PEM key store format."""
        return self.directory / "broker-keystore.pem"

    def ensure(self) -> BrokerTls:
        if not (self.ca_file.exists() and self.keystore_file.exists()):
            self._generate()
        return self

    def _generate(self) -> None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Elevate local CA")])
        ca_cert = (
            _builder(ca_name, ca_name, ca_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
        sans: list[x509.GeneralName] = [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.DNSName("localhost"),
            *(x509.DNSName(host) for host in self.hosts),
        ]
        cert = (
            _builder(name, ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        # Unencrypted PKCS#8 in a 0600 file: Kafka 4.1 reads it from `ssl.keystore.location`
        # without an `ssl.key.password` (checked), so no second secret guards the first.
        write_private(self.ca_key_file, _pkcs8(ca_key))
        write_private(
            self.keystore_file, _pkcs8(key) + cert.public_bytes(pem) + ca_cert.public_bytes(pem)
        )
        # Last: its presence is what marks the set complete (see ensure()).
        self.ca_file.write_bytes(ca_cert.public_bytes(pem))


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
