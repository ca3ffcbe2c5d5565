"""The event spool: how the root updater reports events through the daemon.

The updater runs as its own process (as root, while the daemon may be down
or being replaced), so it cannot hand an event to the daemon's outbox
directly.  It keeps a spool file **in a folder only root can write** that the
daemon may read; the daemon records every line it has not recorded yet as a
normal event (envelope, outbox, MQTT) and says how far it got in an
acknowledgement file in its own drop folder, which the updater reads (safely,
never following a link) to drop what was recorded.  Root never writes where
the daemon's user can.  The contract, also in ``docs/ota.md``:

- file: ``/var/lib/satoyama-update/spool/events.jsonl`` (folder 0755, file 0644,
  both root's; UTF-8, one object per ``\\n``-terminated line);
- the writer replaces the whole file atomically (temporary file, fsync,
  rename, fsync of the folder) under ``flock`` on the folder, so a reader never
  sees half a line; it drops the lines up to the acknowledged id, and the oldest
  lines beyond :data:`MAX_LINES` (logged: nothing the updater writes comes that fast).
  Only the writer shortens the file: the daemon never truncates or rewrites it
  (it may not write root's folder); it only replaces its own acknowledgement;
- fields: ``v`` (1), ``id`` (UUIDv7 - the daemon uses it as the event id, so
  a line recorded twice after a crash is de-duplicated by the cloud like any
  redelivery), ``kind``, ``severity`` (``alarm``/``warning``/``info``),
  ``ts`` (RFC 3339 UTC by the writer's clock, which may be unsynchronised),
  ``boot`` (kernel boot id), ``source`` (the writing program), ``data``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

import uuid6

from deploy.errors import UpdateError
from edge.boot import boot_id
from edge.files import write_atomic

log = logging.getLogger(__name__)


class UnsafePathError(UpdateError, PermissionError):
    """A path the updater would read or write is a link, or writable by someone else: refused."""


SPOOL_VERSION = 1
MAX_LINES = 1000
MAX_SPOOL = 4 << 20


def make_line(kind: str, severity: str, data: dict[str, Any], source: str) -> bytes:
    """One spool line (with its newline)."""
    if severity not in ("alarm", "warning", "info"):
        raise ValueError(f"bad severity {severity!r}")
    obj = {
        "v": SPOOL_VERSION,
        "id": str(uuid6.uuid7()),
        "kind": kind,
        "severity": severity,
        "ts": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "boot": boot_id() or "",
        "source": source,
        "data": data,
    }
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def own_dir(path: Path, mode: int) -> int:
    """Open (creating if missing) a folder that only we may write; refuse anything else.

    ``path`` itself must be a real folder (not a link), owned by us, not writable by
    group or others; it is created with exactly ``mode``.  Returns an ``O_DIRECTORY`` fd.
    (Its ancestors are the caller's to trust: the updater checks them once, at start.)
    """
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
        os.chmod(path, mode, follow_symlinks=False)  # mkdir's mode passes through the umask
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePathError(f"{path}: not a folder of our own ({exc.strerror})") from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise UnsafePathError(
            f"{path}: owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}; "
            "refusing to write there (it must be ours and writable by us alone)"
        )
    return fd


def _read_own(dir_fd: int, name: str) -> bytes:
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return b""
        return f.read(MAX_SPOOL)


def write_replace(dir_fd: int, name: str, data: bytes, mode: int) -> None:
    """Replace ``name`` in our folder atomically, with exactly ``mode``, never through a link.

    :func:`edge.files.write_atomic` relative to ``dir_fd``, durable; the exact
    ``mode`` matters because the units' umask (0077) must not decide who may read.
    """
    write_atomic(name, data, mode=mode, dir_fd=dir_fd)


def _line_id(line: bytes) -> str | None:
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None


def append(
    path: Path,
    kind: str,
    severity: str,
    data: dict[str, Any],
    *,
    source: str,
    acked: str | None = None,
) -> str:
    """Append one event durably; returns its id.

    ``acked``: the id of the last line the daemon has recorded (its acknowledgement);
    that line and every one before it are dropped.  The spool's folder is created
    (0755) if missing and must be ours alone (:class:`UnsafePathError` otherwise).
    """
    line = make_line(kind, severity, data, source)
    dir_fd = own_dir(path.parent, 0o755)
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)  # one writer at a time (released on close)
        old = _read_own(dir_fd, path.name)
        lines = old[: old.rfind(b"\n") + 1].splitlines(keepends=True)
        if acked is not None:
            ids = [_line_id(ln) for ln in lines]
            if acked in ids:
                lines = lines[ids.index(acked) + 1 :]
        if len(lines) >= MAX_LINES:
            log.error("event spool %s: dropped %d unsent lines", path, len(lines) - MAX_LINES + 1)
            lines = lines[len(lines) - MAX_LINES + 1 :]
        write_replace(dir_fd, path.name, b"".join([*lines, line]), 0o644)
    finally:
        os.close(dir_fd)
    event_id = str(json.loads(line)["id"])
    log.info("spooled %s event %s for the daemon", kind, event_id)
    return event_id


# The reader is the daemon's (edge.link.spool), re-exported for the updater's tools and tests.
# Note: read_and_clear *without* an acknowledgement file empties a spool the caller may write,
# in place; the daemon always passes its acknowledgement file and so never touches this one.
from edge.link.spool import read_and_clear  # noqa: E402

__all__ = [
    "MAX_LINES",
    "UnsafePathError",
    "append",
    "make_line",
    "own_dir",
    "read_and_clear",
    "write_replace",
]
