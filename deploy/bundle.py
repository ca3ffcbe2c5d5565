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
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.errors import BundleError, DeployError, VerifyError
from deploy.keys import sign, verify_any
from deploy.version import parse_version
from edge.link.commands import MAX_BUNDLE

if TYPE_CHECKING:  # packaging is imported only to build a bundle, never on the device
    from packaging.tags import Tag

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
class Target:
    """The device a bundle is for: its CPython, its CPU and its C library (glibc).

    A wheel installs there when one of its tags is one the device's pip accepts
    (:meth:`tags`): ``manylinux_2_X`` for every X up to the device's glibc (a wheel
    built for glibc 2.17 runs on 2.36), the legacy ``manylinux2014`` alias, plain
    ``linux``; never ``musllinux`` (Raspberry Pi OS is glibc).  pip does not widen a
    ``--platform`` tag itself, so :meth:`pip_platform_args` names every one.
    """

    python: str = "3.11"
    machine: str = "aarch64"
    glibc: str = "2.36"

    def __post_init__(self) -> None:
        if not _DOTTED2.fullmatch(self.python):
            raise BundleError(f"python {self.python!r}: expected MAJOR.MINOR, e.g. 3.11")
        if not _DOTTED2.fullmatch(self.glibc) or not self.glibc.startswith("2."):
            raise BundleError(f"glibc {self.glibc!r}: expected 2.MINOR, e.g. 2.36")
        if not re.fullmatch(r"[a-z0-9_]+", self.machine):
            raise BundleError(f"platform {self.machine!r}: expected a machine name, e.g. aarch64")
        if self._glibc_minor() < _FIRST_GLIBC.get(self.machine, 17):
            raise BundleError(f"glibc {self.glibc} is older than any manylinux {self.machine}")

    def _glibc_minor(self) -> int:
        return int(self.glibc.split(".")[1])

    @property
    def platform(self) -> str:
        """The manifest's ``platform``: the newest manylinux tag the device accepts."""
        return f"manylinux_2_{self._glibc_minor()}_{self.machine}"

    def describe(self) -> str:
        return f"CPython {self.python} / {self.machine}, glibc {self.glibc}"

    def platform_tags(self) -> list[str]:
        """Every platform tag the device accepts, most specific first."""
        tags = []
        for minor in range(self._glibc_minor(), _FIRST_GLIBC.get(self.machine, 17) - 1, -1):
            tags.append(f"manylinux_2_{minor}_{self.machine}")
            legacy = _LEGACY_MANYLINUX.get(minor)
            if legacy and self.machine in legacy[1]:
                tags.append(f"{legacy[0]}_{self.machine}")
        return [*tags, f"linux_{self.machine}"]

    def tags(self) -> frozenset[Tag]:
        """Every wheel tag (``packaging.tags.Tag``) the device's pip installs."""
        from packaging.tags import compatible_tags, cpython_tags

        version = tuple(int(x) for x in self.python.split("."))
        cp = "cp" + "".join(str(x) for x in version)
        plats = self.platform_tags()
        return frozenset(
            [
                *cpython_tags(version, abis=[cp], platforms=plats),
                *compatible_tags(version, interpreter=cp, platforms=plats),
            ]
        )

    def pip_platform_args(self) -> list[str]:
        """``pip download`` / ``pip install --dry-run`` options that select this device's wheels."""
        args = ["--only-binary=:all:", "--python-version", self.python, "--implementation", "cp"]
        for tag in self.platform_tags():
            args += ["--platform", tag]
        return args


_DOTTED2 = re.compile(r"[0-9]{1,2}\.[0-9]{1,3}")
# The oldest glibc a manylinux wheel for the machine can name, and the legacy aliases.
_FIRST_GLIBC = {"x86_64": 5, "i686": 5}
_LEGACY_MANYLINUX = {
    17: ("manylinux2014", {"x86_64", "i686", "aarch64", "armv7l", "ppc64", "ppc64le", "s390x"}),
    12: ("manylinux2010", {"x86_64", "i686"}),
    5: ("manylinux1", {"x86_64", "i686"}),
}

#: Raspberry Pi OS releases a bundle can be built for (``--python`` and ``--glibc``).
TARGETS = {
    "bookworm": Target(python="3.11", machine="aarch64", glibc="2.36"),
    "trixie": Target(python="3.13", machine="aarch64", glibc="2.41"),
}


