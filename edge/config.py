"""Device configuration: one TOML file per device, validated once before anything runs.

The schema is declared here as msgspec Structs (types, ranges, defaults in one
place).  :func:`load` turns every problem into one :class:`ConfigError` whose
message names the key, e.g. ``sensors.pir_north.pin: expected int <= 27, got 40``.
The reference for installers is ``docs/configuration.md``; keep the two together.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

import msgspec
from msgspec import Meta

from drivers.pressure_probe import NAMUR_SHORT_MA, choose_pga
from edge.errors import EdgeError
from edge.event import DEFAULT_TOPIC_PREFIX
from edge.water.rule import Stage, WaterRuleSettings


class ConfigError(EdgeError, ValueError):
    """The configuration is invalid; the message names the key and what was expected."""


Identifier = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z",
        description="letters, digits, '_', '.', '-' (used in MQTT topics)",
    ),
]
# ``\Z``, never ``$``: ``$`` also matches before a trailing newline ("a\n" would pass).
Name = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,31}\Z")]
BcmPin = Annotated[int, Meta(ge=0, le=27, description="BCM GPIO number")]
Seconds = Annotated[float, Meta(ge=0)]

STANDARD_BAUDRATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
"""The rates a UART sensor may be configured at (anything else is a typo or a sign error)."""
Baudrate = Annotated[int, Meta(ge=1200, le=921600)]
"""Within the standard range; :func:`_check_sensor` then requires one of the standard values."""

SERIAL_URL_SCHEMES = ("spy", "socket", "rfc2217", "hwgrep", "alt")
"""pyserial URL schemes a serial port may use (``loop://`` does not work with asyncio)."""
SerialPort = Annotated[str, Meta(min_length=1, max_length=256)]

MIN_LEVEL_CM = WaterRuleSettings.min_plausible_cm
MAX_LEVEL_CM = WaterRuleSettings.max_plausible_cm
Level = Annotated[float, Meta(ge=MIN_LEVEL_CM, le=MAX_LEVEL_CM)]
"""A water level the rule can see: readings outside this range are implausible, never levels."""

ADC_SUPPLY_V = 3.3
"""The ADS1115's supply on our boards: no input can be measured above it."""

FREE_TEXT_KEYS = frozenset({"description", "label", "child", "password"})
"""String keys that may hold tabs and newlines; no other string may hold a control character."""

_struct = {"forbid_unknown_fields": True, "kw_only": True, "frozen": True}


class DeviceConfig(msgspec.Struct, **_struct):
    id: Identifier
    site: Identifier
    latitude: Annotated[float, Meta(ge=-90, le=90)]
    longitude: Annotated[float, Meta(ge=-180, le=180)]
    description: str = ""


JAPAN_LATITUDE = (20.0, 46.0)
JAPAN_LONGITUDE = (122.0, 154.0)
"""Japan's bounding box, roughly (Okinotorishima to Etorofu, Yonaguni to Minamitorishima)."""


def _plain(value: float) -> str:
    return repr(round(value, 6))


def location_warnings(latitude: float, longitude: float) -> list[str]:
    """Warnings for a position outside Japan, each naming the key and a likely intended value.

    Not an error: a test rig abroad is a legal device.  But 37.96 typed for
    137.96 is a valid longitude in the Middle East, and every map link in every
    e-mail would point there.
    """
    out = []
    for key, value, (low, high), guesses in (
        ("device.latitude", latitude, JAPAN_LATITUDE, (-latitude, latitude * 10, latitude / 10)),
        (
            "device.longitude",
            longitude,
            JAPAN_LONGITUDE,
            (longitude + 100, -longitude, longitude * 10, longitude / 10, longitude - 100),
        ),
    ):
        if low <= value <= high:
            continue
        likely = next((g for g in guesses if low <= g <= high), None)
        hint = f"; did you mean {_plain(likely)}?" if likely is not None else ""
        out.append(
            f"{key}: {_plain(value)} is outside Japan ({low:g} to {high:g}){hint} "
            "(a device abroad is allowed, but its map links point there)"
        )
    return out


class TlsConfig(msgspec.Struct, **_struct):
    """TLS to the broker with this device's own client certificate."""

    ca_file: Annotated[str, Meta(min_length=1)]
    """The fleet CA that signed the broker's certificate (pinned: nothing else is trusted)."""
    cert_file: Annotated[str, Meta(min_length=1)]
    key_file: Annotated[str, Meta(min_length=1)]
    """Must be readable by the daemon's user only (mode 0600 or stricter)."""


class UplinkConfig(msgspec.Struct, **_struct):
    host: Annotated[str, Meta(min_length=1)]
    port: Annotated[int, Meta(ge=1, le=65535)] = 1883
    username: str | None = None
    password: str | None = None
    client_id: Identifier | None = None
    topic_prefix: Annotated[str, Meta(pattern=r"^[^#+]+[^/#+]\Z")] = DEFAULT_TOPIC_PREFIX
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 1800
    """The longest MQTT keepalive asked for; shortened while connections die idle
    (edge/link/keepalive.py), down to ``keepalive_min_s``."""
    keepalive_min_s: Annotated[int, Meta(ge=5, le=3600)] = 240
    """The shortest keepalive the uplink steps down to (``keepalive_s`` if that is lower;
    equal to ``keepalive_s``: the keepalive is fixed)."""
    keepalive_probe_s: Annotated[float, Meta(ge=1, le=90 * 86400)] = 3 * 86400.0
    """Connected time a shortened keepalive must hold before a longer one is tried
    (at the next reconnect; the uplink never reconnects to try it)."""
    publish_window: Annotated[int, Meta(ge=1, le=1000)] = 64
    publish_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 30.0
    connect_timeout_s: Annotated[float, Meta(gt=0, le=600)] = 20.0
    """A CONNECT not answered in this time is abandoned (and retried with backoff)."""
    reconnect_min_s: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    reconnect_max_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0
    delivery: Literal["cloud_ack", "puback"] = "cloud_ack"
    """``cloud_ack``: a row leaves the outbox when the cloud says on ``PREFIX/DEVICE/ack``
    that it stored it; ``puback``: when the broker acknowledges it (older notifiers)."""
    ack_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0
    """A row the cloud has not acknowledged in this time is sent again
    (see edge/link/ack_tracker.py)."""
    ack_probe_max_s: Annotated[float, Meta(gt=0, le=86400)] = 900.0
    """While the cloud is silent, the longest wait between two probes."""
    unacked_max: Annotated[int, Meta(ge=1, le=100_000)] = 256
    """Rows published and awaiting the cloud's acknowledgement at once."""
    tls: TlsConfig | None = None


class OutboxConfig(msgspec.Struct, **_struct):
    path: str = "/var/lib/satoyama/outbox.sqlite3"
    max_events: Annotated[int, Meta(ge=100, le=10_000_000)] = 100_000
    memory_max_events: Annotated[int, Meta(ge=10, le=1_000_000)] = 2_000


class HealthConfig(msgspec.Struct, **_struct):
    heartbeat_s: Annotated[float, Meta(ge=10, le=86400)] = 10800.0
    storage_retry_s: Annotated[float, Meta(gt=0, le=3600)] = 10.0
    modem: Literal["auto", "none"] = "auto"
    """``auto``: report the cellular modem's state when ModemManager (mmcli) manages one."""
    anomaly_models: bool = True
    """Score water and mat-load series with the on-device anomaly model."""


class UpdatesConfig(msgspec.Struct, **_struct):
    """Where the daemon and the OTA updater meet (docs/ota.md)."""

    request_path: str = "/var/lib/satoyama/update-requests/request.json"
    """``cmd/update`` from the cloud is written here for the updater."""
    spool_path: str = "/var/lib/satoyama-update/spool/events.jsonl"
    """Events the updater asks the daemon to send."""
    spool_poll_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0


class TelemetryConfig(msgspec.Struct, **_struct):
    batch_s: Annotated[float, Meta(ge=1, le=86400)] = 10800.0
    """Longest time a reading waits on the device before its batch is queued."""
    max_readings: Annotated[int, Meta(ge=1, le=100_000)] = 1_000
    """A batch is queued early when it holds this many readings."""


class GpioConfig(msgspec.Struct, **_struct):
    pin_factory: Literal["auto", "lgpio", "rpigpio", "pigpio", "native", "mock"] = "auto"


class PirSensorConfig(msgspec.Struct, tag_field="type", tag="pir", **_struct):
    """Passive-infrared animal detector on a GPIO input (HC-SR501 kind)."""

    pin: BcmPin
    pull: Literal["down", "up", "none"] = "down"
    active_high: bool = True
    warmup_s: Annotated[float, Meta(ge=0, le=600)] = 60.0


class TrapSensorConfig(msgspec.Struct, tag_field="type", tag="trap", **_struct):
    """The switch on a box trap's door (reed or micro switch) on a GPIO input."""

    pin: BcmPin
    closed_level: Literal["high", "low"] = "low"
    """The level that means "door closed" (normally-open vs normally-closed wiring)."""
    pull: Literal["up", "down", "none"] = "up"
    debounce_s: Annotated[float, Meta(ge=0, le=10)] = 0.2
    reminder_s: Annotated[float, Meta(ge=60, le=7 * 86400)] = 3600.0
    armed_report_s: Annotated[float, Meta(ge=60, le=7 * 86400)] = 86400.0


I2cAddress = Annotated[int, Meta(ge=0x48, le=0x4B)]
"""The four addresses an ADS1115 can take (its ADDR pin)."""


class PressureProbeConfig(msgspec.Struct, tag_field="type", tag="pressure_probe", **_struct):
    """4-20 mA submersible pressure transducer read by an ADS1115 across a shunt."""

    bus: Annotated[int, Meta(ge=0, le=20)] = 1
    """I2C bus number (/dev/i2c-N)."""
    address: I2cAddress = 0x48
    channel: Annotated[int, Meta(ge=0, le=3)] = 0
    shunt_ohm: Annotated[float, Meta(gt=0, le=1000)] = 150.0
    range_cm: Annotated[float, Meta(gt=0, le=10000)] = 500.0
    """Depth that the transducer reports as 20 mA."""
    offset_cm: Annotated[float, Meta(ge=-MAX_LEVEL_CM, le=MAX_LEVEL_CM)] = 0.0
    """Added to the depth: the sensor's height above the level's datum."""


class UltrasonicConfig(msgspec.Struct, tag_field="type", tag="ultrasonic", **_struct):
    """A02YYUW / JSN-SR04T ultrasonic ranger on a UART, looking down at the water."""

    port: SerialPort
    """Serial port as a URL: /dev/ttyAMA0, a pty, or spy:///dev/ttyAMA0 for a hexdump."""
    mount_height_cm: Annotated[float, Meta(gt=0, le=2000)]
    """From the sensor's face down to the level's datum; level = height - distance."""
    baudrate: Baudrate = 9600


class MatSensorConfig(msgspec.Struct, tag_field="type", tag="mat", **_struct):
    """Body-motion mat (pressure grid) under one cot's mattress, on a UART."""

    port: SerialPort
    cot: Annotated[str, Meta(min_length=1, max_length=32)]
    """The cot's label; events carry this, never a child's name."""
    child: str = ""
    """The child's name, for the nap check sheet printed on the device only; never sent."""
    baudrate: Baudrate = 115200


SensorConfig: TypeAlias = (
    PirSensorConfig | TrapSensorConfig | PressureProbeConfig | UltrasonicConfig | MatSensorConfig
)
GPIO_SENSORS = (PirSensorConfig, TrapSensorConfig)
WATER_SENSORS = (PressureProbeConfig, UltrasonicConfig)


class SirenConfig(msgspec.Struct, tag_field="type", tag="siren", **_struct):
    pin: BcmPin
    active_high: bool = True


class StrobeConfig(msgspec.Struct, tag_field="type", tag="strobe", **_struct):
    pin: BcmPin
    active_high: bool = True
    flash_hz: Annotated[float, Meta(ge=0.2, le=20)] = 2.0


class BuzzerConfig(msgspec.Struct, tag_field="type", tag="buzzer", **_struct):
    """The nap room's buzzer (a steady-on load, like the siren)."""

    pin: BcmPin
    active_high: bool = True


ActuatorConfig: TypeAlias = SirenConfig | StrobeConfig | BuzzerConfig


class DeterrentRuleConfig(msgspec.Struct, tag_field="type", tag="deterrent", **_struct):
    """Detection -> siren and strobe at once, for a while, then rest."""

    detectors: Annotated[list[str], Meta(min_length=1)]
    actuators: list[str] = []
    """Empty: detections are reported, nothing sounds."""
    on_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    max_on_s: Annotated[float, Meta(gt=0, le=3600)] = 120.0
    cooldown_s: Annotated[float, Meta(ge=0, le=86400)] = 60.0


class StageConfig(msgspec.Struct, **_struct):
    name: Name
    level_cm: Level
    label: str = ""
    direction: Literal["above", "below"] = "above"
    severity: Literal["alarm", "warning", "info"] = "warning"


class WaterRuleConfig(msgspec.Struct, tag_field="type", tag="water", **_struct):
    """Water level: averaged readings, observation mode, stages, rate of rise."""

    sensor: str
    sample_s: Annotated[float, Meta(gt=0, le=1)] = 1.0
    window_s: Annotated[float, Meta(ge=0.5, le=600)] = 20.0
    idle_interval_s: Annotated[float, Meta(ge=1, le=86400)] = 600.0
    active_interval_s: Annotated[float, Meta(ge=1, le=300)] = 300.0
    observe_start_cm: Level | None = None
    observe_stop_cm: Level | None = None
    stages: list[StageConfig] = []
    hysteresis_cm: Annotated[float, Meta(gt=0, le=100)] = 2.0
    rise_cm_per_10min: Annotated[float, Meta(gt=0, le=1000)] | None = None
    level_steps: Literal["fault", "expected"] = "fault"
    """``expected``: a gate, sluice or pump moves this level in sudden steps, so the fault
    checks (``health.anomaly_models``) do not call a step a sensor fault."""
    gate_pin: BcmPin | None = None
    """A GPIO input that changes state whenever the gate, sluice or pump that moves this
    level is operated (a gate's limit switch, a pump's run contact; to ground, pulled up).
    The fault checks then excuse the steps around each operation and still tell any other
    step (a slipped probe); with ``level_steps = "expected"`` no step is told at all."""
    same_water_as: str | None = None
    """Another water rule's sensor reading the same water (a second gauge at the same
    place): the two readings' difference is learnt over the first 12 h, and a move of it by
    more than ``disagree_cm`` is an ``anomaly`` (one gauge drifted, slipped or was moved),
    whatever the water does (:mod:`edge.water.pair`)."""
    disagree_cm: Annotated[float, Meta(gt=0, le=100)] = 3.0
    """With ``same_water_as``: how far the two gauges' difference (its 6-h median) may move
    from its usual value (at least 4 x its own noise is allowed anyway)."""


StaffInitials = Annotated[str, Meta(pattern=r"^[^\s,]{1,8}\Z")]
"""A staff member's initials or short name on the nap sheet (no spaces or commas)."""
ClockTime = Annotated[str, Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]\Z")]


class NapRuleConfig(msgspec.Struct, tag_field="type", tag="nap", **_struct):
    """Nap room: posture checks and prone / apnea alarms for the cots' mats."""

    mats: Annotated[list[str], Meta(min_length=1)]
    buzzer: str
    ack_pin: BcmPin
    """GPIO of the staff's acknowledge button (to ground, pulled up)."""
    check_interval_s: Annotated[float, Meta(ge=10, le=3600)] = 300.0
    prone_alarm_s: Annotated[float, Meta(ge=1, le=600)] = 30.0
    apnea_alarm_s: Annotated[float, Meta(ge=5, le=120)] = 20.0
    prone_reset_s: Annotated[float, Meta(ge=0, le=30)] = 3.0
    """Safe postures must last this long, unbroken, to restart the face-down count or to
    count a face-down alarm's child as safe again (one misread tick must not)."""
    unknown_prompt_s: Annotated[float, Meta(ge=5, le=600)] = 20.0
    """The model cannot tell an occupied cot's posture this long: "look now" (見てください)."""
    model_dir: str = ""
    """Folder with posture.tflite and card.json; empty: the model shipped with the daemon."""
    log_path: str = ""
    """The nap check sheet's local record (children's names never leave the device):
    empty, ``naps.sqlite3`` in the state directory (the outbox's folder); a relative
    path is taken from there."""
    staff: list[StaffInitials] = []
    """Initials of the staff who may acknowledge with ``edge nap ack --by``."""
    facility: Annotated[str, Meta(max_length=64)] = ""
    """The nursery's name, printed on the check sheet."""
    class_name: Annotated[str, Meta(max_length=64)] = ""
    """The class or room (e.g. ひよこ組), printed on the check sheet."""
    period: Annotated[list[ClockTime], Meta(max_length=2)] = []
    """The nap period, ``["12:30", "15:00"]`` (Japan time): every check column of it is on
    the sheet, a check missed inside a child's nap is flagged.  Empty: the day's entries."""


RuleConfig: TypeAlias = DeterrentRuleConfig | WaterRuleConfig | NapRuleConfig


class Config(msgspec.Struct, **_struct):
    device: DeviceConfig
    uplink: UplinkConfig
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    updates: UpdatesConfig = UpdatesConfig()
    gpio: GpioConfig = GpioConfig()
    sensors: dict[str, SensorConfig] = {}
    actuators: dict[str, ActuatorConfig] = {}
    rules: dict[str, RuleConfig] = {}

    @property
    def client_id(self) -> str:
        return self.uplink.client_id or self.device.id


# Named sections are decoded entry by entry so that errors can name the entry
# (msgspec reports dict values as ``[...]``).
_NAMED_SECTIONS: dict[str, Any] = {
    "sensors": SensorConfig,
    "actuators": ActuatorConfig,
    "rules": RuleConfig,
}

_TYPES: dict[str, tuple[str, ...]] = {
    "sensors": ("pir", "trap", "pressure_probe", "ultrasonic", "mat"),
    "actuators": ("siren", "strobe", "buzzer"),
    "rules": ("deterrent", "water", "nap"),
}

_PATH_RE = re.compile(r"^(?P<msg>.*) - at `(?P<path>[^`]*)`(?: in `(?P<outer>[^`]*)`)?$")
_MISSING_RE = re.compile(r"^Object missing required field `(?P<f>[^`]+)`$")
_UNKNOWN_RE = re.compile(r"^Object contains unknown field `(?P<f>[^`]+)`$")


def _join(*parts: str) -> str:
    return ".".join(p for p in parts if p)


def explain_validation(exc: msgspec.ValidationError, prefix: str = "") -> str:
    """Rewrite msgspec's message as ``key.path: what was expected``.

    The one rewriting for every TOML file the device side decodes with msgspec
    (this configuration, the bench's scenarios, the installer's fleet file):
    ``Expected `int`, got `str` - at `$.uplink.port``` becomes
    ``uplink.port: expected `int`, got `str```; a missing or unknown key is
    named with its section.  ``prefix`` is the table the value came from.
    """
    text = str(exc)
    m = _PATH_RE.match(text)
    msg, path = (m["msg"], m["path"]) if m else (text, "$")
    if m and path == "key" and m["outer"]:  # a bad name of a named entry
        path = m["outer"]
    key = _join(prefix, path.removeprefix("$").lstrip(".").replace("[...]", ""))
    if mm := _MISSING_RE.match(msg):
        return f"{_join(key, mm['f'])}: required key is missing"
    if mm := _UNKNOWN_RE.match(msg):
        return f"{_join(key, mm['f'])}: unknown key (check its spelling and section)"
    section = key.split(".", 1)[0]
    if msg.startswith("Invalid value") and key.endswith(".type") and section in _TYPES:
        kinds = ", ".join(repr(t) for t in _TYPES.get(section, ()))
        return f"{key}: {msg[len('Invalid value ') :]} is not a known type; expected one of {kinds}"
    return f"{key or 'config'}: {msg[0].lower()}{msg[1:]}"




_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _check_values(value: Any, key: str) -> None:
    """Checks on the raw TOML that no schema type says: numbers are finite, strings are text.

    TOML has ``nan`` and ``inf``; no key of ours means either (a stage at ``nan``
    never fires, an offset of ``nan`` makes every level ``nan``).  A control
    character (a trailing newline, a NUL) in an id, a path or a port is always a
    mistake, and a NUL makes the OS refuse the path with a ``ValueError``.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            _check_values(v, _join(key, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_values(v, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    elif isinstance(value, str):
        leaf = key.rsplit(".", 1)[-1]
        bad = "\x00" in value or (leaf not in FREE_TEXT_KEYS and _CONTROL_RE.search(value))
        if bad:
            raise ConfigError(
                f"{key}: must not contain control characters (a newline, a tab, a NUL), "
                f"got {value!r}"
            )


def parse(text: str, source: str = "<config>") -> Config:
    """Validate configuration text; raise :class:`ConfigError` naming the key on any problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return from_dict(raw, source)


def from_dict(raw: dict[str, Any], source: str = "<config>") -> Config:
    """Validate configuration already decoded from TOML (a dict of tables); as :func:`parse`."""
    raw = dict(raw)  # sections are popped below; the caller's dict stays as it was
    try:
        _check_values(raw, "")
        named: dict[str, dict[str, Any]] = {}
        for section, typ in _NAMED_SECTIONS.items():
            entries = raw.pop(section, {})
            if not isinstance(entries, dict):
                raise ConfigError(f"{section}: expected a table of named entries")
            named[section] = {}
            for name, value in entries.items():
                if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name):
                    shown = name if name.isprintable() else repr(name)
                    raise ConfigError(
                        f"{section}.{shown}: names are lower-case letters, digits and '_' "
                        "(at most 32, starting with a letter)"
                    )
                try:
                    named[section][name] = msgspec.convert(value, typ)
                except msgspec.ValidationError as exc:
                    raise ConfigError(explain_validation(exc, f"{section}.{name}")) from None
        try:
            config = msgspec.convert(raw, Config)
        except msgspec.ValidationError as exc:
            raise ConfigError(explain_validation(exc)) from None
        config = msgspec.structs.replace(config, **named)
        _check_references(config)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load(path: str | Path) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return parse(text, str(path))


