"""The console's pure rule: one stored event (or one reading, or one person's action) and a
device's previous memory give its next memory; :func:`view` turns a memory into the
:class:`~cloud.console.model.DeviceState` the map draws.

No I/O, no clock, no threads: :mod:`cloud.console.state` reads the notifier's tables,
calls these functions, and stores what they return.

Order.  Events reach the notifier out of order (the outbox sends alarms before
info events; a device offline for days delivers a backlog after newer alarms)
and more than once (the console re-reads a few seconds of events to catch late
commits).  Every part of a memory that an event can change is a *slot* (a trap,
a cot's alarm, a sensor's fault, the position, the version...) that remembers the
``seq`` of the event that last set it; an event whose ``seq`` is not above its
slot's is ignored for that slot.  ``seq`` is per device and increases across
restarts (the outbox keeps it), so it orders a device's events even while its
clock is unset, which ``ts`` cannot.  Folding an event twice therefore changes
nothing the second time, and an older event arriving after a newer one never
undoes it.

Site.  A device moved to another site starts clean there: an event for a site other
than the memory's starts a fresh memory (its traps, cots, water, faults and health
are forgotten), so the new site's people never see, acknowledge or reset what
happened at the old one.  The old site keeps its history in its own events (each
stored with the site it was sent for).  An event of another site whose ``seq`` is not
above every one folded so far (the old site's backlog, delivered after the move) is
left out of the memory altogether: it neither moves the device back nor changes its
new site's state.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any, Final

import msgspec

from cloud.chart import river_rank as chart_river_rank
from cloud.console.model import Capability, DeviceState, WaterStage, marker_state
from edge.event import Event

#: Postures after which a "look now" (posture_unknown) prompt is over.
SAFE_POSTURES: Final = frozenset({"supine", "left", "right", "empty"})
#: Nap alarms, worst first (the map shows the worst active one of any cot).
NAP_ALARMS: Final = ("prone_alarm", "apnea_alarm", "posture_unknown")

_CAPABILITY: Final[dict[str, Capability]] = {
    "animal_detected": "wildlife",
    "trap_triggered": "trap",
    "trap_reset": "trap",
    "trap_armed": "trap",
    "water_level_alert": "water",
    "water_rise_alert": "water",
    "posture_check": "nursery",
    "prone_alarm": "nursery",
    "apnea_alarm": "nursery",
    "posture_unknown": "nursery",
    "alarm_cleared": "nursery",
}


class TrapMemory(msgspec.Struct, kw_only=True):
    closed: bool = False
    since: float | None = None
    checked_at: float | None = None
    mark: int = -1


class CotMemory(msgspec.Struct, kw_only=True):
    posture: str | None = None
    at: str | None = None
    """The device's time of the posture (RFC 3339)."""
    posture_mark: int = -1
    alarms: dict[str, int] = msgspec.field(default_factory=dict)
    """Active alarm kind -> seq of the event that raised it."""
    cleared: dict[str, int] = msgspec.field(default_factory=dict)
    """Alarm kind -> seq of the last event that ended it (so an older raise stays ended)."""
    acknowledged_by: str | None = None


class WaterMemory(msgspec.Struct, kw_only=True):
    stages: list[WaterStage] = msgspec.field(default_factory=list)
    below: list[str] = msgspec.field(default_factory=list)
    """Stage names that alert when the level falls (a paddy's too-low line): no rank."""
    stages_mark: int = -1
    level_cm: float | None = None
    level_t: float | None = None
    """When the level was measured (Unix seconds, the device's clock)."""


class HealthMemory(msgspec.Struct, kw_only=True):
    at: float | None = None
    """When the notifier received the heartbeat."""
    sensors: dict[str, str] = msgspec.field(default_factory=dict)
    outbox_depth: int | None = None
    oldest_undelivered_s: float | None = None
    uptime_s: float | None = None
    interval_s: float | None = None
    mark: int = -1


class Memory(msgspec.Struct, kw_only=True):
    """All the console knows of one device between events (stored as MessagePack)."""

    device: str
    site: str
    lat: float | None = None
    lon: float | None = None
    place_mark: int = -1
    version: str = ""
    version_mark: int = -1
    capabilities: list[str] = msgspec.field(default_factory=list)
    last_event_at: float | None = None
    """The latest receipt time (notifier clock) of any of its events."""
    last_seq: int = -1
    traps: dict[str, TrapMemory] = msgspec.field(default_factory=dict)
    cots: dict[str, CotMemory] = msgspec.field(default_factory=dict)
    water: dict[str, WaterMemory] = msgspec.field(default_factory=dict)
    faults: dict[str, int] = msgspec.field(default_factory=dict)
    """Sensor -> seq of the fault not yet recovered."""
    fault_marks: dict[str, int] = msgspec.field(default_factory=dict)
    """Sensor -> seq of the last event that said whether it is faulty."""
    health: HealthMemory = msgspec.field(default_factory=HealthMemory)


