"""The daemon's side of the event spool: events the root updater asks it to send.

The contract is in ``docs/ota.md`` and ``deploy/spool.py`` (the writer): one
JSON object per ``\\n``-terminated line in a file **root owns and the daemon
may only read**; the writer replaces it atomically.  The daemon records every
line after the last one it acknowledged, each **with the line's own id** (so a
line recorded twice after a crash is de-duplicated by the cloud), and only then
acknowledges the last id it recorded: :func:`remove_prefix` writes it to the
acknowledgement file in the daemon's own drop folder (next to the update
request), and the updater drops those lines the next time it writes.  A crash
in between repeats, never loses.

Without an acknowledgement file (``ack=None``: older callers, tests) a spool the
daemon may write is emptied in place as before; one it may not write is
remembered in memory for the life of the process.

:func:`spooled_event` is the pure part (what a line becomes); :class:`SpoolDrain`
is the daemon's task that reads the spool every ``spool_poll_s`` and records.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import stat
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, Protocol

from edge.event import DATA_TYPES, EnvelopeError, EventData, Severity, data_as
from edge.files import write_atomic

log = logging.getLogger(__name__)

MAX_SPOOL = 4 << 20
MAX_ACK = 256

_acked_in_memory: dict[str, str] = {}


def _open_regular(path: Path, flags: int) -> int | None:
    """An fd of ``path`` if it is a regular file (never through a final link), else None."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("event spool %s: cannot open (%s)", path, exc.strerror)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        log.warning("event spool %s: not a regular file; ignored", path)
        return None
    return fd


def _line_id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) else None


def read_ack(ack: Path) -> str | None:
    """The id the daemon acknowledged last (None when there is none)."""
    fd = _open_regular(ack, os.O_RDONLY)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        text = f.read(MAX_ACK + 1)
    value = text.decode("ascii", "replace").strip()
    return value if 0 < len(text) <= MAX_ACK and value.isprintable() else None


def read(path: Path, *, ack: Path | None = None) -> tuple[list[dict[str, Any]], bytes]:
    """The complete lines not yet acknowledged (parsed) and the exact bytes they came from."""
    fd = _open_regular(path, os.O_RDONLY)
    if fd is None:
        return [], b""
    try:
        with contextlib.suppress(OSError):  # a legacy writer's lock; the root writer renames
            fcntl.flock(fd, fcntl.LOCK_SH)
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(MAX_SPOOL)
    finally:
        os.close(fd)
    end = raw.rfind(b"\n") + 1  # a line without its newline is a write cut short
    lines = raw[:end].split(b"\n")[:-1]
    parsed: list[tuple[bytes, dict[str, Any] | None]] = []
    for line in lines:
        obj: dict[str, Any] | None = None
        if line.strip():
            try:
                loaded = json.loads(line)
                obj = loaded if isinstance(loaded, dict) else None
            except (ValueError, RecursionError):
                obj = None
            if obj is None:
                log.warning("spool %s: dropped a malformed line (%d bytes)", path, len(line))
        parsed.append((line, obj))
    acked = read_ack(ack) if ack is not None else _acked_in_memory.get(str(path))
    if acked is not None:
        ids = [_line_id(obj) if obj is not None else None for _, obj in parsed]
        if acked in ids:
            parsed = parsed[ids.index(acked) + 1 :]
    taken = b"".join(line + b"\n" for line, _ in parsed)
    return [obj for _, obj in parsed if obj is not None], taken


def _last_id(taken: bytes) -> str | None:
    for line in reversed(taken.split(b"\n")):
        try:
            obj = json.loads(line) if line.strip() else None
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict) and _line_id(obj) is not None:
            return _line_id(obj)
    return None


def write_ack(ack: Path, event_id: str) -> None:
    """Acknowledge ``event_id`` (and everything before it) atomically, in the daemon's folder."""
    ack.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(ack, event_id.encode("ascii") + b"\n", mode=0o640)


def remove_prefix(path: Path, taken: bytes, *, ack: Path | None = None) -> None:
    """Mark ``taken`` (what :func:`read` returned, now recorded) as done."""
    last = _last_id(taken)
    if ack is not None:
        if last is not None:
            write_ack(ack, last)
        return
    fd = _open_regular(path, os.O_RDWR) if os.access(path, os.W_OK) else None
    if fd is None:  # the updater's own (root's) spool: remember, in memory
        if last is not None:
            _acked_in_memory[str(path)] = last
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
        rest = raw[len(taken) :] if raw.startswith(taken) else raw
        rest = rest[: rest.rfind(b"\n") + 1]
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        if rest:
            os.write(fd, rest)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_and_clear(path: Path, *, ack: Path | None = None) -> list[dict[str, Any]]:
    """Read every unacknowledged line and mark them done (for callers that record nothing)."""
    events, taken = read(path, ack=ack)
    remove_prefix(path, taken, ack=ack)
    return events



class Spooled(Protocol):
    """``recorder.record``: the event is durable when it returns."""

    def __call__(
        self,
        data: EventData,
        *,
        severity: Severity | None = None,
        at: float | None = None,
        event_id: str | None = None,
    ) -> Awaitable[Any]: ...


def spooled_event(
    line: dict[str, Any],
) -> tuple[EventData, Severity, float | None, str | None] | None:
    """(data, severity, at, id) of one spool line, or None for a line without a valid
    severity, a kind of the vocabulary (``edge.event.KINDS``) and data that fits it.
    ``data`` says where it came from (``source``); ``at`` is the line's ``ts`` (None when
    absent or unreadable); the line's own id is kept, for de-duplication."""
    severity = line.get("severity")
    kind = DATA_TYPES.get(line.get("kind"))  # type: ignore[arg-type]
    if severity not in ("alarm", "warning", "info") or kind is None:
        return None
    raw = line.get("data")
    data: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
    data["source"] = str(line.get("source", "spool"))
    at = None
    ts = line.get("ts")
    if isinstance(ts, str):
        try:
            at = dt.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
        except ValueError:
            at = None
    event_id = line.get("id") if isinstance(line.get("id"), str) else None
    try:
        typed = data_as(data, kind)
    except EnvelopeError:
        return None
    return typed, severity, at, event_id


class SpoolDrain:
    """Sends the events the updater left in the spool (docs/ota.md)."""

    def __init__(self, path: Path, *, ack: Path, record: Spooled, poll_s: float) -> None:
        """``ack``: the acknowledgement file in the daemon's own drop folder (root's spool
        is read-only to the daemon)."""
        self.path = path
        self.ack = ack
        self._record = record
        self.poll_s = poll_s

    async def run(self) -> None:
        while True:
            try:
                lines, taken = await asyncio.to_thread(read, self.path, ack=self.ack)
                for line in lines:
                    event = spooled_event(line)
                    if event is None:
                        log.warning("event spool: dropped a line without a valid kind, severity "
                                    "or data")
                        continue
                    data, severity, at, event_id = event
                    await self._record(data, severity=severity, at=at, event_id=event_id)
                await asyncio.to_thread(remove_prefix, self.path, taken, ack=self.ack)
            except OSError as exc:
                log.warning("event spool %s unreadable: %s", self.path, exc)
            await asyncio.sleep(self.poll_s)
