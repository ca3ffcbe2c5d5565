"""The nap room as a daemon task: each cot's mat readings through the posture model and
:class:`edge.nap.CotWatch`, the buzzer, the staff's acknowledge button, events and the
local check sheet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.config import NapRuleConfig
from edge.mat_watch import MatWatch
from edge.nap import AckWhileUnsafe, AlarmCleared, AlarmRaised, CotWatch, ModelDown, PostureCheck
from edge.naplog import NapLog

log = logging.getLogger(__name__)

Record = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
TICK_S = 0.5


class NapWatch:
    def __init__(
        self,
        name: str,
        config: NapRuleConfig,
        mats: dict[str, MatWatch],
        buzzer: Any,
        *,
        record: Record,
    ) -> None:
        self.name = name
        self.config = config
        self.mats = {m: mats[m] for m in config.mats}
        self.buzzer = buzzer
        self.record = record
        self.cots = {
            m: CotWatch(
                mats[m].config.cot,
                check_interval_s=config.check_interval_s,
                prone_alarm_s=config.prone_alarm_s,
                apnea_alarm_s=config.apnea_alarm_s,
            )
            for m in config.mats
        }
        self.model: Any = None
        self.model_error: str | None = None
        self.log = NapLog(config.log_path)
        self._acks: asyncio.Queue[float] = asyncio.Queue()

    def load_model(self) -> None:
        try:
            from edge.inference import PostureModel

            if self.config.model_dir:
                folder = Path(self.config.model_dir)
                self.model = PostureModel.load(folder / "posture.tflite", folder / "card.json")
            else:
                self.model = PostureModel.load()  # the model shipped with the daemon
            self.model_error = None
        except Exception as exc:  # noqa: BLE001 - any failure means: check by hand
            self.model = None
            self.model_error = f"posture model unavailable: {exc}"
            log.error("%s", self.model_error)

    def acknowledge_from_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        """The button's callback (gpiozero's thread)."""
        loop.call_soon_threadsafe(self._acks.put_nowait, time.monotonic())

    async def run(self) -> None:
        await asyncio.to_thread(self.load_model)
        if self.model_error is not None:
            await self.record(
                "sensor_fault",
                "warning",
                {"sensor": f"{self.name}.posture_model", "fault": "model_unavailable",
                 "message": self.model_error + "; check the cots by hand"},
            )
        try:
            while True:
                await self._tick()
                try:
                    # Not wait_for: on Python 3.11 it can swallow a cancellation
                    # (see edge/timed_wait.py) and lose the item it took.
                    async with asyncio.timeout(TICK_S):
                        t_ack = await self._acks.get()
                except TimeoutError:
                    continue
                for mat, cot in self.cots.items():
                    await self._handle(mat, cot.acknowledge(t_ack))
                self._drive_buzzer()
        except asyncio.CancelledError:
            self.buzzer.off()  # the daemon stops; a crash leaves an alarm sounding
            raise

    def close(self) -> None:
        """The daemon stops: silence the buzzer and close the nap log.  Idempotent."""
        self.buzzer.off()
        self.log.close()

    async def _tick(self) -> None:
        t = time.monotonic()
        for mat_name, cot in self.cots.items():
            watch = self.mats[mat_name]
            reading = watch.last
            if reading is None or t - reading.t > 5:
                continue  # a silent mat is a sensor fault of its own; alarms stay latched
            posture, prob, error = None, None, self.model_error
            if reading.occupied and self.model is not None and watch.last_frame is not None:
                try:
                    posture, prob = await asyncio.to_thread(
                        self.model.classify, watch.last_frame
                    )
                except Exception as exc:  # noqa: BLE001
                    error = f"posture model failed: {exc}"
            outcomes = cot.update(
                t,
                occupied=reading.occupied,
                seconds_since_motion=reading.seconds_since_motion,
                posture=posture,
                probability=prob,
                model_error=error,
            )
            await self._handle(mat_name, outcomes)
        self._drive_buzzer()

    def _drive_buzzer(self) -> None:
        if any(c.sounding for c in self.cots.values()):
            self.buzzer.on()
        else:
            self.buzzer.off()

    async def _handle(self, mat: str, outcomes: list[object]) -> None:
        cot = self.cots[mat].cot
        now = time.time()
        for o in outcomes:
            if isinstance(o, AlarmRaised):
                self.buzzer.on()  # at once, before anything is written
                log.warning("cot %s: %s", cot, o.kind)
                self.log.add(cot, o.kind, o.posture, now)
                data: dict[str, Any] = {"cot": cot, "posture": o.posture}
                if o.kind == "apnea_alarm":
                    data["still_s"] = round(o.duration_s, 1)
                else:
                    data["duration_s"] = round(o.duration_s, 1)
                await self.record(o.kind, "alarm", data)
            elif isinstance(o, PostureCheck):
                self.log.add(cot, "posture_check", o.posture, now)
                await self.record(
                    "posture_check",
                    "info",
                    {"cot": cot, "posture": o.posture,
                     "probability": None if o.probability is None else round(o.probability, 3)},
                )
            elif isinstance(o, AlarmCleared):
                self.log.add(cot, "alarm_cleared", o.cleared, now)
                await self.record(
                    "alarm_cleared",
                    "info",
                    {"cot": cot, "cleared": o.cleared, "acknowledged_by": o.acknowledged_by,
                     "alarm_s": round(o.alarm_s, 1)},
                )
            elif isinstance(o, AckWhileUnsafe):
                log.warning("cot %s: %s acknowledged but the infant is not safe yet: "
                            "the alarm keeps sounding", cot, o.kind)
            elif isinstance(o, ModelDown):
                log.error("cot %s: %s", cot, o.reason)
