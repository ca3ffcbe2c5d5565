"""Bundles of the real aarch64 wheels of the daemon's dependencies, fetched as docs/ota.md says.

The one place the tests download: the ``pip download`` command is copied out of
docs/ota.md and run as written (``pip`` being this venv's) for a daemon wheel
whose requirements are pyproject.toml's, against the package index.  The wheels
are kept outside the clone, in ``${XDG_CACHE_HOME:-~/.cache}/satoyama-edge/wheels/``,
under a key made of the command, the requirement set and the week: a second run
downloads nothing, a changed command or dependency list downloads afresh, and
once a week the index's current releases are checked again.  Without the
network the tests fail, saying why; they never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from deploy import bundle as b
from deploy.errors import BundleError
from deploy.keys import load_signing_key, load_verify_keys
from tests.deploy.conftest import Keys
from tests.deploy.helpers import REPO, make_wheel

# A cold cache downloads about 40 MB; the build hashes and writes it twice.
pytestmark = pytest.mark.timeout(300)

BIN = Path(sys.executable).parent
BOOKWORM = b.TARGETS["bookworm"]
KEEP_DAYS = 14


@dataclass(frozen=True)
class RealWheels:
    daemon: Path  # dist/satoyama_edge-VERSION-py3-none-any.whl, pyproject.toml's requirements
    wheelhouse: Path  # what the documented pip download saved
    x86_64: Path  # a real wheel of one of them for a PC, not a Pi
    version: str
    requirements: dict[str, list[str]]  # "" for the plain dependencies, then each extra


def documented_pip_download() -> str:
    """The first ``pip download`` command of docs/ota.md, continuation lines joined."""
    blocks: list[str] = re.findall(r"```sh\n(.*?)```", (REPO / "docs/ota.md").read_text(), re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("pip download "):
                return line
    pytest.fail("docs/ota.md shows no `pip download` command", pytrace=False)


def project_requirements() -> dict[str, list[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {"": list(project["dependencies"]), "pi": list(project["optional-dependencies"]["pi"])}


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "satoyama-edge" / "wheels"


def _run(argv: list[str], cwd: Path, what: str) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # No network: fail within a minute rather than retry for a quarter of an hour.
        "PIP_DEFAULT_TIMEOUT": "20",
        "PIP_RETRIES": "1",
    }
    try:
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{what} took more than 240 s (is the package index reachable?)", pytrace=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.fail(
            f"{what} failed (exit {proc.returncode}); this test needs the package index:\n"
            f"$ {argv[-1] if argv[0] == 'bash' else ' '.join(argv)}\n{tail}",
            pytrace=False,
        )


def _fetch(folder: Path, command: str, version: str, reqs: dict[str, list[str]]) -> None:
    """Fill ``folder`` as an operator would; atomically (another run may be at it too)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{folder.name}.part-", dir=folder.parent))
    try:
        make_wheel(
            work / "dist",
            "satoyama-edge",
            version,
            {"satoyama_edge_stub/__init__.py": f"VERSION = {version!r}\n"},
            requires=reqs[""],
            extras={k: v for k, v in reqs.items() if k},
        )
        _run(["bash", "-c", command], work, "the pip download of docs/ota.md")
        wheelhouse = work / _wheelhouse_name(command)
        msgspec = next(wheelhouse.glob("msgspec-*.whl"))
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--platform",
                "manylinux_2_17_x86_64",
                "--platform",
                "manylinux2014_x86_64",
                "-d",
                str(work / "x86_64"),
                f"msgspec=={parse_wheel_filename(msgspec.name)[1]}",
            ],
            work,
            "downloading msgspec's x86_64 wheel",
        )
        (work / "complete").write_text(command + "\n")
        try:
            work.rename(folder)
        except OSError:  # another run got there first: keep its copy
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _prune(root: Path, keep: Path) -> None:
    """Drop cached wheelhouses (and abandoned partial ones) not used for KEEP_DAYS."""
    limit = time.time() - KEEP_DAYS * 86400
    for old in root.iterdir():
        if old != keep and old.is_dir() and old.stat().st_mtime < limit:
            shutil.rmtree(old, ignore_errors=True)


