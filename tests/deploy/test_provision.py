"""Provisioning real FAT images (mkfs.fat + mtools) and mounted folders; read back, validated."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from deploy.disks import SystemDisks, read_mounts
from deploy.errors import InsecureKeyError, ProvisionError, UnsafeTargetError
from deploy.fatboot import BootImage, find_fat_offset
from deploy.pki import claimed_device, common_name, create_claim_ca
from deploy.provision import (
    CMDLINE_HOOK,
    InputFileError,
    Request,
    load_fleet,
    lookup_place,
    provision,
    wpa_psk,
)
from edge.config import parse
from tests.deploy.conftest import Keys
from tests.deploy.helpers import BOOKWORM_BOOT, REPO, TRIXIE_BOOT, make_fat_image, write_fleet

DEVICE = "shiojiri-kataoka-01"
PASSPHRASE = "kataoka-paddy-wifi-2026"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def claim_fleet(tmp_path: Path, bundle: Path, verify_keys: list[Path], fleet_ca: Path) -> Path:
    """fleet.toml as provisioning needs it now: the fleet CA's certificate only (its key
    stays with the enroller) and the claim CA (certificate and key)."""
    claim_dir = tmp_path / "claim-ca"
    if not (claim_dir / "claim-ca.key").exists():
        create_claim_ca(claim_dir, "shiojiri")
    path = write_fleet(tmp_path, bundle=bundle, verify_keys=verify_keys, ca_dir=fleet_ca)
    text = path.read_text()
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("key = ")) + "\n"
    text += (
        f"\n[claim]\ncert = {json.dumps(str(claim_dir / 'claim-ca.crt'))}\n"
        f"key = {json.dumps(str(claim_dir / 'claim-ca.key'))}\nport = 8884\ndays = 14\n"
    )
    path.write_text(text)
    return path


@pytest.fixture
def fleet_file(tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path) -> Path:
    return claim_fleet(tmp_path, bundle_v1, [ota_key.public], fleet_ca)


def _request(fleet_file: Path, **kw: object) -> Request:
    args: dict[str, object] = dict(
        device_id=DEVICE,
        site="shiojiri-kataoka",
        fleet=load_fleet(fleet_file),
        latitude=36.10395,
        longitude=137.96563,
        description="片丘 東の田 北端の柵",
    )
    args.update(kw)
    return Request(**args)  # type: ignore[arg-type]


# The tests write into their own temporary folders and images; /proc stands for the
# "installer's system" so the guard has something that is not the test's own disk.
NOT_HERE = SystemDisks.of_paths(["/proc"])


def _provision_cli(fleet_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``deploy.cli provision --fleet FLEET --device DEVICE ARGS...``, as an installer runs it."""
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", "provision", "--fleet", str(fleet_file),
         "--device", DEVICE, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
    )  # fmt: skip


