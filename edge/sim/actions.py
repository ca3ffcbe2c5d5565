"""What each emulated target can be made to do: the stimuli of bench scenarios.

One table, :data:`ACTIONS`, read by the bench (to refuse a scenario with a typo
before anything starts) and by :class:`edge.sim.emulated.EmulatedSite` (to refuse
anything else at run time).  Light to import: msgspec and the configuration only.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Meta

from edge.config import Config
from edge.errors import EdgeError


class EmulationError(EdgeError, ValueError):
    """A stimulus the emulated site cannot apply (unknown target, action or value)."""


Seconds = Annotated[float, Meta(gt=0, le=3600)]
Count = Annotated[int, Meta(ge=1, le=1_000_000)]
Milliamps = Annotated[float, Meta(ge=0, le=30)]
BodyPosture = Literal["supine", "prone", "left", "right"]
Breaths = Annotated[float, Meta(gt=0, le=120)]
NOTHING = None
"""The action takes no value."""

ACTIONS: dict[str, dict[str, Any]] = {
    "pir": {"motion": Seconds | None},
    "trap": {"close": NOTHING, "bounce_close": NOTHING, "open": NOTHING},
    "pressure_probe": {
        "level_cm": float,
        "current_ma": Milliamps,
        "i2c_errors": Count | None,
        "stop_answering": NOTHING,
        "resume": NOTHING,
        "unplug": NOTHING,
        "plug": NOTHING,
    },
    "ultrasonic": {"level_cm": float, "garbage": Count | None, "unplug": NOTHING, "plug": NOTHING},
    "mat": {
        "lie_down": BodyPosture | None,
        "roll_to": BodyPosture,
        "stop_breathing": NOTHING,
        "breathe": Breaths | None,
        "leave": NOTHING,
        "inject_garbage": Count | None,
        "send_bad_crc": Count | None,
        "drop_frames": Count | None,
        "unplug": NOTHING,
        "plug": NOTHING,
    },
    "actuator": {"test": NOTHING},
    "nap": {"acknowledge": str | None},
}
"""What each kind of target can be made to do, and the value each action takes
(a type checked with msgspec; ``None``: no value).  A kind is a sensor's or rule's
``type`` from the configuration, or ``actuator``.  The bench validates scenarios
against this table before anything starts; :meth:`EmulatedSite.apply` refuses
anything else."""


def target_kind(config: Config, target: str) -> str | None:
    """The :data:`ACTIONS` kind of ``target`` in ``config`` (None: no such target)."""
    if target in config.actuators:
        return "actuator"
    thing = config.sensors.get(target) or config.rules.get(target)
    if thing is None:
        return None
    kind = type(thing).__struct_config__.tag
    return kind if isinstance(kind, str) and kind in ACTIONS else None


def check_action(config: Config, target: str, action: str, value: Any) -> Any:
    """The stimulus' value converted for the emulator; :class:`EmulationError` naming
    what is wrong (``target: ...``, ``action: ...`` or ``value: ...``)."""
    kind = target_kind(config, target)
    if kind is None:
        names = sorted(
            [*config.sensors, *config.actuators]
            + [n for n, r in config.rules.items() if target_kind(config, n) == "nap"]
        )
        raise EmulationError(
            f"target: no sensor, actuator or nap rule named {target!r} "
            f"(this site has: {', '.join(names)})"
        )
    actions = ACTIONS[kind]
    if action not in actions:
        raise EmulationError(
            f"action: a {kind} knows {', '.join(repr(a) for a in actions)}, not {action!r}"
        )
    typ = actions[action]
    if typ is NOTHING:
        if value is not None:
            raise EmulationError(f"value: {action!r} takes no value, got {value!r}")
        return None
    try:
        return msgspec.convert(value, typ, strict=False)
    except msgspec.ValidationError as exc:
        text = str(exc)
        shown = "a value" if value is None else repr(value)
        raise EmulationError(
            f"value: {action!r} needs {_describe(typ)}, got {shown} ({text[0].lower()}{text[1:]})"
        ) from None


def _describe(typ: Any) -> str:
    """``Seconds | None`` -> ``seconds (> 0)``: what an action's value is, in words."""
    if get_origin(typ) in (Union, UnionType):
        typ = next(a for a in get_args(typ) if a is not type(None))
    names: list[tuple[Any, str]] = [
        (Seconds, "seconds (> 0)"), (Count, "a count (>= 1)"),
        (Milliamps, "a current in mA (0-30)"),
        (BodyPosture, "a posture ('supine', 'prone', 'left', 'right')"),
        (Breaths, "breaths per minute (> 0)"), (float, "a number"), (str, "text"),
    ]
    return next((name for t, name in names if typ == t), str(typ))
