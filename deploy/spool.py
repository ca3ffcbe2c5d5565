"""The event spool: how programs other than the daemon report events through it.

The updater runs as its own process (as root, while the daemon may be down
or being replaced), so it cannot hand an event to the daemon's outbox
directly.  It appends one JSON object per line to a spool file; the daemon
picks the lines up, records each as a normal event (envelope, outbox, MQTT)
and then empties the file.  The contract, also in ``docs/ota.md``:

- file: ``/var/lib/satoyama/spool/events.jsonl`` (UTF-8, one object per line,
  ``\\n``-terminated; a line without its newline is a write cut short by a
  power loss and is ignored);
- writers take ``flock(LOCK_EX)`` on the file, append the line with a single
  ``write``, ``fsync`` and unlock; readers take the same lock, record every
  complete line in the outbox, then truncate the file to zero before
  unlocking;
- fields: ``v`` (1), ``id`` (UUIDv7 - the daemon uses it as the event id, so
  a line recorded twice after a crash is de-duplicated by the cloud like any
  redelivery), ``kind``, ``severity`` (``alarm``/``warning``/``info``),
  ``ts`` (RFC 3339 UTC by the writer's clock, which may be unsynchronised),
  ``boot`` (kernel boot id), ``source`` (the writing program), ``data``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

import uuid6

log = logging.getLogger(__name__)

SPOOL_VERSION = 1


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


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
        "boot": _boot_id(),
        "source": source,
        "data": data,
    }
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def append(path: Path, kind: str, severity: str, data: dict[str, Any], *, source: str) -> str:
    """Append one event durably; returns its id.  The spool's folder is created if missing."""
    line = make_line(kind, severity, data, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    event_id = str(json.loads(line)["id"])
    log.info("spooled %s event %s for the daemon", kind, event_id)
    return event_id


# The reader is the daemon's (edge.spool); re-exported for the updater's tools and tests.
from edge.spool import read_and_clear  # noqa: E402,F401
