"""What crosses the uplink's socket, from the kernel's own TCP counters.

``TCP_INFO`` (Linux) counts the TCP payload bytes the peer acknowledged and the
bytes received, MQTT and TLS framing included, plus segments each way (each
costs an IP+TCP header on the SIM's bill).  Reading it every few seconds is a
single syscall.  Today's count is kept in a small file across restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.files import write_atomic

log = logging.getLogger(__name__)

SAVE_EVERY_S = 300.0
"""How often the uplink writes today's count while connected."""

# struct tcp_info (linux/tcp.h): tcpi_bytes_acked @120, tcpi_bytes_received @128,
# tcpi_segs_out @136, tcpi_segs_in @140.
_TCP_INFO_LEN = 144
_OFFSET = 120
_IP_TCP_HEADER = 52  # IPv4 20 + TCP 20 + timestamps option 12


@dataclass(frozen=True)
class SocketCounters:
    bytes_out: int
    bytes_in: int
    segs_out: int
    segs_in: int

    @property
    def wire_bytes(self) -> int:
        """Payload both ways plus an IP+TCP header per segment: what a SIM bills, roughly."""
        return self.bytes_out + self.bytes_in + _IP_TCP_HEADER * (self.segs_out + self.segs_in)


def read_counters(sock: socket.socket | None) -> SocketCounters | None:
    """The socket's counters, or None (closed, not TCP, or an old kernel)."""
    if sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
    except (OSError, ValueError):
        return None
    if len(raw) < _TCP_INFO_LEN:
        return None
    acked, received, segs_out, segs_in = struct.unpack_from("=QQII", raw, _OFFSET)
    return SocketCounters(acked, received, segs_out, segs_in)


class DailyUsage:
    """Bytes on the wire per UTC day, summed over connections.

    With a ``state_path``, today's count survives a restart: :meth:`save`
    writes it (the uplink does every :data:`SAVE_EVERY_S` and at close) and a
    new instance takes it back when the file is of the same UTC day.  A kill -9
    loses at most the bytes counted since the last save.
    """

    def __init__(
        self,
        state_path: Path | None = None,
        *,
        today: Callable[[], dt.date] = lambda: dt.datetime.now(dt.UTC).date(),
    ) -> None:
        self._today = today
        self.day = today()
        self.today = 0
        self.total = 0
        self._last: SocketCounters | None = None
        self.state_path = state_path
        if state_path is not None:
            self._restore(state_path)

    def new_connection(self) -> None:
        self._last = SocketCounters(0, 0, 0, 0)

    def sample(self, counters: SocketCounters | None) -> None:
        if counters is None or self._last is None:
            return
        delta = counters.wire_bytes - self._last.wire_bytes
        self._last = counters
        today = self._today()
        if today != self.day:
            self.day, self.today = today, 0
        if delta > 0:
            self.today += delta
            self.total += delta

    def save(self) -> None:
        """Write today's count (atomically; not fsynced: it is a statistic).  Logs on failure."""
        if self.state_path is None:
            return
        state = {"day": self.day.isoformat(), "today": self.today}
        try:
            write_atomic(self.state_path, json.dumps(state).encode(), durable=False)
        except OSError as exc:
            log.warning("cannot keep today's link usage in %s: %s", self.state_path, exc)

    def _restore(self, path: Path) -> None:
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            day, count = dt.date.fromisoformat(state["day"]), int(state["today"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("kept link usage %s unreadable (%s): counting from zero", path, exc)
            return
        if day == self.day and count >= 0:
            self.today = count
