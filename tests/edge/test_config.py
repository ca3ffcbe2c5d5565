"""The configuration is checked before anything runs; every error names the key."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.ads1115 import ADS1115
from drivers.pressure_probe import PressureProbe
from drivers.ultrasonic import UltrasonicRanger
from edge.config import (
    STANDARD_BAUDRATES,
    Config,
    ConfigError,
    DeterrentRuleConfig,
    DeviceConfig,
    PirSensorConfig,
    PressureProbeConfig,
    StageConfig,
    StrobeConfig,
    UltrasonicConfig,
    WaterRuleConfig,
    from_dict,
    load,
    parse,
)
from edge.sim import site_text
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
from edge.sim.serial_device import UltrasonicModel
from tests.edge.conftest import EXAMPLE


def test_shipped_example_is_valid() -> None:
    config = load(EXAMPLE)
    assert config.device.id == "shiojiri-kataoka-01"
    assert isinstance(config.sensors["pir_north"], PirSensorConfig)
    assert isinstance(config.actuators["strobe"], StrobeConfig)
    rule = config.rules["chase_north"]
    assert isinstance(rule, DeterrentRuleConfig)
    assert rule.actuators == ["siren", "strobe"]
    assert config.client_id == "shiojiri-kataoka-01"


def _broken(old: str, new: str) -> str:
    text = EXAMPLE.read_text()
    assert old in text, old
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # unknown keys, at every level
        ('pull = "down"', 'pul = "down"', "sensors.pir_north.pul: unknown key"),
        ("[uplink]", "[uplnk]", "uplnk: unknown key"),
        ("port = 1883", "port = 1883\nbrokr = 1", "uplink.brokr: unknown key"),
        # wrong types and ranges
        ("port = 1883", 'port = "1883"', "uplink.port: expected `int`, got `str`"),
        ("pin = 17", "pin = 40", "sensors.pir_north.pin: expected `int` <= 27"),
        ("on_s = 30 ", "on_s = -1 ", "rules.chase_north.on_s: expected `float` > 0"),
        ('type = "siren"', 'type = "horn"', "actuators.siren.type: 'horn' is not a known type"),
        # pins used twice
        ("pin = 22", "pin = 17",
         "actuators.strobe.pin: GPIO17 is already used by sensors.pir_north"),
        # missing location
        ("latitude = 36.103950", "", "device.latitude: required key is missing"),
        ("latitude = 36.103950", "latitude = 136.1", "device.latitude: expected `float` <= 90"),
        # references across sections
        ('detectors = ["pir_north"]', 'detectors = ["pir_south"]',
         "rules.chase_north.detectors[0]: no sensor named 'pir_south'"),
        ("max_on_s = 120", "max_on_s = 10", "rules.chase_north.max_on_s: must be >= on_s"),
        ("[sensors.pir_north]", "[sensors.PirNorth]", "sensors.PirNorth: names are lower-case"),
        ('id = "shiojiri-kataoka-01"', 'id = "a/b#"', "device.id: expected `str` matching regex"),
        ("[device]", "[device", "not valid TOML"),
    ],
)
def test_bad_config_names_the_key(old: str, new: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(_broken(old, new), "paddy.toml")
    assert str(err.value).startswith("paddy.toml: ")
    assert expected in str(err.value)


def test_password_needs_username() -> None:
    with pytest.raises(ConfigError, match=r"uplink\.password: username and password go together"):
        parse(_broken("port = 1883", 'port = 1883\npassword = "x"'))


def test_detector_in_no_rule_is_refused() -> None:
    text = EXAMPLE.read_text() + '\n[sensors.pir_east]\ntype = "pir"\npin = 5\n'
    with pytest.raises(ConfigError, match=r"sensors.pir_east: detector is in no rule"):
        parse(text)


def test_actuator_driven_by_two_rules_is_refused() -> None:
    text = EXAMPLE.read_text() + (
        '\n[sensors.pir_east]\ntype = "pir"\npin = 5\n'
        '[rules.chase_east]\ntype = "deterrent"\ndetectors = ["pir_east"]\nactuators = ["siren"]\n'
    )
    with pytest.raises(
        ConfigError,
        match=r"rules.chase_east.actuators\[0\]: actuators.siren is already driven by "
        r"rules.chase_north",
    ):
        parse(text)


@pytest.mark.parametrize("command", ["run", "validate"])
def test_cli_refuses_bad_config_with_exit_2(tmp_path: Path, command: str) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(_broken("pin = 22", "pin = 17"))
    result = subprocess.run(
        [sys.executable, "-m", "edge", command, "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"config error: {bad}: actuators.strobe.pin: GPIO17 is already used" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_validate_accepts_example() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "ok - device shiojiri-kataoka-01" in result.stdout


# -- a configuration that passes `validate` cannot silently stop monitoring ----------

WATER = """
[sensors.ranger]
type = "ultrasonic"
port = "/dev/ttyAMA0"
mount_height_cm = 400
baudrate = 9600

