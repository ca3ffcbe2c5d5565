"""First-boot enrolment on the device: its own key, a certificate for it from the fleet.

The SD card carries no private key of the device: only a one-time claim (a
short-lived certificate of the claim CA and its key).  Here the device makes
its P-256 key (mode 0600; it never leaves the device), sends a certificate
signing request for its device id over the broker's enrolment listener,
authenticated by the claim, and stores the certificate the fleet's enroller
sends back (deploy/claim.py has the protocol).  Then the claim is deleted.

    python -m edge.link.enrol --config /etc/satoyama/device.toml \\
        --claim-cert /etc/satoyama/claim.crt --claim-key /etc/satoyama/claim.key --claim-port 8884

Exit status 0: the certificate is in place (also when it already was); 1: no
answer in time (run again later, the claim and the key are kept); 2: refused
(the claim was used, expired or is for another device: provision a new card).
Runs again safely: an existing key is reused, so a lost reply is asked again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.config import ConfigError, load
from edge.errors import EdgeError
from edge.files import write_atomic

log = logging.getLogger(__name__)

EXIT_RETRY = 1
EXIT_REFUSED = 2


class EnrolError(EdgeError, RuntimeError):
    """Enrolment did not succeed (``refused``: asking again will not help)."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


@dataclass(frozen=True)
class Enrolment:
    device_id: str
    host: str
    port: int
    """The broker's enrolment listener (8884 in deploy/broker/satoyama.conf)."""
    topic_prefix: str
    ca_file: Path
    """The fleet CA: the broker's issuer and the issuer the new certificate must have."""
    key_file: Path
    cert_file: Path
    claim_cert: Path
    claim_key: Path


def device_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The device's key: made here on the first run (0600), reused on every later one."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EnrolError(f"{path}: not an EC key", refused=True)
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        mode=0o600,
    )
    return key


def signing_request(key: ec.EllipticCurvePrivateKey, device_id: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _claim_name(claim_pem: bytes, path: Path) -> str:
    try:
        cert = x509.load_pem_x509_certificate(claim_pem)
    except ValueError:
        raise EnrolError(f"{path}: not a PEM certificate", refused=True) from None
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise EnrolError(f"{path}: the claim certificate has no common name", refused=True)
    return str(cns[0].value)


def check_certificate(
    cert_pem: bytes, key: ec.EllipticCurvePrivateKey, device_id: str, ca_file: Path
) -> None:
    """The certificate is for our key and our id, issued by the fleet CA we trust."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_file.read_bytes())
    except ValueError as exc:
        raise EnrolError(f"the enroller's certificate is unreadable: {exc}", refused=True) from None
    if cert.public_key() != key.public_key():
        raise EnrolError("the enroller's certificate is not for this device's key", refused=True)
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns or cns[0].value != device_id:
        raise EnrolError(f"the enroller's certificate is not for {device_id!r}", refused=True)
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise EnrolError(
            f"the certificate is not issued by the fleet CA {ca_file}", refused=True
        ) from None


async def ask(
    e: Enrolment, csr_pem: bytes, timeout: float  # noqa: ASYNC109 - also aiomqtt's connect timeout
) -> bytes:
    """One try: connect with the claim, send the request, wait for the reply."""
    claim_pem = e.claim_cert.read_bytes()
    claim = _claim_name(claim_pem, e.claim_cert)
    ctx = ssl.create_default_context(cafile=str(e.ca_file))
    ctx.load_cert_chain(e.claim_cert, e.claim_key)
    request = json.dumps(
        {"device": e.device_id, "csr": csr_pem.decode(), "claim": claim_pem.decode()}
    ).encode()
    async with aiomqtt.Client(
        e.host, e.port, identifier=claim, clean_session=True, tls_context=ctx, timeout=timeout
    ) as client:
        await client.subscribe(f"{e.topic_prefix}/claim/{claim}/reply", qos=1)
        await client.publish(f"{e.topic_prefix}/claim/{claim}/request", request, qos=1)
        msg = await asyncio.wait_for(anext(aiter(client.messages)), timeout)
    reply = json.loads(msg.payload if isinstance(msg.payload, bytes) else b"null")
    if not isinstance(reply, dict):
        raise EnrolError("the enroller's reply is not a JSON object")
    if not reply.get("ok"):
        raise EnrolError(f"refused: {reply.get('error', 'no reason given')}", refused=True)
    cert = reply.get("cert")
    if not isinstance(cert, str):
        raise EnrolError("the enroller's reply has no certificate", refused=True)
    return cert.encode()


async def enrol(e: Enrolment, *, deadline_s: float = 900.0, try_timeout_s: float = 30.0) -> None:
    """Make or reuse the key, ask until answered or ``deadline_s``, store the certificate,
    delete the claim.  Raises :class:`EnrolError`."""
    key = device_key(e.key_file)
    if e.cert_file.exists():
        check_certificate(e.cert_file.read_bytes(), key, e.device_id, e.ca_file)
        log.info("already enrolled: %s", e.cert_file)
        _forget_claim(e)
        return
    for p in (e.claim_cert, e.claim_key):
        if not p.is_file():
            raise EnrolError(
                f"{p}: no claim (and no certificate): provision a new card", refused=True
            )
    csr = signing_request(key, e.device_id)
    end = time.monotonic() + deadline_s
    pause = 2.0
    while True:
        try:
            cert = await ask(e, csr, min(try_timeout_s, max(1.0, end - time.monotonic())))
            break
        except (aiomqtt.MqttError, TimeoutError, OSError, ValueError) as exc:
            if time.monotonic() + pause > end:
                raise EnrolError(
                    f"no answer from {e.host}:{e.port} in {deadline_s:g}s: {exc}"
                ) from None
            log.warning("enrolment: %s; again in %.0fs", exc or type(exc).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)
    check_certificate(cert, key, e.device_id, e.ca_file)
    write_atomic(e.cert_file, cert, mode=0o644)
    _forget_claim(e)
    log.info("enrolled as %s: %s", e.device_id, e.cert_file)


def _forget_claim(e: Enrolment) -> None:
    for p in (e.claim_key, e.claim_cert):
        p.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m edge.link.enrol", description=(__doc__ or "").split("\n\n")[0]
    )
    ap.add_argument("--config", required=True, help="the device configuration ([uplink.tls])")
    ap.add_argument("--claim-cert", required=True)
    ap.add_argument("--claim-key", required=True)
    ap.add_argument("--claim-port", type=int, default=8884, help="enrolment listener port")
    ap.add_argument("--timeout", type=float, default=900.0, help="give up after this many seconds")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    tls = config.uplink.tls
    if tls is None:
        print(f"error: {args.config}: [uplink.tls] is needed to enrol", file=sys.stderr)
        return EXIT_REFUSED
    e = Enrolment(
        device_id=config.device.id,
        host=config.uplink.host,
        port=args.claim_port,
        topic_prefix=config.uplink.topic_prefix,
        ca_file=Path(tls.ca_file),
        key_file=Path(tls.key_file),
        cert_file=Path(tls.cert_file),
        claim_cert=Path(args.claim_cert),
        claim_key=Path(args.claim_key),
    )
    try:
        asyncio.run(enrol(e, deadline_s=args.timeout))
    except EnrolError as exc:
        print(f"{'refused' if exc.refused else 'error'}: {exc}", file=sys.stderr)
        return EXIT_REFUSED if exc.refused else EXIT_RETRY
    return 0


if __name__ == "__main__":
    sys.exit(main())
