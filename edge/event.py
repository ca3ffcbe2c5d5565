"""The event envelope: the one contract the device and the cloud share.

Both the daemon (``edge``) and the notifier (``cloud``) import this module and
nothing else of each other.  The wire format is documented in
``docs/protocols/mqtt.md``; change it only on purpose, with that document and
``ENVELOPE_VERSION``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import struct
import threading
import time
import uuid
from typing import Any, ClassVar, Final, Literal, TypeVar

import msgspec

from edge.errors import EdgeError

ENVELOPE_VERSION: Final = 1
DEFAULT_TOPIC_PREFIX: Final = "satoyama/v1"

Severity = Literal["alarm", "warning", "info"]

#: Delivery priority of each severity; lower leaves the outbox first.
SEVERITY_RANK: Final[dict[str, int]] = {"alarm": 0, "warning": 1, "info": 2}

class EnvelopeError(EdgeError, ValueError):
    """A payload that is not a valid event envelope."""


class Location(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    lat: float
    lon: float


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """One thing a device saw or did.  Immutable once made."""

    id: str
    """UUIDv7: unique and time-ordered; the cloud de-duplicates on it."""
    device: str
    site: str
    kind: str
    severity: Severity
    ts: dt.datetime
    """Wall-clock time (UTC) when it happened; see ``clock_synced``."""
    clock_synced: bool
    """False while the device's clock has not been set by NTP (a Pi has no RTC)."""
    seq: int
    """Per-device sequence number; increases across restarts."""
    boot: str
    """The kernel's boot id, so events from one boot can be ordered by ``seq``."""
    location: Location
    data: dict[str, Any] = msgspec.field(default_factory=dict)
    v: int = ENVELOPE_VERSION


_id_lock = threading.Lock()
_RAND_B = (1 << 62) - 1
_last_id_ms = 0