def new_memory(device: str, site: str) -> Memory:
    return Memory(device=device, site=site)


def _copy(memory: Memory) -> Memory:
    """A deep copy (the rule never changes the memory it is given)."""
    out: Memory = msgspec.msgpack.decode(msgspec.msgpack.encode(memory), type=Memory)
    return out


def event_time(event: Event, received_at: float) -> float:
    """When it happened: the device's time if its clock was set, else the receipt."""
    if not event.clock_synced:
        return received_at
    try:
        return event.ts.timestamp()
    except (OverflowError, ValueError, OSError):
        return received_at


def _parse_time(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: object) -> str | None:
    return value[:128] if isinstance(value, str) and value else None


def _sensor(data: dict[str, Any]) -> str:
    for key in ("sensor", "trap", "detector"):
        found = _text(data.get(key))
        if found:
            return found
    return ""


def _stages(value: object) -> list[WaterStage] | None:
    if not isinstance(value, list):
        return None
    out: list[WaterStage] = []
    for item in value:
        if not isinstance(item, dict):
            continue
        name, level = _text(item.get("name")), _number(item.get("level_cm"))
        if name is None or level is None:
            continue
        label = item.get("label")
        out.append(
            WaterStage(name=name, label=label if isinstance(label, str) else name, level_cm=level)
        )
    out.sort(key=lambda s: s.level_cm)
    return out


def fold(memory: Memory | None, event: Event, received_at: float) -> Memory:
    """``memory`` after ``event`` (received by the notifier at ``received_at``)."""
    m = fold_all(memory, [(event, received_at)])
    assert m is not None
    return m


def fold_all(memory: Memory | None, events: Iterable[tuple[Event, float]]) -> Memory | None:
    """``memory`` after each ``(event, received_at)`` in turn (one copy for them all);
    ``None`` only when ``memory`` is None and there are no events."""
    m = None if memory is None else _copy(memory)
    for event, received_at in events:
        if m is not None and event.site and m.site and event.site != m.site:
            if event.seq <= m.last_seq:
                continue  # the old site's late backlog: not this site's business
            m = new_memory(event.device, event.site)  # moved: it starts clean there
        if m is None:
            m = new_memory(event.device, event.site)
        _apply(m, event, received_at)
    return m


def _apply(m: Memory, event: Event, received_at: float) -> None:
    seq, data = event.seq, event.data
    if event.site:
        m.site = event.site
    m.last_event_at = received_at if m.last_event_at is None else max(m.last_event_at, received_at)
    if seq > m.place_mark:
        m.place_mark = seq
        m.lat, m.lon = event.location.lat, event.location.lon
    capability = _CAPABILITY.get(event.kind)
    if capability is not None and capability not in m.capabilities:
        m.capabilities = sorted([*m.capabilities, capability])
    kind = event.kind
    if kind == "heartbeat":
        _heartbeat(m, seq, data, received_at)
    elif kind in ("trap_triggered", "trap_reset", "trap_armed"):
        _trap(m, kind, seq, data, event, received_at)
    elif kind in ("water_level_alert", "water_rise_alert"):
        _water_alert(m, kind, seq, data, event_time(event, received_at))
    elif kind in (
        "prone_alarm",
        "apnea_alarm",
        "posture_unknown",
        "alarm_cleared",
        "posture_check",
    ):
        _cot(m, kind, seq, data, event)
    elif kind in ("sensor_fault", "sensor_recovered"):
        sensor = _sensor(data) or "device"
        if seq > m.fault_marks.get(sensor, -1):
            m.fault_marks[sensor] = seq
            if kind == "sensor_fault":
                m.faults[sensor] = seq
            else:
                m.faults.pop(sensor, None)
    elif kind == "update_installed":
        version = _text(data.get("to_version"))
        if version is not None and seq > m.version_mark:
            m.version, m.version_mark = version, seq
    m.last_seq = max(m.last_seq, seq)


