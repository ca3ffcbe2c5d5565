"""The nap room as a daemon task: each cot's mat readings through the posture model and
:class:`edge.nursery.cot.CotRule`, the buzzer, the staff's acknowledgements, events and the
local check sheet.

Acknowledgements record who responded: the room's button (``button``) or a staff
member's initials from ``edge nap ack --by`` (another process; its request
waits in the nap log until taken here).  Either way an alarm stops only once the
infant is safe again: acknowledging never silences a child still face down.

A posture the model cannot tell (``unknown``) for ``unknown_prompt_s`` on an occupied
cot is "look now" (見てください): the buzzer chirps (two short beeps every
``CHIRP_PERIOD_S``, unlike the alarm's steady tone, which always wins), a
``posture_unknown`` event tells the nursery, and the sheet marks it until the model
answers again.  A press of the button (or ``edge nap ack``) records that someone looked
and quietens the chirp until the next five-minute check.

A remote acknowledgement (``cmd/nap_ack``: a person saw a cot's alarm in the cloud
console and is on the way) is written on the sheet and nothing else: the buzzer, the
latched alarm and the look-now prompt are exactly as they were.  Only someone in the
room (the button, ``edge nap ack``) and a child safe again end an alarm.

A mat that cannot be read (silent, or reading zero everywhere) puts its cot in
"check by hand": the sheet says so for those minutes (never "empty"), the cot's
latched alarms stay latched, and the mat's ``sensor_fault`` tells the staff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edge import event as ev
from edge.config import NapRuleConfig
from edge.devices.actuators import Actuator
from edge.link.recorder import Record
from edge.nursery.cot import (
    AckWhileUnsafe,
    AlarmCleared,
    AlarmRaised,
    CotRule,
    LookNow,
    LookNowEnded,
    ModelDown,
    PostureCheck,
)
from edge.nursery.log import REMOTE_ACK, NapLog
from edge.nursery.mat_watch import MatWatch

if TYPE_CHECKING:
    from edge.inference.runtime import PostureModel

log = logging.getLogger(__name__)

TICK_S = 0.5
STALE_S = 5.0
"""A mat with no good frame for this long is silent: its cot is checked by hand."""
REQUEST_POLL_S = 1.0
BUTTON = "button"
"""Who acknowledged, for the room's button (it cannot tell who pressed it)."""
LOOK_NOW = "posture_unknown"
"""The look-now prompt's name in the nap log and on the wire."""
MODEL = "model"
"""Who ended a look-now prompt: the posture model, reading the cot again."""
REMOTE_ACK_SLACK_S = 10.0
"""A remote acknowledgement names an alarm only if it went off no later than this after
the console's ``at`` (clocks differ a little): never one that began after the person
looked (a command that waited in the broker while the device was offline)."""
CHIRP_PERIOD_S = 10.0
CHIRP: tuple[bool, ...] = (True, False, True) + (False,) * (round(CHIRP_PERIOD_S / TICK_S) - 3)
"""The look-now prompt, one entry per tick: two short beeps, then quiet until the period
ends.  The buzzer is a steady-on load (on/off only), so the pattern is made of ticks."""