def _wheelhouse_name(command: str) -> str:
    m = re.search(r" -d (\S+)", command)
    assert m, f"the documented pip download names no -d folder: {command}"
    return m.group(1).rstrip("/")


@pytest.fixture(scope="module")
def real_wheels() -> RealWheels:
    command = documented_pip_download()
    m = re.search(r"'dist/satoyama_edge-([0-9.]+)-py3-none-any\.whl\[pi\]'", command)
    assert m, f"the documented pip download does not fetch the daemon wheel with [pi]: {command}"
    version = m.group(1)
    reqs = project_requirements()
    key = hashlib.sha256(
        json.dumps([command, reqs, time.strftime("%G-W%V")], sort_keys=True).encode()
    ).hexdigest()[:16]
    folder = cache_root() / f"bookworm-{key}"
    if not (folder / "complete").exists():
        _fetch(folder, command, version, reqs)
    os.utime(folder)
    _prune(folder.parent, folder)
    return RealWheels(
        daemon=folder / f"dist/satoyama_edge-{version}-py3-none-any.whl",
        wheelhouse=folder / _wheelhouse_name(command),
        x86_64=next((folder / "x86_64").glob("msgspec-*.whl")),
        version=version,
        requirements=reqs,
    )


def _names(reqs: dict[str, list[str]]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for rs in reqs.values() for r in rs}


