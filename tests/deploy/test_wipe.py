"""Secrets leave no copy in FAT's free clusters: wipe.sh on a real FAT image.

The card is provisioned into a FAT filesystem made by mkfs.vfat (through
mtools, as installers' machines do), then mounted with fusefat - a userspace
FAT driver that, like the kernel's vfat, writes a file's bytes into the
clusters it already has - and the first-boot hook's own wipe.sh is run on it.
The raw image is then searched for the secrets.  The control: a plain ``rm``
leaves them there to be found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from deploy.provision import provision, wpa_psk
from tests.deploy.conftest import Keys
from tests.deploy.helpers import BOOKWORM_BOOT, TRIXIE_BOOT
from tests.deploy.test_provision import NOT_HERE, _request, claim_fleet

PASSPHRASE = "kataoka-paddy-wifi-2026"
SSID = "kataoka-field"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}


def fat_image(path: Path, files: dict[str, bytes]) -> Path:
    """A bare FAT32 filesystem (mkfs.vfat) with ``files`` copied in by mtools."""
    with open(path, "wb") as f:
        f.truncate(48 * 1024 * 1024)
    subprocess.run(["mkfs.vfat", "-F", "32", "-n", "BOOTFS", str(path)], check=True,
                   capture_output=True)  # fmt: skip
    for name, data in files.items():
        src = path.with_name("seed-" + name)
        src.write_bytes(data)
        subprocess.run(["mcopy", "-i", str(path), str(src), f"::/{name}"], check=True,
                       env=MTOOLS_ENV, capture_output=True)  # fmt: skip
        src.unlink()
    return path


@contextmanager
def mounted(image: Path, where: Path) -> Iterator[Path]:
    """The FAT image mounted read-write through FUSE, as the Pi mounts /boot/firmware."""
    if shutil.which("fusefat") is None or shutil.which("fusermount") is None:
        pytest.fail("fusefat is not installed: apt-get install fusefat (a FUSE FAT driver)")
    where.mkdir()
    subprocess.run(["fusefat", "-o", "rw+", str(image), str(where)], check=True,
                   capture_output=True)  # fmt: skip
    try:
        yield where
    finally:
        subprocess.run(["fusermount", "-u", str(where)], check=True)


def pem_lines(pem: bytes) -> list[bytes]:
    """The base64 lines of a PEM block: any one of them found means key material leaked."""
    return [ln for ln in pem.splitlines() if ln and not ln.startswith(b"-----")]


@pytest.fixture
def card(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path
) -> tuple[Path, list[bytes]]:
    """A Bookworm card provisioned with Wi-Fi: the image and the secret byte strings on it."""
    fleet_file = claim_fleet(tmp_path, bundle_v1, [ota_key.public], fleet_ca)
    image = fat_image(tmp_path / "bootfs.img", BOOKWORM_BOOT)
    provision(_request(fleet_file, wifi_ssid=SSID, wifi_psk=PASSPHRASE), image=image,
              system=NOT_HERE)  # fmt: skip
    claim_key = subprocess.run(
        ["mtype", "-i", str(image), "::/satoyama/secrets/claim.key"],
        env=MTOOLS_ENV, capture_output=True, check=True,
    ).stdout  # fmt: skip
    secrets = [wpa_psk(SSID, PASSPHRASE).encode(), *pem_lines(claim_key)]
    data = image.read_bytes()
    assert all(s in data for s in secrets)  # they are on the card before first boot
    return image, secrets


def test_wiped_secrets_are_gone_from_the_freed_clusters(
    tmp_path: Path, card: tuple[Path, list[bytes]]
) -> None:
    image, secrets = card
    with mounted(image, tmp_path / "mnt") as boot:
        secret_files = sorted((boot / "satoyama" / "secrets").iterdir())
        # (fusefat shows 8.3 names in upper case: FAT keeps case for them only in a flag)
        names = {p.name.lower() for p in secret_files}
        assert names >= {"claim.key", "device.toml", "satoyama-wifi.nmconnection"}
        # As firstboot.sh step 2 does it, with the card's own wipe.sh.
        subprocess.run(["sh", str(boot / "satoyama" / "wipe.sh"), *map(str, secret_files)],
                       check=True)  # fmt: skip
        shutil.rmtree(boot / "satoyama" / "secrets")
    data = image.read_bytes()
    leaked = [s[:12] for s in secrets if s in data]
    assert leaked == [], f"secret bytes still on the card: {leaked}"
    listing = subprocess.run(["mdir", "-b", "-i", str(image), "::/satoyama"], env=MTOOLS_ENV,
                             capture_output=True, text=True).stdout  # fmt: skip
    assert "secrets" not in listing and "firstboot.sh" in listing


def test_control_a_plain_delete_leaves_the_secrets_on_the_card(
    tmp_path: Path, card: tuple[Path, list[bytes]]
) -> None:
    """What the hook did before: the files are deleted, their bytes are not."""
    image, secrets = card
    with mounted(image, tmp_path / "mnt") as boot:
        shutil.rmtree(boot / "satoyama" / "secrets")
    data = image.read_bytes()
    assert all(s in data for s in secrets)


def test_cloud_init_network_config_is_overwritten_before_it_is_rewritten(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path
) -> None:
    """Trixie: network-config held the Wi-Fi key; the hook keeps the file with a note."""
    fleet_file = claim_fleet(tmp_path, bundle_v1, [ota_key.public], fleet_ca)
    image = fat_image(tmp_path / "bootfs.img", TRIXIE_BOOT)
    provision(_request(fleet_file, wifi_ssid=SSID, wifi_psk=PASSPHRASE), image=image,
              system=NOT_HERE)  # fmt: skip
    psk = wpa_psk(SSID, PASSPHRASE).encode()
    assert psk in image.read_bytes()
    with mounted(image, tmp_path / "mnt") as boot:
        net = boot / "network-config"
        subprocess.run(["sh", str(boot / "satoyama" / "wipe.sh"), "--keep", str(net)], check=True)
        net.write_text("# satoyama: applied on first boot\n")
    assert psk not in image.read_bytes()
