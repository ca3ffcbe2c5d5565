"""The real daemon in its own process, on mock pins a test can drive through stdin.

    python -m tests.support.daemon_harness CONFIG

Prints ``ready`` once started, then answers commands, one per line:

``detect SENSOR``   the detector's pin goes high, then low; prints ``siren on|off``
``burst N``         records N events as fast as it can; prints ``made ID`` before
                    each is handed to the outbox and ``rec ID durable|memory`` after
``fill DIR``        fills the file system holding DIR (a real ENOSPC); ``free DIR`` undoes it
``ro DIR`` / ``rw DIR``  remounts the file system at DIR read-only / read-write
``quit``

Used by the fault tests that SIGKILL the daemon or take its disk away (those run
it inside ``unshare -rm`` with a small tmpfs, so the disk really is full).
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
from pathlib import Path

from edge.config import load
from edge.daemon import Daemon
from edge.event import Severity
from tests.support.events import numbered


def say(*words: object) -> None:
    print(*words, flush=True)


def fill(folder: Path) -> None:
    chunk = b"\0" * 65536
    with (folder / "filler").open("wb", buffering=0) as f:
        for size in (len(chunk), 4096, 1):  # down to the last byte
            try:
                while True:
                    f.write(chunk[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise


async def burst(daemon: Daemon, n: int) -> None:
    assert daemon.recorder is not None
    severities: tuple[Severity, ...] = ("alarm", "warning", "info")

    async def one(i: int) -> None:
        event = daemon.recorder.make(numbered(i), severity=severities[i % 3])
        say("made", event.id)
        durable = await daemon.outbox.put(event)
        say("rec", event.id, "durable" if durable else "memory")

    for start in range(0, n, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 200))))


async def main(path: str) -> None:
    config = load(path)
    daemon = Daemon(config)
    await daemon.start()
    say("ready")
    loop = asyncio.get_running_loop()
    try:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "quit":
                break
            cmd, _, arg = line.strip().partition(" ")
            if cmd == "detect":
                pin = daemon.detectors[arg].pin
                await asyncio.to_thread(pin.drive_high)
                on = daemon.pin_factory.pin(27).state
                await asyncio.to_thread(pin.drive_low)
                say("siren", "on" if on else "off")
            elif cmd == "burst":
                await burst(daemon, int(arg))
                say("burst done")
            elif cmd == "fill":
                fill(Path(arg))
                say("filled")
            elif cmd == "free":
                (Path(arg) / "filler").unlink()
                os.sync()
                say("freed")
            elif cmd in ("ro", "rw"):
                # deliberate: the remount lands before the daemon runs again
                subprocess.run(["mount", "-o", f"remount,{cmd}", arg], check=True)  # noqa: ASYNC221
                say(f"mounted {cmd}")
    finally:
        await daemon.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
