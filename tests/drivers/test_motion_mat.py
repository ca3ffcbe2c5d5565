"""The body-motion mat's frame format, receiver and async driver (over a real pty)."""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.errors import BusError, DriverError, SensorTimeout, TransientDriverError
from drivers.motion_mat import (
    MAX_FRAME_LEN,
    SYNC,
    MatFrame,
    MatParser,
    MotionMat,
    crc16,
    encode_frame,
)
from edge.sim import mat_emulator
from edge.sim.mat_emulator import MatModel

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocols" / "motion-mat.md"
WORKED = bytes.fromhex("a55a013412020306000010203040ff4d5a")


def frame_bytes(seq: int, rows: int = 2, cols: int = 3, fill: int = 7) -> bytes:
    return encode_frame(seq, rows, cols, bytes([fill]) * (rows * cols))


# -- the format -------------------------------------------------------------------------


def test_crc_is_ccitt_false() -> None:
    assert crc16(b"123456789") == 0x29B1


def test_worked_example_matches_the_document_driver_and_emulator() -> None:
    cells = bytes([0x00, 0x10, 0x20, 0x30, 0x40, 0xFF])
    assert encode_frame(0x1234, 2, 3, cells) == WORKED
    assert mat_emulator.encode(0x1234, 2, 3, cells) == WORKED
    text = DOC.read_text()
    assert WORKED.hex(" ") in text  # the document's hex line
    assert "0x5a4d" in text
    # The document's own Python snippet computes the CRC it shows.
    snippet = re.search(r'bytes\.fromhex\("([0-9a-f ]+)"\)', text)
    assert snippet is not None
    assert crc16(bytes.fromhex(snippet.group(1))) == 0x5A4D == int.from_bytes(WORKED[-2:], "little")


def test_worked_example_parses() -> None:
    (frame,) = MatParser().feed(WORKED)
    assert frame == MatFrame(0x1234, 2, 3, bytes([0, 0x10, 0x20, 0x30, 0x40, 0xFF]))
    assert frame.cell(1, 2) == 0xFF
    assert frame.cell(0, 1) == 0x10
    assert frame.grid() == [b"\x00\x10\x20", b"\x30\x40\xff"]
    assert frame.total == sum(frame.cells)
    assert frame.encode() == WORKED


def test_encoder_rejects_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError):
        encode_frame(65536, 2, 3, bytes(6))
    with pytest.raises(ValueError):
        encode_frame(0, 65, 1, bytes(65))
    with pytest.raises(ValueError):
        encode_frame(0, 2, 3, bytes(5))
    with pytest.raises(ValueError):
        MatFrame(0, 2, 3, bytes(5))
    with pytest.raises(IndexError):
        MatFrame(0, 2, 3, bytes(6)).cell(2, 0)


def test_default_frame_fits_ten_per_second_at_115200_baud() -> None:
    size = len(encode_frame(0, 16, 32, bytes(512)))
    assert size == 523
    assert size * 10 * 10 < 115200 * 0.5  # 8N1: 10 bit times a byte; under half the line


# -- the receiver --------------------------------------------------------------------------

geometry = st.tuples(st.integers(1, 64), st.integers(1, 64))


@st.composite
def frames(draw: st.DrawFn) -> MatFrame:
    rows, cols = draw(geometry)
    cells = draw(st.binary(min_size=rows * cols, max_size=rows * cols))
    return MatFrame(draw(st.integers(0, 65535)), rows, cols, cells)


def feed_in_chunks(parser: MatParser, data: bytes, rng: random.Random) -> list[MatFrame]:
    out: list[MatFrame] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 700)
        out += parser.feed(data[i : i + n])
        i += n
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=6), st.integers(0, 2**32))
def test_round_trip_in_any_chunking(sent: list[MatFrame], split_seed: int) -> None:
    parser = MatParser()
    wire = b"".join(f.encode() for f in sent)
    got = feed_in_chunks(parser, wire, random.Random(split_seed))
    assert got == sent
    assert parser.frames == len(sent)
    assert parser.crc_errors == parser.skipped_bytes == parser.resyncs == 0
    assert parser.buffered == 0


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.binary(max_size=300), frames()), min_size=1, max_size=6),
    st.binary(max_size=300),
    st.integers(0, 2**32),
)
def test_garbage_between_frames_never_raises_nor_invents_frames(
    pieces: list[tuple[bytes, MatFrame]], tail: bytes, split_seed: int
) -> None:
    parser = MatParser()
    wire = b"".join(g + f.encode() for g, f in pieces) + tail
    got = feed_in_chunks(parser, wire, random.Random(split_seed))
    sent = [f for _, f in pieces]
    # Every good frame comes through, in order, and nothing else does (a random
    # run of garbage passing the header checks *and* the CRC is out of reach).
    assert got == sent
    garbage = sum(len(g) for g, _ in pieces) + len(tail)
    assert parser.skipped_bytes + parser.buffered == garbage
    assert parser.buffered <= MAX_FRAME_LEN


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000))
def test_any_bytes_never_raise(data: bytes) -> None:
    parser = MatParser()
    parser.feed(data)
    parser.feed(bytearray(data))
    parser.feed(memoryview(data))
    assert parser.buffered <= MAX_FRAME_LEN


