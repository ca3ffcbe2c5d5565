"""Provisioning: one command writes everything a device's first boot needs onto its SD card.

What goes onto the FAT boot partition (``satoyama/`` unless said otherwise):

- ``secrets/``: ``device.toml`` (may hold the MQTT password), the one-time
  claim (``claim.key``, ``claim.crt``: see :mod:`deploy.claim`), ``ca.crt``
  (the fleet CA, public), NetworkManager keyfiles for Wi-Fi (Bookworm) and
  cellular - moved into ``/etc`` with mode 0600 on first boot, then
  overwritten on the card and deleted (FAT has no permissions).  The device's
  private key is never on the card: the device makes it on first boot and
  exchanges the claim for its certificate (:mod:`edge.link.enrol`);
- ``etc/``: ``updater.toml`` and the OTA verify keys (public);
- the signed OTA bundle, installed offline by the first-boot hook;
- ``firstboot.sh`` + ``firstboot.env``: the hook itself;
- ``SUMMARY.txt``: the installer summary (no secrets);
- and the hook's trigger: ``user-data``/``meta-data``/``network-config`` for
  cloud-init (Trixie images) or ``firstrun.sh`` + ``systemd.run=`` on
  ``cmdline.txt`` (Bookworm images).

Everything is prepared and checked in memory first - the configuration by the
daemon's own validator, the bundle's signature by the fleet's verify keys, the
target against the installer's own system disk - and only then written, the
trigger last, so a card pulled half-way never boots into a half-written hook.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import tomllib
import uuid
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from deploy import profiles
from deploy.bundle import verify
from deploy.disks import SystemDisks
from deploy.errors import DeployError, ProvisionError, VerifyError
from deploy.fatboot import BootFolder, BootImage, BootPartition
from deploy.keys import check_private_file, encode_public, load_verify_keys
from deploy.pki import CLAIM_DAYS, Claim, issue_claim, load_ca
from deploy.progress import Progress
from edge.config import Config, ConfigError, explain_validation, location_warnings, parse

FIRSTRUN_PATH = "/boot/firmware/firstrun.sh"
CMDLINE_HOOK = (
    f"systemd.run={FIRSTRUN_PATH} systemd.run_success_action=reboot "
    "systemd.unit=kernel-command-line.target"
)
CLOUD_INIT_FILES = ("user-data", "meta-data", "network-config")
OURS = "# satoyama:"
SERVICE_USER = "satoyama"

Mechanism = Literal["cloud-init", "firstrun"]


# -- inputs ----------------------------------------------------------------------------------


class _Broker(msgspec.Struct, forbid_unknown_fields=True):
    host: str
    port: int = 8883
    topic_prefix: str | None = None
    tls: bool = True


class _Ca(msgspec.Struct, forbid_unknown_fields=True):
    cert: str
    key: str | None = None  # refused: the fleet CA key belongs on the enroller, not here


class _Claim(msgspec.Struct, forbid_unknown_fields=True):
    cert: str
    key: str
    port: int = 8884
    days: float = CLAIM_DAYS


class _Ota(msgspec.Struct, forbid_unknown_fields=True):
    verify_keys: list[str]
    bundle: str
    https_ca_file: str = ""


class _Network(msgspec.Struct, forbid_unknown_fields=True):
    wifi_country: str = "JP"
    cellular_apn: str | None = None
    cellular_username: str | None = None
    cellular_password_file: str | None = None


class _FleetMeta(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    timezone: str = "Asia/Tokyo"


class FleetFile(msgspec.Struct, forbid_unknown_fields=True):
    """``fleet.toml``: what every device of a fleet shares (paths relative to the file)."""

    fleet: _FleetMeta
    broker: _Broker
    ca: _Ca
    ota: _Ota
    claim: _Claim | None = None
    network: _Network = msgspec.field(default_factory=_Network)


@dataclass(frozen=True)
class Fleet:
    name: str
    timezone: str
    broker_host: str
    broker_port: int
    topic_prefix: str | None
    broker_tls: bool
    ca_cert: Path
    claim_ca_cert: Path
    claim_ca_key: Path
    claim_port: int
    claim_days: float
    verify_keys: list[Path]
    bundle: Path
    https_ca_file: str
    wifi_country: str
    cellular_apn: str | None
    cellular_username: str | None
    cellular_password_file: Path | None


class InputFileError(ProvisionError):
    """An input file (fleet, sites, configuration, secret) is unreadable or malformed:
    the installer fixes the file (exit status 2, like any refusal)."""


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file, or one line naming the file and what is wrong with it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputFileError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path}: {what} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    except ValueError as exc:  # e.g. an embedded NUL in the path
        raise InputFileError(f"{path!r}: cannot read {what}: {exc}") from None


def _file_path(base: Path, value: str, key: str, where: Path) -> Path:
    if "\0" in value:
        raise InputFileError(f"{where}: {key}: a path cannot contain a NUL character")
    return (base / value).resolve()


def load_fleet(path: Path) -> Fleet:
    text = _read_text(path, "fleet file")
    try:
        f = msgspec.convert(tomllib.loads(text), FleetFile)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{path}: not valid TOML: {exc}") from None
    except msgspec.ValidationError as exc:
        raise InputFileError(f"{path}: {explain_validation(exc)}") from None
    if f.ca.key is not None:
        raise ProvisionError(
            f"{path}: ca.key: the provisioning machine no longer holds the fleet CA key "
            "(devices make their own keys and get certificates from the enroller); remove "
            "ca.key here and give [claim] cert and key (the claim CA: docs/provisioning.md)"
        )
    if f.claim is None:
        raise ProvisionError(
            f"{path}: [claim]: required (cert and key of the claim CA, made by "
            "`satoyama-deploy ca init`: docs/provisioning.md)"
        )
    base = path.resolve().parent

    def rel(p: str, key: str = "path") -> Path:
        return _file_path(base, p, key, path)

    return Fleet(
        name=f.fleet.name,
        timezone=f.fleet.timezone,
        broker_host=f.broker.host,
        broker_port=f.broker.port,
        topic_prefix=f.broker.topic_prefix,
        broker_tls=f.broker.tls,
        ca_cert=rel(f.ca.cert, "ca.cert"),
        claim_ca_cert=rel(f.claim.cert, "claim.cert"),
        claim_ca_key=rel(f.claim.key, "claim.key"),
        claim_port=f.claim.port,
        claim_days=f.claim.days,
        verify_keys=[rel(k, "ota.verify_keys") for k in f.ota.verify_keys],
        bundle=rel(f.ota.bundle, "ota.bundle"),
        https_ca_file=f.ota.https_ca_file,
        wifi_country=f.network.wifi_country,
        cellular_apn=f.network.cellular_apn,
        cellular_username=f.network.cellular_username,
        cellular_password_file=rel(
            f.network.cellular_password_file, "network.cellular_password_file"
        )
        if f.network.cellular_password_file
        else None,
    )


def lookup_place(sites_file: Path, site: str, place: str | None) -> tuple[float, float, str]:
    """Latitude, longitude and description of a site (or one of its places) from a sites file."""
    text = _read_text(sites_file, "sites file")
    try:
        sites = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputFileError(f"{sites_file}: cannot read sites file: {exc}") from None
    entry = sites.get(site)
    if not isinstance(entry, dict):
        raise ProvisionError(f"{sites_file}: no site {site!r} (known: {', '.join(sites)})")
    if place is not None:
        places = entry.get("places", {})
        if not isinstance(places, dict):
            raise InputFileError(f"{sites_file}: {site}.places: expected a table of places")
        if place not in places:
            raise ProvisionError(
                f"{sites_file}: site {site!r} has no place {place!r} (known: {', '.join(places)})"
            )
        entry = places[place]
    try:
        return (
            float(entry["latitude"]),
            float(entry["longitude"]),
            str(entry.get("description", "")),
        )
    except (KeyError, TypeError, ValueError):
        raise ProvisionError(
            f"{sites_file}: {site}{'.' + place if place else ''}: needs latitude and longitude"
        ) from None


def read_secret_file(path: Path, what: str) -> str:
    """A secret from a file only its owner can read (never from the command line: ps shows it)."""
    check_private_file(path, what)
    return _read_text(path, what).strip()


@dataclass
class Request:
    """Everything one provisioning needs.  Secrets are kept out of repr()."""

    device_id: str
    site: str
    fleet: Fleet
    latitude: float
    longitude: float
    description: str = ""
    profile: str | None = "paddy-wildlife"
    config_file: Path | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    wifi_ssid: str | None = None
    wifi_psk: str | None = field(default=None, repr=False)
    wifi_country: str | None = None
    cellular_apn: str | None = None
    cellular_username: str | None = None
    cellular_password: str | None = field(default=None, repr=False)
    first_boot: Literal["auto", "cloud-init", "firstrun"] = "auto"
    ssh_key: Path | None = None
    admin_user: str = "satoyama-admin"
    replace_customisation: bool = False


# -- pieces ------------------------------------------------------------------------------------


def hostname_for(device_id: str) -> str:
    name = re.sub(r"[^a-z0-9-]+", "-", device_id.lower()).strip("-")[:63].strip("-")
    return name or "satoyama"


def wpa_psk(ssid: str, passphrase: str) -> str:
    """The 64-hex WPA PSK (as wpa_passphrase and Raspberry Pi Imager write), not the passphrase."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", passphrase):
        return passphrase.lower()
    if not 8 <= len(passphrase) <= 63:
        raise ProvisionError("Wi-Fi passphrase: WPA needs 8 to 63 characters")
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid.encode(), 4096, 32).hex()