class NapWatch:
    def __init__(
        self,
        name: str,
        config: NapRuleConfig,
        mats: dict[str, MatWatch],
        buzzer: Actuator,
        *,
        record: Record,
        log_path: Path,
    ) -> None:
        self.name = name
        self.config = config
        self.mats = {m: mats[m] for m in config.mats}
        self.buzzer = buzzer
        self.record = record
        self.cots = {
            m: CotRule(
                mats[m].config.cot,
                check_interval_s=config.check_interval_s,
                prone_alarm_s=config.prone_alarm_s,
                apnea_alarm_s=config.apnea_alarm_s,
                prone_reset_s=config.prone_reset_s,
                unknown_prompt_s=config.unknown_prompt_s,
            )
            for m in config.mats
        }
        self.model: PostureModel | None = None
        self.model_error: str | None = None
        self.log = NapLog(log_path)
        """The sheet's record (:func:`edge.nursery.log.nap_log_path`: the state directory)."""
        self._acks: asyncio.Queue[tuple[float, str, int | None]] = asyncio.Queue()
        self._by_hand: dict[str, str] = {}
        """Mat -> the fault that put its cot in 'check by hand'."""
        self._seen: set[str] = set()
        self._buzzer_on = False
        """What this watch last set the buzzer to."""
        self._chirp = 0
        """The look-now pattern's position (ticks since the prompt began sounding)."""
        self._next_poll = 0.0
        self._raised: dict[tuple[str, str], float] = {}
        """(cot, alarm kind or ``posture_unknown``) -> when it went off (wall clock), while
        it is open: what a remote acknowledgement may name."""

    def load_model(self) -> None:
        try:
            from edge.inference.runtime import PostureModel

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
        loop.call_soon_threadsafe(self._acks.put_nowait, (time.monotonic(), BUTTON, None))

    def by_hand(self) -> list[str]:
        """The cots whose mats cannot be read now: staff check them by hand."""
        return sorted(self.cots[m].cot for m in self._by_hand)

    async def run(self) -> None:
        await asyncio.to_thread(self.load_model)
        if self.model_error is not None:
            await self.record(
                ev.SensorFault(sensor=f"{self.name}.posture_model", fault="model_unavailable",
                            message=self.model_error + "; check the cots by hand")
            )
        try:
            while True:
                await self._tick()
                try:
                    # Not wait_for: on Python 3.11 it can swallow a cancellation
                    # (see edge/timed_wait.py) and lose the item it took.
                    async with asyncio.timeout(TICK_S):
                        t_ack, by, request = await self._acks.get()
                except TimeoutError:
                    continue
                await self._acknowledge(t_ack, by, request)
        except asyncio.CancelledError:
            self.buzzer.off()  # the daemon stops; a crash leaves an alarm sounding
            raise

    def close(self) -> None:
        """The daemon stops: silence the buzzer and close the nap log.  Idempotent."""
        self.buzzer.off()
        self.log.close()

    async def _acknowledge(self, t: float, by: str, request: int | None) -> None:
        """Someone responded: every latched alarm in the room is acknowledged by them; with
        none latched, it is a staff round (a check) on the sheet."""
        now = time.time()
        answered: list[str] = []
        unsafe: list[str] = []
        for mat, cot in self.cots.items():
            latched = cot.active_alarms
            if cot.prompting:
                self.log.add(cot.cot, "ack", LOOK_NOW, now, by=by)
                cot.acknowledge(t, by)
                answered.append(f"{cot.cot} look now")
            if not latched:
                continue
            for kind in latched:
                self.log.add(cot.cot, "ack", kind, now, by=by)
            outcomes = cot.acknowledge(t, by)
            unsafe += [f"{cot.cot} {o.kind}" for o in outcomes if isinstance(o, AckWhileUnsafe)]
            answered += [f"{cot.cot} {k}" for k in latched]
            await self._handle(mat, outcomes)
        if not answered:
            self.log.add("", "staff_check", "", now, by=by)
            outcome = "no alarm: recorded as a check"
        elif unsafe:
            outcome = ("acknowledged " + ", ".join(answered) + "; still sounding for "
                       + ", ".join(unsafe) + " until the child is safe (turned onto the back "
                       "or side, moving again)")
        else:
            outcome = "acknowledged and cleared " + ", ".join(answered)
        if any(a.endswith(" look now") for a in answered):
            outcome += ("; look now: the posture is still unknown, look again at the next "
                        "five-minute check")
        log.info("acknowledged by %s: %s", by, outcome)
        if request is not None:
            await asyncio.to_thread(self.log.answer, request, outcome)
        self._drive_buzzer()

    def remote_acknowledge(self, cot: str, *, by: str, at: float, ident: str = "") -> bool:
        """``cmd/nap_ack``: ``by`` saw ``cot``'s alarm in the console at ``at`` (Unix time)
        and is on the way.  Written on the sheet as a remote acknowledgement of the alarms
        of the cot open now that went off by then (none: recorded as such, visibly); the
        alarm state, the buzzer and the prompt are not touched.  False: no such cot here."""
        rule = next((c for c in self.cots.values() if c.cot == cot), None)
        if rule is None:
            return False
        now = time.time()
        kinds = list(rule.active_alarms) + ([LOOK_NOW] if rule.looking else [])
        seen = [k for k in kinds
                if self._raised.get((cot, k), float("-inf")) <= at + REMOTE_ACK_SLACK_S]
        self.log.add(cot, REMOTE_ACK, ",".join(seen), now, by=by)
        if seen:
            log.warning("cot %s: %s acknowledged remotely by %s (%s): still sounding until "
                        "someone in the room acknowledges and the child is safe",
                        cot, ", ".join(seen), by, ident)
        else:
            log.info("cot %s: remote acknowledgement by %s (%s) with no alarm sounding%s",
                     cot, by, ident, " that had gone off by then" if kinds else "")
        return True

    async def _poll_requests(self, t: float) -> None:
        """``edge nap ack`` requests for this room, waiting in the nap log."""
        if t < self._next_poll:
            return
        self._next_poll = t + REQUEST_POLL_S
        taken = await asyncio.to_thread(self.log.take_requests, self.name, time.time())
        for request, by in taken:
            self._acks.put_nowait((time.monotonic(), by, request))

    async def _tick(self) -> None:
        t = time.monotonic()
        await self._poll_requests(t)
        phase = time.time() - t
        for mat_name, cot in self.cots.items():
            watch = self.mats[mat_name]
            reading = watch.last
            fault = watch.fault or (
                "no_answer" if reading is not None and t - reading.t > STALE_S else None)
            if fault != self._by_hand.get(mat_name):
                self._check_by_hand(mat_name, fault)
            if reading is None or fault is not None:
                continue  # alarms stay latched; the sheet says "check by hand"
            if mat_name not in self._seen:
                # The first good reading since the daemon started: whatever an earlier run
                # left open ends here at the latest (a fault it did not see recover, a nap
                # whose child was picked up while the daemon was down).
                self._seen.add(mat_name)
                now = time.time()
                self.log.add(cot.cot, "by_hand_end", "start", now)
                self.log.add(cot.cot, f"{LOOK_NOW}_end", "start", now)
                if not reading.occupied:
                    self.log.add(cot.cot, "wake", "start", now)
            cot.grid_phase_s = phase
            was = cot.occupied
            posture, prob, error = None, None, self.model_error
            if reading.occupied and self.model is not None and watch.last_frame is not None:
                signals = watch.signals
                # The mat's calibrated empty level, per cell: the model judges the load
                # above it (a copy: the calibration follows drift on this thread).
                level = (list(signals.calibration.level)
                         if signals is not None and signals.calibration is not None else None)
                try:
                    # self.model.classify(frame, empty_level=level), off the event loop.
                    posture, prob = await asyncio.to_thread(
                        self.model.classify, watch.last_frame, empty_level=level
                    )
                except Exception as exc:  # noqa: BLE001 - a model failure must not stop alarms
                    error = f"posture model failed: {exc}"
            outcomes = cot.update(
                t,
                occupied=reading.occupied,
                seconds_since_motion=reading.seconds_since_motion,
                posture=posture,
                probability=prob,
                model_error=error,
            )
            if cot.occupied != was:
                self.log.add(cot.cot, "nap_start" if cot.occupied else "wake", "", time.time())
            await self._handle(mat_name, outcomes)
        self._drive_buzzer(tick=True)

    def _check_by_hand(self, mat: str, fault: str | None) -> None:
        cot = self.cots[mat].cot
        now = time.time()
        old = self._by_hand.pop(mat, None)
        if old is not None:
            self.log.add(cot, "by_hand_end", old, now)
        if fault is not None:
            self._by_hand[mat] = fault
            self.log.add(cot, "by_hand", fault, now)
            log.warning("cot %s: the mat cannot be read (%s): check the cot by hand", cot, fault)
        else:
            log.info("cot %s: the mat reads again", cot)

    def _drive_buzzer(self, *, tick: bool = False) -> None:
        """On while any alarm is latched (again and again: a test pattern that ended does not
        silence an alarm); else the look-now chirp while a cot prompts (``tick``: advance
        it); off once, when the last alarm clears and no cot prompts."""
        if any(c.sounding for c in self.cots.values()):
            want = True
            self._chirp = 0
        elif any(c.prompting for c in self.cots.values()):
            want = CHIRP[self._chirp % len(CHIRP)]
            if tick:
                self._chirp += 1
        else:
            want = False
            self._chirp = 0
        if want:
            self.buzzer.on()
        elif self._buzzer_on:
            self.buzzer.off()
        self._buzzer_on = want

    async def _handle(self, mat: str, outcomes: list[object]) -> None:
        cot = self.cots[mat].cot
        now = time.time()
        for o in outcomes:
            if isinstance(o, AlarmRaised):
                self.buzzer.on()  # at once, before anything is written
                log.warning("cot %s: %s", cot, o.kind)
                self._raised[(cot, o.kind)] = now
                self.log.add(cot, o.kind, o.posture, now)
                alarm: ev.ApneaAlarm | ev.ProneAlarm
                if o.kind == "apnea_alarm":
                    alarm = ev.ApneaAlarm(
                        cot=cot, posture=o.posture, still_s=round(o.duration_s, 1)
                    )
                else:
                    alarm = ev.ProneAlarm(
                        cot=cot, posture=o.posture, duration_s=round(o.duration_s, 1)
                    )
                await self.record(alarm)
            elif isinstance(o, PostureCheck):
                self.log.add(cot, "posture_check", o.posture, now)
                await self.record(
                    ev.PostureCheck(
                        cot=cot, posture=o.posture,
                        probability=None if o.probability is None else round(o.probability, 3),
                    )
                )
            elif isinstance(o, AlarmCleared):
                self._raised.pop((cot, o.cleared), None)
                self.log.add(cot, "alarm_cleared", o.cleared, now, by=o.acknowledged_by)
                await self.record(
                    # Who by name stays on the device (the sheet); the event says how.
                    ev.AlarmCleared(
                        cot=cot, cleared=o.cleared,
                        acknowledged_by=BUTTON if o.acknowledged_by == BUTTON else "staff",
                        alarm_s=round(o.alarm_s, 1),
                    )
                )
            elif isinstance(o, AckWhileUnsafe):
                log.warning("cot %s: %s acknowledged but the infant is not safe yet: "
                            "the alarm keeps sounding", cot, o.kind)
            elif isinstance(o, LookNow):
                log.warning("cot %s: posture unknown for %.0f s: look now", cot, o.unknown_s)
                self._raised[(cot, LOOK_NOW)] = now
                self.log.add(cot, LOOK_NOW, "unknown", now)
                await self.record(ev.PostureUnknown(cot=cot, unknown_s=round(o.unknown_s, 1)))
            elif isinstance(o, LookNowEnded):
                log.info("cot %s: the posture model answers again (%s after %.0f s unknown)",
                         cot, o.posture, o.unknown_s)
                raised = self._raised.pop((cot, LOOK_NOW), None)
                self.log.add(cot, f"{LOOK_NOW}_end", o.posture, now)
                # The nursery was told to look: it hears that the prompt is over, too.
                await self.record(
                    ev.AlarmCleared(
                        cot=cot, cleared=LOOK_NOW, acknowledged_by=MODEL,
                        alarm_s=round(now - raised if raised is not None else o.unknown_s, 1),
                        posture=o.posture,
                    )
                )
            elif isinstance(o, ModelDown):
                log.error("cot %s: %s", cot, o.reason)
