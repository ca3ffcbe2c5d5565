"""Every bundled bench scenario passes against the emulated site; a wrong expectation fails."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.tools.bench import SCENARIOS, Console, ScenarioError, load_scenario, run_scenario

pytestmark = pytest.mark.slow

BUNDLED = sorted(SCENARIOS.glob("*.toml"))


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
async def test_bundled_scenario_passes(path: Path, tmp_path: Path) -> None:
    """... and while it runs, the console shows each step on the scenario's clock with
    its narration, and each distinct warning once (repeats counted at the end)."""
    scenario = load_scenario(path)
    out = io.StringIO()
    report = await run_scenario(scenario, tmp_path, console=Console(out, status=False))
    assert report.passed, report.render()
    assert report.checks
    lines = out.getvalue().splitlines()
    for step in scenario.stimulus:
        stamp = f"t={step.at_s:6.1f} s  "
        assert any(
            line.startswith(stamp) and (step.say or step.target) in line for line in lines
        ), (step, out.getvalue())
    for repeat in report.repeated_warnings:
        shown = [line for line in lines if line.endswith(repeat["message"])]
        assert len(shown) == 2, shown  # once as it came, once in the closing count
        assert f"{repeat['count']} times" in shown[1]
    assert not any("XNNPACK" in line for line in lines)


async def test_a_repeated_warning_is_shown_once_with_its_count(tmp_path: Path) -> None:
    """The ranger reads the dead zone five times in the river scenario: one line as it
    comes, one count at the end."""
    out = io.StringIO()
    report = await run_scenario(
        load_scenario(SCENARIOS / "river-rising.toml"), tmp_path, console=Console(out, status=False)
    )
    warning = "surface in the ranger's dead zone"
    dead = [line for line in out.getvalue().splitlines() if warning in line]
    assert len(dead) == 2, out.getvalue()
    assert re.match(r"t=\s*1[2-6]\.\d s  warning: water level_bridge: surface", dead[0]), dead
    (repeat,) = [r for r in report.repeated_warnings if "dead zone" in r["message"]]
    assert repeat["count"] >= 3
    assert dead[1].startswith(f"warning {repeat['count']} times (t=")


def test_a_wrong_expectation_fails_with_exit_1_and_a_json_report(tmp_path: Path) -> None:
    scenario = tmp_path / "wrong.toml"
    scenario.write_text(
        'name = "expects a siren that never sounds"\nsite = "paddy-edge"\nduration_s = 1\n'
        '[[expect]]\nactuator = "siren"\nstate = "on"\nafter_s = 0.1\nwithin_s = 0.5\n'
    )
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "run", str(scenario), "--report", str(report)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "[FAIL] actuator siren on" in result.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["checks"][0]["passed"] is False


def test_failure_lines_say_what_came_and_when(tmp_path: Path) -> None:
    """A failed check says what was seen instead: when the event came, that it never
    came, which data differed, every time when more came than expected, and when the
    actuator was on; and the run shows the scenario's clock and narration."""
    scenario = tmp_path / "misses.toml"
    scenario.write_text("""
name = "expectations that miss"
site = "paddy-edge"
duration_s = 7.5

[[stimulus]]
at_s = 2.5
target = "pir_north"
action = "motion"
value = 0.3
say = "a boar passes"

[[stimulus]]
at_s = 6.0
target = "pir_north"
action = "motion"
value = 0.3
say = "it comes back while the deterrent rests"

[[expect]]                  # too early: it came at 2.5 s and 6 s
event = "animal_detected"
after_s = 1
within_s = 1
count = 1

[[expect]]                  # two came
event = "animal_detected"
after_s = 0
within_s = 7.5
count = 1

[[expect]]                  # never comes
event = "trap_triggered"
after_s = 0
within_s = 7

[[expect]]                  # comes, with other data
event = "animal_detected"
data = { deterrent = "silenced" }
after_s = 0
within_s = 7

[[expect]]                  # on, but later
actuator = "siren"
state = "on"
after_s = 0.5
within_s = 1
""", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "run", str(scenario)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    fails = [line.strip() for line in out.splitlines() if line.strip().startswith("[FAIL]")]
    assert len(fails) == 5, out
    t1, t2 = _first_two_times(out)
    assert fails[0] == (
        f"[FAIL] event animal_detected: 0 in [1, 2] s, expected 1; it came at {t1}, {t2} s"
    ), out
    assert fails[1] == (
        f"[FAIL] event animal_detected: 2 in [0, 7.5] s (at {t1}, {t2} s), expected 1"
    ), out
    assert fails[2] == (
        "[FAIL] event trap_triggered: none in [0, 7] s; no trap_triggered at all in the 7.5 s run"
    ), out
    assert fails[3] == (
        '[FAIL] event animal_detected {"deterrent": "silenced"}: none in [0, 7] s; '
        f"animal_detected came with other data: at {t1} s with deterrent='sounded' "
        f"(expected 'silenced'); at {t2} s with deterrent='resting' (expected 'silenced')"
    ), out
    assert re.fullmatch(
        r"\[FAIL\] actuator siren on: not on in \[0\.5, 1\.5\] s; on 2\.\d\d-4\.\d\d s", fails[4]
    ), out
    # The live view: the clock, the narration, what the site answered.
    assert "t=   2.5 s  a boar passes  [pir_north motion 0.3]" in out
    assert "t=   6.0 s  it comes back while the deterrent rests  [pir_north motion 0.3]" in out
    assert re.search(r"^t=\s*2\.[5-9] s  siren on$", out, flags=re.M), out
    assert re.search(
        r"^t=\s*[23]\.\d s  event animal_detected \(alarm\): .*deterrent=sounded", out, flags=re.M
    ), out


def _first_two_times(out: str) -> tuple[str, str]:
    """The times the two detections were seen, from the live view's event lines."""
    live = re.findall(r"^t=\s*([0-9.]+) s  event animal_detected", out, flags=re.M)
    assert len(live) == 2, out
    report = re.search(r"2 in \[0, 7\.5\] s \(at ([0-9.]+), ([0-9.]+) s\)", out)
    assert report is not None, out
    t1, t2 = report.group(1), report.group(2)
    assert 2.5 <= float(t1) < 3.0 and 6.0 <= float(t2) < 6.5
    return t1, t2


def test_a_setup_failure_leaves_no_process_running(tmp_path: Path) -> None:
    """A pseudo-terminal that cannot be opened (as in a chroot without /dev/pts) after
    the private broker started: one line, exit 1, and no mosquitto left behind."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    no_pty = (
        "import errno, os, sys\n"
        "def openpty():\n"
        "    raise OSError(errno.ENOENT, 'No such file or directory', '/dev/ptmx')\n"
        "os.openpty = openpty\n"
        "from edge.cli import main\n"
        "sys.exit(main(['bench', 'run', 'river-rising']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", no_pty], capture_output=True, text=True, timeout=120,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [
        "bench error: could not open a pseudo-terminal for an emulated serial device "
        "([Errno 2] No such file or directory: '/dev/ptmx'); is /dev/pts mounted?"
    ], result.stderr
    assert "starting the site" in result.stdout  # it did start: the broker was running
    assert running_with(str(scratch)) == []
    assert list(scratch.iterdir()) == []


def running_with(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (e.g. a broker's folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in cmdline and state != "Z":
            found.append(cmdline)
    return found


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('name = "x"\nsite = "paddy-edge"\n', "duration_s"),
        ('name = "x"\nsite = "paddy-edge"\nduration_s = 1\nbogus = 2\n', "bogus"),
        ('name = "x"\nsite = "paddy-edge"\nduration_s = 1\n[[expect]]\nstate = "on"\n',
         r"expect\[0\]: give either actuator or event"),
    ],
)
def test_bad_scenario_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_scenario(path)


async def test_a_device_on_the_bench_through_a_rig(tmp_path: Path, broker) -> None:  # type: ignore[no-untyped-def]
    """--device mode: the rig's outputs are wired to the device's inputs (gpiozero's own
    MockConnectedPin stands in for the jumper wires); what the rig cannot do is prompted."""
    from gpiozero.pins.mock import MockConnectedPin, MockFactory

    from edge.config import parse
    from edge.sim.site import device_config

    pins = MockFactory()
    pins.pin(23, pin_class=MockConnectedPin, input_pin=pins.pin(17))  # rig -> detector
    pins.pin(24, pin_class=MockConnectedPin, input_pin=pins.pin(5))  # rig -> trap switch
    device = parse(
        device_config(tmp_path / "o.sqlite3", broker.port, warmup_s=0, on_s=1, max_on_s=1,
                      cooldown_s=0)
        + '\n[sensors.trap_a]\ntype = "trap"\npin = 5\ndebounce_s = 0.1\n'
        + '\n[health]\nmodem = "none"\n'
    )
    scenario_path = tmp_path / "bench.toml"
    scenario_path.write_text("""
name = "on the bench"
site = "whole-site"     # the scenario's vocabulary: a paddy edge with a water gauge
duration_s = 4

[rig.pir_north]
pin = 23

[rig.trap_a]
pin = 24
active_high = false     # the trap switch closes to ground

[[stimulus]]
at_s = 0.5
target = "pir_north"
action = "motion"
value = 0.3

[[stimulus]]
at_s = 1.0
target = "trap_a"
action = "bounce_close"

[[stimulus]]
at_s = 1.5
target = "level_probe"
action = "level_cm"
value = 250

[[expect]]
actuator = "siren"
state = "on"
after_s = 0.5
within_s = 0.1

[[expect]]
event = "animal_detected"
after_s = 0.5
within_s = 2

[[expect]]
event = "trap_triggered"
after_s = 1.0
within_s = 2
count = 1
""")
    prompts: list[str] = []
    try:
        report = await run_scenario(
            load_scenario(scenario_path), tmp_path, device=device, pin_factory=pins,
            prompt=prompts.append,
        )
    finally:
        pins.reset()
    assert report.passed, report.render()
    assert prompts == ["NOW: level_probe level_cm 250"]


def test_a_process_left_running_fails_the_suite(tmp_path: Path) -> None:
    """The suite's own guard (tests/conftest.py): a test that starts a process and
    never stops it fails the run, which names and kills the process."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text(
        (Path(__file__).parents[1] / "conftest.py").read_text(encoding="utf-8"), encoding="utf-8"
    )
    (inner / "test_leak.py").write_text(
        "import subprocess\n\n"
        "def test_forgets_its_process():\n"
        "    subprocess.Popen(['sleep', '321.5'])\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(inner)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "processes the tests started are still running (now killed)" in result.stdout
    assert "sleep 321.5" in result.stdout
    assert running_with("sleep 321.5") == []


def test_a_cloud_side_that_fails_to_start_stops_its_broker(tmp_path: Path) -> None:
    """The e2e tests' cloud fixture: when the SMTP server cannot listen (its port is
    taken) after mosquitto started, the broker is stopped before the error propagates."""
    from edge.sim.site import CloudSide

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        side = CloudSide(tmp_path / "cloud")
        side.mailbox.port = taken.getsockname()[1]
        with pytest.raises(Exception):  # noqa: B017 - aiosmtpd's own error, whatever its class
            side.start()
    assert not side.broker.running
    assert running_with(str(tmp_path)) == []


def test_against_a_running_broker_the_events_are_mailed(tmp_path: Path) -> None:
    """``--broker HOST:PORT``: no private mosquitto; the scenario's daemon publishes to the
    broker already running (a cloud side's: mosquitto, the notifier as its own process,
    an SMTP server), whose notifier mails the detection with its map links."""
    from edge.sim.site import CloudSide

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with CloudSide(tmp_path / "cloud", coalesce=False, sites={"bench": "ベンチ"}) as cloud:
        bench = subprocess.Popen(
            [sys.executable, "-m", "edge", "bench", "run", "boar-deterrent",
             "--broker", f"127.0.0.1:{cloud.broker.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "TMPDIR": str(scratch)},
        )
        brokers: set[str] = set()  # a mosquitto of its own would run under its folder
        while True:
            brokers.update(c for c in running_with(str(scratch)) if "mosquitto" in c)
            try:
                out, _ = bench.communicate(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                continue
        assert bench.returncode == 0, out
        assert not brokers, brokers
        mails = cloud.mailbox.wait_for(2, 60)  # two detections: sounded, then resting
        log = cloud.broker.log.read_text(errors="replace")
    kinds = {str(m.message["X-Satoyama-Kind"]) for m in mails}
    devices = {str(m.message["X-Satoyama-Device"]) for m in mails}
    assert kinds == {"animal_detected"} and devices == {"bench-paddy-01"}, mails
    body = mails[0].message.get_body(("plain",))
    assert body is not None
    assert "https://maps.gsi.go.jp/#" in body.get_content()
    assert mails[0].rcpt_tos == ("farmer@example.jp",)
    assert "bench-paddy-01" in log  # the site's daemon was a client of that broker


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--broker", "127.0.0.1"], 2, "bench error: --broker: '127.0.0.1' is not HOST:PORT"),
        (["--broker", "127.0.0.1:{port}"], 1, "bench error: the broker at 127.0.0.1:{port} did "
                                              "not answer"),
    ],
)
def test_a_broker_that_is_not_there_is_one_line(
    tmp_path: Path, extra: list[str], code: int, message: str
) -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    extra = [a.format(port=port) for a in extra]
    result = subprocess.run(
        [sys.executable, "-m", "edge", "bench", "run", "boar-deterrent", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message.format(port=port)), lines