@settings(max_examples=100, deadline=None)
@given(st.lists(frames(), min_size=1, max_size=5), st.data())
def test_corrupted_frames_are_counted_and_never_returned(
    sent: list[MatFrame], data: st.DataObject
) -> None:
    bad = data.draw(st.sets(st.integers(0, len(sent) - 1)))
    wire = b""
    for i, f in enumerate(sent):
        raw = bytearray(f.encode())
        if i in bad:  # flip one bit of the payload or the CRC (the header stays plausible)
            pos = data.draw(st.integers(9, len(raw) - 1))
            raw[pos] ^= 1 << data.draw(st.integers(0, 7))
        wire += raw
    parser = MatParser()
    got = parser.feed(wire)
    assert got == [f for i, f in enumerate(sent) if i not in bad]
    assert parser.crc_errors >= len(bad)


def test_one_bad_crc_is_one_crc_error() -> None:
    good = frame_bytes(1)
    broken = bytearray(frame_bytes(2))
    broken[-1] ^= 0x01
    parser = MatParser()
    got = parser.feed(good + bytes(broken) + frame_bytes(3))
    assert [f.seq for f in got] == [1, 3]
    assert parser.crc_errors == 1
    assert parser.dropped == 1  # seq 2 never arrived intact
    assert parser.resyncs == 1
    assert parser.skipped_bytes == len(broken)


def test_a_frame_hiding_behind_a_false_sync_is_found() -> None:
    # A false sync with a plausible header claiming 64 x 64 cells swallows the real
    # frame while the receiver waits; dropping one byte, not the claim, recovers it.
    false = SYNC + bytes([1, 0, 0, 64, 64]) + (4096).to_bytes(2, "little")
    parser = MatParser()
    got = parser.feed(false + frame_bytes(5) + bytes(4200))
    assert [f.seq for f in got] == [5]
    assert parser.crc_errors == 1


def test_unknown_version_is_a_bad_header() -> None:
    raw = bytearray(frame_bytes(1))
    raw[2] = 2
    parser = MatParser()
    assert parser.feed(bytes(raw)) == []
    assert parser.bad_headers == 1


@pytest.mark.parametrize(
    ("seqs", "dropped", "restarts"),
    [
        ([1, 2, 3], 0, 0),
        ([65533, 65534, 65535, 0, 1], 0, 0),  # wrap is not a gap
        ([65534, 1], 2, 0),  # 65535 and 0 lost across the wrap
        ([10, 15], 4, 0),
        ([100, 50], 0, 1),  # backwards: the mat restarted
        ([7, 7], 0, 1),  # a repeat is not a loss either
    ],
)
def test_sequence_gaps(seqs: list[int], dropped: int, restarts: int) -> None:
    parser = MatParser()
    parser.feed(b"".join(frame_bytes(s) for s in seqs))
    assert parser.frames == len(seqs)
    assert parser.dropped == dropped
    assert parser.seq_restarts == restarts


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535), st.lists(st.integers(0, 500), min_size=1, max_size=20))
def test_dropped_counts_every_missing_number(start: int, gaps: list[int]) -> None:
    seqs = [start]
    for g in gaps:
        seqs.append((seqs[-1] + 1 + g) % 65536)
    parser = MatParser()
    parser.feed(b"".join(frame_bytes(s) for s in seqs))
    assert parser.dropped == sum(gaps)


def test_geometry_change_is_counted_and_accepted() -> None:
    parser = MatParser()
    got = parser.feed(frame_bytes(1, 16, 32) + frame_bytes(2, 8, 8) + frame_bytes(3, 8, 8))
    assert [(f.rows, f.cols) for f in got] == [(16, 32), (8, 8), (8, 8)]
    assert parser.geometry_changes == 1
    assert parser.geometry == (8, 8)