[sensors.probe]
type = "pressure_probe"
address = 0x48
channel = 0
shunt_ohm = 150
range_cm = 500
offset_cm = 0

[sensors.mat_a]
type = "mat"
port = "/dev/ttyAMA1"
cot = "A"

[actuators.buzzer]
type = "buzzer"
pin = 12

[rules.naps]
type = "nap"
mats = ["mat_a"]
buzzer = "buzzer"
ack_pin = 26

[sensors.trap_a]
type = "trap"
pin = 5

[rules.river]
type = "water"
sensor = "ranger"
sample_s = 1
window_s = 20
observe_start_cm = 150
observe_stop_cm = 130
rise_cm_per_10min = 30
stages = [
  { name = "flood_watch", level_cm = 200 },
  { name = "danger", level_cm = 350, severity = "alarm" },
]

[rules.paddy]
type = "water"
sensor = "probe"
stages = [{ name = "too_low", level_cm = 2, direction = "below" }]
"""
"""Every sensor kind and both water rules, on top of the shipped example."""


def _site(old: str = "", new: str = "") -> str:
    text = EXAMPLE.read_text() + WATER
    if old:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _refused(text: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse(text, "site.toml")
    message = str(err.value)
    assert message.startswith("site.toml: ")
    assert "\n" not in message.rstrip(), "one line"
    return message


def test_water_site_is_valid() -> None:
    config = parse(_site())
    assert config.sensors["ranger"] == UltrasonicConfig(
        port="/dev/ttyAMA0", mount_height_cm=400, baudrate=9600
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "+nan"])
@pytest.mark.parametrize(
    ("old", "template", "key"),
    [
        ("offset_cm = 0", "offset_cm = {}", "sensors.probe.offset_cm"),
        ("level_cm = 200", "level_cm = {}", "rules.river.stages[0].level_cm"),
        ("observe_start_cm = 150", "observe_start_cm = {}", "rules.river.observe_start_cm"),
        ("rise_cm_per_10min = 30", "rise_cm_per_10min = {}", "rules.river.rise_cm_per_10min"),
        ("mount_height_cm = 400", "mount_height_cm = {}", "sensors.ranger.mount_height_cm"),
        ("latitude = 36.103950", "latitude = {}", "device.latitude"),
        ("on_s = 30 ", "on_s = {} ", "rules.chase_north.on_s"),
        ("port = 1883", "port = 1883\npublish_timeout_s = {}", "uplink.publish_timeout_s"),
    ],
)
def test_numbers_must_be_finite(old: str, template: str, key: str, value: str) -> None:
    """TOML has nan and inf; no key means either (a stage at nan can never fire)."""
    assert f"{key}: must be a finite number" in _refused(_site(old, template.format(value)))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # levels the water rule would call implausible can never fire
        ("level_cm = 200", "level_cm = 5000",
         "rules.river.stages[0].level_cm: expected `float` <= 2000"),
        ("level_cm = 2,", "level_cm = -80,",
         "rules.paddy.stages[0].level_cm: expected `float` >= -50"),
        ("observe_start_cm = 150", "observe_start_cm = 1e9",
         "rules.river.observe_start_cm: expected `float` <= 2000"),
        ("offset_cm = 0", "offset_cm = 1e300", "sensors.probe.offset_cm: expected `float` <= 2000"),
        ("rise_cm_per_10min = 30", "rise_cm_per_10min = 1e12",
         "rules.river.rise_cm_per_10min: expected `float` <= 1000"),
        # what the water rule itself refuses when the daemon builds it
        ("window_s = 20", "window_s = 0.5", "rules.river.window_s: must be ≥ sample_s"),
    ],
)
def test_water_levels_in_range(old: str, new: str, expected: str) -> None:
    assert expected in _refused(_site(old, new))


@pytest.mark.parametrize("rate", ["-9600", "0", "9601", "1000000000", "300"])
@pytest.mark.parametrize("sensor", ["ranger", "mat_a"])
def test_baudrate_is_a_standard_rate(sensor: str, rate: str) -> None:
    """A negative rate made pyserial raise ValueError at open: the water task died."""
    old = "baudrate = 9600" if sensor == "ranger" else 'cot = "A"'
    new = f"baudrate = {rate}" if sensor == "ranger" else f'cot = "A"\nbaudrate = {rate}'
    assert f"sensors.{sensor}.baudrate: " in _refused(_site(old, new))


@pytest.mark.parametrize("rate", STANDARD_BAUDRATES)
def test_every_standard_baudrate_is_accepted(rate: int) -> None:
    assert parse(_site("baudrate = 9600", f"baudrate = {rate}")).sensors["ranger"] == (
        UltrasonicConfig(port="/dev/ttyAMA0", mount_height_cm=400, baudrate=rate)
    )


@pytest.mark.parametrize("rate", STANDARD_BAUDRATES)
async def test_ranger_opens_at_every_accepted_baudrate(rate: int) -> None:
    """What `validate` accepts, the driver opens: on a real pseudo-terminal, no exception."""
    with UltrasonicModel(1500, period_s=0.02) as model:
        async with UltrasonicRanger(model.port, baudrate=rate) as ranger:
            assert await ranger.read(timeout=5) == 1500


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('id = "shiojiri-kataoka-01"', 'id = "shiojiri-kataoka-01\\n"', "device.id"),
        ('site = "shiojiri-kataoka"', 'site = "shiojiri-kataoka\\n"', "device.site"),
        ("port = 1883", 'port = 1883\nclient_id = "dev1\\n"', "uplink.client_id"),
        ("port = 1883", 'port = 1883\ntopic_prefix = "satoyama/v1\\n"', "uplink.topic_prefix"),
        ('host = "broker.example.jp"', 'host = "broker.example.jp\\n"', "uplink.host"),
        ('name = "danger"', 'name = "danger\\n"', "rules.river.stages[1].name"),
        ('cot = "A"', 'cot = "A\\n"', "sensors.mat_a.cot"),
        ('port = "/dev/ttyAMA0"', 'port = "/dev/ttyAMA0\\n"', "sensors.ranger.port"),
        ("/var/lib/satoyama/outbox.sqlite3", "/var/lib/satoyama/outbox\\u0000.sqlite3",
         "outbox.path"),
        ('description = "', 'description = "\\u0000', "device.description"),
    ],
)
def test_names_and_ids_refuse_a_trailing_newline(old: str, new: str, key: str) -> None:
    """A regex `$` allows one trailing newline; ids go into MQTT topics, paths to the OS."""
    message = _refused(_site(old, new))
    assert message.startswith(f"site.toml: {key}: "), message


def test_free_text_may_span_lines() -> None:
    text = _site('description = "', 'description = "north fence\\n')
    assert parse(text).device.description.startswith("north fence\n")


def test_named_entry_with_trailing_newline_is_refused() -> None:
    message = _refused(_site("[sensors.trap_a]", '[sensors."trap_a\\n"]'))
    assert "names are lower-case letters" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # the driver would raise ValueError when the daemon builds it
        ("address = 0x48", "address = 0x50", "sensors.probe.address: expected `int` <= 75"),
        ("shunt_ohm = 150", "shunt_ohm = 250", "sensors.probe.shunt_ohm: 21.0 mA across 250.0 ohm"),
        ('pull = "down"', 'pull = "up"', "sensors.pir_north.pull: 'up' would hold an active-high"),
        ("[sensors.trap_a]\ntype = \"trap\"", '[sensors.trap_a]\ntype = "trap"\npull = "down"',
         "sensors.trap_a.pull: 'down' with closed_level = 'low'"),
        # pyserial raises ValueError for a scheme it does not know
        ('port = "/dev/ttyAMA0"', 'port = "foo:///dev/ttyAMA0"',
         "sensors.ranger.port: 'foo' is not a serial URL scheme"),
        ('port = "/dev/ttyAMA0"', 'port = " /dev/ttyAMA0"',
         "sensors.ranger.port: must not start or end with spaces"),
    ],
)
def test_what_a_driver_refuses_is_refused_first(old: str, new: str, expected: str) -> None:
    assert expected in _refused(_site(old, new))


def test_every_probe_address_and_shunt_accepted_builds_a_probe() -> None:
    """The driver's own checks agree with the configuration's: no ValueError at build time."""
    for address in range(0x48, 0x4C):
        for shunt in (1, 47, 100, 150, 157):
            text = _site("address = 0x48", f"address = {address}")
            probe = parse(text.replace("shunt_ohm = 150", f"shunt_ohm = {shunt}")).sensors["probe"]
            assert isinstance(probe, PressureProbeConfig)
            bus = EmulatedI2CBus(probe.bus)
            bus.attach(probe.address, ADS1115Model(instant=True))
            PressureProbe(
                ADS1115(bus, probe.address),
                probe.channel,
                shunt_ohm=probe.shunt_ohm,
                range_cm=probe.range_cm,
            )


# -- the property: a mutated number is refused naming its key, or accepted and finite ----


def _numeric_leaves(value: Any, key: str = "") -> Iterator[tuple[str, tuple[Any, ...], type]]:
    if isinstance(value, dict):
        for k, v in value.items():
            for leaf in _numeric_leaves(v, _join_key(key, str(k))):
                yield leaf[0], (k, *leaf[1]), leaf[2]
    elif isinstance(value, list):
        for i, v in enumerate(value):
            for leaf in _numeric_leaves(v, f"{key}[{i}]"):
                yield leaf[0], (i, *leaf[1]), leaf[2]
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield key, (), type(value)


def _join_key(key: str, part: str) -> str:
    return f"{key}.{part}" if key else part


def _full_raw() -> dict[str, Any]:
    """The site with every default written out (so defaults are mutated too), None dropped."""
    def drop_none(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: drop_none(x) for k, x in v.items() if x is not None}
        if isinstance(v, list):
            return [drop_none(x) for x in v]
        return v

    raw = drop_none(msgspec.to_builtins(parse(_site())))
    assert isinstance(raw, dict)
    return raw


FULL = _full_raw()
LEAVES = sorted(_numeric_leaves(FULL))


def _set(raw: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _finite_everywhere(value: Any) -> bool:
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite_everywhere(v) for v in value)
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def test_the_property_covers_every_numeric_key_family() -> None:
    keys = {key for key, _, _ in LEAVES}
    for key in (
        "sensors.ranger.baudrate",
        "sensors.mat_a.baudrate",
        "sensors.probe.offset_cm",
        "rules.river.stages[0].level_cm",
        "rules.river.rise_cm_per_10min",
        "uplink.ack_timeout_s",
        "outbox.max_events",
        "health.heartbeat_s",
    ):
        assert key in keys
    assert len(LEAVES) > 50


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 0.5, 1e-300, -0.0, 1200, 9600, 0x48, 27, 28, 65536]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leaf=st.sampled_from(LEAVES), value=NUMBERS)
def test_mutated_numbers_are_refused_by_key_or_accepted_finite(
    leaf: tuple[str, tuple[Any, ...], type], value: float
) -> None:
    """Any number at any numeric key: a ConfigError naming that key (its table and its
    name; a cross-key check names the other key too), or a config whose every number is
    finite and which still holds the value given."""
    key, path, _ = leaf
    raw = _set(FULL, path, value)
    try:
        config = from_dict(raw, "site.toml")
    except ConfigError as exc:
        message = str(exc)
        if f" {key}" in message:  # e.g. "actuators.siren.pin: GPIO27 is already used by KEY"
            return
        parts = key.split(".")
        entry = ".".join(parts[:2] if parts[0] in ("sensors", "actuators", "rules") else parts[:1])
        assert message.startswith(f"site.toml: {entry}"), message
        for part in parts[1:]:  # the key's own name, and which list item
            assert part.split("[")[0] in message, message
            if "[" in part:
                assert part[part.index("[") :] in message, message
        return
    back = msgspec.to_builtins(config)
    assert _finite_everywhere(back)
    node: Any = back
    for step in path:
        node = node[step]
    assert node == value


def test_every_numeric_key_has_both_bounds() -> None:
    """The schema itself: no int or float key is open-ended (a typo of 1e9 is refused)."""
    unbounded: list[str] = []
    seen: set[type] = set()

    def walk(t: Any, where: str) -> None:
        if isinstance(t, mi.StructType):
            if t.cls in seen:
                return
            seen.add(t.cls)
            for f in t.fields:
                walk(f.type, f"{t.cls.__name__}.{f.name}")
        elif isinstance(t, mi.UnionType):
            for x in t.types:
                walk(x, where)
        elif isinstance(t, mi.ListType):
            walk(t.item_type, where)
        elif isinstance(t, mi.DictType):
            walk(t.value_type, where)
        elif isinstance(t, mi.IntType | mi.FloatType):
            low = t.ge if t.ge is not None else t.gt
            high = t.le if t.le is not None else t.lt
            if low is None or high is None:
                unbounded.append(where)

    walk(mi.type_info(Config), "Config")
    assert len(seen) > 15
    assert unbounded == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("baudrate = 9600", "baudrate = -9600", "sensors.ranger.baudrate: expected `int` >= 1200"),
        ("level_cm = 200", "level_cm = nan", "rules.river.stages[0].level_cm: must be a finite"),
        ('id = "shiojiri-kataoka-01"', 'id = "shiojiri-kataoka-01\\n"', "device.id: must not"),
    ],
)
def test_cli_validate_refuses_the_findings_with_exit_2(
    tmp_path: Path, old: str, new: str, expected: str
) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text(_site(old, new))
    result = subprocess.run(
        [sys.executable, "-m", "edge", "validate", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0], "one line"
    assert f"config error: {bad}: {expected}" in result.stderr


@pytest.mark.parametrize(
    ("typ", "good"),
    [(DeviceConfig, {"id": "dev-1", "site": "site-1", "latitude": 0, "longitude": 0}),
     (StageConfig, {"name": "danger", "level_cm": 1})],
)
def test_patterns_are_anchored_at_the_very_end(typ: type, good: dict[str, Any]) -> None:
    """The schema alone (below the control-character check): ``\\Z``, not ``$``."""
    msgspec.convert(good, typ)
    key = "name" if "name" in good else "id"
    with pytest.raises(msgspec.ValidationError, match="matching regex"):
        msgspec.convert({**good, key: good[key] + "\n"}, typ)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("gate_pin = 17\n", "rules.bridge.gate_pin: GPIO17 is already used by sensors.pir_north"),
        ('gate_pin = 5\nlevel_steps = "expected"\n',
         'rules.bridge.gate_pin: a gate input tells the gate\'s steps from a slipped probe\'s; '
         'with level_steps = "expected" no step is told at all'),
        ("gate_pin = 28\n", "rules.bridge.gate_pin: expected `int` <= 27"),
    ],
)
def test_a_gate_input_on_a_pin_in_use_or_beside_expected_steps_is_refused(
    extra: str, expected: str
) -> None:
    text = EXAMPLE.read_text() + site_text.water_bridge("/dev/ttyAMA0") + extra
    assert parse(EXAMPLE.read_text() + site_text.water_bridge("/dev/ttyAMA0") + "gate_pin = 5\n")
    with pytest.raises(ConfigError) as err:
        parse(text, "canal.toml")
    assert expected in str(err.value)


SPARE = """
[sensors.level_spare]
type = "ultrasonic"
port = "/dev/ttyAMA1"
mount_height_cm = 410

