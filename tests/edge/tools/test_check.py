"""edge check: the installer's self-test names every failing part."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from pathlib import Path

from gpiozero.pins.mock import MockFactory

from edge.config import parse
from edge.sim.broker import Mosquitto, free_port
from edge.sim.site import device_config
from edge.tools.check import run_check
from tests.support.waiting import until

REPO = Path(__file__).resolve().parents[3]
TRAP = (
    '\n[sensors.trap_a]\ntype = "trap"\npin = 5\n\n[actuators.buzzer]\ntype = "buzzer"\npin = 6\n'
)


def config_text(tmp_path: Path, port: int) -> str:
    return device_config(tmp_path / "o.sqlite3", port, warmup_s=60) + TRAP + (
        '\n[health]\nmodem = "none"\n'
    )


async def test_exercised_parts_pass_and_actuators_fire(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    out = io.StringIO()
    stop = asyncio.Event()

    async def installer() -> None:
        # Once the check watches the detector and the trap (their edge callbacks are set) ...
        await until(
            lambda: pins.pin(17)._when_changed is not None
            and pins.pin(5)._when_changed is not None,
            10,
            "the check to watch the pins",
        )
        await asyncio.to_thread(pins.pin(17).drive_high)  # ... the installer waves
        await asyncio.to_thread(pins.pin(17).drive_low)
        await asyncio.to_thread(pins.pin(5).drive_low)  # ... and closes the trap door
        stop.set()

    siren = pins.pin(27)
    verdict, _ = await asyncio.gather(
        run_check(
            parse(config_text(tmp_path, broker.port)), watch_s=20, fire=["siren", "buzzer"],
            pin_factory=pins, out=out, stop=stop,
        ),
        installer(),
    )
    assert verdict.passed, out.getvalue()
    states = {p.name: p.status for p in verdict.parts}
    assert states == {
        "pir_north": "ok", "trap_a": "ok", "siren": "ok", "strobe": "ok", "buzzer": "ok",
        "uplink": "ok",
    }
    assert [s.state for s in siren.states] == [False, True, False]  # one 1 s test pattern
    assert [s.state for s in pins.pin(6).states].count(True) == 3  # three beeps
    assert "PASS: all 6 parts ok" in out.getvalue()
    for line in out.getvalue().splitlines():
        assert len(line) <= 80  # fits a small SSH terminal


async def test_unexercised_parts_warn_or_fail_on_request(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    out = io.StringIO()
    verdict = await run_check(
        parse(config_text(tmp_path, broker.port)), watch_s=0.2, pin_factory=pins, out=out,
        require_exercise=True,
    )
    assert not verdict.passed
    assert verdict.line().startswith("FAIL: pir_north (not exercised); trap_a (not exercised)")


def test_cli_names_the_unreachable_broker_and_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, free_port()).replace(
        '[gpio]\npin_factory = "mock"', '[gpio]\npin_factory = "mock"'))
    result = subprocess.run(
        [sys.executable, "-m", "edge", "check", "--config", str(config), "--watch", "0.2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("FAIL: uplink (")


def test_cli_refuses_firing_an_unknown_actuator(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(config_text(tmp_path, free_port()))
    result = subprocess.run(
        [sys.executable, "-m", "edge", "check", "-c", str(config), "--fire", "horn"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "--fire horn: no actuator of that name" in result.stderr


async def test_bus_and_serial_sensors_are_read_and_a_dead_one_is_named(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    from edge.sim.i2c import ADS1115Model, EmulatedI2CBus
    from edge.sim.mat_emulator import MatModel
    from edge.sim.serial_device import UltrasonicModel

    bus = EmulatedI2CBus(1)
    adc = ADS1115Model()
    bus.attach(0x48, adc)
    adc.set_current_ma(0, 12.0, 150.0)
    with UltrasonicModel(distance_mm=1500).start() as ranger, MatModel(seed=3).start() as mat:
        mat.lie_down()
        text = (
            device_config(tmp_path / "o.sqlite3", broker.port)
            + '\n[sensors.level_probe]\ntype = "pressure_probe"\n'
            + f'\n[sensors.level_bridge]\ntype = "ultrasonic"\nport = "{ranger.port}"\n'
            + "mount_height_cm = 400\n"
            + f'\n[sensors.mat_1]\ntype = "mat"\nport = "{mat.port}"\ncot = "A-1"\n'
            + '\n[rules.a]\ntype = "water"\nsensor = "level_probe"\n'
            + '\n[rules.b]\ntype = "water"\nsensor = "level_bridge"\n'
            + 'same_water_as = "level_probe"\n'
            + '\n[actuators.buzzer]\ntype = "buzzer"\npin = 12\n'
            + '\n[rules.naps]\ntype = "nap"\nmats = ["mat_1"]\nbuzzer = "buzzer"\nack_pin = 26\n'
            + '\n[health]\nmodem = "none"\n'
        )
        out = io.StringIO()
        verdict = await run_check(
            parse(text), watch_s=2.5, pin_factory=pins, i2c_bus={1: bus}.__getitem__, out=out
        )
        parts = {p.name: p for p in verdict.parts}
        assert parts["level_probe"].status == "ok"
        assert parts["level_probe"].reading == "12.00 mA = 250.0 cm"
        assert parts["level_bridge"].reading == "1500 mm = level 250.0 cm"
        # The two gauges on the same water: their difference now, for the staff gauge.
        pair = parts["level_bridge-level_probe"]
        assert pair.status == "ok" and pair.where == "same water"
        assert pair.reading == "level_bridge - level_probe = +0.0 cm now"
        assert parts["mat_1"].status == "ok" and "occupied" in parts["mat_1"].reading
        rules = parts["fault-rules"]
        assert rules.status == "ok" and rules.where == "no model file", rules
        assert rules.reading.startswith("water, mat_load judged as expected; state kept in ")
        assert parts["posture-model"].status == "ok"  # the nap rule's model, tried

        adc.set_current_ma(0, 1.5, 150.0)  # the probe's cable is cut
        ranger.unplug()
        out = io.StringIO()
        verdict = await run_check(
            parse(text), watch_s=3, pin_factory=pins, i2c_bus={1: bus}.__getitem__, out=out
        )
    line = verdict.line()
    assert line.startswith("FAIL: ")
    assert "level_probe (loop wire break)" in line
    assert "level_bridge (" in line
    assert "mat_1" not in line


NAP_ROOM = (
    '\n[sensors.mat_1]\ntype = "mat"\nport = "/dev/ttyAMA0"\ncot = "A-1"\n'
    '\n[actuators.buzzer]\ntype = "buzzer"\npin = 12\n'
    '\n[rules.naps]\ntype = "nap"\nmats = ["mat_1"]\nbuzzer = "buzzer"\nack_pin = 26\n'
    '\n[health]\nmodem = "none"\n'
)


async def test_the_models_a_nap_room_uses_are_loaded_and_tried(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    config = parse(device_config(tmp_path / "o.sqlite3", broker.port) + NAP_ROOM)
    out = io.StringIO()
    verdict = await run_check(config, watch_s=0.1, pin_factory=pins, out=out)
    parts = {p.name: p for p in verdict.parts}
    assert parts["posture-model"].status == "ok", parts["posture-model"]
    assert "empty mat -> empty" in parts["posture-model"].reading
    assert parts["fault-rules"].status == "ok", parts["fault-rules"]
    assert parts["fault-rules"].reading == "mat_load judged as expected", "no state kept"
    assert "posture-model" in out.getvalue() and "fault-rules" in out.getvalue()


async def test_a_water_state_folder_that_cannot_be_written_fails_the_rules_part(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    # The outbox path's folder is a file: the level's fault state could never be kept.
    (tmp_path / "card").write_text("not a folder")
    water = (
        '\n[sensors.level]\ntype = "pressure_probe"\n'
        '\n[rules.river]\ntype = "water"\nsensor = "level"\n'
        '\n[health]\nmodem = "none"\n'
    )
    config = parse(device_config(tmp_path / "card" / "o.sqlite3", broker.port) + water)
    verdict = await run_check(config, watch_s=0.1, pin_factory=pins, out=io.StringIO())
    line = verdict.line()
    assert line.startswith("FAIL: ") and "fault-rules (water state anomaly-<sensor>.json" in line


async def test_a_corrupt_posture_model_fails_the_check_naming_why(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    # A card flashed with a damaged file: the installer learns it on site, not
    # when the first child lies down.
    models = tmp_path / "models"
    for name in ("posture", "anomaly"):
        shutil.copytree(REPO / "models" / name, models / name)
    tflite = models / "posture" / "posture.tflite"
    tflite.write_bytes(tflite.read_bytes()[:1000])
    config = parse(device_config(tmp_path / "o.sqlite3", broker.port) + NAP_ROOM)
    verdict = await run_check(
        config, watch_s=0.1, pin_factory=pins, models_dir=models, out=io.StringIO()
    )
    line = verdict.line()
    assert line.startswith("FAIL: ") and "posture-model (" in line
    assert "hash mismatch" in line
    assert "fault-rules" not in line


# -- what the installer reads: aligned, wrapped, never cut ---------------------------------------


def _table_rows(text: str) -> list[str]:
    """The final table's lines (from the header to the verdict)."""
    lines = text.splitlines()
    start = max(i for i, ln in enumerate(lines) if ln.startswith("part "))
    return lines[start:-1]


