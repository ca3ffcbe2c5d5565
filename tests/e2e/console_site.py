"""What the console's browser tests stand on: emulated devices as processes of their own,
a local tile server, and the browser's guards.

An emulated device here is the real daemon on emulated hardware (the bench's
:class:`~edge.sim.emulated.EmulatedSite`: mock pins, an emulated ADS1115, a mat on a
pseudo-terminal) in a process of its own, publishing to the cloud side's mosquitto
(not to a private broker), so the notifier stores its events and the console shows
them.  Run as::

    python -m tests.e2e.console_site CONFIG STATE_DIR BROKER_PORT [INITIAL_JSON]

It prints ``ready`` once the daemon runs, then answers one command per line:

``apply TARGET ACTION [VALUE_JSON]``  a stimulus, as a bench scenario gives it: ``ok``
``play SCENARIO_FILE``                 the scenario's stimuli, each at its ``at_s`` from now
                                      (as ``edge bench`` plays them), until its
                                      ``duration_s``: ``played [{"t", "kind", "data"}, ...]``
                                      (the device's events meanwhile, ``t`` from the start)
``actuators``                         ``actuators {"buzzer": true, ...}``
``kinds``                             ``kinds ["heartbeat", ...]`` (events seen on the broker)
``quit``
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from edge.sim.broker import Mosquitto
from edge.sim.emulated import EmulatedSite
from edge.tools.bench import Stimulus, load_scenario

ROOT = Path(__file__).resolve().parents[2]
TILES = ROOT / "tests" / "data" / "tiles"


# --- the device process ------------------------------------------------------------------------


class _CloudBroker(Mosquitto):
    """The cloud side's mosquitto, already running: the emulated site neither starts
    nor stops it."""

    def __init__(self, workdir: Path, port: int) -> None:
        super().__init__(workdir=workdir, port=port)

    def start(self, timeout: float = 10.0) -> None:
        pass

    def stop(self) -> None:
        pass

    def close(self) -> None:
        pass


class DeviceOnCloudBroker(EmulatedSite):
    """The bench's emulated site, publishing to a broker that is already running."""

    def __init__(
        self, config_text: str, workdir: Path, broker_port: int, initial: list[Stimulus]
    ) -> None:
        super().__init__(config_text, workdir, initial=initial)
        self.broker = _CloudBroker(workdir / "broker", broker_port)


def _say(*words: object) -> None:
    print(*words, flush=True)


async def _serve(text: str, state: Path, port: int, initial: list[Stimulus]) -> None:
    site = DeviceOnCloudBroker(text, state, port, initial)
    async with site:
        _say("ready")
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            words = line.split(maxsplit=3)
            if not words or words[0] == "quit":
                break
            try:
                if words[0] == "apply" and len(words) >= 3:
                    value = json.loads(words[3]) if len(words) == 4 else None
                    await site.apply(words[1], words[2], value)
                    _say("ok")
                elif words[0] == "play" and len(words) == 2:
                    _say("played", json.dumps(await _play(site, Path(words[1]))))
                elif words[0] == "actuators":
                    _say("actuators", json.dumps(site.actuator_states()))
                elif words[0] == "kinds":
                    _say("kinds", json.dumps([e["kind"] for e in site.events()]))
                else:
                    _say("error", f"unknown command {line.strip()!r}")
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on it
                _say("error", f"{type(exc).__name__}: {exc}")


async def _play(site: EmulatedSite, path: Path) -> list[dict[str, Any]]:
    """``path``'s stimuli on the scenario's own timeline (its ``initial`` steps are the
    process's ``INITIAL_JSON``); the device's events from the start to ``duration_s``."""
    scenario = load_scenario(path)
    t0 = time.monotonic()
    for step in sorted(scenario.stimulus, key=lambda s: s.at_s):
        await asyncio.sleep(max(0.0, t0 + step.at_s - time.monotonic()))  # the timeline
        await site.apply(step.target, step.action, step.value)
    await asyncio.sleep(max(0.0, t0 + scenario.duration_s - time.monotonic()))
    return [
        {"t": round(e["t"] - t0, 3), "kind": e["kind"], "data": e["data"]}
        for e in site.events()
        if e["t"] >= t0
    ]