def test_bookworm_image_gets_firstrun_hook_config_identity_and_bundle(
    tmp_path: Path, fleet_file: Path, bundle_v1: Path, fleet_ca: Path
) -> None:
    image = tmp_path / "raspios-bookworm.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    plan = provision(
        _request(
            fleet_file, wifi_ssid="kataoka-field", wifi_psk=PASSPHRASE, cellular_apn="soracom.io"
        ),
        image=image,
        system=NOT_HERE,
    )
    assert plan.mechanism == "firstrun"

    boot = BootImage(image)
    # The configuration on the card is re-read and validated by the daemon's own validator.
    config = parse(boot.read("satoyama/secrets/device.toml").decode(), "card")  # type: ignore[union-attr]
    assert config.device.id == DEVICE
    assert (config.device.latitude, config.device.longitude) == (36.10395, 137.96563)
    assert set(config.sensors) == {"pir_north", "pir_south"}
    assert set(config.actuators) == {"siren", "strobe"}
    assert config.uplink.host == "broker.example.jp" and config.uplink.port == 8883
    assert config.uplink.tls is not None  # the identity written below, where first boot puts it
    assert (config.uplink.tls.key_file, config.uplink.tls.cert_file, config.uplink.tls.ca_file) == (
        "/etc/satoyama/device.key",
        "/etc/satoyama/device.crt",
        "/etc/satoyama/ca.crt",
    )

    cmdline = boot.read("cmdline.txt").decode()  # type: ignore[union-attr]
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n"), "cmdline.txt must stay one line"
    assert cmdline.startswith(BOOKWORM_BOOT["cmdline.txt"].decode().strip())
    assert cmdline.strip().endswith(CMDLINE_HOOK)
    assert b"satoyama/firstboot.sh" in boot.read("firstrun.sh")  # type: ignore[operator]
    assert boot.read(f"satoyama/{bundle_v1.name}") == bundle_v1.read_bytes()

    # No device key on the card: only a one-time claim for this device, short-lived,
    # issued by the claim CA, and the fleet CA's certificate to trust the broker by.
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    assert not boot.exists("satoyama/secrets/device.key")
    assert not boot.exists("satoyama/secrets/device.crt")
    claim = x509.load_pem_x509_certificate(boot.read("satoyama/secrets/claim.crt"))  # type: ignore[arg-type]
    claim_ca = x509.load_pem_x509_certificate(
        (fleet_file.parent / "claim-ca" / "claim-ca.crt").read_bytes()
    )
    claim.verify_directly_issued_by(claim_ca)
    assert common_name(claim).startswith("claim-") and claimed_device(claim) == DEVICE
    assert claim.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=14)
    key = load_pem_private_key(boot.read("satoyama/secrets/claim.key"), None)  # type: ignore[arg-type]
    assert key.public_key() == claim.public_key()
    assert boot.read("satoyama/secrets/ca.crt") == (fleet_ca / "ca.crt").read_bytes()
    assert boot.read("satoyama/wipe.sh") == (REPO / "deploy/boot/wipe.sh").read_bytes()

    # Network: NetworkManager keyfiles in secrets/, the Wi-Fi key hashed, never the passphrase.
    wifi = boot.read("satoyama/secrets/satoyama-wifi.nmconnection").decode()  # type: ignore[union-attr]
    assert f"psk={wpa_psk('kataoka-field', PASSPHRASE)}" in wifi
    assert "apn=soracom.io" in boot.read("satoyama/secrets/satoyama-cellular.nmconnection").decode()  # type: ignore[union-attr]
    boot.close()
    assert PASSPHRASE.encode() not in image.read_bytes()

    # The updater's settings pin the fleet's verify key; the hook's settings are shell.
    updater = tomllib.loads(BootImage(image).read("satoyama/etc/updater.toml").decode())  # type: ignore[union-attr]
    assert len(updater["verify_keys"]) == 1 and updater["verify_keys"][0].startswith(
        "/etc/satoyama/ota-keys/"
    )