def _columns(rows: list[str]) -> dict[str, dict[str, str]]:
    """Each part's cells, re-joined across wrapped lines, cut at the header's display columns."""
    from edge.tools.check import display_width

    header = rows[0]
    starts = [header.index(h) for h in ("part", "where", "status", "reading")]  # ASCII header
    parts: dict[str, dict[str, str]] = {}
    current: list[list[str]] = []
    for row in rows[2:]:
        if row.startswith("note: "):
            break
        cells: list[list[str]] = [[], [], [], []]
        col = 0
        for ch in row:
            index = max(i for i, s in enumerate(starts) if s <= col)
            cells[index].append(ch)
            col += display_width(ch)
        texts = ["".join(c).strip() for c in cells]
        if texts[0]:
            current = [[t] for t in texts]
            parts[texts[0]] = {}
        else:
            for i, t in enumerate(texts):
                if t:
                    current[i].append(t)
        name = current[0][0]
        keys = ("part", "where", "status", "reading")
        parts[name] = {k: " ".join(v) for k, v in zip(keys, current, strict=True)}
    return parts


async def test_japanese_labels_line_up_and_long_errors_wrap_whole(
    tmp_path: Path, broker: Mosquitto, pins: MockFactory
) -> None:
    from edge.tools.check import display_width

    missing = tmp_path / "no-such-serial-port-for-the-nap-room-mat-under-cot-number-one"
    text = (
        device_config(tmp_path / "o.sqlite3", broker.port)
        + f'\n[sensors.mat_1]\ntype = "mat"\nport = "{missing}"\ncot = "ひよこ組 窓側"\n'
        + '\n[sensors.mat_2]\ntype = "mat"\nport = "/dev/null"\ncot = "うさぎ組の一番奥のコット"\n'
        + '\n[actuators.buzzer]\ntype = "buzzer"\npin = 12\n'
        + '\n[rules.naps]\ntype = "nap"\nmats = ["mat_1", "mat_2"]\nbuzzer = "buzzer"\n'
        + "ack_pin = 26\n"
        + '\n[health]\nmodem = "none"\nanomaly_models = false\n'
    )
    out = io.StringIO()
    verdict = await run_check(parse(text), watch_s=1.5, pin_factory=pins, out=out)
    rows = _table_rows(out.getvalue())
    assert all(display_width(r) <= 80 for r in rows), rows  # fits, counted in display cells
    cells = _columns(rows)
    # Each cell sits in its column (a wide character counted as two) and is whole: the
    # Japanese cot labels wrap inside their column, nothing is cut.
    assert cells["mat_1"]["where"] == "cot ひよこ組 窓側"
    assert cells["mat_2"]["where"].replace(" ", "") == "cotうさぎ組の一番奥のコット"
    assert cells["uplink"]["where"] == f"127.0.0.1:{broker.port}"
    assert cells["siren"]["status"] == "ok" and cells["mat_1"]["status"] == "fail"
    # The error is shown whole, in the table (wrapped) and in the verdict (one line).
    assert str(missing) in cells["mat_1"]["reading"].replace(" ", ""), cells["mat_1"]
    line = verdict.line()
    assert f"mat_1 ([Errno 2] motion mat on {missing}: " in line, line
    assert f"No such file or directory: '{missing}'); mat_2 (" in line, line
    assert out.getvalue().splitlines()[-1] == line