@dataclass(frozen=True)
class Wheel:
    """A wheel file's name, read with ``packaging``: distribution, version and tags."""

    path: Path
    dist: str
    version: str
    tags: frozenset[Tag]

    @classmethod
    def parse(cls, path: Path) -> Wheel:
        from packaging.utils import InvalidWheelFilename, parse_wheel_filename

        try:
            dist, version, _build, tags = parse_wheel_filename(path.name)
        except InvalidWheelFilename as exc:
            raise BundleError(f"{path.name}: not a wheel file name ({exc})") from None
        return cls(path, str(dist), str(version), frozenset(tags))

    def fits(self, target: Target) -> bool:
        """Installable on ``target`` (one of its tags is one the device's pip accepts)."""
        return not self.tags.isdisjoint(target.tags())


def wheel_fits(name: str, target: Target) -> bool:
    """Whether a wheel of this file name installs on ``target``."""
    return Wheel.parse(Path(name)).fits(target)


def pip_download_command(target: Target, dest: str, requirement: str) -> list[str]:
    """The ``pip download`` that fills a wheelhouse for ``target`` (what docs/ota.md shows)."""
    return ["pip", "download", *target.pip_platform_args(), "-d", dest, requirement]


def bundled_pip_wheel() -> Path | None:
    """pip's own wheel as shipped with this Python (ensurepip) or Debian (python3-pip-whl)."""
    import ensurepip

    candidates = sorted((Path(ensurepip.__file__).parent / "_bundled").glob("pip-*.whl"))
    candidates += sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))
    return candidates[-1] if candidates else None


def resolve_offline(wheels_dir: Path, install: list[str], target: Target) -> list[str]:
    """Ask pip, offline, whether ``install`` installs from ``wheels_dir`` alone on ``target``.

    Returns the file names of the wheels pip would install; raises :class:`BundleError`
    with pip's reason (a missing dependency names the requirement).  ``--isolated``: no
    pip.conf or ``PIP_*`` variable of this computer may add a folder or an index.
    """
    with tempfile.TemporaryDirectory(prefix="satoyama-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--isolated",
                "--dry-run",
                "--ignore-installed",
                "--no-index",
                "--find-links",
                str(wheels_dir),
                *target.pip_platform_args(),
                "--target",
                str(Path(tmp) / "target"),
                "--report",
                str(report),
                "--quiet",
                "--disable-pip-version-check",
                *install,
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            reason = lines[-1] if lines else f"pip exited {proc.returncode}"
            fill = pip_download_command(target, "WHEELHOUSE", "'DAEMON.whl[EXTRAS]'")
            raise BundleError(
                f"the wheelhouse does not install offline on the device ({target.describe()}): "
                f"{reason}. Fill it with: {' '.join(fill)}"
            )
        data = json.loads(report.read_text())
    return sorted(
        PurePosixPath(str(item["download_info"]["url"])).name for item in data.get("install", [])
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
    """Build and sign ``satoyama-edge-VERSION.tar`` in ``out_dir``; return its path.

    The bundle is for CPython ``python`` on ``platform`` (the machine, ``aarch64``)
    with glibc ``glibc`` or newer: Raspberry Pi OS Bookworm is 3.11 / 2.36, Trixie
    3.13 / 2.41 (:data:`TARGETS`).  Every wheel must carry a tag that device accepts,
    and with ``check_resolution`` pip, offline, must find every dependency in them.
    """
    if not signing_keys:
        raise BundleError("a bundle needs at least one signing key")
    try:
        import packaging.tags  # noqa: F401  (building only: the device never imports it)
    except ImportError:
        raise BundleError(
            "building a bundle reads wheel tags with the 'packaging' library: "
            "pip install 'packaging>=22'"
        ) from None
    target = Target(python=python, machine=platform, glibc=glibc)
    daemon = Wheel.parse(daemon_wheel)
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
    pip_wheel: Path | None = None
    found = sorted(wheelhouse.glob("*.whl")) if wheelhouse else []
    for w in [daemon, *(Wheel.parse(p) for p in found)]:
        if w.dist == DIST_NAME and w.path != daemon_wheel:
            continue  # other builds of the daemon: the one given explicitly wins
        if not w.fits(target):
            tags = ", ".join(sorted({t.platform for t in w.tags}))
            raise BundleError(
                f"{w.path.name}: does not install on {target.describe()} (it is built for "
                f"{tags}; build the wheelhouse for the Pi, not for this computer: see docs/ota.md)"
            )
        wheels[w.path.name] = w.path
        if w.dist == "pip":
            pip_wheel = w.path
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
            resolve_offline(Path(tmp), install, target)

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
        python=target.python,
        platform=target.platform,
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
