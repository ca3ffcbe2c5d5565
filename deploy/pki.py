"""The fleet CA and device identities: an EC P-256 key and a client certificate per device.

The certificate's common name is the device id, because the broker's ACL
(issue: store-and-forward) lets a client publish only under the id in its
certificate.  P-256 rather than Ed25519 for TLS: every mosquitto/OpenSSL build
accepts it.  The broker checks validity dates with its own clock, so a device
booting with its clock at 1970 is not affected.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.errors import DeployError, ProvisionError
from deploy.keys import load_private_key, write_private_file

CA_DAYS = 20 * 365
DEVICE_DAYS = 10 * 365


@dataclass(frozen=True)
class Identity:
    """A device's TLS identity as PEM bytes (the key is a secret: never log it)."""

    key_pem: bytes
    cert_pem: bytes
    ca_pem: bytes

    def __repr__(self) -> str:  # keep the key out of tracebacks and logs
        return f"Identity(cert={len(self.cert_pem)} bytes, key=<secret>)"


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(directory: Path, fleet: str, *, days: int = CA_DAYS) -> tuple[Path, Path]:
    """Create ``ca.key`` (0600) and ``ca.crt`` for a fleet in ``directory``.  Never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    for p in (key_path, cert_path):
        if p.exists():
            raise DeployError(f"{p}: already exists; refusing to overwrite the fleet CA")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Satoyama Edge"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{fleet} fleet CA"),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def _load_cert(path: Path, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProvisionError(f"{path}: not a PEM certificate ({what}): {exc}") from None


def issue_device_identity(ca_cert_path: Path, ca_key_path: Path, device_id: str) -> Identity:
    """A new P-256 key and a client certificate (CN = device id) signed by the fleet CA."""
    ca_cert = _load_cert(ca_cert_path, "fleet CA certificate")
    ca_key = load_private_key(ca_key_path, "fleet CA key")
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{ca_key_path}: the fleet CA key must be an EC key")
    if ca_cert.public_key() != ca_key.public_key():
        raise ProvisionError(f"{ca_key_path}: does not belong to the CA certificate {ca_cert_path}")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Satoyama Edge"),
                    x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + dt.timedelta(days=DEVICE_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Identity(
        key_pem=_pem_key(key),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
    )


def load_device_identity(
    key_path: Path, cert_path: Path, ca_cert_path: Path, device_id: str
) -> Identity:
    """A key and certificate made elsewhere: the key must match, CN must be the device id,
    and the certificate must be signed by the fleet CA."""
    key = load_private_key(key_path, "device key")
    cert = _load_cert(cert_path, "device certificate")
    ca_cert = _load_cert(ca_cert_path, "fleet CA certificate")
    if cert.public_key() != key.public_key():
        raise ProvisionError(f"{key_path}: does not belong to the certificate {cert_path}")
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(cns[0].value) if cns else ""
    if cn != device_id:
        raise ProvisionError(
            f"{cert_path}: certificate is for {cn!r}, not device {device_id!r} "
            "(the broker's ACL matches the certificate's common name)"
        )
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError) as exc:
        raise ProvisionError(
            f"{cert_path}: not signed by the fleet CA {ca_cert_path}: {exc}"
        ) from None
    return Identity(
        key_pem=key_path.read_bytes(),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        ca_pem=ca_cert.public_bytes(serialization.Encoding.PEM),
    )
