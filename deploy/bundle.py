"""OTA bundles: everything a device needs to install one release offline, signed with Ed25519.

A bundle is an uncompressed tar (wheels are compressed already) laid out as::

    manifest.json      the signed document (first member)
    manifest.sig       {"signatures": [{"alg": "ed25519", "key_id": ..., "sig": ...}]} (second)
    files/wheels/...   the daemon's wheel, its dependencies' wheels for the Pi, pip's wheel
    files/models/...   on-device models
    files/systemd/...  the unit files

``manifest.json`` names the version, the oldest version it can update from,
the Python and platform it was built for, what pip installs, and the size
and SHA-256 of every file.  Verification (:func:`verify`) reads the whole
tar as a stream and checks the signature against the device's trusted keys
and every file's hash *before anything is written to disk*; extraction
(:func:`extract`) hashes again while writing, so a bundle that changes under
our feet between the two is caught too.

Versions are plain dotted numbers (``1.4.2``): comparing them must never be
ambiguous on a device deciding whether an update is a downgrade.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.errors import BundleError, DeployError, VerifyError
from deploy.keys import sign, verify_any
from deploy.version import parse_version
from edge.commands import MAX_BUNDLE

FORMAT = 1
DIST_NAME = "satoyama-edge"
MAX_MANIFEST = 1 << 20
MAX_SIG = 64 << 10
MAX_TOTAL = MAX_BUNDLE
CHUNK = 1 << 20


class Signature(msgspec.Struct, frozen=True):
    alg: str
    key_id: str
    sig: str


class SignatureFile(msgspec.Struct, frozen=True):
    """``manifest.sig``, decoded with a schema: anything else (deep nesting too) is refused."""

    signatures: list[Signature]


class FileEntry(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sha256: str
    size: int


class Manifest(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    format: int
    name: str
    version: str
    min_from_version: str | None = None
    python: str
    platform: str
    install: list[str]
    pip_wheel: str | None = None
    created: str
    files: dict[str, FileEntry]


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature and hashes were checked; nothing of it unpacked yet."""

    path: Path
    manifest: Manifest
    key_id: str


def _safe_rel(name: str) -> str | None:
    """``name`` if it is a plain relative path exactly as written, else None.

    No normalising: ``files//x``, ``files/./x`` or a trailing ``/`` would read as
    ``files/x`` to :class:`PurePosixPath` but not to :func:`extract`, and the two
    must agree on every name, so such names are refused outright.
    """
    parts = name.split("/")
    if not name or any(part in ("", ".", "..") for part in parts):
        return None
    if "\\" in name or "\0" in name or str(PurePosixPath(name)) != name:
        return None
    return name


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    yield from tar


def _read_member(tar: tarfile.TarFile, m: tarfile.TarInfo, limit: int, what: str) -> bytes:
    if not m.isfile() or m.size > limit:
        raise VerifyError(f"{what} is not a regular file of at most {limit} bytes")
    f = tar.extractfile(m)
    assert f is not None
    return f.read()


def _hash_stream(f: IO[bytes], sink: Callable[[bytes], Any] | None = None) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(CHUNK):
        h.update(chunk)
        n += len(chunk)
        if sink is not None:
            sink(chunk)
    return h.hexdigest(), n


def file_sha256(path: Path) -> str:
    """SHA-256 of a whole file, in hex (what a rollout announces for the download)."""
    with open(path, "rb") as f:
        return _hash_stream(f)[0]


def verify(path: Path, trusted: dict[str, Ed25519PublicKey]) -> VerifiedBundle:
    """Check a bundle's layout, signature and every file's hash; write nothing.

    Raises :class:`VerifyError` naming what is wrong.
    """
    try:
        size = path.stat().st_size
        if size > MAX_TOTAL:
            raise VerifyError(f"{path}: {size} bytes is more than a bundle may be")
        tar = tarfile.open(path, mode="r:")
    except VerifyError:
        raise
    except (OSError, tarfile.TarError) as exc:
        raise VerifyError(f"{path}: not a readable bundle (uncompressed tar): {exc}") from None
    with tar:
        try:
            return _verify_open(path, tar, trusted)
        except (OSError, tarfile.TarError, EOFError, RecursionError) as exc:
            raise VerifyError(f"{path}: truncated or damaged bundle: {exc}") from None