def _keyfile_value(value: str, what: str) -> str:
    """A NetworkManager keyfile (GKeyFile) value: escape backslashes; no control characters."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ProvisionError(f"{what}: control characters are not allowed")
    value = value.replace("\\", "\\\\")
    if value.startswith(" "):
        value = "\\s" + value[1:]
    return value


def wifi_keyfile(ssid: str, psk_hex: str) -> bytes:
    lines = [
        "[connection]",
        "id=satoyama-wifi",
        f"uuid={uuid.uuid4()}",
        "type=wifi",
        "autoconnect=true",
        "autoconnect-priority=10",
        "",
        "[wifi]",
        "mode=infrastructure",
        f"ssid={_keyfile_value(ssid, 'Wi-Fi SSID')}",
        "",
        "[wifi-security]",
        "key-mgmt=wpa-psk",
        f"psk={psk_hex}",
        "",
        "[ipv4]",
        "method=auto",
        "",
        "[ipv6]",
        "method=auto",
        "",
    ]
    return "\n".join(lines).encode()


def cellular_keyfile(apn: str, username: str | None, password: str | None) -> bytes:
    lines = [
        "[connection]",
        "id=satoyama-cellular",
        f"uuid={uuid.uuid4()}",
        "type=gsm",
        "autoconnect=true",
        "autoconnect-priority=0",
        "",
        "[gsm]",
        f"apn={_keyfile_value(apn, 'cellular APN')}",
    ]
    if username:
        lines.append(f"username={_keyfile_value(username, 'cellular username')}")
    if password:
        lines += [f"password={_keyfile_value(password, 'cellular password')}", "password-flags=0"]
    lines += ["", "[ipv4]", "method=auto", "", "[ipv6]", "method=auto", ""]
    return "\n".join(lines).encode()


def network_config(ssid: str | None, psk_hex: str | None, country: str) -> bytes:
    """cloud-init network-config (netplan v2), as Raspberry Pi Imager writes it for Trixie."""
    lines = [
        f"{OURS} written by satoyama-deploy provision; emptied on first boot (Wi-Fi key)",
        "network:",
        "  version: 2",
        "  ethernets:",
        "    eth0:",
        "      dhcp4: true",
        "      optional: true",
    ]
    if ssid:
        lines += [
            "  wifis:",
            "    wlan0:",
            "      dhcp4: true",
            "      optional: true",
            f"      regulatory-domain: {json.dumps(country)}",
            "      access-points:",
            f"        {json.dumps(ssid, ensure_ascii=False)}:",
            f"          password: {json.dumps(psk_hex)}",
        ]
    return ("\n".join(lines) + "\n").encode()


def user_data(device_id: str, hostname: str, timezone: str) -> bytes:
    return (
        "#cloud-config\n"
        f"{OURS} written by satoyama-deploy provision for device {device_id}\n"
        f"hostname: {hostname}\n"
        "manage_etc_hosts: true\n"
        f"timezone: {json.dumps(timezone)}\n"
        "runcmd:\n"
        "  - [sh, /boot/firmware/satoyama/firstboot.sh, /boot/firmware]\n"
    ).encode()


def meta_data(device_id: str) -> bytes:
    # A new instance id makes cloud-init run its once-per-instance modules (runcmd) again,
    # also on a card that was booted before.
    return f"instance-id: satoyama-{hostname_for(device_id)}-{uuid.uuid4().hex[:12]}\n".encode()


FIRSTRUN_SH = f"""#!/bin/bash
{OURS} Bookworm first-boot entry, started by {CMDLINE_HOOK.split()[0]} on cmdline.txt.
set +e
BOOT=/boot/firmware
[ -f "$BOOT/cmdline.txt" ] || BOOT=/boot
/bin/sh "$BOOT/satoyama/firstboot.sh" "$BOOT"
# Remove the kernel command line hook whatever happened: a failed setup is retried by
# satoyama-firstboot.service on the next boots, while a hook left in place would loop.
sed -i 's| systemd\\.run=[^ ]*firstrun\\.sh||g; s| systemd\\.run_success_action=reboot||g; \
s| systemd\\.unit=kernel-command-line\\.target||g' "$BOOT/cmdline.txt"
rm -f "$BOOT/firstrun.sh"
sync
exit 0
"""


def strip_hook(cmdline: str) -> str:
    tokens = [
        t
        for t in cmdline.split()
        if not (
            (t.startswith("systemd.run=") and t.endswith("firstrun.sh"))
            or t == "systemd.run_success_action=reboot"
            or t == "systemd.unit=kernel-command-line.target"
        )
    ]
    return " ".join(tokens)


def env_file(values: dict[str, str]) -> bytes:
    return ("".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())).encode()


def updater_toml(verify_key_names: list[str], https_ca_file: str) -> bytes:
    keys = ", ".join(json.dumps(f"/etc/satoyama/ota-keys/{n}") for n in verify_key_names)
    return (
        "# satoyama-update settings (docs/ota.md), written by satoyama-deploy provision.\n"
        f"verify_keys = [{keys}]\n"
        'releases_dir = "/opt/satoyama"\n'
        'state_dir = "/var/lib/satoyama-update"\n'
        'spool = "/var/lib/satoyama-update/spool/events.jsonl"\n'
        'request = "/var/lib/satoyama/update-requests/request.json"\n'
        "keep_releases = 3\n"
        'restart_command = ["systemctl", "restart", "satoyama-edge.service"]\n'
        'health = "systemd"\n'
        'health_unit = "satoyama-edge.service"\n'
        "health_timeout_s = 180\n"
        "health_settle_s = 30\n"
        f"ca_file = {json.dumps(https_ca_file)}\n"
    ).encode()


# -- the plan ----------------------------------------------------------------------------------


@dataclass
class Plan:
    """Every file to write, prepared and checked; ``write`` only copies bytes."""

    files: dict[str, bytes]
    trigger: dict[str, bytes]
    mechanism: Mechanism
    summary: str
    config: Config
    warnings: list[str] = field(default_factory=list)
    """What the installer should look at, though nothing is refused (a position abroad)."""

    def __repr__(self) -> str:
        return f"Plan({self.mechanism}, {len(self.files) + len(self.trigger)} files)"


def detect_mechanism(boot: BootPartition) -> Mechanism:
    """Trixie images ship cloud-init seed files on the boot partition; Bookworm images do not."""
    return "cloud-init" if any(boot.exists(n) for n in CLOUD_INIT_FILES) else "firstrun"


def _check_customisation(boot: BootPartition, mechanism: Mechanism, replace: bool) -> None:
    """Refuse to silently overwrite another tool's first-boot customisation (e.g. Imager's)."""
    if replace:
        return
    problems = []
    fr = boot.read("firstrun.sh")
    if fr is not None and OURS.encode() not in fr:
        problems.append("firstrun.sh")
    tokens = (boot.read("cmdline.txt") or b"").decode("utf-8", "replace").split()
    ours = f"systemd.run={FIRSTRUN_PATH}" in tokens and fr is not None and OURS.encode() in fr
    if any(t.startswith("systemd.run=") for t in tokens) and not ours:
        problems.append("cmdline.txt (systemd.run=)")
    if mechanism == "cloud-init":
        ud = boot.read("user-data") or b""
        meaningful = [
            ln
            for ln in ud.decode("utf-8", "replace").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")
        ]
        if meaningful and OURS.encode() not in ud:
            problems.append("user-data")
    if problems:
        raise ProvisionError(
            "the card already has another first-boot customisation "
            f"({', '.join(problems)}), e.g. from "
            "Raspberry Pi Imager's OS customisation; write the image again without it, or pass "
            "--replace-customisation to overwrite it"
        )


def _device_config(req: Request) -> tuple[str, Config, profiles.Profile | None]:
    facts = profiles.DeviceFacts(
        device_id=req.device_id,
        site=req.site,
        latitude=req.latitude,
        longitude=req.longitude,
        description=req.description,
        broker_host=req.fleet.broker_host,
        broker_port=req.fleet.broker_port,
        topic_prefix=req.fleet.topic_prefix,
        mqtt_username=(req.mqtt_username or req.device_id)
        if req.mqtt_password
        else req.mqtt_username,
        mqtt_password=req.mqtt_password,
        tls=req.fleet.broker_tls,
    )
    if req.config_file is not None:
        text = _read_text(req.config_file, "device configuration")
        try:
            config = parse(text, str(req.config_file))
        except ConfigError as exc:
            raise ProvisionError(f"configuration is invalid: {exc}") from None
        if config.device.id != req.device_id:
            raise ProvisionError(
                f"{req.config_file}: device.id is {config.device.id!r}, not {req.device_id!r}"
            )
        return text, config, None
    if req.profile is None:
        raise ProvisionError("give a wiring profile (--profile) or a configuration file (--config)")
    prof = profiles.load(req.profile)
    text, config = profiles.render_config(prof, facts)
    return text, config, prof


def _read_fleet_ca(path: Path) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ProvisionError(f"{path}: cannot read the fleet CA: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ProvisionError(f"{path}: not a PEM certificate (fleet CA): {exc}") from None
    return cert.public_bytes(serialization.Encoding.PEM)


def plan(req: Request, boot: BootPartition) -> Plan:
    """Prepare and check everything; write nothing."""
    for name in ("config.txt", "cmdline.txt"):
        if not boot.exists(name):
            raise ProvisionError(
                f"{boot.describe()}: no {name}; this is not a Raspberry Pi OS boot partition"
            )
    mechanism: Mechanism = detect_mechanism(boot) if req.first_boot == "auto" else req.first_boot
    _check_customisation(boot, mechanism, req.replace_customisation)

    config_text, config, prof = _device_config(req)
    fleet = req.fleet
    # The device makes its own key on first boot; the card carries a one-time claim.
    claim = (
        issue_claim(
            load_ca(fleet.claim_ca_cert, fleet.claim_ca_key, "claim CA"),
            req.device_id,
            days=fleet.claim_days,
        )
        if fleet.broker_tls
        else None
    )
    fleet_ca_pem = _read_fleet_ca(fleet.ca_cert)
    trusted = load_verify_keys(fleet.verify_keys)
    try:
        bundle = verify(fleet.bundle, trusted)  # a bad bundle never reaches a card
    except VerifyError as exc:
        raise ProvisionError(f"the fleet's bundle is refused: {exc}") from None

    country = (req.wifi_country or fleet.wifi_country).upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise ProvisionError(f"Wi-Fi country {country!r}: two letters, e.g. JP")
    psk_hex = None
    if req.wifi_ssid:
        if not req.wifi_psk:
            raise ProvisionError("Wi-Fi: an SSID needs its passphrase (--wifi-psk-file)")
        if len(req.wifi_ssid.encode()) > 32:
            raise ProvisionError("Wi-Fi SSID: at most 32 bytes")
        psk_hex = wpa_psk(req.wifi_ssid, req.wifi_psk)
    apn = req.cellular_apn or fleet.cellular_apn
    cell_user = req.cellular_username or fleet.cellular_username
    cell_password = req.cellular_password
    if cell_password is None and fleet.cellular_password_file is not None and apn:
        cell_password = read_secret_file(fleet.cellular_password_file, "cellular password")

    hostname = hostname_for(req.device_id)
    files: dict[str, bytes] = {
        "satoyama/secrets/device.toml": config_text.encode(),
    }
    if claim is not None:
        files["satoyama/secrets/claim.key"] = claim.key_pem
        files["satoyama/secrets/claim.crt"] = claim.cert_pem
        files["satoyama/secrets/ca.crt"] = fleet_ca_pem
    if psk_hex and mechanism == "firstrun":
        files["satoyama/secrets/satoyama-wifi.nmconnection"] = wifi_keyfile(
            req.wifi_ssid or "", psk_hex
        )
    if apn:
        files["satoyama/secrets/satoyama-cellular.nmconnection"] = cellular_keyfile(
            apn, cell_user, cell_password
        )
    key_names = []
    for kid, key in trusted.items():
        key_names.append(f"{kid}.pub")
        files[f"satoyama/etc/ota-keys/{kid}.pub"] = f"{encode_public(key)}\n".encode()
    files["satoyama/etc/updater.toml"] = updater_toml(key_names, fleet.https_ca_file)
    files[f"satoyama/{fleet.bundle.name}"] = fleet.bundle.read_bytes()
    for script in ("firstboot.sh", "wipe.sh"):
        files[f"satoyama/{script}"] = (
            resources.files("deploy").joinpath(f"boot/{script}").read_bytes()
        )
    if req.ssh_key is not None:
        try:
            files["satoyama/admin_authorized_keys"] = req.ssh_key.read_bytes()
        except OSError as exc:
            raise ProvisionError(
                f"{req.ssh_key}: cannot read SSH key: {exc.strerror or exc}"
            ) from None
    files["satoyama/firstboot.env"] = env_file(
        {
            "DEVICE_ID": req.device_id,
            "HOSTNAME_WANTED": hostname,
            "SERVICE_USER": SERVICE_USER,
            "PYTHON": "/usr/bin/python3",
            "BUNDLE": fleet.bundle.name,
            "INTERFACES": " ".join(prof.interfaces) if prof else "",
            "WIFI_COUNTRY": country,
            "TIMEZONE": fleet.timezone,
            "ADMIN_USER": req.admin_user if req.ssh_key else "",
            "MECHANISM": mechanism,
            "CLAIM_PORT": str(fleet.claim_port) if claim is not None else "",
        }
    )

    trigger: dict[str, bytes] = {}
    cmdline = (boot.read("cmdline.txt") or b"").decode("utf-8", "replace").strip()
    base_cmdline = strip_hook(cmdline)
    if mechanism == "cloud-init":
        trigger["meta-data"] = meta_data(req.device_id)
        trigger["network-config"] = network_config(req.wifi_ssid, psk_hex, country)
        trigger["user-data"] = user_data(req.device_id, hostname, fleet.timezone)
        if base_cmdline != cmdline:
            trigger["cmdline.txt"] = (base_cmdline + "\n").encode()
        fr = boot.read("firstrun.sh")
        if fr is not None and OURS.encode() in fr:  # ours, from an earlier Bookworm provisioning
            trigger["firstrun.sh"] = b""
    else:
        trigger["firstrun.sh"] = FIRSTRUN_SH.encode()
        trigger["cmdline.txt"] = (base_cmdline + " " + CMDLINE_HOOK + "\n").encode()

    warnings = location_warnings(config.device.latitude, config.device.longitude)
    summary = render_summary(
        req,
        config,
        prof,
        claim,
        bundle.manifest.version,
        bundle.key_id,
        mechanism,
        boot.describe(),
        country,
        apn,
        warnings,
    )
    files["satoyama/SUMMARY.txt"] = summary.encode()
    return Plan(
        files=files,
        trigger=trigger,
        mechanism=mechanism,
        summary=summary,
        config=config,
        warnings=warnings,
    )


def write(plan_: Plan, boot: BootPartition, progress: Progress | None = None) -> None:
    """Write a checked plan: old ``satoyama/`` removed, then our files, the trigger last."""
    progress = progress or Progress.silent()
    total = sum(len(d) for d in plan_.files.values()) + sum(
        len(d) for d in plan_.trigger.values()
    )
    count = len(plan_.files) + len(plan_.trigger)
    progress.phase(f"writing {count} files to the card", total=total)
    boot.remove_tree("satoyama")
    for name, data in plan_.files.items():
        boot.write(name, data)
        progress.advance(len(data))
    for name, data in plan_.trigger.items():
        if data:
            boot.write(name, data)
        else:
            boot.remove(name)
        progress.advance(len(data))
    progress.phase("flushing the card (do not pull it out yet)")
    boot.close()
    progress.finish()


def provision(
    req: Request,
    *,
    image: Path | None = None,
    boot_dir: Path | None = None,
    system: SystemDisks | None = None,
    progress: Progress | None = None,
) -> Plan:
    """Check the target against the installer's own system, plan, then write.  Returns the plan.

    ``progress``: where to show the phases (the command line passes standard error)."""
    if (image is None) == (boot_dir is None):
        raise ProvisionError(
            "give either an image file or block device (--image) "
            "or a mounted boot folder (--boot-dir)"
        )
    system = SystemDisks.of_running_system() if system is None else system
    boot: BootPartition
    if image is not None:
        system.check_image(image)
        boot = BootImage(image)
    else:
        assert boot_dir is not None
        system.check_folder(boot_dir)
        boot = BootFolder(boot_dir)
    progress = progress or Progress.silent()
    try:
        p = plan(req, boot)  # a second or so: nothing to show
        write(p, boot, progress)
    except DeployError:
        progress.finish("stopped")
        boot.close()
        raise
    finally:
        progress.close()
    return p


# -- the installer's summary ---------------------------------------------------------------------


def render_summary(
    req: Request,
    config: Config,
    prof: profiles.Profile | None,
    claim: Claim | None,
    version: str,
    signer: str,
    mechanism: Mechanism,
    target: str,
    country: str,
    apn: str | None,
    warnings: list[str] = [],  # noqa: B006 - read only
) -> str:
    lat, lon = config.device.latitude, config.device.longitude
    net = []
    if req.wifi_ssid:
        net.append(f'Wi-Fi "{req.wifi_ssid}" ({country})')
    if apn:
        net.append(f"cellular APN {apn}")
    net.append("Ethernet (DHCP)")
    boot_how = (
        "cloud-init (Raspberry Pi OS Trixie)"
        if mechanism == "cloud-init"
        else "firstrun.sh on cmdline.txt (Raspberry Pi OS Bookworm)"
    )
    lines = [
        "Satoyama Edge - 設置情報 / installer summary",
        "=" * 60,
        f"デバイス / device        : {config.device.id}",
        f"現場 / site              : {config.device.site}",
        f"位置 / position          : {lat:.6f}, {lon:.6f}",
        f"  地理院地図 / map       : https://maps.gsi.go.jp/#17/{lat:.6f}/{lon:.6f}/",
    ]
    lines += [f"  注意 / warning: {w}" for w in warnings]
    if config.device.description:
        lines.append(f"設置場所 / where         : {config.device.description}")
    if prof is not None:
        lines.append(f"構成 / profile           : {prof.name} - {prof.title_ja}")
        lines.append(f"                           {prof.title_en}")
    else:
        lines.append(f"構成 / configuration     : {req.config_file}")
    lines.append("配線 / wiring (BCM GPIO, header pin):")
    lines += [f"  {ln}" for ln in profiles.wiring_lines(config)]
    lines += [
        f"通信 / network           : {', '.join(net)}",
        f"ブローカー / broker      : {config.uplink.host}:{config.uplink.port}",
        *(
            [
                "証明書 / certificate     : made on the device at first boot "
                f"(CN={config.device.id})",
                f"登録期限 / claim          : {claim.name}: first boot by "
                f"{claim.not_after:%Y-%m-%d %H:%M} UTC",
            ]
            if claim is not None
            else ["証明書 / certificate     : none (the fleet's broker has no TLS)"]
        ),
        f"ソフト / software        : satoyama-edge {version} (signed by OTA key {signer})",
        f"初回起動 / first boot    : {boot_how}",
        f"書き込み先 / written to  : {target}",
        "",
        "次の手順 / next steps:",
        "  1. カードを挿して電源を入れる。初回起動は 5-10 分 (再起動 1 回を含む)。",
        "     Insert the card and power on; the first boot takes 5-10 minutes (one reboot).",
        "  2. 配線を確認する: edge check --config /etc/satoyama/device.toml",
        "     (全部品を試し、PASS か、故障した部品を示す FAIL で終わる)",
        "     Check the wiring: it tries every part and ends with PASS, or FAIL naming each",
        "     failing part.",
        "  3. 失敗したらカードをPCに戻して satoyama-FAILED.txt と satoyama-firstboot.log を見る。",
        "     On failure, read satoyama-FAILED.txt and satoyama-firstboot.log on the card.",
    ]
    return "\n".join(lines) + "\n"
