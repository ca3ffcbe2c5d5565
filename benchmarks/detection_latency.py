"""Detection -> siren and detection -> e-mail latency, through real mosquitto and aiosmtpd.

    .venv/bin/python benchmarks/detection_latency.py [--detections 200]

The daemon runs in this process on gpiozero's MockFactory pins; the cloud
notifier is its own process, as in production.  Each detection is a rising
edge driven from a separate thread (as gpiozero's callbacks arrive on their
own threads).

* siren latency: from the detector pin's edge to the siren pin going high
  (MockPin's own change timestamps);
* e-mail latency: from the event's timestamp (taken on the callback thread at
  the edge) to the SMTP server accepting the mail.

Baseline in the same run: gpiozero's polling ``MotionSensor`` (10 Hz) driving
the same siren, which is what an edge-triggered input avoids.  An animal does
not wait for the sampler: each baseline edge comes at a random phase to the
sensor's 100 ms sampling (uniform), so the baseline's latency is uniform over
0-100 ms (mean ~50 ms) plus its callback, not a constant 100 ms as it would be
if every edge followed right after the tick that saw the previous one clear.

Targets (issue 2): siren p99 < 5 ms; e-mail p50 < 300 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import aiomqtt
from gpiozero import MotionSensor
from gpiozero.pins.mock import MockFactory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drivers.siren import Siren
from edge.config import parse
from edge.daemon import Daemon
from edge.event import decode
from edge.sim.mailbox import ReceivedMail
from edge.sim.site import CloudSide, device_config

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def summary(name: str, ms: list[float]) -> str:
    return (
        f"{name:<34} n={len(ms):4d}  p50={pct(ms, 50):8.3f} ms  p99={pct(ms, 99):8.3f} ms  "
        f"max={max(ms):8.3f} ms  mean={statistics.fmean(ms):8.3f} ms"
    )


def baseline_polling(n: int, seed: int = 2) -> list[float]:
    """gpiozero MotionSensor (samples at 10 Hz on its own thread) -> siren.

    Each edge waits a random part of the sampling period after the previous
    detection cleared (which the sampler saw at one of its own ticks), so the
    edges fall at a uniformly random phase to the sampler's ticks.
    """
    rate_hz = 10
    rng = random.Random(seed)
    factory = MockFactory()
    siren = Siren(27, pin_factory=factory)
    sensor = MotionSensor(17, pin_factory=factory, queue_len=1, sample_rate=rate_hz, threshold=0.5)
    sensor.when_motion = siren.on
    pir, siren_pin = factory.pin(17), factory.pin(27)
    out = []
    for _ in range(n):
        siren.off()
        time.sleep(rng.uniform(0, 1 / rate_hz))  # a random phase to the sampler's ticks
        t0 = time.monotonic()
        pir.drive_high()
        deadline = t0 + 2
        while not siren_pin.state and time.monotonic() < deadline:
            time.sleep(0.0005)
        out.append((siren_pin._last_change - t0) * 1000)
        pir.drive_low()
        while sensor.motion_detected and time.monotonic() < deadline + 1:
            time.sleep(0.001)
    sensor.close()
    siren.close()
    factory.reset()
    return out


async def run(n: int, spacing: float, workdir: Path) -> tuple[list[float], list[float]]:
    mail_at: dict[str, float] = {}
    got_all = threading.Event()

    def on_mail(mail: ReceivedMail) -> None:
        m = UUID_RE.search(str(mail.message["Message-ID"]))
        if m:
            mail_at[m.group(0)] = mail.received_at
            if len(mail_at) >= n:
                got_all.set()

    # Every detection is its own mail here (no folding of bursts): we time each one.
    with CloudSide(workdir, on_mail=on_mail, coalesce=False) as cloud:
        text = device_config(
            workdir / "outbox.sqlite3", cloud.broker.port,
            warmup_s=0, on_s=spacing / 4, max_on_s=spacing / 4, cooldown_s=0,
        )
        event_ts: dict[str, float] = {}
        async with aiomqtt.Client("127.0.0.1", cloud.broker.port) as spy:
            await spy.subscribe("satoyama/v1/+/events", qos=1)

            async def collect() -> None:
                async for msg in spy.messages:
                    ev = decode(msg.payload)
                    event_ts[ev.id] = ev.ts.timestamp()

            spy_task = asyncio.create_task(collect())
            async with Daemon(parse(text)) as daemon:
                assert daemon.uplink is not None
                await daemon.uplink.connected.wait()
                pir = daemon.pin_factory.pin(17)
                siren_pin = daemon.pin_factory.pin(27)
                siren_ms: list[float] = []

                def stimulus() -> None:
                    for _ in range(n):
                        while siren_pin.state:  # wait for the rule to switch off
                            time.sleep(0.0005)
                        t0 = time.monotonic()
                        pir.drive_high()
                        siren_ms.append((siren_pin._last_change - t0) * 1000)
                        pir.drive_low()
                        time.sleep(spacing)

                await asyncio.to_thread(stimulus)
                if not await asyncio.to_thread(got_all.wait, 60):
                    raise SystemExit(f"only {len(mail_at)} of {n} e-mails arrived")
            spy_task.cancel()
    mail_ms = [(mail_at[i] - event_ts[i]) * 1000 for i in mail_at if i in event_ts]
    return siren_ms, mail_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detections", type=int, default=200)
    parser.add_argument("--spacing", type=float, default=0.05, help="seconds between detections")
    parser.add_argument("--baseline", type=int, default=200, help="detections for the baseline")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="satoyama-bench-") as tmp:
        siren_ms, mail_ms = asyncio.run(run(args.detections, args.spacing, Path(tmp)))
    base = baseline_polling(args.baseline)
    print(summary("detection -> siren (edge)", siren_ms))
    print(summary("detection -> siren (10 Hz polling)", base))
    print(summary("detection -> e-mail received", mail_ms))
    print(
        f"siren p99 {pct(siren_ms, 99):.3f} ms (target < 5 ms): "
        f"{'PASS' if pct(siren_ms, 99) < 5 else 'FAIL'}; "
        f"polling baseline p50 is {pct(base, 50) / max(pct(siren_ms, 50), 1e-6):.0f}x slower"
    )
    print(
        f"e-mail p50 {pct(mail_ms, 50):.1f} ms (target < 300 ms): "
        f"{'PASS' if pct(mail_ms, 50) < 300 else 'FAIL'}"
    )


if __name__ == "__main__":
    main()
