"""The daemon's side of the event spool: events other programs (the updater) ask it to send.

The contract is in ``docs/ota.md`` and ``deploy/spool.py`` (the writers): one
JSON object per ``\\n``-terminated line, appended under ``flock``.  The daemon
reads the complete lines, records each as an event **with the line's own id**
(so a line recorded twice after a crash is de-duplicated by the cloud), and
only then removes what it read — a crash in between repeats, never loses.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def read(path: Path) -> tuple[list[dict[str, Any]], bytes]:
    """The complete lines (parsed) and the exact bytes they came from."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return [], b""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
    finally:
        os.close(fd)
    end = raw.rfind(b"\n") + 1  # a line without its newline is a write cut short
    taken = raw[:end]
    events: list[dict[str, Any]] = []
    for line in taken.split(b"\n"):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            log.warning("spool %s: dropped a malformed line (%d bytes)", path, len(line))
            continue
        events.append(obj)
    return events, taken


def remove_prefix(path: Path, taken: bytes) -> None:
    """Remove ``taken`` from the front of the spool (complete lines appended since stay)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read()
        rest = raw[len(taken) :] if raw.startswith(taken) else raw
        # Writers append under this lock, so an unterminated tail now is a write a
        # power cut left short: drop it, or the next line would be glued onto it.
        rest = rest[: rest.rfind(b"\n") + 1]
        os.lseek(fd, 0, os.SEEK_SET)
        os.ftruncate(fd, 0)
        if rest:
            os.write(fd, rest)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_and_clear(path: Path) -> list[dict[str, Any]]:
    """Read every complete line and remove them at once (for callers that record nothing)."""
    events, taken = read(path)
    remove_prefix(path, taken)
    return events
