"""Nap monitoring for one cot: the five-minute check, and the alarms that must not be missed.

Staff today look at every sleeping infant every five minutes and write the
posture down; face-down sleep (うつぶせ寝) and stopped breathing are the
dangers.  :class:`CotRule` does that check and raises the alarms:

* ``posture_check`` every ``check_interval_s`` while the cot is occupied,
  recording the posture (``unknown`` when the model cannot tell: the staff are
  then told that automatic checking stopped, see :class:`ModelDown`);
* ``prone_alarm`` when the infant has lain face down for ``prone_alarm_s``;
* ``apnea_alarm`` when an occupied mat has felt no body motion for
  ``apnea_alarm_s``;
* an alarm **latches**: it ends only when the infant is safe again (not face
  down / moving again / taken out of the cot) **and** a staff member has
  pressed the acknowledge button since the alarm began — a press while the
  child is still face down does not silence it.  ``alarm_cleared`` records
  both, with who acknowledged (the room's button, or a staff member's initials).

Pure state with explicit times; the daemon feeds mat readings and button
presses and drives the buzzer from :attr:`CotRule.sounding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

SAFE_POSTURES = frozenset({"supine", "left", "right", "empty"})


@dataclass(frozen=True)
class PostureCheck:
    posture: str
    """``supine``, ``prone``, ``left``, ``right`` or ``unknown``."""
    probability: float | None


@dataclass(frozen=True)
class AlarmRaised:
    kind: str  # "prone_alarm" | "apnea_alarm"
    posture: str
    duration_s: float
    """How long the condition had lasted when the alarm went off."""


@dataclass(frozen=True)
class AlarmCleared:
    cleared: str
    """The alarm kind that ended."""
    alarm_s: float
    acknowledged_by: str


@dataclass(frozen=True)
class AckWhileUnsafe:
    """The button was pressed while the infant was still unsafe: noted, alarm kept."""

    kind: str


@dataclass(frozen=True)
class ModelDown:
    """The posture model is unavailable: staff must go back to checking by hand."""

    reason: str


@dataclass
class _Alarm:
    kind: str
    since: float
    acknowledged_by: str = ""
    """Who first acknowledged it (``button`` or staff initials); empty: nobody yet."""


@dataclass
class CotRule:
    cot: str
    check_interval_s: float = 300.0
    prone_alarm_s: float = 30.0
    apnea_alarm_s: float = 20.0
    occupied: bool = False
    posture: str = "unknown"
    _prone_since: float | None = None
    _next_check: float | None = None
    _alarms: dict[str, _Alarm] = field(default_factory=dict)
    _model_down_told: bool = False
    _since_motion: float = 0.0
    grid_phase_s: float | None = None
    """When set, checks after the first fall on a grid of ``check_interval_s`` shifted by
    this (the wall clock minus ``t``'s clock), so each lands in its own column of the
    paper-style sheet (12:35, 12:40, ...) instead of drifting across them."""

    @property
    def sounding(self) -> bool:
        """The buzzer must sound while any alarm is latched."""
        return bool(self._alarms)

    @property
    def active_alarms(self) -> list[str]:
        return sorted(self._alarms)

    def update(
        self,
        t: float,
        *,
        occupied: bool,
        seconds_since_motion: float,
        posture: str | None,
        probability: float | None = None,
        model_error: str | None = None,
    ) -> list[object]:
        """One mat reading (with the model's posture, or None when it cannot run)."""
        out: list[object] = []
        if model_error is not None and not self._model_down_told:
            self._model_down_told = True
            out.append(ModelDown(model_error))
        elif model_error is None:
            self._model_down_told = False
        was = self.occupied
        self.occupied = occupied
        self._since_motion = seconds_since_motion
        self.posture = ("empty" if not occupied else posture) or "unknown"
        if occupied and not was:
            self._next_check = t  # the first check as soon as the infant lies down
        if not occupied:
            self._next_check = None
        # Face down, sustained.
        if self.posture == "prone":
            if self._prone_since is None:
                self._prone_since = t
            if "prone_alarm" not in self._alarms and t - self._prone_since >= self.prone_alarm_s:
                self._alarms["prone_alarm"] = _Alarm("prone_alarm", t)
                out.append(AlarmRaised("prone_alarm", "prone", t - self._prone_since))
        else:
            self._prone_since = None
        # No body motion on an occupied mat.
        if (
            occupied
            and seconds_since_motion >= self.apnea_alarm_s
            and "apnea_alarm" not in self._alarms
        ):
            self._alarms["apnea_alarm"] = _Alarm("apnea_alarm", t)
            out.append(AlarmRaised("apnea_alarm", self.posture, seconds_since_motion))
        out += self._try_clear(t, seconds_since_motion)
        if self._next_check is not None and t >= self._next_check:
            out.append(PostureCheck(self.posture, probability))
            self._next_check = self._after(t)
        return out

    def _after(self, t: float) -> float:
        """When the check after one at ``t`` is due."""
        if self.grid_phase_s is None:
            return t + self.check_interval_s
        step = self.check_interval_s
        return (math.floor((t + self.grid_phase_s) / step) + 1) * step - self.grid_phase_s

    def acknowledge(self, t: float, by: str = "button") -> list[object]:
        """A staff member responded (the button, or ``edge nap ack --by``), judged against
        the latest reading: an alarm is silenced only once the infant is safe again."""
        out: list[object] = []
        moving = self._since_motion < self.apnea_alarm_s
        for alarm in self._alarms.values():
            if not alarm.acknowledged_by:
                alarm.acknowledged_by = by or "button"  # never "" (that means: nobody yet)
            if not self._is_safe(alarm.kind, moving):
                out.append(AckWhileUnsafe(alarm.kind))
        return out + self._try_clear(t, self._since_motion)

    def _is_safe(self, kind: str, moving: bool) -> bool:
        if not self.occupied:
            return True
        if kind == "prone_alarm":
            return self.posture in SAFE_POSTURES
        return moving

    def _try_clear(self, t: float, seconds_since_motion: float) -> list[object]:
        out: list[object] = []
        moving = seconds_since_motion < self.apnea_alarm_s
        for kind in list(self._alarms):
            alarm = self._alarms[kind]
            if alarm.acknowledged_by and self._is_safe(kind, moving):
                del self._alarms[kind]
                out.append(AlarmCleared(kind, t - alarm.since, alarm.acknowledged_by))
        return out