def test_generated_scripts_are_valid_shell(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    provision(_request(fleet_file, ssh_key=None), image=image, system=NOT_HERE)
    boot = BootImage(image)
    for name, shell in (
        ("satoyama/firstboot.sh", "sh"),
        ("firstrun.sh", "bash"),
        ("satoyama/firstboot.env", "sh"),
    ):
        script = tmp_path / Path(name).name
        script.write_bytes(boot.read(name))  # type: ignore[arg-type]
        subprocess.run([shell, "-n", str(script)], check=True)
    env = subprocess.run(
        [
            "sh",
            "-c",
            f'. "{tmp_path / "firstboot.env"}"; echo "$DEVICE_ID|$MECHANISM|$SERVICE_USER"',
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert env.stdout.strip() == f"{DEVICE}|firstrun|satoyama"


def test_trixie_image_gets_cloud_init_seed(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "raspios-trixie.img"
    make_fat_image(image, files=TRIXIE_BOOT)
    plan = provision(
        _request(fleet_file, wifi_ssid="kataoka-field", wifi_psk=PASSPHRASE),
        image=image,
        system=NOT_HERE,
    )
    assert plan.mechanism == "cloud-init"
    boot = BootImage(image)
    user_data = boot.read("user-data").decode()  # type: ignore[union-attr]
    assert user_data.startswith("#cloud-config\n")
    assert "/boot/firmware/satoyama/firstboot.sh" in user_data
    assert "hostname: shiojiri-kataoka-01" in user_data
    assert boot.read("meta-data").decode().startswith("instance-id: satoyama-")  # type: ignore[union-attr]
    net = boot.read("network-config").decode()  # type: ignore[union-attr]
    assert '"kataoka-field":' in net and wpa_psk("kataoka-field", PASSPHRASE) in net
    assert "systemd.run" not in boot.read("cmdline.txt").decode()  # type: ignore[union-attr]
    assert not boot.exists("firstrun.sh")
    assert not boot.exists("satoyama/secrets/satoyama-wifi.nmconnection")  # netplan has it
    boot.close()
    assert PASSPHRASE.encode() not in image.read_bytes()


def test_mounted_card_folder_and_reprovisioning(tmp_path: Path, fleet_file: Path) -> None:
    card = tmp_path / "bootfs"
    card.mkdir()
    for name, data in BOOKWORM_BOOT.items():
        (card / name).write_bytes(data)
    (card / "satoyama").mkdir()
    (card / "satoyama" / "stale-from-last-time.tar").write_bytes(b"old")
    provision(_request(fleet_file), boot_dir=card, system=NOT_HERE)
    provision(_request(fleet_file), boot_dir=card, system=NOT_HERE)  # again: same result
    assert not (card / "satoyama" / "stale-from-last-time.tar").exists()
    assert (card / "cmdline.txt").read_text().count("systemd.run=") == 1
    parse((card / "satoyama/secrets/device.toml").read_text(), "card")
    assert "shiojiri-kataoka-01" in (card / "satoyama/SUMMARY.txt").read_text()


def test_cli_provisions_an_image_and_prints_the_installer_summary(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    sites = tmp_path / "sites.toml"
    sites.write_text(
        "[shiojiri-kataoka]\nlatitude = 36.1\nlongitude = 137.9\n\n"
        "[shiojiri-kataoka.places.north-fence]\nlatitude = 36.10395\nlongitude = 137.96563\n"
        'description = "北端の柵"\n'
    )
    psk = tmp_path / "psk"
    psk.write_text(PASSPHRASE)
    psk.chmod(0o600)
    proc = _provision_cli(
        fleet_file,
        *("--site", "shiojiri-kataoka", "--sites", str(sites), "--place", "north-fence"),
        *("--profile", "paddy-wildlife", "--image", str(image)),
        *("--wifi-ssid", "kataoka-field", "--wifi-psk-file", str(psk)),
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for expected in (
        DEVICE,
        "36.103950, 137.965630",
        "北端の柵",
        "paddy-wildlife",
        "GPIO17 (header pin 11)",
        "GPIO27 (header pin 13)",
        'Wi-Fi "kataoka-field"',
        "edge check",
        "firstrun.sh",
    ):
        assert expected in out, expected
    assert PASSPHRASE not in out
    assert BootImage(image).read("satoyama/SUMMARY.txt").decode() == out  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "profile, parts",
    [
        ("paddy-wildlife", {"pir_north", "pir_south", "siren", "strobe", "chase"}),
        ("trap", {"trap_main"}),
        ("water-level", {"level", "river"}),
        ("nap-room", {"cot_1", "buzzer", "naps"}),
    ],
)
def test_every_profile_provisions_a_config_the_daemon_validates(
    tmp_path: Path, fleet_file: Path, profile: str, parts: set[str]
) -> None:
    """Each profile the tool lists is written to a card and accepted by the daemon's validator."""
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    proc = _provision_cli(
        fleet_file,
        *("--site", "s", "--lat", "36.1", "--lon", "137.9"),
        *("--profile", profile, "--image", str(image)),
    )
    assert proc.returncode == 0, proc.stderr
    text = BootImage(image).read("satoyama/secrets/device.toml").decode()  # type: ignore[union-attr]
    config = parse(text, "card")
    assert config.device.id == DEVICE
    assert set(config.sensors) | set(config.actuators) | set(config.rules) == parts
    # ... and by the daemon's own command, as the installer runs it on the device.
    written = tmp_path / "device.toml"
    written.write_text(text)
    check = subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(written)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "warning" not in check.stdout, check.stdout
    env = BootImage(image).read("satoyama/firstboot.env").decode()  # type: ignore[union-attr]
    interfaces = {"water-level": "i2c", "nap-room": "serial"}.get(profile, "")
    assert f"INTERFACES={shlex.quote(interfaces)}\n" in env, env  # first boot switches them on


def test_the_profile_list_shows_every_profile_as_usable() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "profiles"], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("paddy-wildlife", "trap", "water-level", "nap-room"):
        assert name in proc.stdout
    assert "pending" not in proc.stdout.lower() and "issue" not in proc.stdout.lower()
    assert "午睡見守り" in proc.stdout and "serial" in proc.stdout


def test_a_position_outside_japan_is_a_warning_naming_the_key_and_the_likely_value(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    proc = _provision_cli(
        fleet_file,
        *("--site", "s", "--lat", "36.10395", "--lon", "37.96563", "--image", str(image)),
    )
    assert proc.returncode == 0, proc.stderr  # written: a rig abroad is legal
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1, proc.stderr
    assert warnings[0].startswith("warning: device.longitude: 37.96563 is outside Japan")
    assert "did you mean 137.96563?" in warnings[0]
    summary = BootImage(image).read("satoyama/SUMMARY.txt").decode()  # type: ignore[union-attr]
    assert "warning: device.longitude: 37.96563" in summary
    # In Japan: no warning.
    plan = provision(_request(fleet_file), image=image, system=NOT_HERE)
    assert plan.warnings == [] and "warning" not in plan.summary


def test_the_summary_tells_the_installer_to_run_edge_check(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    plan = provision(_request(fleet_file), image=image, system=NOT_HERE)
    step2 = plan.summary.split("  2. ", 1)[1].split("  3. ", 1)[0]
    assert "edge check --config /etc/satoyama/device.toml" in step2
    assert "PASS" in step2 and "FAIL" in step2
    assert "issue" not in plan.summary and "until then" not in plan.summary


def test_invalid_config_is_refused_naming_the_key_before_anything_is_written(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    before = _sha(image)
    text = (REPO / "examples" / "paddy-edge.toml").read_text().replace("pin = 22", "pin = 17")
    bad = tmp_path / "device.toml"
    bad.write_text(text)
    with pytest.raises(ProvisionError, match=r"actuators\.strobe\.pin: GPIO17 is already used"):
        provision(_request(fleet_file, profile=None, config_file=bad), image=image, system=NOT_HERE)
    assert _sha(image) == before
    with pytest.raises(ProvisionError, match="latitude"):
        provision(_request(fleet_file, latitude=123.0), image=image, system=NOT_HERE)
    assert _sha(image) == before


def test_a_bundle_not_signed_by_the_fleet_key_never_reaches_a_card(
    tmp_path: Path, bundle_v1: Path, other_key: Keys, fleet_ca: Path
) -> None:
    fleet_file = claim_fleet(tmp_path, bundle_v1, [other_key.public], fleet_ca)
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    before = _sha(image)
    with pytest.raises(ProvisionError, match="signature rejected"):
        provision(_request(fleet_file), image=image, system=NOT_HERE)
    assert _sha(image) == before


def test_group_readable_claim_ca_key_is_refused(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    (tmp_path / "claim-ca" / "claim-ca.key").chmod(0o640)
    with pytest.raises(InsecureKeyError, match="chmod 600"):
        provision(_request(fleet_file), image=image, system=NOT_HERE)


def test_a_fleet_file_naming_the_fleet_ca_key_is_refused(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path
) -> None:
    """The key that mints device identities stays with the enroller, off installers' machines."""
    old = write_fleet(tmp_path, bundle=bundle_v1, verify_keys=[ota_key.public], ca_dir=fleet_ca)
    with pytest.raises(ProvisionError, match=r"ca\.key: the provisioning machine no longer"):
        load_fleet(old)


def test_a_fleet_file_error_names_the_key(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path
) -> None:
    """The same rewriting as the device's configuration: the key first, then what was expected."""
    good = write_fleet(tmp_path, bundle=bundle_v1, verify_keys=[ota_key.public], ca_dir=fleet_ca)
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("port = 8883", 'port = "8883"'))
    with pytest.raises(InputFileError, match=r"bad\.toml: broker\.port: expected `int`, got `str`"):
        load_fleet(bad)
    bad.write_text(good.read_text().replace('[fleet]\nname = "shiojiri"\n', "[fleet]\n"))
    with pytest.raises(InputFileError, match=r"bad\.toml: fleet\.name: required key is missing$"):
        load_fleet(bad)


def test_another_tools_customisation_is_not_overwritten_silently(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    imager = {**BOOKWORM_BOOT, "firstrun.sh": b"#!/bin/bash\n# Raspberry Pi Imager\n"}
    imager["cmdline.txt"] = (
        BOOKWORM_BOOT["cmdline.txt"].strip() + b" systemd.run=/boot/firstrun.sh\n"
    )
    make_fat_image(image, files=imager)
    with pytest.raises(ProvisionError, match="another first-boot customisation"):
        provision(_request(fleet_file), image=image, system=NOT_HERE)
    provision(_request(fleet_file, replace_customisation=True), image=image, system=NOT_HERE)
    cmdline = BootImage(image).read("cmdline.txt").decode()  # type: ignore[union-attr]
    assert "/boot/firstrun.sh" not in cmdline and CMDLINE_HOOK in cmdline


def test_refuses_the_installers_own_system(tmp_path: Path, fleet_file: Path) -> None:
    # A folder on the same filesystem as the "system" paths is refused ...
    card = tmp_path / "bootfs"
    card.mkdir()
    for name, data in BOOKWORM_BOOT.items():
        (card / name).write_bytes(data)
    with pytest.raises(UnsafeTargetError, match="own system disk"):
        provision(_request(fleet_file), boot_dir=card, system=SystemDisks.of_paths([tmp_path]))
    assert not (card / "satoyama").exists()
    # ... and so is this machine's own root, through the command line, with its real system paths.
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--lat", "36", "--lon", "137", "--boot-dir", "/")
    )
    assert proc.returncode == 2 and "own system disk" in proc.stderr
    # The block device under / (where there is one) is refused as an image target too.
    root = next(m for m in read_mounts() if m.mount_point == "/")
    if root.source.startswith("/dev/") and Path(root.source).exists():
        with pytest.raises(UnsafeTargetError):
            SystemDisks.of_running_system().check_image(Path(root.source))
    # Something that is neither an image nor a block device is refused.
    with pytest.raises(UnsafeTargetError, match="neither an image file nor a block device"):
        SystemDisks.of_running_system().check_image(Path("/dev/null"))


def test_not_a_raspberry_pi_boot_partition(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "blank.img"
    make_fat_image(image, files={"readme.txt": b"hello"})
    with pytest.raises(ProvisionError, match="not a Raspberry Pi OS boot partition"):
        provision(_request(fleet_file), image=image, system=NOT_HERE)
    garbage = tmp_path / "garbage.img"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ProvisionError, match="no partition table"):
        find_fat_offset(garbage)


def test_sites_file_lookup(tmp_path: Path) -> None:
    sites = tmp_path / "sites.toml"
    sites.write_text(
        '[a]\nlatitude = 1.5\nlongitude = 2.5\ndescription = "x"\n'
        "[a.places.p]\nlatitude = 3\nlongitude = 4\n"
    )
    assert lookup_place(sites, "a", None) == (1.5, 2.5, "x")
    assert lookup_place(sites, "a", "p") == (3.0, 4.0, "")
    with pytest.raises(ProvisionError, match="no place 'q'"):
        lookup_place(sites, "a", "q")


# -- malformed input files: one line naming the file and key, exit status 2 -----------------------


def _one_line_refusal(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for e in expected:
        assert e in lines[0], (e, lines[0])


def test_a_fleet_file_that_is_not_utf8_is_one_line_exit_2(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    fleet_file.write_bytes(fleet_file.read_bytes().replace(b'"shiojiri"', b'"shiojiri\xff"'))
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--lat", "36", "--lon", "137", "--image", str(image))
    )
    _one_line_refusal(proc, str(fleet_file), "fleet file is not UTF-8")


def test_a_sites_file_that_is_not_utf8_is_one_line_exit_2(tmp_path: Path, fleet_file: Path) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    sites = tmp_path / "sites.toml"
    sites.write_bytes(b'[s]\nlatitude = 36.1\nlongitude = 137.9\ndescription = "\x8e\xa9"\n')
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--sites", str(sites), "--image", str(image))
    )
    _one_line_refusal(proc, str(sites), "sites file is not UTF-8")


@pytest.mark.parametrize(
    "key, old",
    [
        ("ca.cert", "/ca.crt"),
        ("claim.cert", "/claim-ca.crt"),
        ("claim.key", "/claim-ca.key"),
        ("ota.bundle", ".tar"),
        ("ota.verify_keys", ".pub"),
    ],
)
def test_a_nul_in_a_path_of_the_fleet_file_is_one_line_exit_2(
    tmp_path: Path, fleet_file: Path, key: str, old: str
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    text = fleet_file.read_text()
    assert text.count(f'{old}"') == 1
    fleet_file.write_text(text.replace(f'{old}"', f'{old}\\u0000"'))
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--lat", "36", "--lon", "137", "--image", str(image))
    )
    _one_line_refusal(proc, str(fleet_file), f"{key}: a path cannot contain a NUL character")


def test_a_nul_in_the_cellular_password_path_is_one_line_exit_2(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    with fleet_file.open("a") as f:
        f.write('\n[network]\ncellular_apn = "soracom.io"\ncellular_password_file = "pw\\u0000"\n')
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--lat", "36", "--lon", "137", "--image", str(image))
    )
    _one_line_refusal(proc, "network.cellular_password_file: a path cannot contain a NUL")


def test_a_config_or_passphrase_file_that_is_not_utf8_is_one_line_exit_2(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    config = tmp_path / "device.toml"
    config.write_bytes(b'[device]\nid = "\xff"\n')
    proc = _provision_cli(
        fleet_file,
        *("--site", "s", "--lat", "36", "--lon", "137", "--image", str(image)),
        *("--config", str(config)),
    )
    _one_line_refusal(proc, str(config), "device configuration is not UTF-8")
    psk = tmp_path / "psk"
    psk.write_bytes(b"\xff\xfepassphrase")
    psk.chmod(0o600)
    proc = _provision_cli(
        fleet_file,
        *("--site", "s", "--lat", "36", "--lon", "137", "--image", str(image)),
        *("--wifi-ssid", "x", "--wifi-psk-file", str(psk)),
    )
    _one_line_refusal(proc, str(psk), "Wi-Fi passphrase is not UTF-8")


# -- progress: writing ~40 MB to a card takes a while --------------------------------------------


def _run_on_a_terminal(argv: list[str]) -> tuple[int, str, str]:
    """Run ``argv``, its standard error on a pseudo-terminal: (exit status, stdout, terminal)."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, cwd=REPO
    )
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read().decode() if proc.stdout else ""
    return proc.wait(timeout=60), out, seen.decode()


def test_provisioning_shows_its_phases_one_line_each_in_a_log(
    tmp_path: Path, fleet_file: Path, bundle_v1: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    proc = _provision_cli(
        fleet_file, *("--site", "s", "--lat", "36.1", "--lon", "137.9", "--image", str(image))
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    writing = [ln for ln in lines if ln.startswith("writing ")]
    assert len(writing) == 1, proc.stderr
    assert re.fullmatch(r"writing \d+ files to the card \(\d+\.\d MB\)", writing[0]), writing
    assert lines.count("flushing the card (do not pull it out yet)") == 1, proc.stderr
    assert "\r" not in proc.stderr  # a log is never redrawn
    assert BootImage(image).read("satoyama/SUMMARY.txt").decode() == proc.stdout  # type: ignore[union-attr]


def test_provisioning_on_a_terminal_shows_bytes_and_percent_as_it_writes(
    tmp_path: Path, fleet_file: Path
) -> None:
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    code, out, terminal = _run_on_a_terminal(
        [sys.executable, "-m", "deploy.cli", "provision", "--fleet", str(fleet_file),
         "--device", DEVICE, "--site", "s", "--lat", "36.1", "--lon", "137.9",
         "--image", str(image)]
    )  # fmt: skip
    assert code == 0, terminal
    assert "\rwriting " in terminal and " MB " in terminal and " %" in terminal, terminal
    assert " files to the card: done (" in terminal, terminal  # the line stays, with its time
    assert "flushing the card (do not pull it out yet): done (" in terminal, terminal
    assert DEVICE in out
