"""Tell systemd how the daemon is doing: readiness, watchdog pings, stopping.

systemd's notification protocol is one datagram per message on the AF_UNIX
socket named in ``NOTIFY_SOCKET`` (an absolute path, or ``@name`` for the
abstract namespace), each datagram newline-separated ``KEY=VALUE`` fields
(``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=...``).  This module
speaks it directly, so the daemon needs no libsystemd binding.  Outside
systemd (``NOTIFY_SOCKET`` unset) every call is a no-op: the daemon must run
the same way on a laptop, in the tests and under ``edge demo``.

A failed send is logged once and never raised: losing a readiness message
must not stop a daemon that drives a siren.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _socket_address(value: str) -> str | None:
    """The socket address from ``NOTIFY_SOCKET``, or None when unset or not usable."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace: a leading NUL byte, no file
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract; not notifying", value)
    return None


def _watchdog_usec(env: Mapping[str, str]) -> int | None:
    """``WATCHDOG_USEC`` if it is meant for this process (``WATCHDOG_PID`` unset or ours)."""
    raw = env.get("WATCHDOG_USEC", "")
    if not raw:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; no watchdog pings", raw)
        return None
    return usec if usec > 0 else None


class SystemdNotifier:
    """sd_notify(3) without libsystemd.  ``ready()``, ``watchdog()``, ``stopping()``.

    ``env`` defaults to ``os.environ``; tests pass their own mapping.
    """

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _socket_address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_usec = _watchdog_usec(env)
        self._sock: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``NOTIFY_SOCKET`` was set and usable)."""
        return self.address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between pings: half of ``WATCHDOG_USEC``, as systemd advises; None: none."""
        if self.watchdog_usec is None or not self.enabled:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *fields: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` fields.  True if sent; never raises."""
        if self.address is None:
            return False
        payload = "\n".join(fields).encode("utf-8")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload, socket.MSG_DONTWAIT, self.address)
        except OSError as exc:
            if not self._warned:  # once: a dead socket would otherwise log at every ping
                log.warning("cannot notify systemd: %s", exc)
                self._warned = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """The daemon has started and does its work (``Type=notify`` waits for this)."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        """Still alive (resets systemd's ``WatchdogSec`` timer)."""
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        """Shutting down on purpose (so systemd does not count it as a failure)."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        """Free text shown by ``systemctl status``."""
        return self.notify(f"STATUS={text}")

    async def run_watchdog(self) -> None:
        """Ping the watchdog at half ``WATCHDOG_USEC`` until cancelled; return at once if none.

        Pings come from the event loop itself, so a blocked loop stops them and
        systemd restarts the daemon.
        """
        interval = self.watchdog_interval_s
        if interval is None:
            return
        log.info("systemd watchdog: pinging every %.1f s", interval)
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Close the socket.  Idempotent."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