def _check_references(config: Config) -> None:
    """Checks across keys: pins used twice, rules naming parts that do not exist."""
    pins: dict[int, str] = {}
    for section, entries in (("sensors", config.sensors), ("actuators", config.actuators)):
        for name, part in entries.items():
            pin = getattr(part, "pin", None)
            if pin is None:
                continue
            key = f"{section}.{name}.pin"
            if pin in pins:
                raise ConfigError(f"{key}: GPIO{pin} is already used by {pins[pin]}")
            pins[pin] = key
    ports: dict[str, str] = {}
    i2c: dict[tuple[int, int, int], str] = {}
    for name, sensor in config.sensors.items():
        _check_sensor(f"sensors.{name}", sensor)
        if isinstance(sensor, (UltrasonicConfig, MatSensorConfig)):
            if sensor.port in ports:
                raise ConfigError(
                    f"sensors.{name}.port: {sensor.port} is already used by {ports[sensor.port]}"
                )
            ports[sensor.port] = f"sensors.{name}.port"
        if isinstance(sensor, PressureProbeConfig):
            where = (sensor.bus, sensor.address, sensor.channel)
            if where in i2c:
                raise ConfigError(
                    f"sensors.{name}.channel: bus {sensor.bus} address 0x{sensor.address:02x} "
                    f"channel {sensor.channel} is already used by {i2c[where]}"
                )
            i2c[where] = f"sensors.{name}"
    cots: dict[str, str] = {}
    for name, sensor in config.sensors.items():
        if isinstance(sensor, MatSensorConfig):
            if sensor.cot in cots:
                raise ConfigError(
                    f"sensors.{name}.cot: {sensor.cot!r} is already {cots[sensor.cot]}'s"
                )
            cots[sensor.cot] = f"sensors.{name}"

    driven_by: dict[str, str] = {}
    watched: dict[str, str] = {}
    _check_gauge_pairs(config)
    for name, rule in config.rules.items():
        key = f"rules.{name}"
        if isinstance(rule, WaterRuleConfig):
            _check_water_rule(config, key, rule, watched)
            if rule.gate_pin is not None:
                if rule.level_steps == "expected":
                    raise ConfigError(
                        f"{key}.gate_pin: a gate input tells the gate's steps from a slipped "
                        'probe\'s; with level_steps = "expected" no step is told at all (set '
                        'level_steps = "fault", the default, or drop gate_pin)'
                    )
                if rule.gate_pin in pins:
                    raise ConfigError(f"{key}.gate_pin: GPIO{rule.gate_pin} is already used by "
                                      f"{pins[rule.gate_pin]}")
                pins[rule.gate_pin] = f"{key}.gate_pin"
            continue
        if isinstance(rule, NapRuleConfig):
            for i, mat in enumerate(rule.mats):
                if not isinstance(config.sensors.get(mat), MatSensorConfig):
                    raise ConfigError(f"{key}.mats[{i}]: no mat sensor named {mat!r} in [sensors]")
                if mat in watched:
                    raise ConfigError(f"{key}.mats[{i}]: sensors.{mat} is already watched by "
                                      f"{watched[mat]}")
                watched[mat] = key
            _check_nap_sheet(key, rule)
            if not isinstance(config.actuators.get(rule.buzzer), BuzzerConfig | SirenConfig):
                raise ConfigError(f"{key}.buzzer: no buzzer named {rule.buzzer!r} in [actuators]")
            if rule.buzzer in driven_by:
                raise ConfigError(f"{key}.buzzer: actuators.{rule.buzzer} is already driven by "
                                  f"{driven_by[rule.buzzer]}")
            driven_by[rule.buzzer] = key
            if rule.ack_pin in pins:
                raise ConfigError(f"{key}.ack_pin: GPIO{rule.ack_pin} is already used by "
                                  f"{pins[rule.ack_pin]}")
            pins[rule.ack_pin] = f"{key}.ack_pin"
            continue
        if rule.max_on_s < rule.on_s:
            raise ConfigError(
                f"{key}.max_on_s: must be >= on_s ({rule.max_on_s} < {rule.on_s})"
            )
        for i, det in enumerate(rule.detectors):
            detector = config.sensors.get(det)
            if detector is None:
                raise ConfigError(f"{key}.detectors[{i}]: no sensor named {det!r} in [sensors]")
            if not isinstance(detector, PirSensorConfig):
                raise ConfigError(f"{key}.detectors[{i}]: sensors.{det} is not a pir detector")
        for i, act in enumerate(rule.actuators):
            if act not in config.actuators:
                raise ConfigError(f"{key}.actuators[{i}]: no actuator named {act!r} in [actuators]")
            if act in driven_by:
                raise ConfigError(
                    f"{key}.actuators[{i}]: actuators.{act} is already driven by {driven_by[act]}"
                )
            driven_by[act] = key
    for name, sensor in config.sensors.items():
        if isinstance(sensor, WATER_SENSORS) and name not in watched:
            raise ConfigError(f"sensors.{name}: water-level sensor is in no water rule")
        if isinstance(sensor, MatSensorConfig) and name not in watched:
            raise ConfigError(
                f"sensors.{name}: mat is in no nap rule; list it in a nap rule's mats"
            )
        if not isinstance(sensor, PirSensorConfig):
            continue
        if not any(
            isinstance(r, DeterrentRuleConfig) and name in r.detectors
            for r in config.rules.values()
        ):
            raise ConfigError(
                f"sensors.{name}: detector is in no rule; list it in a deterrent rule's "
                "detectors (with actuators = [] to only report detections)"
            )
    if (config.uplink.password is None) != (config.uplink.username is None):
        raise ConfigError("uplink.password: username and password go together")


