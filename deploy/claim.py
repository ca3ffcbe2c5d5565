"""Enrolment, the fleet side: a device's one-time claim becomes its own certificate.

The SD card carries a *claim*: a certificate of the claim CA (common name
``claim-<random>``, valid a few days, naming the one device id it is for) and
its key.  On first boot the device makes its own private key, which never
leaves it, and asks over MQTT on the broker's enrolment listener, where the
claim certificate is accepted and reaches only its own topics
(deploy/broker/claim.acl)::

    PREFIX/claim/CLAIM/request   device -> enroller (QoS 1)
        {"device": "<device id>", "csr": "<PEM>", "claim": "<the claim certificate, PEM>"}
    PREFIX/claim/CLAIM/reply     enroller -> device (QoS 1)
        {"ok": true, "device": "...", "cert": "<PEM>", "ca": "<fleet CA, PEM>"}
        {"ok": false, "error": "<why, one line>"}

The enroller (``satoyama-deploy enrol serve``) holds the fleet CA's key.  It
signs only when the claim certificate was issued by the claim CA, is the one
whose common name the broker bound to the topic, is within its validity on the
enroller's clock, names the device id requested, and was never used before -
except by the same public key again (a device whose reply was lost asks again
and gets the same certificate).  Each claim is recorded in the fleet database.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.errors import DeployError
from deploy.fleet import Broker, FleetDB
from deploy.pki import (
    CA,
    CLAIM_PREFIX,
    claimed_device,
    common_name,
    reserved_device_id,
    sign_device_key,
)

log = logging.getLogger(__name__)

CLAIM_RE = re.compile(rf"^{CLAIM_PREFIX}[0-9a-f]{{16}}$")
DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")  # edge.config's Identifier
MAX_REQUEST = 16 * 1024


class EnrolmentRefused(DeployError, ValueError):
    """The request is refused; the message is sent back to the device."""


def request_topic(prefix: str, claim: str) -> str:
    return f"{prefix}/claim/{claim}/request"


def reply_topic(prefix: str, claim: str) -> str:
    return f"{prefix}/claim/{claim}/reply"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Enroller:
    """Checks a claim and signs the device's own key with the fleet CA."""

    fleet_ca: CA
    claim_ca: x509.Certificate
    db: FleetDB
    clock: Callable[[], dt.datetime] = field(default=_now)

    def answer(self, claim: str, payload: bytes) -> dict[str, Any]:
        """The reply to one request on ``PREFIX/claim/CLAIM/request``."""
        try:
            device, cert = self._enrol(claim, payload)
        except EnrolmentRefused as exc:
            log.warning("enrolment refused for %s: %s", claim[:64], exc)
            return {"ok": False, "error": str(exc)}
        log.info("enrolled %s with %s", device, claim)
        return {"ok": True, "device": device, "cert": cert, "ca": self.fleet_ca.pem.decode()}

    def _enrol(self, claim: str, payload: bytes) -> tuple[str, str]:
        if not CLAIM_RE.fullmatch(claim):
            raise EnrolmentRefused(f"{claim[:64]!r} is not a claim name")
        if len(payload) > MAX_REQUEST:
            raise EnrolmentRefused("request too large")
        try:
            req = json.loads(payload)
        except ValueError:
            raise EnrolmentRefused("request is not JSON") from None
        if not isinstance(req, dict) or not all(
            isinstance(req.get(k), str) for k in ("device", "csr", "claim")
        ):
            raise EnrolmentRefused('request needs "device", "csr" and "claim" (strings)')
        device: str = req["device"]
        if not DEVICE_RE.fullmatch(device):
            raise EnrolmentRefused(f"{device[:64]!r} is not a device id")
        if (why := reserved_device_id(device)) is not None:
            raise EnrolmentRefused(f"not a device id: {why}")

        try:
            claim_cert = x509.load_pem_x509_certificate(req["claim"].encode())
        except ValueError:
            raise EnrolmentRefused("claim: not a PEM certificate") from None
        try:
            claim_cert.verify_directly_issued_by(self.claim_ca)
        except (ValueError, TypeError, InvalidSignature):
            raise EnrolmentRefused("claim: not issued by the claim CA") from None
        if common_name(claim_cert) != claim:  # the broker bound the topic to this CN
            raise EnrolmentRefused("claim: the certificate is not the one this connection used")
        now = self.clock()
        if not claim_cert.not_valid_before_utc <= now <= claim_cert.not_valid_after_utc:
            raise EnrolmentRefused(
                f"claim: expired or not yet valid (valid {claim_cert.not_valid_before_utc:%Y-%m-%d}"
                f" to {claim_cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
            )
        if claimed_device(claim_cert) != device:
            raise EnrolmentRefused(f"claim: issued for another device, not {device!r}")

        try:
            csr = x509.load_pem_x509_csr(req["csr"].encode())
        except ValueError:
            raise EnrolmentRefused("csr: not a PEM certificate signing request") from None
        if not csr.is_signature_valid:
            raise EnrolmentRefused("csr: signature does not verify")
        cns = csr.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        if not cns or cns[0].value != device:
            raise EnrolmentRefused(f"csr: common name must be the device id {device!r}")
        key = csr.public_key()
        if not (isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"):
            raise EnrolmentRefused("csr: the key must be EC P-256")
        fingerprint = hashlib.sha256(
            key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).hexdigest()

        used = self.db.claim_used(claim)
        if used is not None:
            if used["public_key_sha256"] == fingerprint and used["device"] == device:
                return device, str(used["cert"])  # the same device asking again
            raise EnrolmentRefused("claim: already used")
        cert = sign_device_key(self.fleet_ca, key, device).decode()
        if not self.db.record_enrolment(claim, device, fingerprint, cert):
            raise EnrolmentRefused("claim: already used")
        return device, cert


async def serve(
    enroller: Enroller,
    broker: Broker,
    prefix: str,
    *,
    max_requests: int | None = None,
    ready: Callable[[], None] | None = None,
) -> int:
    """Answer claim requests until cancelled (or ``max_requests``).  Returns requests seen.

    A persistent session: requests sent while the enroller is away wait for it."""
    seen = 0
    async with broker.client("satoyama-enroller", clean_session=False) as client:
        await client.subscribe(f"{prefix}/claim/+/request", qos=1)
        if ready is not None:
            ready()
        async for msg in client.messages:
            parts = str(msg.topic).split("/")
            payload = msg.payload if isinstance(msg.payload, bytes) else b""
            claim = parts[-2]
            reply = enroller.answer(claim, payload)  # milliseconds; SQLite stays on this thread
            await client.publish(reply_topic(prefix, claim), json.dumps(reply).encode(), qos=1)
            seen += 1
            if max_requests is not None and seen >= max_requests:
                break
    return seen
