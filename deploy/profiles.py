"""Wiring profiles: which sensors and actuators are wired where, per kind of site.

A profile is a TOML template in ``deploy/profiles/``: a ``[profile]`` table
(name, titles, Raspberry Pi interfaces to enable) and, below the "wiring"
marker line, the ``[sensors]``, ``[actuators]`` and ``[rules]`` tables copied
verbatim (comments included) into the device configuration.  The provisioning
tool writes ``[device]``, ``[uplink]``, ``[outbox]`` and ``[gpio]`` itself,
then validates the whole text with the daemon's own validator: a profile the
validator refuses is never written to a card.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from deploy.errors import ProvisionError
from edge.config import Config, ConfigError, parse

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
WIRING_MARKER = "# ---- wiring:"

#: BCM GPIO number -> physical pin on the 40-pin header (what an installer counts).
HEADER_PIN = {
    2: 3,
    3: 5,
    4: 7,
    17: 11,
    27: 13,
    22: 15,
    10: 19,
    9: 21,
    11: 23,
    0: 27,
    5: 29,
    6: 31,
    13: 33,
    19: 35,
    26: 37,
    14: 8,
    15: 10,
    18: 12,
    23: 16,
    24: 18,
    25: 22,
    8: 24,
    7: 26,
    1: 28,
    12: 32,
    16: 36,
    20: 38,
    21: 40,
}


@dataclass(frozen=True)
class Profile:
    name: str
    title_ja: str
    title_en: str
    interfaces: tuple[str, ...]
    wiring: str
    path: Path


def available() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.toml"))


def load(name: str) -> Profile:
    path = PROFILES_DIR / f"{name}.toml"
    if not path.is_file():
        raise ProvisionError(f"unknown profile {name!r}; known: {', '.join(available())}")
    text = path.read_text(encoding="utf-8")
    head, sep, wiring = text.partition(WIRING_MARKER)
    if not sep:
        raise ProvisionError(f"{path}: no '{WIRING_MARKER}' line")
    wiring = wiring.split("\n", 1)[1] if "\n" in wiring else ""
    try:
        meta = tomllib.loads(head)["profile"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise ProvisionError(f"{path}: bad [profile] table: {exc}") from None
    unknown = sorted(set(meta) - {"name", "title_ja", "title_en", "interfaces"})
    if unknown:
        raise ProvisionError(f"{path}: profile.{unknown[0]}: unknown key")
    return Profile(
        name=str(meta.get("name", name)),
        title_ja=str(meta.get("title_ja", "")),
        title_en=str(meta.get("title_en", "")),
        interfaces=tuple(str(i) for i in meta.get("interfaces", [])),
        wiring=wiring.strip() + "\n",
        path=path,
    )


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON string syntax is a subset TOML accepts for these characters)."""
    out = ['"']
    for ch in value:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@dataclass(frozen=True)
class DeviceFacts:
    """What the provisioning command knows about the device, for the config's head."""

    device_id: str
    site: str
    latitude: float
    longitude: float
    description: str
    broker_host: str
    broker_port: int
    topic_prefix: str | None = None
    mqtt_username: str | None = None
    mqtt_password: str | None = None
    tls: bool = True
    """Connect with the device's own certificate (``[uplink.tls]``, files in /etc/satoyama)."""

    def __repr__(self) -> str:  # the password must never reach a log or a traceback
        return f"DeviceFacts(device_id={self.device_id!r}, site={self.site!r})"


def render_head(facts: DeviceFacts, source: str) -> str:
    lines = [
        "# Satoyama Edge device configuration, written by satoyama-deploy provision",
        f"# ({source}).  Reference: docs/configuration.md",
        "",
        "[device]",
        f"id = {_toml_str(facts.device_id)}",
        f"site = {_toml_str(facts.site)}",
        f"latitude = {facts.latitude!r}",
        f"longitude = {facts.longitude!r}",
        f"description = {_toml_str(facts.description)}",
        "",
        "[uplink]",
        f"host = {_toml_str(facts.broker_host)}",
        f"port = {facts.broker_port}",
    ]
    if facts.topic_prefix:
        lines.append(f"topic_prefix = {_toml_str(facts.topic_prefix)}")
    if facts.mqtt_username is not None:
        lines.append(f"username = {_toml_str(facts.mqtt_username)}")
    if facts.mqtt_password is not None:
        lines.append(f"password = {_toml_str(facts.mqtt_password)}")
    if facts.tls:
        lines += [
            "",
            "[uplink.tls]  # moved off the card into /etc/satoyama (0600) on first boot",
            'ca_file = "/etc/satoyama/ca.crt"',
            'cert_file = "/etc/satoyama/device.crt"',
            'key_file = "/etc/satoyama/device.key"',
        ]
    lines += [
        "",
        "[outbox]",
        'path = "/var/lib/satoyama/outbox.sqlite3"',
        "",
        "[gpio]",
        'pin_factory = "auto"',
        "",
    ]
    return "\n".join(lines)


def render_config(profile: Profile, facts: DeviceFacts) -> tuple[str, Config]:
    """The device configuration text for a profile, validated by the daemon's validator.

    Raises :class:`ProvisionError` naming the key when the validator refuses it
    (a profile out of step with the schema is caught here, before any card).
    """
    text = render_head(facts, f"profile {profile.name}") + "\n" + profile.wiring
    try:
        config = parse(text, f"profile {profile.name} for device {facts.device_id}")
    except ConfigError as exc:
        raise ProvisionError(f"generated configuration is invalid: {exc}") from None
    return text, config


def _kind(part: object) -> str:
    tag = getattr(getattr(type(part), "__struct_config__", None), "tag", None)
    return str(tag) if tag else type(part).__name__


def _where(part: object) -> str:
    pin = getattr(part, "pin", None)
    if isinstance(pin, int):
        return f"GPIO{pin} (header pin {HEADER_PIN.get(pin, '?')})"
    port = getattr(part, "port", None)
    if port:
        return f"UART {port}"
    bus = getattr(part, "bus", None)
    if bus is not None:
        address, channel = getattr(part, "address", 0), getattr(part, "channel", 0)
        return f"I2C bus {bus}, address 0x{address:02x}, channel {channel}"
    return "-"


def wiring_lines(config: Config) -> list[str]:
    """One line per wired part and per rule, for the installer's summary."""
    out: list[str] = []
    for section, parts in (("sensor", config.sensors), ("actuator", config.actuators)):
        for name, part in parts.items():
            out.append(f"{section:<8} {name:<16} {_kind(part):<14} {_where(part)}")
    for name, rule in config.rules.items():  # getattr: every rule type has its own fields
        inputs = list(getattr(rule, "detectors", [])) or [str(getattr(rule, "sensor", "?"))]
        stages = [
            str(getattr(st, "label", "") or getattr(st, "name", ""))
            for st in getattr(rule, "stages", [])
        ]
        acts = ", ".join(getattr(rule, "actuators", [])) or (
            "stages " + ", ".join(stages) if stages else "(report only)"
        )
        out.append(f"rule     {name:<16} {_kind(rule):<14} {', '.join(inputs)} -> {acts}")
    return out
