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
from tests.deploy.helpers import fake_daemon_wheels, make_wheel


def test_build_and_verify(bundle_v1: Path, ota_key: Keys) -> None:
    vb = b.verify(bundle_v1, load_verify_keys([ota_key.public]))
    m = vb.manifest
    assert (m.name, m.version, m.install) == ("satoyama-edge", "0.1.0", ["satoyama-edge==0.1.0"])
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


def test_the_wheelhouse_must_be_for_the_pi(tmp_path: Path, ota_key: Keys) -> None:
    wheels = tmp_path / "wheels"
    daemon = fake_daemon_wheels(wheels, "0.5.0")
    x86 = wheels / "msgspec-0.18.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl"
    x86.write_bytes(b"PK")
    with pytest.raises(BundleError, match=r"does not install on CPython 3\.11 / aarch64"):
        b.build(
            daemon_wheel=daemon,
            out_dir=tmp_path / "out",
            signing_keys=[load_signing_key(ota_key.private)],
            wheelhouse=wheels,
            check_resolution=False,
        )


def test_offline_resolution_check_finds_a_missing_dependency(tmp_path: Path, ota_key: Keys) -> None:
    wheels = tmp_path / "wheels"
    daemon = make_wheel(
        wheels,
        "satoyama-edge",
        "0.5.0",
        {"satoyama_fake/__init__.py": ""},
        requires=["satoyama-missing>=1"],
    )
    with pytest.raises(BundleError, match="does not install offline on the device"):
        b.build(
            daemon_wheel=daemon,
            out_dir=tmp_path / "out",
            signing_keys=[load_signing_key(ota_key.private)],
            wheelhouse=wheels,
        )


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


def _fits(name: str) -> bool:
    return b.WheelName.parse(Path(name)).fits("3.11", "aarch64")


def test_wheel_tags() -> None:
    fits = _fits
    assert fits("msgspec-0.18.6-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl")
    assert fits("cryptography-44.0.0-cp39-abi3-manylinux_2_28_aarch64.whl")
    assert fits("uuid6-2025.0.1-py3-none-any.whl")
    assert not fits("msgspec-0.18.6-cp312-cp312-manylinux_2_17_aarch64.whl")
    assert not fits("lgpio-0.2.2.0-cp311-cp311-manylinux_2_34_armv7l.whl")


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