def test_buffer_stays_bounded_under_a_garbage_flood() -> None:
    rng = random.Random(3)
    parser = MatParser()
    for _ in range(200):
        parser.feed(rng.randbytes(rng.randint(1, 40_000)))
        assert parser.buffered <= MAX_FRAME_LEN
    # The worst case: back-to-back plausible headers that each claim 4096 cells.
    fake = SYNC + bytes([1, 0, 0, 64, 64]) + (4096).to_bytes(2, "little")
    parser.feed(fake * 20_000)
    assert parser.buffered <= MAX_FRAME_LEN
    assert parser.frames == 0
    # And the stream still recovers afterwards.
    assert [f.seq for f in parser.feed(bytes(MAX_FRAME_LEN) + frame_bytes(9))] == [9]


def test_reset_forgets_partial_frame_and_sequence() -> None:
    parser = MatParser()
    parser.feed(frame_bytes(10) + frame_bytes(11)[:5])
    parser.reset()
    assert parser.buffered == 0
    parser.feed(frame_bytes(500))
    assert parser.dropped == 0


# -- the async driver on a real pseudo-terminal ------------------------------------------------


@pytest.fixture
def emulator() -> Iterator[MatModel]:
    with MatModel(seed=4) as emu:
        emu.lie_down("supine", age_months=6)
        yield emu


async def read_until(mat: MotionMat, predicate: object, timeout: float = 5.0) -> MatFrame:  # noqa: ASYNC109
    """Read frames until one satisfies ``predicate`` (a deadline, never a sleep)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        frame = await mat.read(max(deadline - loop.time(), 0.01))
        if predicate(frame):  # type: ignore[operator]
            return frame


async def test_frames_arrive_from_the_emulated_mat(emulator: MatModel) -> None:
    async with MotionMat(emulator.port) as mat:
        got = [await mat.read(2.0) for _ in range(5)]
    assert all((f.rows, f.cols) == (16, 32) for f in got)
    assert [f.seq for f in got] == list(range(got[0].seq, got[0].seq + 5))
    assert mat.parser.crc_errors == 0
    assert sum(got[-1].cells) > 1000  # a child is lying on it


async def test_garbage_bad_crc_and_lost_frames_are_skipped_and_counted(emulator: MatModel) -> None:
    async with MotionMat(emulator.port) as mat:
        first = await mat.read(2.0)
        emulator.inject_garbage(300)
        emulator.send_bad_crc()
        emulator.drop_frames(5)
        await read_until(mat, lambda f: f.seq >= first.seq + 10)
        stats = mat.stats()
    assert stats["crc_errors"] >= 1
    assert stats["skipped_bytes"] >= 300 + 523
    assert stats["dropped"] >= 6  # five dropped and the one with the bad CRC
    assert stats["resyncs"] >= 1


async def test_unplugged_mat_times_out_and_comes_back(emulator: MatModel) -> None:
    mat = MotionMat(emulator.port)
    try:
        await mat.read(2.0)
        emulator.unplug()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        with pytest.raises(SensorTimeout):
            while loop.time() < deadline:  # frames already in flight drain first
                await mat.read(0.5)
        emulator.plug()
        frame = await mat.read(2.0)
        assert frame.rows == 16
        # Plugging back powers the mat up again: its sequence starts over.
        await read_until(mat, lambda f: mat.parser.seq_restarts >= 1)
    finally:
        mat.close()
        mat.close()  # idempotent


async def test_silence_is_a_transient_timeout() -> None:
    emu = MatModel(seed=5)
    emu.close()
    # A closed emulator's pty is gone: opening fails with the OS's error.
    with pytest.raises(BusError) as err:
        await MotionMat(emu.port).read(0.5)
    assert err.value.errno is not None
    assert isinstance(err.value, OSError) and isinstance(err.value, TransientDriverError)
    silent = MatModel(seed=6)  # not started: the port exists but stays quiet
    try:
        async with MotionMat(silent.port) as mat:
            with pytest.raises(SensorTimeout) as timeout:
                await mat.read(0.3)
        assert isinstance(timeout.value, TimeoutError) and isinstance(timeout.value, DriverError)
    finally:
        silent.close()


async def test_emulator_closing_under_the_driver_is_a_bus_error() -> None:
    emu = MatModel(seed=7).start()
    mat = MotionMat(emu.port)
    try:
        await mat.read(2.0)
        emu.close()
        with pytest.raises((BusError, SensorTimeout)):
            while True:
                await mat.read(1.0)
    finally:
        mat.close()
        emu.close()
