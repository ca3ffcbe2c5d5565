"""The kernel's boot id: which power-on of the machine an event (or a spool line) came from.

A Pi has no real-time clock, so timestamps from before the clock was set can
repeat across boots; the boot id tells them apart.  The daemon's recorder and
the root updater's event spool both stamp it, so it is read here only.
"""

from __future__ import annotations

from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
"""Linux's id of the running boot (a UUID that changes at every power-on)."""


def boot_id(path: Path = BOOT_ID) -> str | None:
    """The id of this boot, or ``None`` where the kernel offers none (each caller picks a
    stand-in: the spool writes ``""``, the recorder a random id for the life of the process)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text or None