def _deploy(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The operator's own command, as installed in this venv."""
    exe = BIN / "satoyama-deploy"
    assert exe.exists(), f"{exe} is missing: install the project into the venv (scripts/setup.sh)"
    return subprocess.run(
        [str(exe), *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=240
    )


def test_the_documented_download_fetches_every_dependency_for_the_pi(
    real_wheels: RealWheels,
) -> None:
    wheels = sorted(real_wheels.wheelhouse.glob("*.whl"))
    dists = {str(parse_wheel_filename(w.name)[0]): w for w in wheels}
    # Every requirement of pyproject.toml (lgpio of the pi extra too) has its wheel...
    assert _names(real_wheels.requirements) <= set(dists), sorted(dists)
    # ...and the compiled ones are aarch64 wheels for Bookworm's CPython and glibc.
    for dist in ("numpy", "msgspec", "cryptography", "ai-edge-litert", "lgpio"):
        tags = parse_wheel_filename(dists[dist].name)[3]
        assert {t.platform for t in tags} <= set(BOOKWORM.platform_tags()), dists[dist].name
        assert b.Wheel.parse(dists[dist]).fits(BOOKWORM), dists[dist].name
    for dist in ("numpy", "msgspec", "ai-edge-litert", "lgpio"):  # cp311 only, not abi3
        assert not b.Wheel.parse(dists[dist]).fits(b.TARGETS["trixie"]), dists[dist].name


def test_a_bundle_of_the_real_wheels_builds_verifies_and_resolves_for_bookworm(
    tmp_path: Path, real_wheels: RealWheels, ota_key: Keys
) -> None:
    built = _deploy(
        "bundle", "build",
        "--daemon-wheel", real_wheels.daemon,
        "--wheelhouse", real_wheels.wheelhouse,
        "--extra", "pi",
        "--min-from", "1.2.0",
        "--signing-key", ota_key.private,
        "--units", REPO / "systemd",
        "--out", tmp_path / "bundles",
        cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    out = tmp_path / "bundles" / f"satoyama-edge-{real_wheels.version}.tar"
    assert built.stdout.splitlines()[0] == str(out)
    assert f"sha256 {b.file_sha256(out)}" in built.stdout

    checked = _deploy("bundle", "verify", out, "--verify-key", ota_key.public, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert f"ok - satoyama-edge {real_wheels.version} (from 1.2.0)" in checked.stdout
    assert "Python 3.11 manylinux_2_36_aarch64" in checked.stdout

    vb = b.verify(out, load_verify_keys([ota_key.public]))
    m = vb.manifest
    assert (m.python, m.platform) == ("3.11", "manylinux_2_36_aarch64")
    assert m.install == [f"satoyama-edge[pi]=={real_wheels.version}"]
    bundled = {rel.removeprefix("wheels/") for rel in m.files if rel.startswith("wheels/")}
    downloaded = {w.name for w in real_wheels.wheelhouse.glob("*.whl")}
    assert downloaded <= bundled
    assert m.pip_wheel is not None and m.pip_wheel.removeprefix("wheels/") in bundled

    # What the device receives resolves, offline, for Bookworm: pip would install exactly
    # the bundle's wheels (pip's own aside), aarch64 ones included.
    dest = tmp_path / "release"
    b.extract(vb, dest)
    resolved = b.resolve_offline(dest / "wheels", m.install, BOOKWORM)
    assert set(resolved) == bundled - {m.pip_wheel.removeprefix("wheels/")}
    assert any(re.fullmatch(r"numpy-.*manylinux_2_\d+_aarch64\.whl", w) for w in resolved)
    assert any(w.startswith("lgpio-") for w in resolved)


def _wheelhouse_copy(tmp_path: Path, real_wheels: RealWheels, *, without: str = "") -> Path:
    copy = tmp_path / "wheelhouse"
    copy.mkdir()
    for w in real_wheels.wheelhouse.glob("*.whl"):
        if not (without and str(parse_wheel_filename(w.name)[0]) == without):
            (copy / w.name).symlink_to(w)
    return copy


def test_an_x86_64_wheel_in_the_wheelhouse_is_refused_by_name(
    tmp_path: Path, real_wheels: RealWheels, ota_key: Keys
) -> None:
    wheelhouse = _wheelhouse_copy(tmp_path, real_wheels)
    (wheelhouse / real_wheels.x86_64.name).symlink_to(real_wheels.x86_64)
    with pytest.raises(BundleError) as err:
        b.build(
            daemon_wheel=real_wheels.daemon,
            out_dir=tmp_path / "out",
            signing_keys=[load_signing_key(ota_key.private)],
            wheelhouse=wheelhouse,
            extras=["pi"],
        )
    assert str(err.value).startswith(
        f"{real_wheels.x86_64.name}: does not install on CPython 3.11 / aarch64, glibc 2.36"
    )
    assert "x86_64" in str(err.value).split("built for", 1)[1]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "python, glibc, refused",
    [
        # Trixie's Python: the cp311 wheels are for another Python (the first one, by name).
        ("3.13", "2.41", r"ai_edge_litert-[^ ]*-cp311-cp311-[^ ]*\.whl"),
        # A device with an older glibc: lgpio (and cryptography's newest wheel) need 2.34.
        ("3.11", "2.31", r"(lgpio|cryptography)-[^ ]*-manylinux_2_34_aarch64\.whl"),
    ],
)
def test_a_wheelhouse_for_another_device_is_refused_by_name(
    tmp_path: Path, real_wheels: RealWheels, ota_key: Keys, python: str, glibc: str, refused: str
) -> None:
    with pytest.raises(BundleError) as err:
        b.build(
            daemon_wheel=real_wheels.daemon,
            out_dir=tmp_path / "out",
            signing_keys=[load_signing_key(ota_key.private)],
            wheelhouse=real_wheels.wheelhouse,
            extras=["pi"],
            python=python,
            glibc=glibc,
        )
    assert re.match(
        rf"{refused}: does not install on CPython {re.escape(python)} / aarch64, "
        rf"glibc {re.escape(glibc)}",
        str(err.value),
    ), str(err.value)


def test_a_missing_dependency_is_named_before_anything_is_built(
    tmp_path: Path, real_wheels: RealWheels, ota_key: Keys
) -> None:
    wheelhouse = _wheelhouse_copy(tmp_path, real_wheels, without="msgspec")
    proc = _deploy(
        "bundle", "build",
        "--daemon-wheel", real_wheels.daemon,
        "--wheelhouse", wheelhouse,
        "--extra", "pi",
        "--signing-key", ota_key.private,
        "--out", tmp_path / "out",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "the wheelhouse does not install offline on the device" in lines[0]
    assert "No matching distribution found for msgspec" in lines[0]
    # ...and says how to fill it, with every platform tag the device accepts.
    assert "--platform manylinux_2_17_aarch64" in lines[0]
    assert "--platform manylinux_2_36_aarch64" in lines[0]
    assert not (tmp_path / "out").exists()
