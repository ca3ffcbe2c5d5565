"""Key files: the OTA signing key (raw Ed25519) and the rules every private key file obeys.

OTA bundles are signed with Ed25519 and verified against *raw* public keys
pinned on the device: no certificate, so nothing can expire and a Pi whose
clock still says 1970 (no real-time clock, no NTP yet) verifies an update the
same as any other day.

File formats:

- private signing key: PKCS#8 PEM, mode 0600 (``openssl pkey`` reads it);
- public verify key: one line of base64 of the 32 raw key bytes (comment
  lines starting with ``#`` allowed), so it can be pasted into a config file.

A key's id is the first 8 bytes of the SHA-256 of its raw public bytes, in hex;
signatures name it so a device with several trusted keys (rotation) knows which
one to try.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from deploy.errors import DeployError, InsecureKeyError
from edge.files import loose_mode


def check_private_file(path: Path, what: str = "private key") -> None:
    """Refuse a secret file that group or others can read or write."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise DeployError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise DeployError(f"{path}: {what} is not a regular file")
    loose = loose_mode(path)
    if loose is not None:
        raise InsecureKeyError(
            f"{path}: {what} is readable by group or others (mode {loose:04o}); "
            f"run: chmod 600 {path}"
        )


def write_private_file(path: Path, data: bytes) -> None:
    """Create a new secret file with mode 0600 from the start (never briefly world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def load_private_key(path: Path, what: str = "private key") -> PrivateKeyTypes:
    """A PEM private key from a file only its owner can read."""
    check_private_file(path, what)
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"{path}: not an unencrypted PEM {what}: {exc}") from None


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """Short, stable name of a verify key: hex of the first 8 bytes of SHA-256(raw key)."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def encode_public(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public(key)).decode("ascii")


def decode_public(text: str, source: str = "verify key") -> Ed25519PublicKey:
    """A raw Ed25519 public key from its base64 text (comment lines ignored)."""
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")
    ]
    if len(lines) != 1:
        raise DeployError(f"{source}: expected one line of base64 (32-byte Ed25519 public key)")
    try:
        raw = base64.b64decode(lines[0], validate=True)
    except (binascii.Error, ValueError):
        raise DeployError(f"{source}: not base64") from None
    if len(raw) != 32:
        raise DeployError(f"{source}: an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def generate_signing_key(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Create a new OTA signing key pair; the private file gets mode 0600. Never overwrites."""
    for p in (private_path, public_path):
        if p.exists():
            raise DeployError(f"{p}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private_file(private_path, pem)
    pub = key.public_key()
    public_path.write_text(
        f"# Satoyama Edge OTA verify key {key_id(pub)} (Ed25519, raw, base64)\n"
        f"{encode_public(pub)}\n"
    )
    return pub


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    key = load_private_key(path, "OTA signing key")
    if not isinstance(key, Ed25519PrivateKey):
        raise DeployError(f"{path}: the OTA signing key must be Ed25519")
    return key


def load_verify_keys(paths: list[Path]) -> dict[str, Ed25519PublicKey]:
    """The trusted verify keys by key id (several during a key rotation)."""
    keys: dict[str, Ed25519PublicKey] = {}
    for p in paths:
        try:
            text = p.read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise DeployError(f"{p}: cannot read verify key: {exc}") from None
        key = decode_public(text, str(p))
        keys[key_id(key)] = key
    if not keys:
        raise DeployError("no OTA verify key configured; a device must pin at least one")
    return keys


def sign(key: Ed25519PrivateKey, data: bytes) -> dict[str, str]:
    """One signature entry: ``{"alg": "ed25519", "key_id": ..., "sig": base64}``."""
    return {
        "alg": "ed25519",
        "key_id": key_id(key.public_key()),
        "sig": base64.b64encode(key.sign(data)).decode("ascii"),
    }


def verify_any(
    signatures: list[dict[str, str]], data: bytes, trusted: dict[str, Ed25519PublicKey]
) -> str:
    """Return the id of the trusted key that signed ``data``; raise DeployError if none did."""
    for entry in signatures:
        if not isinstance(entry, dict) or entry.get("alg") != "ed25519":
            continue
        key = trusted.get(str(entry.get("key_id", "")))
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("sig", "")), validate=True), data)
        except (InvalidSignature, binascii.Error, ValueError):
            continue
        return str(entry["key_id"])
    ids = ", ".join(str(e.get("key_id")) for e in signatures if isinstance(e, dict)) or "none"
    raise DeployError(
        f"no valid signature by a trusted key (signed by: {ids}; trusted: {', '.join(trusted)})"
    )