def _check_nap_sheet(key: str, rule: NapRuleConfig) -> None:
    for i, who in enumerate(rule.staff):
        if who in rule.staff[:i]:
            raise ConfigError(f"{key}.staff[{i}]: {who!r} is listed twice")
    if len(rule.period) == 1:
        raise ConfigError(f"{key}.period: give the start and the end, e.g. [\"12:30\", \"15:00\"]")
    if rule.period and rule.period[1] <= rule.period[0]:
        raise ConfigError(f"{key}.period: the nap period must end after it starts "
                          f"({rule.period[0]} to {rule.period[1]})")


def _check_sensor(key: str, sensor: SensorConfig) -> None:
    """What a sensor's driver would refuse when the daemon builds it (so it never does)."""
    if isinstance(sensor, PirSensorConfig):
        if sensor.pull != "none" and (sensor.pull == "up") == sensor.active_high:
            need = "'down' or 'none'" if sensor.active_high else "'up' or 'none'"
            raise ConfigError(
                f"{key}.pull: {sensor.pull!r} would hold an active-"
                f"{'high' if sensor.active_high else 'low'} detector active at rest; use {need}"
            )
    elif isinstance(sensor, TrapSensorConfig):
        if sensor.pull != "none" and (sensor.pull == "up") == (sensor.closed_level == "high"):
            raise ConfigError(
                f"{key}.pull: {sensor.pull!r} with closed_level = {sensor.closed_level!r} would "
                "read 'closed' with the switch disconnected; use the opposite pull or 'none'"
            )
    elif isinstance(sensor, PressureProbeConfig):
        volts = sensor.shunt_ohm * NAMUR_SHORT_MA / 1000
        if volts > ADC_SUPPLY_V:
            raise ConfigError(
                f"{key}.shunt_ohm: {NAMUR_SHORT_MA} mA across {sensor.shunt_ohm} ohm is "
                f"{volts:.2f} V, above the ADC's {ADC_SUPPLY_V} V supply "
                f"(at most {ADC_SUPPLY_V * 1000 / NAMUR_SHORT_MA:.0f} ohm)"
            )
        try:
            choose_pga(sensor.shunt_ohm)
        except ValueError as exc:
            raise ConfigError(f"{key}.shunt_ohm: {exc}") from None
    elif isinstance(sensor, UltrasonicConfig | MatSensorConfig):
        if sensor.baudrate not in STANDARD_BAUDRATES:
            rates = ", ".join(str(b) for b in STANDARD_BAUDRATES)
            raise ConfigError(
                f"{key}.baudrate: {sensor.baudrate} is not a standard rate; expected one of {rates}"
            )
        scheme, sep, _ = sensor.port.partition("://")
        if sep and scheme not in SERIAL_URL_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in SERIAL_URL_SCHEMES)
            raise ConfigError(
                f"{key}.port: {scheme!r} is not a serial URL scheme pyserial knows here; "
                f"expected a device path or one of {schemes}"
            )
        if sensor.port != sensor.port.strip():
            raise ConfigError(f"{key}.port: must not start or end with spaces, got {sensor.port!r}")


