"""The fleet CA, the claim CA, device certificates and one-time claim certificates.

A device's certificate has its device id as common name, because the broker
ties the client id and the ACL to the certificate's common name
(deploy/broker/).  Its private key is born on the device: the SD card carries
only a *claim* - a short-lived certificate of the separate claim CA, common
name ``claim-<random>``, naming the one device id it may be exchanged for -
and the enrolment service (:mod:`deploy.claim`) signs the device's request
with the fleet CA.  So the provisioning machine needs the claim CA's key,
never the fleet CA's.  P-256 rather than Ed25519 for TLS: every mosquitto/OpenSSL build
accepts it.  The broker checks validity dates with its own clock, so a device
booting with its clock at 1970 is not affected.
"""

from __future__ import annotations

import datetime as dt
import secrets
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
CLAIM_DAYS = 14
"""A claim certificate's validity: long enough to carry a card to its site, not longer."""
CLAIM_PREFIX = "claim-"
CLAIM_URN = "urn:satoyama:claim-for:"
"""The claim certificate's subject alternative name: this prefix and the device id."""
SERVICE_PREFIX = "satoyama-"
"""Common names of the fleet's own services (satoyama-cloud, satoyama-enroller, ...: the
``user`` lines of deploy/broker/fleet.acl) start with this; no device id may."""


def reserved_device_id(device_id: str) -> str | None:
    """Why ``device_id`` cannot be a device's certificate CN (None: it can).

    A device certificate whose CN were ``satoyama-cloud`` would carry the
    notifier's rights on the broker; ``claim...`` names enrolment topics."""
    low = device_id.lower()
    if low.startswith(SERVICE_PREFIX):
        return f"{device_id!r}: ids starting with {SERVICE_PREFIX!r} belong to the fleet's services"
    if low == "claim" or low.startswith(CLAIM_PREFIX):
        return f"{device_id!r}: 'claim' and 'claim-...' belong to enrolment"
    return None


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
    return _create_ca(directory, "ca", f"{fleet} fleet CA", days)


def create_claim_ca(directory: Path, fleet: str, *, days: int = CA_DAYS) -> tuple[Path, Path]:
    """Create ``claim-ca.key`` (0600) and ``claim-ca.crt``: the CA of one-time claim
    certificates, which the broker accepts only on its enrolment listener."""
    return _create_ca(directory, "claim-ca", f"{fleet} claim CA", days)


def _create_ca(directory: Path, stem: str, common_name: str, days: int) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.crt"
    for p in (key_path, cert_path):
        if p.exists():
            raise DeployError(f"{p}: already exists; refusing to overwrite a CA")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Satoyama Edge"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
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


