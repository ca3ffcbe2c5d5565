"""The real daemon in its own process, on mock pins a test can drive through stdin.

    python -m tests.support.daemon_harness CONFIG

Prints ``ready`` once started.  Reads commands, one per line:
``detect SENSOR`` (the detector's pin goes high, then low) and ``quit``.
Used by the fault tests that SIGKILL the daemon.
"""

from __future__ import annotations

import asyncio
import sys

from edge.config import load
from edge.daemon import Daemon


async def main(path: str) -> None:
    config = load(path)
    daemon = Daemon(config)
    await daemon.start()
    print("ready", flush=True)
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
                await asyncio.to_thread(pin.drive_low)
                print(f"detected {arg}", flush=True)
    finally:
        await daemon.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
