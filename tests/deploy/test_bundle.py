"""Building and verifying bundles; keys.  Real files, real tars, real Ed25519."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from deploy import bundle as b
from deploy.errors import BundleError, DeployError, InsecureKeyError, VerifyError
from deploy.keys import generate_signing_key, load_signing_key, load_verify_keys
from deploy.version import parse_version
from tests.deploy.conftest import Keys
from tests.deploy.helpers import HOST_GLIBC, HOST_MACHINE, fake_daemon_wheels


def test_build_and_verify(bundle_v1: Path, ota_key: Keys) -> None:
    vb = b.verify(bundle_v1, load_verify_keys([ota_key.public]))
    m = vb.manifest
    assert (m.name, m.version, m.install) == ("satoyama-edge", "0.1.0", ["satoyama-edge==0.1.0"])
    # What the test devices (this machine) run; the default target's: test_bundle_real_wheels.
    assert m.platform == f"manylinux_2_{HOST_GLIBC.split('.')[1]}_{HOST_MACHINE}"
    assert m.pip_wheel is not None and m.pip_wheel.startswith("wheels/pip-")
    assert {"systemd/satoyama-edge.service", "wheels/satoyama_dep-1.0-py3-none-any.whl"} <= set(
        m.files
    )
    with tarfile.open(bundle_v1) as tar:
        names = tar.getnames()
    assert names[:2] == ["manifest.json", "manifest.sig"]


def _rewrite(src: Path, dest: Path, edit: str) -> Path:
    """A copy of a bundle with one structural change (the signed manifest unchanged)."""
    with tarfile.open(src) as tin, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if edit == "drop" and m.name.startswith("files/wheels/satoyama_dep"):
                continue
            if edit in ("double-slash", "dot-segment") and m.name.startswith("files/wheels/sato"):
                sep = "//" if edit == "double-slash" else "/./"
                m.name = m.name.replace("files/", "files" + sep, 1)
            tout.addfile(m, io.BytesIO(data))
            if edit == "extra" and m.name == "manifest.sig":
                info = tarfile.TarInfo("files/evil.sh")
                info.size = 3
                tout.addfile(info, io.BytesIO(b"rm\n"))
            if edit == "symlink" and m.name == "manifest.sig":
                info = tarfile.TarInfo("files/models/link")
                info.type = tarfile.SYMTYPE
                info.linkname = "/etc/shadow"
                tout.addfile(info)
            if edit == "traversal" and m.name == "manifest.sig":
                info = tarfile.TarInfo("files/../../etc/cron.d/x")
                info.size = 1
                tout.addfile(info, io.BytesIO(b"x"))
    return dest


@pytest.mark.parametrize(
    "edit, message",
    [
        ("drop", "missing"),
        ("extra", "not listed in the manifest"),
        ("symlink", "not a regular file"),
        ("traversal", "unexpected member"),
        # extract() never accepted these; verify() must not either (they must agree)
        ("double-slash", "unexpected member"),
        ("dot-segment", "unexpected member"),
    ],
)
def test_layout_attacks_are_rejected(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, edit: str, message: str
) -> None:
    bad = _rewrite(bundle_v1, tmp_path / "bad.tar", edit)
    with pytest.raises(VerifyError, match=message):
        b.verify(bad, load_verify_keys([ota_key.public]))


def test_a_deeply_nested_signature_file_is_a_clear_refusal(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys
) -> None:
    """Not a RecursionError (a traceback, no event): a VerifyError like any forged bundle."""
    for nested in (
        b"[" * 200_000 + b"]" * 200_000,
        b'{"x":' + b"[" * 200_000 + b"]" * 200_000 + b',"signatures":[]}',
    ):
        bad = tmp_path / "nested.tar"
        with (
            tarfile.open(bundle_v1) as tin,
            tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tout,
        ):
            for m in tin:
                data = tin.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
                if m.name == "manifest.sig":
                    data = nested[: b.MAX_SIG]
                    m.size = len(data)
                tout.addfile(m, io.BytesIO(data))
        with pytest.raises(VerifyError, match=r"manifest\.sig is malformed"):
            b.verify(bad, load_verify_keys([ota_key.public]))


# Real file names from the package index (only the names: the question is which tags a
# device accepts; tests/deploy/test_bundle_real_wheels.py builds bundles of the wheels).
MSGSPEC = (
    "msgspec-0.23.0-cp311-cp311-"
    "manylinux2014_aarch64.manylinux_2_17_aarch64.manylinux_2_28_aarch64.whl"
)
NUMPY = "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"
LGPIO = "lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_aarch64.whl"
CRYPTOGRAPHY = "cryptography-50.0.2-cp311-abi3-manylinux2014_aarch64.manylinux_2_17_aarch64.whl"
PROTOBUF = "protobuf-7.36.2-cp310-abi3-manylinux2014_aarch64.whl"
NUMPY_313 = "numpy-2.5.5-cp313-cp313-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl"


@pytest.mark.parametrize(
    "name, bookworm, trixie",
    [
        (MSGSPEC, True, False),
        (NUMPY, True, False),
        (LGPIO, True, False),
        (CRYPTOGRAPHY, True, True),  # abi3: any CPython from 3.11 on
        (PROTOBUF, True, True),
        (NUMPY_313, False, True),
        ("uuid6-2025.0.1-py3-none-any.whl", True, True),
        ("pyserial-3.5-py2.py3-none-any.whl", True, True),
        ("lgpio-0.2.2.0-cp311-cp311-manylinux_2_38_aarch64.whl", False, False),  # glibc 2.38
        ("lgpio-0.2.2.0-cp313-cp313-manylinux_2_38_aarch64.whl", False, True),
        ("msgspec-0.23.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False, False),
        ("msgspec-0.23.0-cp311-cp311-musllinux_1_2_aarch64.whl", False, False),
        ("lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_armv7l.whl", False, False),
        ("msgspec-0.23.0-cp312-cp312-manylinux_2_17_aarch64.whl", False, False),
        ("msgspec-0.23.0-pp311-pypy311_pp73-manylinux_2_17_aarch64.whl", False, False),
    ],
)
def test_wheel_tags_for_each_raspberry_pi_os(name: str, bookworm: bool, trixie: bool) -> None:
    assert b.wheel_fits(name, b.TARGETS["bookworm"]) is bookworm
    assert b.wheel_fits(name, b.TARGETS["trixie"]) is trixie


def test_every_compatible_platform_tag_is_named_for_pip() -> None:
    """pip does not widen ``--platform``: glibc 2.17 up to the device's, newest first."""
    tags = b.TARGETS["bookworm"].platform_tags()
    assert tags[0] == "manylinux_2_36_aarch64" and tags[-1] == "linux_aarch64"
    assert [f"manylinux_2_{x}_aarch64" for x in range(36, 16, -1)] == [
        t for t in tags if t.startswith("manylinux_2_")
    ]
    assert "manylinux2014_aarch64" in tags and not any("musllinux" in t for t in tags)
    args = b.TARGETS["trixie"].pip_platform_args()
    assert args[:5] == ["--only-binary=:all:", "--python-version", "3.13", "--implementation", "cp"]
    assert args.count("--platform") == len(b.TARGETS["trixie"].platform_tags()) == 27


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"python": "3"}, "python '3': expected MAJOR.MINOR"),
        ({"glibc": "2.36.1"}, "glibc '2.36.1': expected 2.MINOR"),
        ({"glibc": "2.5"}, "older than any manylinux aarch64"),
        ({"machine": "arm 64"}, "expected a machine name"),
    ],
)
def test_a_target_that_cannot_be_is_refused(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(BundleError, match=message):
        b.Target(**kwargs)


def test_a_file_that_is_not_a_wheel_is_named(tmp_path: Path, ota_key: Keys) -> None:
    wheels = tmp_path / "wheels"
    daemon = fake_daemon_wheels(wheels, "0.5.0")
    (wheels / "numpy-latest.whl").write_bytes(b"PK")
    with pytest.raises(BundleError, match=r"^numpy-latest\.whl: not a wheel file name"):
        b.build(
            daemon_wheel=daemon,
            out_dir=tmp_path / "out",
            signing_keys=[load_signing_key(ota_key.private)],
            wheelhouse=wheels,
            check_resolution=False,
        )


def test_versions_are_plain_numbers() -> None:
    assert parse_version("1.10.0") > parse_version("1.9.9")
    assert parse_version("2") == parse_version("2.0.0")
    for bad in ("1.0rc1", "v1", "", "1..2", "1.2.3.4.5"):
        with pytest.raises(DeployError):
            parse_version(bad)


def test_signing_keys_are_private_and_never_overwritten(tmp_path: Path) -> None:
    priv, pub = tmp_path / "k.key", tmp_path / "k.pub"
    generate_signing_key(priv, pub)
    assert priv.stat().st_mode & 0o777 == 0o600
    with pytest.raises(DeployError, match="refusing to overwrite"):
        generate_signing_key(priv, pub)
    priv.chmod(0o644)
    with pytest.raises(InsecureKeyError, match="readable by group or others"):
        load_signing_key(priv)
    with pytest.raises(DeployError, match="32 bytes"):
        (tmp_path / "short.pub").write_text("AAAA\n")
        load_verify_keys([tmp_path / "short.pub"])