@dataclass(frozen=True)
class CA:
    """A CA certificate and its private key, checked to belong together."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def __repr__(self) -> str:
        return f"CA({self.cert.subject.rfc4514_string()}, key=<secret>)"

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def load_ca(cert_path: Path, key_path: Path, what: str = "fleet CA") -> CA:
    cert = _load_cert(cert_path, f"{what} certificate")
    key = load_private_key(key_path, f"{what} key")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{key_path}: the {what} key must be an EC key")
    if cert.public_key() != key.public_key():
        raise ProvisionError(f"{key_path}: does not belong to the CA certificate {cert_path}")
    return CA(cert, key)


def _client_cert(
    ca: CA,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    not_after: dt.datetime,
    san: x509.SubjectAlternativeName | None = None,
    *,
    server: bool = False,
) -> x509.Certificate:
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Satoyama Edge"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(not_after, ca.cert.not_valid_after_utc))
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
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def sign_device_key(ca: CA, public_key: ec.EllipticCurvePublicKey, device_id: str) -> bytes:
    """A device certificate (PEM, CN = device id) for a key the device made itself."""
    cert = _client_cert(ca, public_key, device_id, _now() + dt.timedelta(days=DEVICE_DAYS))
    return cert.public_bytes(serialization.Encoding.PEM)


def issue_device_identity(ca_cert_path: Path, ca_key_path: Path, device_id: str) -> Identity:
    """A new P-256 key and a client certificate (CN = device id) signed by the fleet CA.

    For tests, benchmarks and brokers' own clients; a device's card never carries
    one (it gets a :func:`issue_claim` instead)."""
    ca = load_ca(ca_cert_path, ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    return Identity(
        key_pem=_pem_key(key),
        cert_pem=sign_device_key(ca, key.public_key(), device_id),
        ca_pem=ca.pem,
    )


SERVICES = ("satoyama-cloud", "satoyama-enroller", "satoyama-operator", "satoyama-recorder")
"""The service identities deploy/broker/fleet.acl knows (more notifiers: satoyama-cloud-2, ...)."""


def issue_service_identity(ca: CA, name: str, *, days: int = DEVICE_DAYS) -> Identity:
    """A client certificate of the fleet CA for one of the fleet's own services.

    Its CN is the service's broker identity (and client id); it must start with
    ``satoyama-`` so that it can never be a device's id."""
    if not name.startswith(SERVICE_PREFIX) or len(name) > 64:
        raise ProvisionError(
            f"service name {name!r}: must start with {SERVICE_PREFIX!r} "
            f"(the shipped ACL's are {', '.join(SERVICES)})"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _client_cert(ca, key.public_key(), name, _now() + dt.timedelta(days=days))
    return Identity(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM), ca.pem)


def issue_broker_identity(ca: CA, hosts: list[str], *, days: int = DEVICE_DAYS) -> Identity:
    """The broker's server certificate (DNS names and IP addresses in its SAN)."""
    import ipaddress

    if not hosts:
        raise ProvisionError("the broker certificate needs at least one host name")
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _client_cert(
        ca, key.public_key(), hosts[0], _now() + dt.timedelta(days=days),
        x509.SubjectAlternativeName(names), server=True,
    )  # fmt: skip
    return Identity(_pem_key(key), cert.public_bytes(serialization.Encoding.PEM), ca.pem)


def write_identity(identity: Identity, key_path: Path, cert_path: Path) -> None:
    """The key (0600, never overwritten) and the certificate."""
    if key_path.exists():
        raise DeployError(f"{key_path}: already exists; refusing to overwrite a key")
    write_private_file(key_path, identity.key_pem)
    cert_path.write_bytes(identity.cert_pem)


@dataclass(frozen=True)
class Claim:
    """A one-time claim credential for one device (the key is a secret: never log it)."""

    name: str
    device_id: str
    key_pem: bytes
    cert_pem: bytes
    not_after: dt.datetime

    def __repr__(self) -> str:
        return (
            f"Claim({self.name} for {self.device_id}, "
            f"until {self.not_after:%Y-%m-%d}, key=<secret>)"
        )


def issue_claim(claim_ca: CA, device_id: str, *, days: float = CLAIM_DAYS) -> Claim:
    """A claim certificate: CN ``claim-<random>``, valid ``days``, naming ``device_id``."""
    if (why := reserved_device_id(device_id)) is not None:
        raise ProvisionError(f"device id {why}")
    if not 0 < days <= 90:
        raise ProvisionError(f"claim validity: {days} days; a claim is short-lived (at most 90)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = CLAIM_PREFIX + secrets.token_hex(8)
    san = x509.SubjectAlternativeName(
        [x509.UniformResourceIdentifier(CLAIM_URN + device_id)]
    )
    cert = _client_cert(claim_ca, key.public_key(), name, _now() + dt.timedelta(days=days), san)
    return Claim(
        name=name,
        device_id=device_id,
        key_pem=_pem_key(key),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        not_after=cert.not_valid_after_utc,
    )


def claimed_device(cert: x509.Certificate) -> str | None:
    """The device id a claim certificate may be exchanged for (None: not a claim)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.startswith(CLAIM_URN):
            return uri[len(CLAIM_URN) :]
    return None


def common_name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


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
