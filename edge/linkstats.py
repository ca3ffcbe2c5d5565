"""What crosses the uplink's socket, from the kernel's own TCP counters.

``TCP_INFO`` (Linux) counts the TCP payload bytes the peer acknowledged and the
bytes received, MQTT and TLS framing included, plus segments each way (each
costs an IP+TCP header on the SIM's bill).  Reading it every few seconds is a
single syscall.
"""

from __future__ import annotations

import datetime as dt
import socket
import struct
from dataclasses import dataclass

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
    """Bytes on the wire per UTC day, summed over connections."""

    def __init__(self) -> None:
        self.day = dt.datetime.now(dt.UTC).date()
        self.today = 0
        self.total = 0
        self._last: SocketCounters | None = None

    def new_connection(self) -> None:
        self._last = SocketCounters(0, 0, 0, 0)

    def sample(self, counters: SocketCounters | None) -> None:
        if counters is None or self._last is None:
            return
        delta = counters.wire_bytes - self._last.wire_bytes
        self._last = counters
        today = dt.datetime.now(dt.UTC).date()
        if today != self.day:
            self.day, self.today = today, 0
        if delta > 0:
            self.today += delta
            self.total += delta
