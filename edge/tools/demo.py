"""``edge demo``: a whole simulated paddy-edge site on one machine.

What runs:

* a private mosquitto on a free loopback port (a subprocess);
* an SMTP server (aiosmtpd) that keeps every mail as an ``.eml`` file;
* the cloud notifier, as its own process, exactly as it runs in the cloud;
* the web console (``satoyama-console serve``) beside it, with one user per role;
* the daemon, in this process, on gpiozero's mock pins;
* a scripted scene: the detector warms up, the sun makes it fire (ignored),
  a wild boar walks past (siren and strobe), lingers, and comes back while the
  deterrent rests.

It prints a timeline and the e-mail that arrived, and exits 0 once the
e-mails the scene should produce were delivered.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

from edge.config import parse
from edge.sim.broker import BrokerError
from edge.sim.mailbox import ReceivedMail
from edge.sim.site import DEMO_USERS, LAT, LON, SITE_NAME, CloudSide, ConsoleSetup, device_config


@dataclass(frozen=True)
class Step:
    at: float  # scene seconds
    say: str
    pir: bool | None = None  # drive the detector's pin high / low


# Scene seconds, with the example config's timing: 60 s warm-up, 30 s on,
# 120 s at most, 60 s rest.
SCENE = [
    Step(0, "power on: the PIR detector warms up for 60 s"),
    Step(20, "sun glints on the lens: the detector fires during its warm-up", pir=True),
    Step(21, "", pir=False),
    Step(70, "a wild boar walks out of the forest past the detector", pir=True),
    Step(72, "", pir=False),
    Step(85, "the boar roots around near the fence: the detector fires again", pir=True),
    Step(87, "", pir=False),
    Step(125, "the boar comes back while the siren rests", pir=True),
    Step(127, "", pir=False),
    Step(140, "the boar is gone; end of scene"),
]
# The first detection is mailed at once; the boar's return belongs to the same
# visit, so the notifier folds it (a summary follows once it has been quiet for
# 15 minutes, after the demo ends).
EXPECTED_MAILS = 1


class Timeline(logging.Handler):
    """Prints the daemon's log lines and the scene's narration with times since start."""

    def __init__(self, t0: float) -> None:
        super().__init__(level=logging.INFO)
        self.t0 = t0

    def line(self, who: str, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.3f} s] {who:<10} {text}", flush=True)

    def emit(self, record: logging.LogRecord) -> None:
        self.line(record.name.split(".")[-1], record.getMessage())


def _text_part(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return str(part.get_content()) if part is not None else "(no text part)"


def print_mail(mail: ReceivedMail) -> None:
    msg = mail.message
    print()
    print("=" * 72)
    print(f"E-mail received ({mail.path}):")
    for header in ("From", "To", "Date", "Subject", "Message-ID"):
        print(f"{header}: {msg[header]}")
    print()
    print(_text_part(msg).rstrip())
    print("=" * 72)


async def _play(timeline: Timeline, output: Path, port: int, speed: float) -> None:
    from edge.daemon import Daemon

    text = device_config(
        output / "device" / "outbox.sqlite3",
        port,
        warmup_s=60 / speed,
        on_s=30 / speed,
        max_on_s=120 / speed,
        cooldown_s=60 / speed,
    )
    (output / "device" / "device.toml").write_text(text, encoding="utf-8")
    daemon = Daemon(parse(text, "demo device config"))
    await daemon.start()
    pir = daemon.pin_factory.pin(17)
    t0 = time.monotonic()
    try:
        for step in SCENE:
            delay = t0 + step.at / speed - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if step.say:
                timeline.line("scene", f"(scene t={step.at:g} s) {step.say}")
            if step.pir is not None:
                # The detector's edge arrives on another thread, as gpiozero's do.
                await asyncio.to_thread(pir.drive_high if step.pir else pir.drive_low)
        deadline = time.monotonic() + 10
        # Polled: no event says "empty" (Outbox.changed is the uplink's to clear).
        while (await daemon.outbox.depth()) > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        await daemon.close()


def run_demo(output: Path, speed: float = 10.0, language: str = "ja") -> int:
    if speed <= 0:
        print("error: --speed must be positive", file=sys.stderr)
        return 2
    t_start = time.monotonic()
    output = output.resolve()
    for sub in ("mail", "device", "notifier", "broker"):
        shutil.rmtree(output / sub, ignore_errors=True)
        (output / sub).mkdir(parents=True)

    timeline = Timeline(t_start)
    loggers = [logging.getLogger(name) for name in ("edge", "drivers")]
    for logger in loggers:
        logger.addHandler(timeline)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    print(f"Satoyama Edge demo: a simulated paddy edge, {SITE_NAME} ({LAT}, {LON})")
    print(f"Scene speed x{speed:g}; output folder {output}")
    print()

    def on_mail(mail: ReceivedMail) -> None:
        timeline.line(
            "smtp", f"e-mail delivered to {', '.join(mail.rcpt_tos)}: {mail.message['Subject']}"
        )

    cloud = CloudSide(output, language=language, on_mail=on_mail, console=ConsoleSetup())
    try:
        try:
            cloud.start()
        except (BrokerError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        timeline.line("demo", f"mosquitto on 127.0.0.1:{cloud.broker.port}")
        timeline.line("demo", f"SMTP server on 127.0.0.1:{cloud.mailbox.port}")
        timeline.line("demo", "cloud notifier running and subscribed to device events")
        timeline.line("demo", f"web console on {cloud.console_url}/ (map tiles from 地理院タイル)")
        for user in (u for u in DEMO_USERS if u.role in ("operator", "farmer")):
            timeline.line("demo", f"  console login ({user.role}): {user.name} / {user.password}")
        asyncio.run(_play(timeline, output, cloud.broker.port, speed))
        try:
            mails = cloud.mailbox.wait_for(EXPECTED_MAILS, timeout=20)
        except TimeoutError as exc:
            print(f"error: {exc}; see {cloud.notifier_log}", file=sys.stderr)
            return 1
        print_mail(mails[0])
        print(
            "\nThe boar's return was reported too (see the timeline); the notifier folded it "
            "into the same visit rather than mailing again, and would send a summary once "
            "the boar had been gone for 15 minutes."
        )
        print(
            f"\nDone in {time.monotonic() - t_start:.1f} s. {len(mails)} e-mail(s) in "
            f"{output / 'mail'}; notifier log {cloud.notifier_log}"
        )
        if sys.stdin.isatty():
            input(f"\nThe console stays open at {cloud.console_url}/ ; press Enter to stop. ")
        return 0
    finally:
        cloud.close()
        for logger in loggers:
            logger.removeHandler(timeline)
            logger.propagate = True