def new_event_id() -> str:
    """A fresh time-ordered event id (UUIDv7, RFC 9562): 48 bits of Unix milliseconds,
    then 74 random bits (the version and variant take the other 6).

    Ids made in one process increase strictly: one made in the same millisecond as the
    one before it (or after the clock stepped back) takes that millisecond plus one, as
    the ``uuid6`` package's ``uuid7()`` did; that package's import read its own version
    through ``importlib.metadata`` (with ``email``, ``zipfile``, ``csv``), memory the
    daemon need not hold (docs/bench.md, "Memory")."""
    global _last_id_ms
    with _id_lock:
        ms = max(time.time_ns() // 1_000_000, _last_id_ms + 1)
        _last_id_ms = ms
    rand = int.from_bytes(os.urandom(10), "big") >> 6  # 74 bits
    rand_a, rand_b = rand >> 62, rand & _RAND_B
    # (Python 3.11's uuid.UUID(version=7) is refused: it knows versions 1-5 only.)
    return str(uuid.UUID(int=(ms & 0xFFFF_FFFF_FFFF) << 80 | 0x7 << 76 | rand_a << 64
                         | 0b10 << 62 | rand_b))  # fmt: skip


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """The event as compact JSON (the MQTT payload)."""
    return _encoder.encode(event)


def decode(payload: bytes | str) -> Event:
    """Parse and validate an MQTT payload; raise :class:`EnvelopeError` if invalid."""
    try:
        event = _decoder.decode(payload)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        raise EnvelopeError(f"invalid event envelope: {exc}") from None
    if event.ts.tzinfo is None:
        raise EnvelopeError("invalid event envelope: `ts` must carry a UTC offset")
    return event


# -- topics: every ``PREFIX/DEVICE/...`` is made here (``device="+"``: any device) --------


def channel_topic(prefix: str, device: str, channel: str) -> str:
    """``PREFIX/DEVICE/CHANNEL``: where an outbox row of ``channel`` (``events``,
    ``telemetry``) is published."""
    return f"{prefix}/{device}/{channel}"


def events_topic(prefix: str, device: str) -> str:
    return channel_topic(prefix, device, "events")


def status_topic(prefix: str, device: str) -> str:
    return channel_topic(prefix, device, "status")


def telemetry_topic(prefix: str, device: str) -> str:
    return channel_topic(prefix, device, "telemetry")


def command_topic(prefix: str, device: str, name: str = "#") -> str:
    return f"{prefix}/{device}/cmd/{name}"


def ack_topic(prefix: str, device: str) -> str:
    """Cloud to device: the ids the cloud has stored durably (:class:`CloudAck`)."""
    return channel_topic(prefix, device, "ack")


def topic_device(topic: str) -> tuple[str, str]:
    """``(device, channel)`` of a ``PREFIX/DEVICE/CHANNEL`` topic, whatever the prefix."""
    rest, _, channel = topic.rpartition("/")
    return rest.rpartition("/")[2], channel


# -- end-to-end acknowledgement ----------------------------------------------


class CloudAck(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``PREFIX/DEVICE/ack`` (JSON): what the cloud has committed durably.

    ``ids`` are event ids and telemetry batch ids (:attr:`TelemetryBatch.id`)
    of that device, in no particular order.  The cloud acknowledges a
    duplicate too (it was committed once already), and a message it refused
    for good whose id it could read, so that the device stops sending it.
    The device deletes each row when its id arrives here; ids it does not
    hold are ignored.  See ``docs/protocols/mqtt.md``.
    """

    ids: list[str]
    v: int = 1


MAX_ACK_IDS: Final = 256
"""Most ids one :class:`CloudAck` carries (about 10 kB); more go in several messages."""

_ack_decoder = msgspec.json.Decoder(CloudAck)


def encode_ack(ids: list[str]) -> bytes:
    return _encoder.encode(CloudAck(ids=ids))


def decode_ack(payload: bytes | str) -> CloudAck:
    try:
        return _ack_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"invalid ack payload: {exc}") from None


class _IdOnly(msgspec.Struct, forbid_unknown_fields=False):
    id: str


_id_json = msgspec.json.Decoder(_IdOnly)
_id_msgpack = msgspec.msgpack.Decoder(_IdOnly)


def salvage_id(payload: bytes, *, msgpack: bool = False) -> str | None:
    """The ``id`` of a payload that is otherwise invalid, when it can be read at all.

    The cloud acknowledges a message it refuses for good by this id, so that
    the device does not send it again and again.
    """
    try:
        found = (_id_msgpack if msgpack else _id_json).decode(payload).id
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    return found if 0 < len(found) <= 64 else None


class Status(msgspec.Struct, frozen=True, kw_only=True):
    """Retained payload of ``PREFIX/DEVICE/status``; the last will sets ``offline``."""

    device: str
    state: Literal["online", "offline"]
    reason: str = ""
    boot: str = ""
    version: str = ""


def encode_status(status: Status) -> bytes:
    return _encoder.encode(status)


def decode_status(payload: bytes | str) -> Status:
    try:
        return msgspec.json.decode(payload, type=Status)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"invalid status payload: {exc}") from None


# -- telemetry ---------------------------------------------------------------


class Series(msgspec.Struct, frozen=True, array_like=True):
    """Readings of one quantity: ``t`` seconds after the batch's ``t0``, values ``v``."""

    t: list[float]
    v: list[float]


class TelemetryBatch(msgspec.Struct, frozen=True, kw_only=True):
    """Payload of ``PREFIX/DEVICE/telemetry``: many readings in one compact message.

    Encoded as MessagePack (not JSON): a reading costs a few bytes, which
    matters on SIMs billed per 100 KB.  ``series`` is keyed by
    ``"<sensor>.<quantity>"``, e.g. ``"level_east.level_cm"``.  On the wire a
    series is either ``[t, v]`` (two arrays of floats) or, from
    ``encode_telemetry(..., columns=True)``, one binary string of packed
    columns (see :func:`pack_series`); :func:`decode_telemetry` reads both and
    always returns :class:`Series`.
    """

    device: str
    site: str
    boot: str
    seq: int
    """Per-device batch sequence number (its own counter, not the events' ``seq``)."""
    t0: float
    """Unix time (s) the offsets count from; see ``clock_synced``."""
    clock_synced: bool
    series: dict[str, Series]
    v: int = ENVELOPE_VERSION
    id: str = ""
    """The batch's id in the device's outbox (UUIDv7), acknowledged by the cloud
    on ``PREFIX/DEVICE/ack``; empty from devices older than the acknowledgement."""


class _WireBatch(msgspec.Struct, frozen=True, kw_only=True):
    """:class:`TelemetryBatch` as it crosses the wire: a series may be packed columns."""

    device: str
    site: str
    boot: str
    seq: int
    t0: float
    clock_synced: bool
    series: dict[str, Series | bytes]
    v: int = ENVELOPE_VERSION
    id: str = ""


_mp_encoder = msgspec.msgpack.Encoder()
_telemetry_decoder = msgspec.msgpack.Decoder(_WireBatch)

_COLUMNS_FORMAT: Final = 1
_RAW_FLOATS: Final = 0xFF
_MAX_SCALE: Final = 6


def encode_telemetry(batch: TelemetryBatch, *, columns: bool = False) -> bytes:
    """MessagePack; ``columns``: each series packed by :func:`pack_series` where that is
    lossless (about 3 B a reading instead of 18; notifiers before it cannot read it)."""
    if not columns:
        return _mp_encoder.encode(batch)
    packed: dict[str, Series | bytes] = {}
    for name, series in batch.series.items():
        blob = pack_series(series)
        packed[name] = series if blob is None else blob
    wire = _WireBatch(
        device=batch.device, site=batch.site, boot=batch.boot, seq=batch.seq, t0=batch.t0,
        clock_synced=batch.clock_synced, series=packed, v=batch.v, id=batch.id,
    )  # fmt: skip
    return _mp_encoder.encode(wire)


def decode_telemetry(payload: bytes) -> TelemetryBatch:
    try:
        wire = _telemetry_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise EnvelopeError(f"invalid telemetry payload: {exc}") from None
    series = {
        name: unpack_series(value, name) if isinstance(value, bytes) else value
        for name, value in wire.series.items()
    }
    return TelemetryBatch(
        device=wire.device, site=wire.site, boot=wire.boot, seq=wire.seq, t0=wire.t0,
        clock_synced=wire.clock_synced, series=series, v=wire.v, id=wire.id,
    )  # fmt: skip


def pack_series(series: Series) -> bytes | None:
    """The readings as packed columns, or None when that would not be lossless.

    Layout: format byte (1), count (varint), value scale ``k`` (one byte: values
    are integers of ``10**-k``; 255: raw float64); offsets in whole milliseconds,
    the first one, then the first difference, then differences of differences
    (regular sampling makes those 0 or a few ms); values: the first scaled integer
    then differences (raw: 8 B big-endian each).  Integers are zigzag varints.
    """
    t, v = series.t, series.v
    if len(t) != len(v):
        return None
    ms = [_exact_int(x, 3) for x in t]
    if any(m is None for m in ms):
        return None
    out = bytearray((_COLUMNS_FORMAT,))
    _put_varint(out, len(t))
    scale, ints = _RAW_FLOATS, None
    for k in range(_MAX_SCALE + 1):
        scaled = [_exact_int(x, k) for x in v]
        if all(i is not None for i in scaled):
            scale, ints = k, scaled
            break
    out.append(scale)
    prev = prev_delta = 0
    for i, m in enumerate(ms):
        assert m is not None
        if i == 0:
            _put_varint(out, _zigzag(m))
        elif i == 1:
            prev_delta = m - prev
            _put_varint(out, _zigzag(prev_delta))
        else:
            _put_varint(out, _zigzag(m - prev - prev_delta))
            prev_delta = m - prev
        prev = m
    if ints is None:
        for x in v:
            out += struct.pack(">d", x)
    else:
        prev = 0
        for n in ints:
            assert n is not None
            _put_varint(out, _zigzag(n - prev))
            prev = n
    return bytes(out)


def unpack_series(blob: bytes, name: str = "") -> Series:
    """The inverse of :func:`pack_series` (raises :class:`EnvelopeError` on bad bytes)."""
    try:
        if not blob or blob[0] != _COLUMNS_FORMAT:
            raise ValueError("unknown format")
        pos = 1
        n, pos = _get_varint(blob, pos)
        if n > len(blob) * 8:
            raise ValueError("count larger than the data")
        scale = blob[pos]
        pos += 1
        if scale != _RAW_FLOATS and scale > _MAX_SCALE:
            raise ValueError(f"scale {scale}")
        t: list[float] = []
        prev = prev_delta = 0
        for i in range(n):
            z, pos = _get_varint(blob, pos)
            d = _unzigzag(z)
            if i == 0:
                m = d
            elif i == 1:
                prev_delta = d
                m = prev + d
            else:
                prev_delta += d
                m = prev + prev_delta
            t.append(m / 1000)
            prev = m
        v: list[float] = []
        if scale == _RAW_FLOATS:
            for _ in range(n):
                v.append(struct.unpack_from(">d", blob, pos)[0])
                pos += 8
        else:
            prev, div = 0, 10**scale
            for _ in range(n):
                z, pos = _get_varint(blob, pos)
                prev += _unzigzag(z)
                v.append(prev / div)
        if pos != len(blob):
            raise ValueError("trailing bytes")
    except (ValueError, IndexError, struct.error) as exc:
        raise EnvelopeError(f"invalid telemetry payload: series {name!r}: {exc}") from None
    return Series(t=t, v=v)


def _exact_int(x: float, k: int) -> int | None:
    """``x`` as an integer count of ``10**-k`` if that gives ``x`` back exactly."""
    if not math.isfinite(x) or abs(x) >= 2**53:
        return None
    n: int = round(x * 10**k)
    if abs(n) >= 2**53 or n / 10**k != x:
        return None
    return n


def _zigzag(n: int) -> int:
    return n * 2 if n >= 0 else -n * 2 - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def _put_varint(out: bytearray, n: int) -> None:
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _get_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if byte < 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


# -- the event vocabulary: one type per kind's ``data`` ----------------------------------
#
# The device records an instance (``recorder.record(AnimalDetected(...))``); the envelope
# carries it as a JSON object (``Event.data``), so the wire format is the one of the
# previous release.  The cloud reads it back with :func:`event_data`.  Fields that an
# event carries only sometimes default to ``UNSET`` and are then absent on the wire.


class EventData(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """``data`` of one kind of event.  ``kind`` and (where fixed) ``severity`` are the type's.

    Decoding ignores fields a type does not name (newer or older devices);
    :attr:`Event.data` keeps them all, and the e-mail shows them.
    """

    kind: ClassVar[str]
    severity: ClassVar[Severity | None] = None
    """The kind's severity, or None where the sender decides (water stages, updates)."""

    place: str | msgspec.UnsetType = msgspec.UNSET
    """The configuration's ``device.description`` (one line, at most 80 characters)."""
    source: str | msgspec.UnsetType = msgspec.UNSET
    """Who wrote it when not the daemon: the event spool's ``source`` (``updater``)."""

    def to_data(self) -> dict[str, Any]:
        """The JSON object :attr:`Event.data` carries (``UNSET`` fields left out)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        return out


class SensorData(EventData, frozen=True, kw_only=True):
    """An event about one sensor (a detector, a trap, a probe, a task, the storage)."""

    sensor: str
    """Its name in the device config (or ``storage``, ``outbox``, ``NAME.anomaly_model``)."""


class CotData(EventData, frozen=True, kw_only=True):
    """A nap-room event: names the cot's label only, never a child."""

    cot: str


class AnimalDetected(SensorData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "animal_detected"
    severity: ClassVar[Severity | None] = "alarm"
    rule: str
    deterrent: str
    """``"sounded"`` (this detection switched the actuators on) or ``"resting"``."""
    siren: bool
    strobe: bool


class TrapData(SensorData, frozen=True, kw_only=True):
    """A box trap's events (``sensor``: its switch)."""

    closed_since: str | msgspec.UnsetType = msgspec.UNSET
    """RFC 3339 UTC (``...Z``), when it closed."""
    closed_s: float | msgspec.UnsetType = msgspec.UNSET


class TrapTriggered(TrapData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "trap_triggered"
    severity: ClassVar[Severity | None] = "alarm"
    reminder: bool = False
    """False for the closure itself, True for the reminders while it stays closed."""


class TrapReset(TrapData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "trap_reset"
    severity: ClassVar[Severity | None] = "info"


class TrapArmed(TrapData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "trap_armed"
    severity: ClassVar[Severity | None] = "info"


class WaterStage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=False):
    """One stage of a water rule, as every water alert lists them (for the chart)."""

    name: str
    label: str
    level_cm: float


class WaterLevelAlert(SensorData, frozen=True, kw_only=True):
    """Severity from the stage crossed."""

    kind: ClassVar[str] = "water_level_alert"
    level_cm: float
    stage: str
    stage_label: str
    threshold_cm: float
    direction: str
    """``rising`` (an "above" stage) or ``falling`` (a "below" one)."""
    stages: list[WaterStage] | msgspec.UnsetType = msgspec.UNSET


class WaterRiseAlert(SensorData, frozen=True, kw_only=True):
    """Severity from the rule (``warning`` unless configured otherwise)."""

    kind: ClassVar[str] = "water_rise_alert"
    level_cm: float
    rise_cm_per_10min: float
    threshold_cm_per_10min: float
    stages: list[WaterStage] | msgspec.UnsetType = msgspec.UNSET


class PostureCheck(CotData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "posture_check"
    severity: ClassVar[Severity | None] = "info"
    posture: str
    probability: float | None
    """The model's, or None."""


class ProneAlarm(CotData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "prone_alarm"
    severity: ClassVar[Severity | None] = "alarm"
    posture: str
    duration_s: float
    """Face down this long when it went off."""


class ApneaAlarm(CotData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "apnea_alarm"
    severity: ClassVar[Severity | None] = "alarm"
    posture: str
    still_s: float
    """No body motion for this long."""


class PostureUnknown(CotData, frozen=True, kw_only=True):
    """"Look now" (見てください): the model could not tell an occupied cot's posture for
    ``unknown_s``; never safe.  The device chirps until the model answers again (the end
    is on the nap sheet)."""

    kind: ClassVar[str] = "posture_unknown"
    severity: ClassVar[Severity | None] = "warning"
    unknown_s: float
    """The posture had been unknown this long when the prompt went off."""


class AlarmCleared(CotData, frozen=True, kw_only=True):
    """An alarm of a cot is over: the infant is safe again and someone acknowledged it
    (``button`` or ``staff``); or a look-now prompt (``posture_unknown``) ended because the
    posture model reads the cot again (``model``, with what it reads in ``posture``)."""

    kind: ClassVar[str] = "alarm_cleared"
    severity: ClassVar[Severity | None] = "info"
    cleared: str
    """The alarm's kind."""
    acknowledged_by: str
    alarm_s: float
    """How long the alarm (or the prompt) had been on."""
    posture: str | msgspec.UnsetType = msgspec.UNSET
    """A look-now end only: what the model reads now (``empty``: the child was taken out;
    ``unknown``: the model stopped working, the staff check by hand)."""


class Anomaly(SensorData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "anomaly"
    severity: ClassVar[Severity | None] = "warning"
    series: str
    score: float
    threshold: float
    tests: list[str]
    pattern: str
    detail: str | msgspec.UnsetType = msgspec.UNSET
    """The finding's one line for people (English), e.g. "level repeats 61.30 cm exactly
    for 1 h 10 min (this sensor's noise floor 0.28 cm)"; absent from older devices and
    from the anomaly model."""


class SensorFault(SensorData, frozen=True, kw_only=True):
    """A sensor, a task (the supervisor's fields), the storage or the outbox failed."""

    kind: ClassVar[str] = "sensor_fault"
    severity: ClassVar[Severity | None] = "warning"
    fault: str
    message: str
    # a supervised task's failure
    error: str | msgspec.UnsetType = msgspec.UNSET
    transient: bool | msgspec.UnsetType = msgspec.UNSET
    failures: int | msgspec.UnsetType = msgspec.UNSET
    retry_in_s: float | msgspec.UnsetType = msgspec.UNSET
    at: str | msgspec.UnsetType = msgspec.UNSET
    """``file.py:line`` where it failed."""
    # the storage's and the outbox's notices
    path: str | msgspec.UnsetType = msgspec.UNSET
    kept: str | msgspec.UnsetType | None = msgspec.UNSET
    moved_to: str | msgspec.UnsetType = msgspec.UNSET
    salvaged: int | msgspec.UnsetType = msgspec.UNSET
    new: int | msgspec.UnsetType = msgspec.UNSET
    unreadable: int | msgspec.UnsetType | None = msgspec.UNSET
    """None: unknown (a file too damaged to count its rows), as devices have always sent it."""
    quarantined: int | msgspec.UnsetType = msgspec.UNSET
    rows: int | msgspec.UnsetType = msgspec.UNSET
    evicted: dict[str, int] | msgspec.UnsetType = msgspec.UNSET
    lost: dict[str, int] | msgspec.UnsetType = msgspec.UNSET


class SensorRecovered(SensorData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "sensor_recovered"
    severity: ClassVar[Severity | None] = "info"
    fault: str | msgspec.UnsetType = msgspec.UNSET
    """Absent for the storage."""
    down_s: float | msgspec.UnsetType | None = msgspec.UNSET
    restarts: int | msgspec.UnsetType = msgspec.UNSET
    """A supervised task's restarts in the episode."""
    lost_in_memory: dict[str, int] | msgspec.UnsetType = msgspec.UNSET
    """The storage's: events dropped from the full memory buffer meanwhile, by kind."""


class HeartbeatData(EventData, frozen=True, kw_only=True):
    """``data`` of a ``heartbeat`` event (severity ``info``): the device's health.

    The cloud declares a device offline when no heartbeat arrived for a few
    ``interval_s`` (or its status says offline).
    """

    kind: ClassVar[str] = "heartbeat"
    severity: ClassVar[Severity | None] = "info"
    interval_s: float
    uptime_s: float
    outbox_depth: int
    oldest_undelivered_s: float | None = None
    """Absent on the wire when None."""
    evicted: dict[str, int] = msgspec.field(default_factory=dict)
    """Events dropped from a full outbox since the last heartbeat, by kind."""
    sensors: dict[str, str] = msgspec.field(default_factory=dict)
    """Per sensor: ``"ok"``, ``"fault"`` or ``"warming_up"``."""
    bytes_sent_today: int = 0
    link: dict[str, Any] | None = None
    """Cellular modem state (``access_tech``, ``signal_pct``...) or absent."""

    def to_data(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_data().items() if v is not None}


class CommandRejected(EventData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "command_rejected"
    severity: ClassVar[Severity | None] = "warning"
    command: str
    reason: str


class _UpdateData(EventData, frozen=True, kw_only=True):
    """The updater's events (through the event spool, ``docs/ota.md``).  Every field is
    optional: the daemon relays what an updater of another release wrote."""

    from_version: str | msgspec.UnsetType | None = msgspec.UNSET
    to_version: str | msgspec.UnsetType | None = msgspec.UNSET


class UpdateInstalled(_UpdateData, frozen=True, kw_only=True):
    kind: ClassVar[str] = "update_installed"
    severity: ClassVar[Severity | None] = "info"


class UpdateFailed(_UpdateData, frozen=True, kw_only=True):
    """Severity ``warning``, or ``alarm`` when there was nothing to roll back to."""

    kind: ClassVar[str] = "update_failed"
    stage: str | msgspec.UnsetType = msgspec.UNSET
    """Where it failed: ``request``, ``verify``, ``refused``, ``health``, a journal phase."""
    reason: str | msgspec.UnsetType = msgspec.UNSET
    request: str | msgspec.UnsetType = msgspec.UNSET
    """The refused request's id."""


DATA_TYPES: Final[dict[str, type[EventData]]] = {
    t.kind: t
    for t in (
        AnimalDetected, TrapTriggered, TrapReset, TrapArmed, WaterLevelAlert, WaterRiseAlert,
        PostureCheck, ProneAlarm, ApneaAlarm, PostureUnknown, AlarmCleared, Anomaly, SensorFault,
        SensorRecovered, HeartbeatData, CommandRejected, UpdateInstalled, UpdateFailed,
    )
}  # fmt: skip
"""Each kind's ``data`` type."""

#: Kinds every consumer must understand.  Consumers must also tolerate kinds
#: they do not know (newer devices), treating them by their severity.
KINDS: Final = frozenset(DATA_TYPES)

D = TypeVar("D", bound=EventData)


def data_as(data: dict[str, Any], kind: type[D]) -> D:
    """``data`` read as ``kind``'s type; :class:`EnvelopeError` when it does not fit."""
    try:
        return msgspec.convert(data, type=kind, strict=False)
    except msgspec.ValidationError as exc:
        raise EnvelopeError(f"invalid {kind.kind} data: {exc}") from None


def event_data(event: Event) -> EventData | None:
    """The event's ``data`` as its kind's type; None for a kind this version does not
    know or data that does not fit it (the e-mail then shows the fields as they came)."""
    kind = DATA_TYPES.get(event.kind)
    if kind is None:
        return None
    try:
        return data_as(event.data, kind)
    except EnvelopeError:
        return None
