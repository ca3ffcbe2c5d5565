"""Nap monitoring for one cot: the five-minute check, and the alarms that must not be missed.

Staff today look at every sleeping infant every five minutes and write the
posture down; face-down sleep (うつぶせ寝) and stopped breathing are the
dangers.  :class:`CotRule` does that check and raises the alarms:

* ``posture_check`` every ``check_interval_s`` while the cot is occupied,
  recording the posture (``unknown`` when the model cannot tell: the staff are
  then told that automatic checking stopped, see :class:`ModelDown`);
* ``prone_alarm`` when the infant has lain face down for ``prone_alarm_s``, smoothed
  over ticks (below);
* ``apnea_alarm`` when an occupied mat has felt no body motion for
  ``apnea_alarm_s``;
* ``posture_unknown`` ("look now", 見てください) when the model has not been able to
  tell the posture of an occupied cot for ``unknown_prompt_s``: a distinct prompt to
  the staff, never counted as safe; it ends when the model answers again
  (:class:`LookNowEnded`), and a staff member's acknowledgement quietens it until
  the next five-minute check;
* an alarm **latches**: it ends only when the infant is safe again (not face
  down / moving again / taken out of the cot) **and** a staff member has
  pressed the acknowledge button since the alarm began — a press while the
  child is still face down does not silence it.  ``alarm_cleared`` records
  both, with who acknowledged (the room's button, or a staff member's initials).

**Smoothing.**  The model is read every tick (half a second) and one misread tick
must not restart the 30-s count.  A *face-down episode* begins with the first
``prone`` reading and goes on through ``unknown`` readings (never safe) and through
safe readings (on the back, on the side, out of the cot) until these have lasted
``prone_reset_s`` without a break; the alarm goes off once the episode has lasted
``prone_alarm_s`` and at least ``PRONE_SHARE`` (40 %) of the answered readings of
the last ``prone_alarm_s`` said face down, whatever the current tick reads.  The
share keeps scattered misreads of a child on its back (a tick in five read
"prone") from adding up to an alarm, while a face-down child read correctly only
every other answered tick still raises one.  A latched face-down alarm
likewise counts the child as safe again only after ``prone_reset_s`` of safe
readings.  The "look now" count is smoothed the same way: it ends only after the
model has answered (any posture, or the cot emptied) for ``prone_reset_s``.

Pure state with explicit times; the daemon feeds mat readings and button
presses and drives the buzzer from :attr:`CotRule.sounding`.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

SAFE_POSTURES = frozenset({"supine", "left", "right", "empty"})
PRONE_SHARE = 0.4
"""Share of the answered readings of the last ``prone_alarm_s`` that must say face
down for the face-down alarm (unknown readings are not counted either way)."""


def posture_on_cot(occupied: bool, posture: str | None) -> str:
    """The posture the rule works with: ``empty`` where the load says nobody lies there, the
    model's answer where it does, and ``unknown`` where the model has none, or sees nobody
    although the mat feels a child (a light child on a soft mattress): never the safe
    ``empty``."""
    if not occupied:
        return "empty"
    if not posture or posture == "empty":
        return "unknown"
    return posture


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
class LookNow:
    """The model could not tell the posture for ``unknown_s`` on an occupied cot: look now."""

    unknown_s: float


@dataclass(frozen=True)
class LookNowEnded:
    """The model answers again (or the cot emptied): the look-now prompt ends."""

    unknown_s: float
    """How long the posture had been unknown, from its first unknown reading."""
    posture: str
    """What the model answers now (``empty``: the child was taken out)."""


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
    prone_reset_s: float = 3.0
    """Safe readings must last this long, unbroken, to end a face-down episode or to
    count a latched face-down alarm's child as safe (one tick: 0 s)."""
    unknown_prompt_s: float = 20.0
    """``unknown`` this long on an occupied cot: the look-now prompt."""
    occupied: bool = False
    posture: str = "unknown"
    _prone_since: float | None = None
    """When the face-down episode began (None: none now)."""
    _safe_since: float | None = None
    """When the current unbroken run of safe readings began (None: the latest is not safe)."""
    _unknown_since: float | None = None
    """When the current stretch of unknown posture began (None: none now)."""
    _answered_since: float | None = None
    """When the model's current unbroken run of answers began (inside an unknown stretch)."""
    _look: float | None = None
    """When the look-now prompt went off (None: not prompting)."""
    _look_quiet_until: float | None = None
    """A staff member acknowledged the prompt: quiet until then (the next check)."""
    _last_t: float = 0.0
    _answers: deque[tuple[float, bool]] = field(default_factory=deque)
    """(t, face down?) of the answered readings (not unknown) of the last prone_alarm_s."""
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

    @property
    def looking(self) -> bool:
        """A look-now prompt is open (until the model answers again)."""
        return self._look is not None

    @property
    def prompting(self) -> bool:
        """The look-now chirp must sound: a prompt is open, no alarm of this cot sounds
        (an alarm takes precedence) and no staff member has answered it lately."""
        if self._look is None or self._alarms:
            return False
        return self._look_quiet_until is None or self._last_t >= self._look_quiet_until

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
        self._last_t = t
        self.posture = posture_on_cot(occupied, posture)
        if occupied and not was:
            self._next_check = t  # the first check as soon as the infant lies down
        if not occupied:
            self._next_check = None
        if self.posture != "unknown":
            self._answers.append((t, self.posture == "prone"))
        while self._answers and self._answers[0][0] <= t - self.prone_alarm_s:
            self._answers.popleft()
        if self.posture in SAFE_POSTURES:
            if self._safe_since is None:
                self._safe_since = t
        else:
            self._safe_since = None  # face down or unknown: never safe
        # Face down, sustained (smoothed: see the module's docstring).
        if self.posture == "prone":
            if self._prone_since is None:
                self._prone_since = t
        elif self._prone_since is not None and self._safe_for(t):
            self._prone_since = None
        if (
            self._prone_since is not None
            and "prone_alarm" not in self._alarms
            and t - self._prone_since >= self.prone_alarm_s
            and self._prone_share() >= PRONE_SHARE
        ):
            self._alarms["prone_alarm"] = _Alarm("prone_alarm", t)
            out.append(AlarmRaised("prone_alarm", "prone", t - self._prone_since))
        # No body motion on an occupied mat.
        if (
            occupied
            and seconds_since_motion >= self.apnea_alarm_s
            and "apnea_alarm" not in self._alarms
        ):
            self._alarms["apnea_alarm"] = _Alarm("apnea_alarm", t)
            out.append(AlarmRaised("apnea_alarm", self.posture, seconds_since_motion))
        out += self._try_clear(t, seconds_since_motion)
        out += self._look_now(t, model_error)
        if self._next_check is not None and t >= self._next_check:
            out.append(PostureCheck(self.posture, probability))
            self._next_check = self._after(t)
        return out

    def _prone_share(self) -> float:
        """Share of the answered readings of the last ``prone_alarm_s`` that said face
        down (1.0 with none answered: unknown readings never count as safe)."""
        if not self._answers:
            return 1.0
        return sum(prone for _, prone in self._answers) / len(self._answers)

    def _safe_for(self, t: float) -> bool:
        """Safe readings have lasted ``prone_reset_s`` without a break."""
        return self._safe_since is not None and t - self._safe_since >= self.prone_reset_s

    def _look_now(self, t: float, model_error: str | None) -> list[object]:
        """The model abstains on an occupied cot: after ``unknown_prompt_s``, look now.

        A model that is down is not abstaining: :class:`ModelDown` has told the staff
        to check by hand, so it prompts nothing here."""
        if self.posture == "unknown" and model_error is None:
            self._answered_since = None
            if self._unknown_since is None:
                self._unknown_since = t
        elif self._unknown_since is not None:
            if self._answered_since is None:
                self._answered_since = t
            if t - self._answered_since >= self.prone_reset_s or model_error is not None:
                since, self._unknown_since, self._answered_since = self._unknown_since, None, None
                if self._look is not None:
                    self._look = self._look_quiet_until = None
                    return [LookNowEnded(t - since, self.posture)]
            return []
        if (
            self._look is None
            and self._unknown_since is not None
            and t - self._unknown_since >= self.unknown_prompt_s
            and self._prone_since is None  # a face-down alarm comes or sounds: it wins
            and not self._alarms
        ):
            self._look = t
            return [LookNow(t - self._unknown_since)]
        return []

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
        if self._look is not None:
            # Someone looked: quiet until the next five-minute check, when a posture
            # still unknown is a reason to look again.
            self._look_quiet_until = t + self.check_interval_s
        for alarm in self._alarms.values():
            if not alarm.acknowledged_by:
                alarm.acknowledged_by = by or "button"  # never "" (that means: nobody yet)
            if not self._is_safe(alarm.kind, moving, t):
                out.append(AckWhileUnsafe(alarm.kind))
        return out + self._try_clear(t, self._since_motion)

    def _is_safe(self, kind: str, moving: bool, t: float) -> bool:
        if kind == "prone_alarm":
            return self._safe_for(t)  # out of the cot counts, after the same confirm time
        if not self.occupied:
            return True
        return moving

    def _try_clear(self, t: float, seconds_since_motion: float) -> list[object]:
        out: list[object] = []
        moving = seconds_since_motion < self.apnea_alarm_s
        for kind in list(self._alarms):
            alarm = self._alarms[kind]
            if alarm.acknowledged_by and self._is_safe(kind, moving, t):
                del self._alarms[kind]
                out.append(AlarmCleared(kind, t - alarm.since, alarm.acknowledged_by))
        return out
