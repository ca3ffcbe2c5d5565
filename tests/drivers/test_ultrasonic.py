"""Ultrasonic ranger: the frame parser (properties) and the async driver over a real pty."""

from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from drivers.errors import (
    BusError,
    DriverClosed,
    DriverError,
    SensorTimeout,
    TransientDriverError,
)
from drivers.ultrasonic import RangerParser, UltrasonicRanger
from edge.sim.serial_device import UltrasonicModel, ranger_frame

FAST = 0.02  # emulator frame period for tests; the driver does not care about the rate


def frame(distance: int) -> bytes:
    """The frame as the datasheet defines it (independent of the code under test)."""
    high, low = divmod(distance, 256)
    return bytes([0xFF, high, low, (0xFF + high + low) % 256])


def valid_windows(stream: bytes) -> dict[int, int]:
    """Offset -> distance of every 4-byte window that is a well-formed frame."""
    found = {}
    for i in range(len(stream) - 3):
        if stream[i] == 0xFF and (0xFF + stream[i + 1] + stream[i + 2]) & 0xFF == stream[i + 3]:
            found[i] = stream[i + 1] << 8 | stream[i + 2]
    return found


def feed_in_chunks(parser: RangerParser, stream: bytes, cuts: list[int]) -> list[int]:
    out: list[int] = []
    edges = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    for a, b in itertools.pairwise(edges):
        out += parser.feed(stream[a:b])
    return out