def _verify_open(
    path: Path, tar: tarfile.TarFile, trusted: dict[str, Ed25519PublicKey]
) -> VerifiedBundle:
    members = _members(tar)
    first = next(members, None)
    second = next(members, None)
    if (
        first is None
        or first.name != "manifest.json"
        or second is None
        or second.name != "manifest.sig"
    ):
        raise VerifyError(f"{path}: a bundle starts with manifest.json then manifest.sig")
    manifest_bytes = _read_member(tar, first, MAX_MANIFEST, "manifest.json")
    sig_bytes = _read_member(tar, second, MAX_SIG, "manifest.sig")
    try:
        sig_file = msgspec.json.decode(sig_bytes, type=SignatureFile)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise VerifyError(f"{path}: manifest.sig is malformed: {str(exc)[:200]}") from None
    signatures = [msgspec.structs.asdict(s) for s in sig_file.signatures]
    try:
        kid = verify_any(signatures, manifest_bytes, trusted)
    except DeployError as exc:
        raise VerifyError(f"{path}: signature rejected: {exc}") from None
    try:
        manifest = msgspec.json.decode(manifest_bytes, type=Manifest)
        parse_version(manifest.version)
        if manifest.min_from_version is not None:
            parse_version(manifest.min_from_version)
    except (msgspec.ValidationError, msgspec.DecodeError, DeployError, RecursionError) as exc:
        raise VerifyError(f"{path}: manifest is invalid: {str(exc)[:200]}") from None
    if manifest.format != FORMAT:
        raise VerifyError(
            f"{path}: bundle format {manifest.format} is not {FORMAT}; update the updater first"
        )
    seen: set[str] = set()
    for m in members:
        rel = _safe_rel(m.name)
        if rel is None or not rel.startswith("files/"):
            raise VerifyError(f"{path}: unexpected member {m.name!r}")
        rel = rel.removeprefix("files/")
        if not m.isfile():
            raise VerifyError(
                f"{path}: {m.name!r} is not a regular file (links and devices refused)"
            )
        entry = manifest.files.get(rel)
        if entry is None:
            raise VerifyError(f"{path}: {rel} is not listed in the manifest")
        if rel in seen:
            raise VerifyError(f"{path}: {rel} appears twice")
        seen.add(rel)
        f = tar.extractfile(m)
        assert f is not None
        digest, n = _hash_stream(f)
        if n != entry.size or digest != entry.sha256:
            raise VerifyError(
                f"{path}: {rel} does not match its manifest hash (tampered or damaged)"
            )
    missing = sorted(set(manifest.files) - seen)
    if missing:
        raise VerifyError(
            f"{path}: files listed in the manifest are missing: {', '.join(missing[:5])}"
        )
    for rel in manifest.files:
        if _safe_rel(rel) is None:
            raise VerifyError(f"{path}: bad file name in manifest: {rel!r}")
    return VerifiedBundle(path=path, manifest=manifest, key_id=kid)