def main(argv: list[str]) -> int:
    config, state, port = Path(argv[0]), Path(argv[1]), int(argv[2])
    initial = [Stimulus(**s) for s in json.loads(argv[3])] if len(argv) > 3 else []
    asyncio.run(_serve(config.read_text(encoding="utf-8"), state, port, initial))
    return 0


# --- the test's side of it ---------------------------------------------------------------------


def placed(text: str, *, device: str, site: str, lat: float, lon: float) -> str:
    """A bench site profile (``edge/sim/sites/*.toml``) with another id, site and place."""
    values = {"id": f'"{device}"', "site": f'"{site}"', "latitude": repr(lat),
              "longitude": repr(lon)}  # fmt: skip
    head, sep, rest = text.partition("[device]\n")
    assert sep, "a site profile has a [device] table"
    body, nxt, tail = rest.partition("\n[")
    for key, value in values.items():
        body, n = re.subn(rf"^{key}\s*=.*$", f"{key} = {value}", body, flags=re.MULTILINE)
        assert n == 1, f"[device] {key} in the profile"
    return head + sep + body + nxt + tail


class DeviceProcess:
    """One emulated device in its own process; commands answered within a deadline."""

    def __init__(
        self, name: str, config_text: str, workdir: Path, broker_port: int,
        initial: list[Stimulus] | None = None,
    ) -> None:  # fmt: skip
        self.name = name
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "device.toml"
        self.config.write_text(config_text, encoding="utf-8")
        self.state = workdir / "state"
        self.log = workdir / "device.log"
        stimuli = [
            {"at_s": s.at_s, "target": s.target, "action": s.action, "value": s.value}
            for s in initial or []
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.e2e.console_site", str(self.config),
                 str(self.state), str(broker_port), json.dumps(stimuli)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
            )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("")  # the process ended

    def _next(self, timeout: float, what: str) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no answer to {what} within {timeout}s") from None
        if not line:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"{self.name} ended; its log ends:\n{tail}")
        if line.startswith("error"):
            raise AssertionError(f"{self.name}: {what}: {line}")
        return line

    def ready(self, timeout: float = 60) -> None:
        assert self._next(timeout, "start") == "ready"

    def ask(self, command: str, timeout: float = 20) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next(timeout, command)

    def apply(self, target: str, action: str, value: object = None) -> None:
        suffix = "" if value is None else " " + json.dumps(value, ensure_ascii=False)
        assert self.ask(f"apply {target} {action}{suffix}") == "ok"

    def play(self, scenario: Path, timeout: float = 120) -> list[dict[str, Any]]:
        """Play a bench scenario's stimuli on its timeline; the device's events meanwhile."""
        answer = self.ask(f"play {scenario}", timeout=timeout)
        assert answer.startswith("played "), answer
        events: list[dict[str, Any]] = json.loads(answer.split(" ", 1)[1])
        return events

    def actuators(self) -> dict[str, bool]:
        answer = self.ask("actuators").split(" ", 1)[1]
        states: dict[str, bool] = json.loads(answer)
        return states

    def kinds(self) -> list[str]:
        kinds: list[str] = json.loads(self.ask("kinds").split(" ", 1)[1])
        return kinds

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class TileServer:
    """The test tile set (tests/data/tiles) over HTTP on 127.0.0.1, in ``{z}/{x}/{y}.png``.

    A tile the set lacks (the map fitted to a wider area than the set covers) is answered
    with a blank field, not a 404, so a browser's "failed to load" never hides a real error.
    """

    def __init__(self) -> None:
        self.served: list[str] = []
        self.blank = next(TILES.glob("16/*/*.png")).read_bytes()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.template = self.url + "/{z}/{x}/{y}.png"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        tiles = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                file = (TILES / path.lstrip("/")).resolve()
                body = tiles.blank
                if TILES.resolve() in file.parents and file.suffix == ".png" and file.is_file():
                    body = file.read_bytes()
                tiles.served.append(path)
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

        return Handler


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