def _heartbeat(m: Memory, seq: int, data: dict[str, Any], received_at: float) -> None:
    if seq <= m.health.mark:
        return
    sensors = data.get("sensors")
    sensors = (
        {str(k)[:128]: str(v)[:32] for k, v in sensors.items()} if isinstance(sensors, dict) else {}
    )
    depth = data.get("outbox_depth")
    m.health = HealthMemory(
        at=received_at,
        sensors=sensors,
        outbox_depth=depth if isinstance(depth, int) and not isinstance(depth, bool) else None,
        oldest_undelivered_s=_number(data.get("oldest_undelivered_s")),
        uptime_s=_number(data.get("uptime_s")),
        interval_s=_number(data.get("interval_s")),
        mark=seq,
    )
    # The heartbeat's per-sensor word settles a fault whose recovery (or start) was lost.
    for sensor, word in sensors.items():
        if word not in ("ok", "fault") or seq <= m.fault_marks.get(sensor, -1):
            continue
        m.fault_marks[sensor] = seq
        if word == "fault":
            m.faults.setdefault(sensor, seq)
        else:
            m.faults.pop(sensor, None)
    version = _text(data.get("version"))  # newer devices may say it; older ones never do
    if version is not None and seq > m.version_mark:
        m.version, m.version_mark = version, seq


def _trap(
    m: Memory, kind: str, seq: int, data: dict[str, Any], event: Event, received_at: float
) -> None:
    sensor = _sensor(data)
    trap = m.traps.get(sensor) or TrapMemory()
    if seq <= trap.mark:
        return
    trap.mark = seq
    if kind == "trap_triggered":
        if not trap.closed:
            since = _parse_time(data.get("closed_since")) if event.clock_synced else None
            if since is None:
                closed_s = _number(data.get("closed_s"))
                since = event_time(event, received_at) - (closed_s or 0.0)
            trap.closed, trap.since, trap.checked_at = True, since, None
    else:
        trap.closed, trap.since = False, None
    m.traps[sensor] = trap


def _water_alert(m: Memory, kind: str, seq: int, data: dict[str, Any], at: float) -> None:
    sensor = _sensor(data)
    water = m.water.get(sensor) or WaterMemory()
    stages = _stages(data.get("stages"))
    if stages is not None and seq > water.stages_mark:
        water.stages, water.stages_mark = stages, seq
    name = _text(data.get("stage"))
    if kind == "water_level_alert" and data.get("direction") == "falling" and name:
        if name not in water.below:
            water.below = sorted([*water.below, name])
    level = _number(data.get("level_cm"))
    if level is not None and (water.level_t is None or at > water.level_t):
        water.level_cm, water.level_t = level, at
    m.water[sensor] = water


def fold_reading(memory: Memory, sensor: str, t: float, level_cm: float) -> Memory:
    """``memory`` after a level reading of ``sensor`` at ``t`` (the telemetry's time)."""
    water = memory.water.get(sensor)
    if water is not None and water.level_t is not None and t <= water.level_t:
        return memory
    m = _copy(memory)
    water = m.water.get(sensor) or WaterMemory()
    water.level_cm, water.level_t = level_cm, t
    m.water[sensor] = water
    if "water" not in m.capabilities:
        m.capabilities = sorted([*m.capabilities, "water"])
    return m


def learn(memory: Memory, capability: Capability) -> Memory:
    """``memory`` knowing the device has ``capability`` (learnt from its telemetry)."""
    if capability in memory.capabilities:
        return memory
    m = _copy(memory)
    m.capabilities = sorted([*m.capabilities, capability])
    return m


def _cot(m: Memory, kind: str, seq: int, data: dict[str, Any], event: Event) -> None:
    cot_name = _text(data.get("cot"))
    if cot_name is None:
        return
    cot = m.cots.get(cot_name) or CotMemory()
    posture = _text(data.get("posture"))
    if posture is not None and seq > cot.posture_mark:
        cot.posture, cot.at, cot.posture_mark = posture, event.ts.isoformat(), seq
    if kind in NAP_ALARMS:
        if seq > cot.alarms.get(kind, -1) and seq > cot.cleared.get(kind, -1):
            if kind not in cot.alarms:
                cot.acknowledged_by = None  # a new alarm: nobody has answered it yet
            cot.alarms[kind] = seq
    elif kind == "alarm_cleared":
        cleared = _text(data.get("cleared"))
        if cleared is not None and seq > cot.cleared.get(cleared, -1):
            cot.cleared[cleared] = seq
            if seq > cot.alarms.get(cleared, seq):
                del cot.alarms[cleared]
    elif kind == "posture_check" and posture in SAFE_POSTURES:
        # "Look now" ends when the model answers again with a safe posture.
        if seq > cot.alarms.get("posture_unknown", seq):
            del cot.alarms["posture_unknown"]
            cot.cleared["posture_unknown"] = seq
    if not cot.alarms:
        cot.acknowledged_by = None
    m.cots[cot_name] = cot


