"""Telemetry series as packed columns (edge/event.py): lossless, small, read by the cloud's
decoder alongside the older ``[t, v]`` arrays."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.event import (
    EnvelopeError,
    Series,
    TelemetryBatch,
    decode_telemetry,
    encode_telemetry,
    pack_series,
    salvage_id,
    unpack_series,
)
from edge.link.telemetry import TelemetryBuffer

BOOT = "3f0b6a1e-2c55-4d7e-9a51-0b7f1f2c9d10"


def batch(series: dict[str, Series]) -> TelemetryBatch:
    return TelemetryBatch(
        id="01a2451a-6de9-7fc0-b034-0873bb90476d", device="shiojiri-kataoka-01",
        site="shiojiri-kataoka", boot=BOOT, seq=7, t0=1_764_900_000.123, clock_synced=True,
        series=series,
    )  # fmt: skip


def water_series(n: int = 18) -> Series:
    """A water level every 10 minutes, a few ms of jitter, one decimal."""
    t = [round(600 * i + (i * 7919 % 13) / 1000, 3) for i in range(n)]
    v = [round(40.0 + math.sin(i / 3) * 2, 1) for i in range(n)]
    return Series(t=t, v=v)


def test_a_water_batch_round_trips_and_is_under_half_the_size() -> None:
    b = batch({"level_east.level_cm": water_series(), "level_east.temp_c": water_series(6)})
    old, new = encode_telemetry(b), encode_telemetry(b, columns=True)
    assert decode_telemetry(new) == b
    assert decode_telemetry(old) == b  # the cloud still reads the older arrays
    assert len(new) < 0.5 * len(old)
    packed = pack_series(water_series())
    assert packed is not None and len(packed) <= 3 * 18 + 4


def test_the_cloud_can_still_read_the_id_of_a_packed_batch() -> None:
    b = batch({"x.y": water_series()})
    assert salvage_id(encode_telemetry(b, columns=True), msgpack=True) == b.id


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    st.lists(st.tuples(st.integers(-10**9, 10**12), finite), max_size=40),
    st.integers(0, 6),
)
def test_any_series_round_trips_exactly(points: list[tuple[int, float]], k: int) -> None:
    t = [ms / 1000 for ms, _ in points]
    v = [round(x, k) if abs(x) < 1e9 else x for _, x in points]
    s = Series(t=t, v=v)
    b = batch({"a.b": s})
    assert decode_telemetry(encode_telemetry(b, columns=True)) == b


def test_what_cannot_be_packed_exactly_is_sent_as_arrays() -> None:
    odd = Series(t=[0.0001, 1.0], v=[1.0, 2.0])  # sub-millisecond offsets
    assert pack_series(odd) is None
    b = batch({"a.b": odd, "c.d": Series(t=[0.0, 1.0], v=[math.inf, math.nan])})
    back = decode_telemetry(encode_telemetry(b, columns=True))
    assert back.series["a.b"] == odd
    assert math.isinf(back.series["c.d"].v[0]) and math.isnan(back.series["c.d"].v[1])


DAMAGED = [
    b"",  # nothing
    b"\x02\x01\x00\x00\x00",  # an unknown format
    b"\x01\x05\x00\x00",  # five readings announced, one there
    b"\x01\x01\x07\x00\x00",  # a scale out of range
    b"\x01\x01\x00\x00\x00\x00",  # trailing bytes
    b"\x01" + b"\xff" * 10,  # a varint that never ends
]


@pytest.mark.parametrize("blob", DAMAGED)
def test_damaged_columns_are_one_clear_error(blob: bytes) -> None:
    with pytest.raises(EnvelopeError, match=r"series 'a\.b'"):
        unpack_series(blob, "a.b")
    wire = msgspec.msgpack.encode({"device": "d", "site": "s", "boot": "b", "seq": 1, "t0": 0.0,
                                   "clock_synced": True, "series": {"a.b": blob}})
    with pytest.raises(EnvelopeError):
        decode_telemetry(wire)


def test_the_buffer_packs_columns_unless_told_not_to() -> None:
    sizes = []
    for columns in (True, False):
        buf = TelemetryBuffer(device="d", site="s", boot=BOOT, batch_s=10800, max_readings=100,
                              clock_synced=lambda: True, columns=columns)
        for i in range(18):
            buf.add("level_east.level_cm", 12.0 + i / 10, at=1_764_900_000.5 + 600 * i)
        row = buf.take()
        assert row is not None
        got = decode_telemetry(row.payload).series["level_east.level_cm"]
        assert got.v == pytest.approx([12.0 + i / 10 for i in range(18)])
        sizes.append(len(row.payload))
    assert sizes[0] < sizes[1] - 250