[rules.spare]
type = "water"
sensor = "level_spare"
"""


@pytest.mark.parametrize(
    ("bridge", "spare", "expected"),
    [
        ('same_water_as = "level_bridge"\n', "",
         "rules.bridge.same_water_as: names this rule's own sensor (level_bridge)"),
        ('same_water_as = "pir_north"\n', "",
         "rules.bridge.same_water_as: no water rule reads a sensor named 'pir_north'"),
        ('same_water_as = "level_spare"\n', 'same_water_as = "level_bridge"\n',
         "rules.spare.same_water_as: level_spare and level_bridge are already paired by "
         "rules.bridge.same_water_as; name a pair once"),
        ('same_water_as = "level_spare"\ndisagree_cm = 0\n', "",
         "rules.bridge.disagree_cm: expected `float` > 0"),
        ('same_water_as = "level_spare"\n', "idle_interval_s = 3600\n",
         "rules.bridge.same_water_as: level_spare reads every 3600 s (idle_interval_s); two "
         "gauges are compared only where each reads at least every 1800 s"),
    ],
)
def test_a_second_gauge_must_be_another_water_rules_and_each_pair_named_once(
    bridge: str, spare: str, expected: str
) -> None:
    base = EXAMPLE.read_text() + site_text.water_bridge("/dev/ttyAMA0")
    paired = parse(base + 'same_water_as = "level_spare"\n' + SPARE)
    rule = paired.rules["bridge"]
    assert isinstance(rule, WaterRuleConfig)
    assert (rule.same_water_as, rule.disagree_cm) == ("level_spare", 3.0)
    with pytest.raises(ConfigError) as err:
        parse(base + bridge + SPARE + spare, "canal.toml")
    assert expected in str(err.value)
