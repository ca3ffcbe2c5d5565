"""TOML text of the small sites that tests and benchmarks build around emulators.

The whole bench sites live in ``edge/sim/sites/*.toml``; these are the pieces a test or a
benchmark puts together itself when it needs a real port (an emulator's pseudo-terminal,
a broker's loopback port) or a state folder of its own.  One home for them, so a new
required key reaches every such site at once.
"""

from __future__ import annotations

from pathlib import Path


def device(
    outbox: str | Path,
    *,
    device_id: str = "dev-1",
    site: str = "site-1",
    latitude: float = 36.1,
    longitude: float = 137.9,
    broker_port: int | None = None,
    broker_host: str = "127.0.0.1",
    mock_pins: bool = False,
) -> str:
    """``[device]``, ``[uplink]`` and ``[outbox]``; with ``broker_port`` the uplink gives up
    quickly between tries (a test's broker comes and goes), with ``mock_pins`` gpiozero's
    mock pin factory."""
    uplink = f'host = "{broker_host}"\n'
    if broker_port is not None:
        uplink += f"port = {broker_port}\nreconnect_min_s = 0.1\nreconnect_max_s = 2\n"
    text = (
        f'[device]\nid = "{device_id}"\nsite = "{site}"\n'
        f"latitude = {latitude}\nlongitude = {longitude}\n\n"
        f"[uplink]\n{uplink}\n"
        f'[outbox]\npath = "{outbox}"\n'
    )
    if mock_pins:
        text += '\n[gpio]\npin_factory = "mock"\n'
    return text


def health(*, anomaly_models: bool | None = None, heartbeat_s: int | None = None) -> str:
    """``[health]`` without a modem (nothing to ask for signal strength)."""
    text = '\n[health]\nmodem = "none"\n'
    if anomaly_models is not None:
        text += f"anomaly_models = {str(anomaly_models).lower()}\n"
    if heartbeat_s is not None:
        text += f"heartbeat_s = {heartbeat_s}\n"
    return text


def paddy_edge(
    *, warmup_s: float = 0, on_s: float = 30, max_on_s: float = 120, cooldown_s: float = 60,
    trap_pin: int | None = None,
) -> str:
    """A paddy edge's wildlife wiring: the PIR ``pir_north`` on GPIO17 chasing with the siren
    (GPIO27) and strobe (GPIO22, 2 Hz), rule ``chase_north``; with ``trap_pin``, a box trap's
    switch ``trap_1`` on that pin."""
    trap = "" if trap_pin is None else f'\n[sensors.trap_1]\ntype = "trap"\npin = {trap_pin}\n'
    return f"""
[sensors.pir_north]
type = "pir"
pin = 17
warmup_s = {warmup_s:g}
{trap}
[actuators.siren]
type = "siren"
pin = 27

[actuators.strobe]
type = "strobe"
pin = 22
flash_hz = 2.0

[rules.chase_north]
type = "deterrent"
detectors = ["pir_north"]
actuators = ["siren", "strobe"]
on_s = {on_s:g}
max_on_s = {max_on_s:g}
cooldown_s = {cooldown_s:g}
"""


def water_bridge(port: str, *, window_s: float | None = None) -> str:
    """An ultrasonic ranger 4 m above a river bed and its water rule, one flood stage.
    ``window_s`` shortens the averaging window (samples at a tenth of it) for a test that
    must see a level at once."""
    fast = "" if window_s is None else f"sample_s = {window_s / 10}\nwindow_s = {window_s}\n"
    return f"""
[sensors.level_bridge]
type = "ultrasonic"
port = "{port}"
mount_height_cm = 400

[rules.bridge]
type = "water"
sensor = "level_bridge"
{fast}idle_interval_s = 600
active_interval_s = 300
stages = [{{ name = "flood_warning", label = "氾濫注意水位", level_cm = 250 }}]
"""


def nap_room(*mats: tuple[str, str], children: dict[str, str] | None = None,
             rule_extra: str = "") -> str:  # fmt: skip
    """One body-motion mat per ``(port, cot)`` (``mat_1``, ``mat_2``, ...), the buzzer on
    pin 12, and the nap rule over every mat (acknowledge button on pin 26).  ``children``
    names a cot's child (the name stays on the device); ``rule_extra`` adds lines to the
    rule."""
    children = children or {}
    text = ""
    names = []
    for i, (port, cot) in enumerate(mats, start=1):
        name = f"mat_{i}"
        names.append(f'"{name}"')
        child = f'child = "{children[cot]}"\n' if cot in children else ""
        text += f'\n[sensors.{name}]\ntype = "mat"\nport = "{port}"\ncot = "{cot}"\n{child}'
    return text + f"""
[actuators.buzzer]
type = "buzzer"
pin = 12

[rules.naps]
type = "nap"
mats = [{", ".join(names)}]
buzzer = "buzzer"
ack_pin = 26
{rule_extra}"""