# --- what people do in the console ----------------------------------------------------------


def trap_checked(memory: Memory, sensor: str, now: float) -> Memory:
    """A person looked at the closed trap (it stays closed)."""
    m = _copy(memory)
    trap = m.traps.get(sensor) or TrapMemory()
    trap.checked_at = now
    m.traps[sensor] = trap
    return m


def trap_reset(memory: Memory, sensor: str) -> Memory:
    """A person says the trap is empty and re-armed: open, until the device says otherwise
    (an event newer than every one seen so far)."""
    m = _copy(memory)
    trap = m.traps.get(sensor) or TrapMemory()
    trap.closed, trap.since, trap.checked_at = False, None, None
    trap.mark = max(trap.mark, m.last_seq)
    m.traps[sensor] = trap
    return m


def nap_acknowledged(memory: Memory, cot: str, by: str) -> Memory:
    """A person answered the cot's alarm from the console (the device still sounds until
    the child is safe: only the device's ``alarm_cleared`` ends the alarm)."""
    m = _copy(memory)
    found = m.cots.get(cot)
    if found is not None and found.alarms:
        found.acknowledged_by = by
    return m


# --- what the map draws ------------------------------------------------------------------------


def river_rank(stage: WaterStage) -> int:
    """Which Japanese river stage ``stage`` is (1..4; 0: none): :func:`cloud.chart.river_rank`,
    the one rule the mail chart, the hydrograph and the map share."""
    return chart_river_rank(stage.name, stage.label)


def water_stage(water: WaterMemory) -> tuple[str | None, int]:
    """(the highest rising stage the level is at or above, the highest river rank among
    the stages it is at or above: 0 when it reached none of the four river stages)."""
    if water.level_cm is None:
        return None, 0
    stage, rank = None, 0
    for s in water.stages:  # lowest first
        if s.name in water.below or water.level_cm < s.level_cm:
            continue
        stage, rank = s.name, max(rank, river_rank(s))
    return stage, rank


def view(memory: Memory, *, online: bool, last_seen: float | None = None) -> DeviceState:
    """The map's record of ``memory`` (``online`` and ``last_seen`` from the notifier's
    ``devices`` row when there is one)."""
    seen = memory.last_event_at if last_seen is None else last_seen
    closed = [(name, t) for name, t in sorted(memory.traps.items()) if t.closed]
    trap_since = min((t.since for _, t in closed if t.since is not None), default=None)
    checked = [t.checked_at for _, t in closed if t.checked_at is not None]
    level, stage, rank = None, None, 0
    worst: tuple[int, bool, float] | None = None
    for _, water in sorted(memory.water.items()):
        s, r = water_stage(water)
        key = (r, s is not None, water.level_cm if water.level_cm is not None else -math.inf)
        if worst is None or key > worst:
            worst, level, stage, rank = key, water.level_cm, s, r
    alarm = alarm_cot = ack = None
    for kind in NAP_ALARMS:
        for name, cot in sorted(memory.cots.items()):
            if kind in cot.alarms:
                alarm, alarm_cot, ack = kind, name, cot.acknowledged_by
                break
        if alarm is not None:
            break
    capabilities: list[Capability] = [
        c for c in ("wildlife", "trap", "water", "nursery") if c in memory.capabilities
    ]
    state = DeviceState(
        device=memory.device,
        site=memory.site,
        lat=memory.lat,
        lon=memory.lon,
        online=online,
        last_seen=seen,
        version=memory.version,
        capabilities=capabilities,
        trap_closed=bool(closed),
        trap_closed_since=trap_since,
        trap_checked_at=max(checked) if checked and len(checked) == len(closed) else None,
        water_level_cm=level,
        water_stage=stage,
        water_stage_rank=rank,
        nap_alarm=alarm,
        nap_alarm_cot=alarm_cot,
        nap_alarm_acknowledged_by=ack,
        faults=sorted(memory.faults),
    )
    marker = marker_state(state)
    if marker == "ok" and stage is not None:
        marker = "warning"  # at or above a stage that is none of the river's four
    return msgspec.structs.replace(state, state=marker)