def is_subsequence(short: list[int], long: list[int]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


distances = st.integers(0, 0xFFFF)
cuts = st.lists(st.integers(0, 10_000), max_size=12)


# -- the parser ------------------------------------------------------------------------------


def test_datasheet_example() -> None:
    assert ranger_frame(1953) == frame(1953) == bytes([0xFF, 0x07, 0xA1, 0xA7])
    parser = RangerParser()
    # The first frame is trusted once the next header confirms the alignment.
    assert parser.feed(bytes([0xFF, 0x07, 0xA1, 0xA7])) == []
    assert parser.feed(b"\xff") == [1953]
    assert parser.feed(bytes([0x07, 0xA1, 0xA7])) == [1953]
    assert parser.frames == 2
    assert parser.locked


@given(st.lists(distances, min_size=1, max_size=40), distances, cuts)
def test_round_trip_any_distances_any_chunking(
    sent: list[int], last: int, chunk_cuts: list[int]
) -> None:
    parser = RangerParser(min_valid_mm=0, max_valid_mm=0xFFFF)
    stream = b"".join(frame(d) for d in [*sent, last])
    assert feed_in_chunks(parser, stream, chunk_cuts) == [*sent, last]
    assert (parser.checksum_errors, parser.resyncs, parser.unconfirmed) == (0, 0, 0)


@given(st.binary(max_size=600), cuts)
def test_never_raises_and_never_invents_a_distance(stream: bytes, chunk_cuts: list[int]) -> None:
    parser = RangerParser(min_valid_mm=0, max_valid_mm=0xFFFF)
    out = feed_in_chunks(parser, stream, chunk_cuts)
    assert set(out) <= set(valid_windows(stream).values())
    assert len(out) <= parser.frames


segment = st.one_of(
    st.builds(frame, distances),
    st.binary(min_size=1, max_size=12),  # garbage, 0xFF included
)


@given(st.lists(st.tuples(st.booleans(), distances, st.binary(min_size=1, max_size=12))), cuts)
def test_garbage_between_frames_loses_only_neighbours(
    plan: list[tuple[bool, int, bytes]], chunk_cuts: list[int]
) -> None:
    """Every yielded distance was sent, in order; every frame followed by a frame survives."""
    stream = bytearray()
    sent: list[int] = []
    starts: dict[int, int] = {}
    for is_frame, distance, garbage in plan:
        if is_frame:
            starts[len(stream)] = len(sent)
            sent.append(distance)
            stream += frame(distance)
        else:
            stream += garbage
    # Where garbage happens to form a well-formed frame, no parser can tell: leave those out.
    assume(set(valid_windows(bytes(stream))) == set(starts))
    parser = RangerParser(min_valid_mm=0, max_valid_mm=0xFFFF)
    out = feed_in_chunks(parser, bytes(stream), chunk_cuts)
    assert is_subsequence(out, sent)
    must_survive = [sent[k] for offset, k in starts.items() if offset + 4 in starts]
    assert is_subsequence(must_survive, out)


@given(st.lists(segment, max_size=30), cuts)
def test_interleaved_garbage_yields_only_real_frames(
    segments: list[bytes], chunk_cuts: list[int]
) -> None:
    stream = b"".join(segments)
    parser = RangerParser(min_valid_mm=0, max_valid_mm=0xFFFF)
    out = feed_in_chunks(parser, stream, chunk_cuts)
    assert set(out) <= set(valid_windows(stream).values())


def test_checksum_failure_is_counted_and_skipped() -> None:
    parser = RangerParser()
    bad = bytearray(frame(1000))
    bad[3] ^= 0x01
    out = parser.feed(frame(900) + frame(901) + bytes(bad) + frame(902) + frame(903))
    assert out == [900, 901, 902, 903]
    assert parser.checksum_errors == 1
    assert parser.resyncs == 4  # the bad frame's four bytes


def test_truncated_frame_is_skipped() -> None:
    parser = RangerParser()
    out = parser.feed(frame(900) + frame(901) + frame(1234)[:2] + frame(902) + frame(903))
    assert out == [900, 901, 902, 903]
    assert parser.resyncs == 2
    assert parser.checksum_errors == 1  # FF 04 FF 03 was tried as a frame


def test_unconfirmed_candidate_is_dropped() -> None:
    parser = RangerParser()
    assert parser.feed(b"\x00" + frame(777) + b"\x10\x20\x30") == []
    assert parser.unconfirmed == 1
    assert not parser.locked


def test_dead_zone_and_reach_are_filtered_and_counted() -> None:
    parser = RangerParser(min_valid_mm=250, max_valid_mm=4500)
    out = parser.feed(b"".join(frame(d) for d in (1000, 249, 250, 4500, 4501, 30, 1000)))
    assert out == [1000, 250, 4500, 1000]
    assert parser.too_close == 2
    assert parser.too_far == 1
    with pytest.raises(ValueError):
        RangerParser(min_valid_mm=500, max_valid_mm=400)


def test_misaligned_lock_breaks_instead_of_reporting_65_metres() -> None:
    """511 mm is FF 01 FF FF; read from offset 3 it is FF FF 01 FF, a well-formed 65281 mm."""
    parser = RangerParser()
    stream = frame(511) * 20
    out = parser.feed(stream[3:])
    assert 65281 not in out
    assert out and set(out) == {511}
    assert parser.too_far >= 1


def test_buffer_stays_bounded() -> None:
    parser = RangerParser()
    for _ in range(1000):
        parser.feed(b"\xff\x00")
    parser.feed(bytes(range(256)) * 40)
    assert len(parser._buf) <= 4


# -- the driver over a real pseudo-terminal --------------------------------------------------


@pytest.fixture
def model() -> Iterator[UltrasonicModel]:
    with UltrasonicModel(distance_mm=1500, period_s=FAST, seed=7) as m:
        yield m


@pytest.fixture
async def ranger(model: UltrasonicModel) -> AsyncIterator[UltrasonicRanger]:
    async with UltrasonicRanger(model.port) as r:
        yield r


async def read_until(
    ranger: UltrasonicRanger, done: Callable[[], bool], *, within: float = 5.0
) -> list[int]:
    """Read until ``done()`` is true, with a deadline; returns what was read."""
    seen: list[int] = []
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, f"condition not met in {within} s; read {seen}"
        seen.append(await ranger.read(1.0))
    return seen


async def test_distances_arrive(model: UltrasonicModel, ranger: UltrasonicRanger) -> None:
    assert [await ranger.read(1.0) for _ in range(3)] == [1500, 1500, 1500]
    model.set_distance_mm(1234)
    seen = await read_until(ranger, lambda: ranger.last_mm == 1234)
    assert set(seen) <= {1500, 1234}
    assert await ranger.read(1.0) == 1234
    assert ranger.last_at is not None and ranger.last_at <= time.monotonic()


async def test_default_cadence_of_the_real_sensor() -> None:
    with UltrasonicModel(distance_mm=800) as model:  # 100 ms, as the A02YYUW in UART mode
        async with UltrasonicRanger(model.port) as ranger:
            await ranger.read(1.0)
            start = time.monotonic()
            for _ in range(3):
                assert await ranger.read(1.0) == 800
            assert 0.15 < time.monotonic() - start < 1.0


async def test_garbage_is_skipped_and_counted(
    model: UltrasonicModel, ranger: UltrasonicRanger
) -> None:
    await ranger.read(1.0)
    parser = ranger.parser
    for _ in range(20):
        before = parser.resyncs

        def skipped(before: int = before) -> bool:
            return parser.resyncs > before

        model.inject_garbage(37)
        seen = await read_until(ranger, skipped)
        seen += [await ranger.read(1.0) for _ in range(2)]
        assert set(seen) == {1500}


async def test_truncated_and_bad_checksum_frames_are_skipped_and_counted(
    model: UltrasonicModel, ranger: UltrasonicRanger
) -> None:
    await ranger.read(1.0)
    parser = ranger.parser
    before = parser.checksum_errors, parser.resyncs
    model.send_bad_checksum()
    seen = await read_until(ranger, lambda: parser.checksum_errors > before[0])
    model.send_truncated_frame()
    seen += await read_until(ranger, lambda: parser.resyncs >= before[1] + 4 + 2)
    seen.append(await ranger.read(1.0))
    assert set(seen) == {1500}


async def test_unplug_times_out_and_plug_recovers(
    model: UltrasonicModel, ranger: UltrasonicRanger
) -> None:
    assert await ranger.read(1.0) == 1500
    model.unplug()
    caught: SensorTimeout | None = None
    for _ in range(3):  # a frame already in the tty's buffer may still arrive
        start = time.monotonic()
        try:
            await ranger.read(0.3)
        except SensorTimeout as exc:
            caught = exc
            break
    assert caught is not None
    assert 0.3 <= time.monotonic() - start < 0.8
    assert "no bytes" in str(caught)
    assert isinstance(caught, TimeoutError)
    assert isinstance(caught, DriverError)
    with pytest.raises(SensorTimeout):
        await ranger.read(0.2)
    model.plug()
    assert await ranger.read(1.0) == 1500


async def test_water_in_the_dead_zone_is_reported_as_such(
    model: UltrasonicModel, ranger: UltrasonicRanger
) -> None:
    await ranger.read(1.0)
    model.set_distance_mm(200)
    with pytest.raises(SensorTimeout, match="dead zone"):
        for _ in range(20):  # frames already in flight may still carry 1500
            await ranger.read(0.3)
    assert ranger.parser.too_close > 0


async def test_device_gone_is_a_bus_error_not_a_hang(model: UltrasonicModel) -> None:
    ranger = UltrasonicRanger(model.port)
    try:
        assert await ranger.read(1.0) == 1500
        model.close()  # the pty's far end goes away: reads fail with EIO
        with pytest.raises(BusError) as caught:
            for _ in range(10):
                await ranger.read(1.0)
        assert isinstance(caught.value, TransientDriverError)
        assert not ranger.is_open
        with pytest.raises(BusError) as caught:  # the next read tries to reopen
            await ranger.read(1.0)
        assert caught.value.errno in (errno.ENOENT, errno.EIO)  # node gone, or hung up
    finally:
        await ranger.aclose()


async def test_missing_port_is_a_bus_error_with_errno(tmp_path: Path) -> None:
    ranger = UltrasonicRanger(str(tmp_path / "ttyUSB9"))
    with pytest.raises(BusError) as caught:
        await ranger.read(0.5)
    assert caught.value.errno == errno.ENOENT
    await ranger.aclose()


# pyserial's spy:// never closes its hexdump file; collect it here, not in a later test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_spy_url_hexdumps_the_traffic(model: UltrasonicModel, tmp_path: Path) -> None:
    dump = tmp_path / "hexdump.txt"
    async with UltrasonicRanger(f"spy://{model.port}?file={dump}") as ranger:
        assert await ranger.read(1.0) == 1500
    gc.collect()
    received = bytearray()
    for line in dump.read_text().splitlines():  # "000.012 RX   0000  FF 05 DC DF   ...."
        fields = line.split()
        if len(fields) > 3 and fields[1] == "RX":
            for field in fields[3:]:
                if not re.fullmatch(r"[0-9A-F]{2}", field):
                    break
                received.append(int(field, 16))
    assert frame(1500) in received


async def test_close_fails_pending_reads_and_is_idempotent(model: UltrasonicModel) -> None:
    ranger = UltrasonicRanger(model.port)
    await ranger.open()
    model.unplug()
    pending = asyncio.create_task(ranger.read(5.0))
    await asyncio.sleep(0)  # let the read register itself (ordering, not timing)
    start = time.monotonic()
    await ranger.aclose()
    with pytest.raises(BusError):
        await pending
    assert time.monotonic() - start < 2.0
    ranger.close()
    await ranger.aclose()
    with pytest.raises(DriverClosed, match="closed"):  # ours, and still a RuntimeError
        await ranger.read(0.1)


async def test_concurrent_readers_each_get_the_next_reading(
    ranger: UltrasonicRanger,
) -> None:
    results = await asyncio.gather(*(ranger.read(1.0) for _ in range(4)))
    assert results == [1500] * 4


def test_every_ranger_distance_resynchronises_from_every_offset() -> None:
    """From any byte of a steady stream the parser finds the real distance and nothing else."""
    for distance in range(250, 10_001):
        stream = frame(distance) * 4
        for offset in (1, 2, 3):
            out = RangerParser().feed(stream[offset:])
            assert out and set(out) == {distance}, (distance, offset, out)


def test_misaligned_windows_of_steady_streams_read_beyond_any_range() -> None:
    """The fact the parser's too_far rule rests on, for every distance below 0xFF00."""
    for distance in range(0xFF00):
        stream = frame(distance) * 3
        for offset, value in valid_windows(stream).items():
            assert offset % 4 == 0 or value >= 0xFF00, (distance, offset, value)


def descriptors_on(path: str) -> int:
    """How many of this process's file descriptors point at ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                count += 1
        except OSError:
            pass
    return count


async def test_concurrent_first_reads_open_the_port_once(model: UltrasonicModel) -> None:
    before = descriptors_on(model.port)  # the emulator's own end
    ranger = UltrasonicRanger(model.port)
    assert await asyncio.gather(*(ranger.read(1.0) for _ in range(3))) == [1500] * 3
    assert descriptors_on(model.port) == before + 1
    await ranger.aclose()
    assert descriptors_on(model.port) == before