def water_settings(key: str, rule: WaterRuleConfig) -> WaterRuleSettings:
    """The water rule's own settings, built as the daemon will build them; errors name the key."""
    stages = []
    for i, s in enumerate(rule.stages):
        try:
            stages.append(
                Stage(
                    name=s.name,
                    label=s.label,
                    level_cm=s.level_cm,
                    direction=s.direction,
                    severity=s.severity,
                )
            )
        except ValueError as exc:
            raise ConfigError(f"{key}.stages[{i}].{exc}") from None
    try:
        return WaterRuleSettings(
            sample_s=rule.sample_s,
            window_s=rule.window_s,
            idle_interval_s=rule.idle_interval_s,
            active_interval_s=rule.active_interval_s,
            observe_start_cm=rule.observe_start_cm,
            observe_stop_cm=rule.observe_stop_cm,
            stages=tuple(stages),
            hysteresis_cm=rule.hysteresis_cm,
            rise_cm_per_10min=rule.rise_cm_per_10min,
        )
    except ValueError as exc:
        raise ConfigError(f"{key}.{exc}") from None


def _check_gauge_pairs(config: Config) -> None:
    """``same_water_as`` names another water rule's sensor, and each pair is named once."""
    water = {rc.sensor: rc for rc in config.rules.values() if isinstance(rc, WaterRuleConfig)}
    pairs: dict[frozenset[str], str] = {}
    for name, rule in config.rules.items():
        if not isinstance(rule, WaterRuleConfig) or rule.same_water_as is None:
            continue
        key = f"rules.{name}.same_water_as"
        other = rule.same_water_as
        if other == rule.sensor:
            raise ConfigError(f"{key}: names this rule's own sensor ({other}); name the other "
                              "gauge on the same water")  # fmt: skip
        if other not in water:
            raise ConfigError(f"{key}: no water rule reads a sensor named {other!r} (the other "
                              "gauge needs its own water rule)")  # fmt: skip
        from edge.water.pair import PairParams  # only where a pair is configured

        gap = PairParams.max_gap_s
        for rc in (rule, water[other]):
            if rc.idle_interval_s > gap:
                raise ConfigError(
                    f"{key}: {rc.sensor} reads every {rc.idle_interval_s:g} s (idle_interval_s); "
                    f"two gauges are compared only where each reads at least every {gap:g} s"
                )
        pair = frozenset((rule.sensor, other))
        if pair in pairs:
            raise ConfigError(f"{key}: {rule.sensor} and {other} are already paired by "
                              f"{pairs[pair]}; name a pair once")  # fmt: skip
        pairs[pair] = key


