"""What the console shows, as typed records: the contract between its data and its pages.

:mod:`cloud.console.state` (the read model over the notifier's database) returns
these; :mod:`cloud.console.app` (pages, JSON API, live stream) renders them.  The
JSON API sends them as they are (``msgspec.json.encode``), so a field renamed here
is a field renamed in the browser's code: change both together.

Times are Unix seconds (float, UTC) unless a name says otherwise; levels are cm.
"""

from __future__ import annotations

from typing import Literal

import msgspec

Role = Literal["operator", "farmer", "hunter", "nursery", "municipal"]
"""Who a console user is.  ``operator`` sees and does everything; every other role
sees only the sites listed on its account (a role says what the person does, the
site list says what they may see)."""

Capability = Literal["wildlife", "trap", "water", "nursery"]
"""What a device watches, learnt from the events it sent (a device may have several)."""

MarkerState = Literal["alarm", "trap_closed", "fault", "offline", "warning", "ok", "unknown"]
"""The one state a map marker is drawn in, worst first (see :func:`marker_state`)."""


class WaterStage(msgspec.Struct, frozen=True, kw_only=True):
    """A stage line of a gauge, as its device's water alerts list them."""

    name: str
    label: str
    level_cm: float


class DeviceState(msgspec.Struct, frozen=True, kw_only=True):
    """One device as the map draws it: one row of ``GET /api/map``."""

    device: str
    site: str
    lat: float | None
    lon: float | None
    online: bool
    last_seen: float | None
    version: str
    capabilities: list[Capability]
    trap_closed: bool = False
    trap_closed_since: float | None = None
    trap_checked_at: float | None = None
    """The last time a person marked the closed trap as checked (console action)."""
    water_level_cm: float | None = None
    water_stage: str | None = None
    """The stage name the level is at or above (``None``: below every stage)."""
    water_stage_rank: int = 0
    """0 below every stage, 1..4 for the four Japanese river stages in rising order
    (水防団待機 / 氾濫注意 / 避難判断 / 氾濫危険); the map's colour."""
    nap_alarm: str | None = None
    """An alarm kind (``prone_alarm``, ``apnea_alarm``, ``posture_unknown``) still active on
    some cot, else None."""
    nap_alarm_cot: str | None = None
    nap_alarm_acknowledged_by: str | None = None
    """Who acknowledged the active nap alarm remotely in the console (never silences the
    device: the child must be turned)."""
    faults: list[str] = msgspec.field(default_factory=list)
    """Sensors (or ``storage``, ``outbox``) with a fault not yet recovered."""
    state: MarkerState = "unknown"
    """Derived by :func:`marker_state`; stored so that the API and the page agree."""


class EventRow(msgspec.Struct, frozen=True, kw_only=True):
    """An event as lists and the live stream show it."""

    id: str
    device: str
    site: str
    kind: str
    severity: str
    ts: str
    """Device time, RFC 3339, as sent."""
    received_at: float
    summary: str = ""
    """One line for people in the page's language (filled by the page, not the store)."""
    data: dict[str, object] = msgspec.field(default_factory=dict)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """From the device's last heartbeat."""

    at: float | None = None
    sensors: dict[str, str] = msgspec.field(default_factory=dict)
    outbox_depth: int | None = None
    oldest_undelivered_s: float | None = None
    bytes_this_month: int | None = None
    """Sum of the heartbeats' ``bytes_sent_today`` for each day of this month (JST)."""
    uptime_s: float | None = None


class UpdateRecord(msgspec.Struct, frozen=True, kw_only=True):
    at: str
    kind: str
    """``update_installed`` or ``update_failed``."""
    from_version: str | None = None
    to_version: str | None = None
    reason: str | None = None


class Point(msgspec.Struct, frozen=True, array_like=True):
    t: float
    v: float


class Hydrograph(msgspec.Struct, frozen=True, kw_only=True):
    series: str
    """``"<sensor>.level_cm"``."""
    points: list[Point]
    stages: list[WaterStage]


class Capture(msgspec.Struct, frozen=True, kw_only=True):
    sensor: str
    closed_at: str
    reset_at: str | None = None
    checked: list[tuple[float, str]] = msgspec.field(default_factory=list)
    """(when, who) of each console "checked" mark."""


class CotNow(msgspec.Struct, frozen=True, kw_only=True):
    cot: str
    posture: str | None
    at: str | None
    alarm: str | None = None
    acknowledged_by: str | None = None


class DevicePage(msgspec.Struct, frozen=True, kw_only=True):
    state: DeviceState
    events: list[EventRow]
    health: Health
    updates: list[UpdateRecord]
    hydrographs_24h: list[Hydrograph] = msgspec.field(default_factory=list)
    hydrographs_7d: list[Hydrograph] = msgspec.field(default_factory=list)
    captures: list[Capture] = msgspec.field(default_factory=list)
    cots: list[CotNow] = msgspec.field(default_factory=list)


class RolloutProgress(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    version: str
    percent: float
    stage: int
    paused: bool
    targets: int
    told: int
    installed: int
    failed: int


class FleetPage(msgspec.Struct, frozen=True, kw_only=True):
    versions: dict[str, int]
    rollouts: list[RolloutProgress]
    silent: list[DeviceState]
    """Devices not heard from for longer than the notifier's heartbeat timeout, oldest first."""


def marker_state(s: DeviceState) -> MarkerState:
    """The one state a marker shows, worst first: an alarm a person must act on, then a
    closed trap, a sensor fault, offline, a warning-level water stage, ok."""
    if s.nap_alarm is not None or s.water_stage_rank >= 3:
        return "alarm"
    if s.trap_closed:
        return "trap_closed"
    if s.faults:
        return "fault"
    if not s.online:
        return "offline"
    if s.water_stage_rank >= 1:
        return "warning"
    return "ok"