def test_no_gpio_backend_is_one_note_with_the_fix_not_four_warnings(tmp_path: Path) -> None:
    config = tmp_path / "device.toml"
    config.write_text(
        config_text(tmp_path, free_port()).replace(
            '[gpio]\npin_factory = "mock"', '[gpio]\npin_factory = "auto"'
        )
    )
    assert 'pin_factory = "auto"' in config.read_text()
    result = subprocess.run(
        [sys.executable, "-m", "edge", "check", "--config", str(config), "--watch", "0.2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    # This machine has no GPIO: gpiozero falls back through every backend.
    assert "PinFactoryFallback" not in result.stderr, result.stderr
    assert "Falling back from" not in result.stdout + result.stderr
    notes = [ln for ln in result.stdout.splitlines() if ln.startswith("note: GPIO")]
    assert len(notes) == 1, result.stdout
    text = result.stdout[result.stdout.index("note: GPIO") :]
    assert "pi extra (lgpio)" in " ".join(text.split())
    assert "satoyama-edge[pi]" in text


def test_the_width_library_stays_off_the_daemons_import_path() -> None:
    """Only `edge check` draws tables: the daemon never imports wcwidth."""
    code = (
        "import sys, edge.cli, edge.daemon, edge.config\n"
        "assert 'wcwidth' not in sys.modules, 'the daemon imports wcwidth'\n"
        "import edge.tools.check\n"
        "assert 'wcwidth' in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