def _check_water_rule(
    config: Config, key: str, rule: WaterRuleConfig, watched: dict[str, str]
) -> None:
    sensor = config.sensors.get(rule.sensor)
    if sensor is None:
        raise ConfigError(f"{key}.sensor: no sensor named {rule.sensor!r} in [sensors]")
    if not isinstance(sensor, WATER_SENSORS):
        raise ConfigError(f"{key}.sensor: sensors.{rule.sensor} is not a water-level sensor")
    if rule.sensor in watched:
        raise ConfigError(
            f"{key}.sensor: sensors.{rule.sensor} is already in {watched[rule.sensor]}"
        )
    watched[rule.sensor] = key
    if (rule.observe_start_cm is None) != (rule.observe_stop_cm is None):
        raise ConfigError(
            f"{key}.observe_stop_cm: observe_start_cm and observe_stop_cm go together"
        )
    if rule.observe_start_cm is not None and rule.observe_stop_cm is not None:
        if rule.observe_stop_cm >= rule.observe_start_cm:
            raise ConfigError(
                f"{key}.observe_stop_cm: must be below observe_start_cm "
                f"({rule.observe_stop_cm} >= {rule.observe_start_cm})"
            )
    if rule.active_interval_s > rule.idle_interval_s:
        raise ConfigError(f"{key}.active_interval_s: must not exceed idle_interval_s")
    if rule.window_s > rule.active_interval_s:
        raise ConfigError(f"{key}.window_s: a reading's window must fit in active_interval_s")
    names: set[str] = set()
    last_above: tuple[int, float] | None = None
    for i, stage in enumerate(rule.stages):
        skey = f"{key}.stages[{i}]"
        if stage.name in names:
            raise ConfigError(f"{skey}.name: {stage.name!r} is used twice")
        names.add(stage.name)
        if stage.direction == "above":
            if last_above is not None and stage.level_cm <= last_above[1]:
                raise ConfigError(
                    f"{skey}.level_cm: stages that alert above a level must rise in order "
                    f"({stage.level_cm} <= stages[{last_above[0]}].level_cm {last_above[1]})"
                )
            last_above = (i, stage.level_cm)
    water_settings(key, rule)