def extract(
    bundle: VerifiedBundle, dest: Path, *, on_file: Callable[[str], None] | None = None
) -> None:
    """Write a verified bundle's files under ``dest``, hashing again while writing.

    ``on_file`` is called after each file (the updater's fault-injection and
    progress hook).  Raises :class:`VerifyError` if the bundle changed since
    :func:`verify`; the caller then removes ``dest``.
    """
    files = bundle.manifest.files
    with tarfile.open(bundle.path, mode="r:") as tar:
        for m in tar:
            if m.name in ("manifest.json", "manifest.sig"):
                continue
            rel = m.name.removeprefix("files/")
            entry = files.get(rel)
            if entry is None or not m.isfile() or _safe_rel(rel) is None:
                raise VerifyError(f"{bundle.path}: changed since it was verified ({m.name!r})")
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(target, flags, 0o644), "wb") as out:
                digest, n = _hash_stream(src, out.write)
                out.flush()
                os.fsync(out.fileno())
            if n != entry.size or digest != entry.sha256:
                raise VerifyError(f"{bundle.path}: {rel} changed since it was verified")
            if on_file is not None:
                on_file(rel)
    (dest / "manifest.json").write_bytes(msgspec.json.encode(bundle.manifest))


# -- building ----------------------------------------------------------------------------


@dataclass(frozen=True)
class WheelName:
    dist: str
    version: str
    python: str
    abi: str
    platform: str

    @classmethod
    def parse(cls, path: Path) -> WheelName:
        parts = path.name.removesuffix(".whl").split("-")
        if not path.name.endswith(".whl") or len(parts) not in (5, 6):
            raise BundleError(f"{path.name}: not a wheel file name")
        if len(parts) == 6:  # a build tag
            parts = [parts[0], parts[1], *parts[3:]]
        return cls(parts[0].lower().replace("_", "-"), parts[1], parts[2], parts[3], parts[4])

    def fits(self, python: str, platform: str) -> bool:
        """Installable on CPython ``python`` (``"3.11"``) on Linux ``platform`` (``"aarch64"``)."""
        major, minor = (int(x) for x in python.split("."))
        plat_ok = any(p == "any" or p.endswith("_" + platform) for p in self.platform.split("."))
        py_ok = False
        for tag in self.python.split("."):
            if tag in ("py3", f"py{major}{minor}", "py2.py3"):
                py_ok = True
            elif tag.startswith("cp") and tag[2:].isdigit():
                v = int(tag[3:]) if tag[2] == str(major) else -1
                if v == minor or ("abi3" in self.abi and 0 <= v <= minor):
                    py_ok = True
        return plat_ok and py_ok


def bundled_pip_wheel() -> Path | None:
    """pip's own wheel as shipped with this Python (ensurepip) or Debian (python3-pip-whl)."""
    import ensurepip

    candidates = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    candidates += sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    return candidates[-1] if candidates else None


