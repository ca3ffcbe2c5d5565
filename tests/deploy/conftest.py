"""Fixtures for the deployment tests: keys, a fleet CA, signed bundles of a fake daemon."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.pki import create_ca
from tests.deploy.helpers import FakeDevice, build_fake_bundle, new_signing_key


@dataclass(frozen=True)
class Keys:
    private: Path
    public: Path


@pytest.fixture(scope="session")
def ota_key(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    priv, pub = new_signing_key(tmp_path_factory.mktemp("keys"), "ota-2026")
    return Keys(priv, pub)


@pytest.fixture(scope="session")
def other_key(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """A key the devices do not trust (an attacker's, or a test fleet's)."""
    priv, pub = new_signing_key(tmp_path_factory.mktemp("keys-other"), "other")
    return Keys(priv, pub)


@pytest.fixture(scope="session")
def fleet_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ca")
    create_ca(folder, "shiojiri")
    return folder


@pytest.fixture(scope="session")
def bundle_v1(tmp_path_factory: pytest.TempPathFactory, ota_key: Keys) -> Path:
    return build_fake_bundle(
        tmp_path_factory.mktemp("b1"), "0.1.0", ota_key.private, with_units=True
    )


@dataclass(frozen=True)
class Fleet:
    """A device at 0.2.0 (0.1.0 kept as the previous release) and bundles to update it with."""

    template: Path
    v1: Path
    v2: Path
    v3: Path
    v3_bad: Path

    def device(self, where: Path) -> FakeDevice:
        """A fresh copy of the template device (each test gets its own file system)."""
        shutil.copytree(self.template, where, symlinks=True)
        return FakeDevice(where)


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, ota_key: Keys, bundle_v1: Path) -> Fleet:
    work = tmp_path_factory.mktemp("fleet")
    v2 = build_fake_bundle(work, "0.2.0", ota_key.private)
    v3 = build_fake_bundle(work, "0.3.0", ota_key.private, min_from="0.1.0")
    v3_bad = build_fake_bundle(work, "0.3.0", ota_key.private, healthy=False)
    root = work / "template"
    dev = FakeDevice.create(root, [ota_key.public])
    for args in (
        ["install", "--bundle", str(bundle_v1), "--no-restart"],
        ["install", "--bundle", str(v2)],
    ):
        proc = dev.updater(*args)
        assert proc.returncode == 0, proc.stderr
    assert dev.current() == "0.2.0" and dev.releases() == ["0.1.0", "0.2.0"]
    (root / "restarts.log").unlink()
    (root / "var/lib/satoyama-update/spool/events.jsonl").unlink()
    return Fleet(root, bundle_v1, v2, v3, v3_bad)
