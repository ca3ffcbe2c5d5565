"""The cloud half of a simulated site: mosquitto, an SMTP server and the notifier process.

``edge demo``, the end-to-end tests and the benchmarks start the same pieces the
same way: a private mosquitto, a real SMTP server keeping ``.eml`` files, and
the cloud notifier as its own process (as it runs in production).  The device
half (the daemon on mock pins) is started by the caller.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from edge.event import DEFAULT_TOPIC_PREFIX, events_topic
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox, ReceivedMail

DEVICE_ID = "shiojiri-kataoka-01"
SITE_ID = "shiojiri-kataoka"
SITE_NAME = "塩尻市 片丘 東の田"
LAT, LON = 36.103950, 137.965630
RECIPIENTS = ("farmer@example.jp",)
NOTIFIER_ID = "satoyama-notifier-sim"
EVENTS_FILTER = events_topic(DEFAULT_TOPIC_PREFIX, "+")


def device_config(
    outbox: Path,
    port: int,
    *,
    warmup_s: float = 60,
    on_s: float = 30,
    max_on_s: float = 120,
    cooldown_s: float = 60,
    reconnect_max_s: float = 2,
) -> str:
    """A paddy-edge device (one PIR on GPIO17, siren GPIO27, strobe GPIO22) on mock pins."""
    return f"""\
[device]
id = "{DEVICE_ID}"
site = "{SITE_ID}"
latitude = {LAT}
longitude = {LON}
description = "simulated paddy edge, north fence"

[uplink]
host = "127.0.0.1"
port = {port}
reconnect_min_s = 0.1
reconnect_max_s = {reconnect_max_s:g}

[outbox]
path = "{outbox}"

[gpio]
pin_factory = "mock"

[sensors.pir_north]
type = "pir"
pin = 17
warmup_s = {warmup_s:g}

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


def notifier_config(
    store: Path, mqtt_port: int, smtp_port: int, language: str = "ja", *, coalesce: bool = True
) -> str:
    """The notifier for the simulated site.  ``coalesce=False`` mails every event
    (tests that count one mail per device event); the default folds bursts as in
    production."""
    recipients = ", ".join(f'"{r}"' for r in RECIPIENTS)
    top = "" if coalesce else "coalesce = []\n\n"
    return f"""\
{top}[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{NOTIFIER_ID}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "satoyama-edge@example.jp"

[store]
path = "{store}"

[delivery]
retry_initial_s = 0.2
retry_max_s = 2
language = "{language}"

[sites.{SITE_ID}]
name = "{SITE_NAME}"
recipients = [{recipients}]
"""


class CloudSide:
    """mosquitto + SMTP server + notifier process, in one folder."""

    def __init__(
        self,
        workdir: Path,
        *,
        language: str = "ja",
        on_mail: Callable[[ReceivedMail], None] | None = None,
        coalesce: bool = True,
        broker_persistence: bool = True,
    ) -> None:
        """``broker_persistence`` off: the broker keeps sessions and queued messages in
        memory only (a crash loses them)."""
        self.workdir = workdir
        self.coalesce = coalesce
        for sub in ("broker", "mail", "notifier"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(workdir=workdir / "broker", persistence=broker_persistence)
        self.mailbox = Mailbox(outdir=workdir / "mail", on_mail=on_mail)
        self.language = language
        self.notifier_config = workdir / "notifier" / "notifier.toml"
        self.notifier_log = workdir / "notifier" / "notifier.log"
        self.notifier: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker, the SMTP server and the notifier; if one fails, the ones
        already running are stopped before the error propagates."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.broker.start()
        self.mailbox.start()
        self.notifier_config.write_text(
            notifier_config(
                self.workdir / "notifier" / "notifier.sqlite3",
                self.broker.port,
                self.mailbox.port,
                self.language,
                coalesce=self.coalesce,
            ),
            encoding="utf-8",
        )
        self.start_notifier()

    def start_notifier(self, timeout: float = 20.0) -> None:
        """Start the notifier process and wait until it has subscribed to events."""
        since = self.broker.log_size()
        log = self.notifier_log.open("ab")
        self.notifier = subprocess.Popen(
            [sys.executable, "-m", "cloud", "run", "--config", str(self.notifier_config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        try:
            self.broker.wait_for_subscription(
                NOTIFIER_ID, EVENTS_FILTER, timeout=timeout, since=since
            )
        except TimeoutError:
            tail = self.notifier_log.read_text(errors="replace")[-2000:]
            self.stop_notifier()
            raise RuntimeError(f"the notifier did not subscribe; its log ends:\n{tail}") from None

    def stop_notifier(self) -> None:
        proc, self.notifier = self.notifier, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        """Stop all three, each whatever the others raise; idempotent."""
        try:
            self.stop_notifier()
        finally:
            try:
                self.mailbox.stop()
            finally:
                self.broker.stop()

    def __enter__(self) -> CloudSide:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