def _check_resolution(
    wheels_dir: Path, install: list[str], python: str, platform: str, glibc: str
) -> None:
    """Ask pip, offline, whether the wheels install on the target (missing dependency -> error)."""
    with tempfile.TemporaryDirectory(prefix="satoyama-resolve-") as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--dry-run",
                "--ignore-installed",
                "--no-index",
                "--find-links",
                str(wheels_dir),
                "--only-binary=:all:",
                "--platform",
                f"manylinux_{glibc.replace('.', '_')}_{platform}",
                "--platform",
                f"linux_{platform}",
                "--python-version",
                python,
                "--implementation",
                "cp",
                "--target",
                tmp,
                "--quiet",
                "--disable-pip-version-check",
                *install,
            ],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise BundleError(
            "the wheelhouse does not install offline on the device "
            f"(Python {python}, {platform}): {lines[-1] if lines else proc.returncode}. "
            "Fill it with: pip download --only-binary=:all: --platform "
            f"manylinux_{glibc.replace('.', '_')}_{platform} --python-version {python} "
            "-d WHEELHOUSE DAEMON.whl"
        )


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def build(
    *,
    daemon_wheel: Path,
    out_dir: Path,
    signing_keys: list[Ed25519PrivateKey],
    wheelhouse: Path | None = None,
    models: Path | None = None,
    units: Path | None = None,
    min_from_version: str | None = None,
    extras: list[str] | None = None,
    python: str = "3.11",
    platform: str = "aarch64",
    glibc: str = "2.36",
    check_resolution: bool = True,
) -> Path:
    """Build and sign ``satoyama-edge-VERSION.tar`` in ``out_dir``; return its path."""
    if not signing_keys:
        raise BundleError("a bundle needs at least one signing key")
    daemon = WheelName.parse(daemon_wheel)
    if daemon.dist != DIST_NAME:
        raise BundleError(
            f"{daemon_wheel.name}: the daemon wheel must be {DIST_NAME}, not {daemon.dist}"
        )
    parse_version(daemon.version)
    if min_from_version is not None and parse_version(min_from_version) >= parse_version(
        daemon.version
    ):
        raise BundleError(
            f"min_from_version {min_from_version} must be older than {daemon.version}"
        )
    wheels: dict[str, Path] = {daemon_wheel.name: daemon_wheel}
    for w in sorted(wheelhouse.glob("*.whl")) if wheelhouse else []:
        name = WheelName.parse(w)
        if name.dist == DIST_NAME:
            continue  # other builds of the daemon: the one given explicitly wins
        if not name.fits(python, platform):
            raise BundleError(
                f"{w.name}: does not install on CPython {python} / {platform} "
                "(build the wheelhouse for the Pi, not for this computer)"
            )
        wheels[w.name] = w
    pip_wheel = next((p for n, p in wheels.items() if n.startswith("pip-")), None)
    if pip_wheel is None:
        pip_wheel = bundled_pip_wheel()
        if pip_wheel is not None:
            wheels[pip_wheel.name] = pip_wheel
    if pip_wheel is None:
        raise BundleError(
            "no pip wheel found (put one in the wheelhouse); the device installs with it"
        )
    extra = f"[{','.join(extras)}]" if extras else ""
    install = [f"{DIST_NAME}{extra}=={daemon.version}"]
    if check_resolution:
        with tempfile.TemporaryDirectory(prefix="satoyama-wheels-") as tmp:
            for n, p in wheels.items():
                os.symlink(p.resolve(), Path(tmp) / n)
            _check_resolution(Path(tmp), install, python, platform, glibc)

    files: dict[str, Path] = {f"wheels/{n}": p for n, p in wheels.items()}
    for prefix, folder in (("models", models), ("systemd", units)):
        if folder is None:
            continue
        if not folder.is_dir():
            raise BundleError(f"{folder}: not a folder")
        for p in sorted(folder.rglob("*")):
            if p.is_symlink():
                raise BundleError(f"{p}: links are not allowed in a bundle")
            if p.is_file():
                files[f"{prefix}/{p.relative_to(folder).as_posix()}"] = p
    entries: dict[str, FileEntry] = {}
    for rel, p in sorted(files.items()):
        if _safe_rel(rel) is None:
            raise BundleError(f"bad file name for a bundle: {rel!r}")
        with open(p, "rb") as f:
            digest, size = _hash_stream(f)
        entries[rel] = FileEntry(sha256=digest, size=size)
    manifest = Manifest(
        format=FORMAT,
        name=DIST_NAME,
        version=daemon.version,
        min_from_version=min_from_version,
        python=python,
        platform=platform,
        install=install,
        pip_wheel=f"wheels/{pip_wheel.name}",
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        files=entries,
    )
    manifest_bytes = msgspec.json.encode(manifest)
    sig = json.dumps({"signatures": [sign(k, manifest_bytes) for k in signing_keys]}).encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{DIST_NAME}-{daemon.version}.tar"
    tmp_out = out.with_name(out.name + ".partial")
    with tarfile.open(tmp_out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "manifest.json", manifest_bytes)
        _add_bytes(tar, "manifest.sig", sig)
        for rel, p in sorted(files.items()):
            info = tarfile.TarInfo(f"files/{rel}")
            info.size = entries[rel].size
            info.mode = 0o644
            info.mtime = 0
            with open(p, "rb") as f:
                tar.addfile(info, f)
    os.replace(tmp_out, out)
    return out
