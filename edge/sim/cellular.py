"""A simulated cellular link: a TCP proxy that adds latency, counts bytes and can be cut.

Put it between the daemon and the broker (the daemon connects to
``link.port``).  ``delay_s`` is added in each direction, so the round trip
grows by twice that; bytes keep their order.  By default the link's throughput
is not limited; ``up_kbit_s`` / ``down_kbit_s`` give each direction a
capacity (an LTE-M uplink carries about 300 kbit/s): the bytes of every
connection in that direction then queue for one shared radio, each packet
(at most :data:`MSS` bytes) taking its size plus :data:`PACKET_OVERHEAD` of
IP+TCP header in airtime, before the delay is added.  The proxy stops reading
from a sender while :data:`QUEUE_LIMIT` bytes wait, so TCP's own flow control
pushes back on the device as a full modem buffer would.

:meth:`cut` drops every connection and refuses new ones until :meth:`restore`,
which is what a lost cell tower looks like to the device.
It runs its own asyncio loop on a thread so tests, benchmarks and the demo can
use it from synchronous or asynchronous code alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from types import TracebackType

from edge.sim.broker import free_port

MSS = 1448
"""Largest TCP payload per packet (1500 B MTU less IPv4, TCP and timestamp option)."""
PACKET_OVERHEAD = 52
"""IP+TCP header bytes a packet costs in airtime (as ``edge.link.linkstats`` bills them)."""
QUEUE_LIMIT = 256 * 1024
"""Bytes waiting for a limited direction before the proxy stops reading the sender."""


class CellularLink:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        delay_s: float = 0.0,
        up_kbit_s: float | None = None,
        down_kbit_s: float | None = None,
    ) -> None:
        """``up_kbit_s`` / ``down_kbit_s``: capacity device to broker / broker to device
        in kbit/s (1000 bit/s), headers included; None: unlimited."""
        for name, rate in (("up_kbit_s", up_kbit_s), ("down_kbit_s", down_kbit_s)):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be positive (or None for unlimited), not {rate}")
        self.target = (target_host, target_port)
        self.delay_s = delay_s
        self.up_kbit_s = up_kbit_s
        self.down_kbit_s = down_kbit_s
        self._radio_free_at = {True: 0.0, False: 0.0}
        """When each direction's radio (True: up) finishes what it already carries."""
        self.host = "127.0.0.1"
        self.port = free_port()
        self.bytes_up = 0
        """Bytes from the device to the broker."""
        self.bytes_down = 0
        self.connections = 0
        self._up = True
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cellular", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- control (any thread) --------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._up = False
        asyncio.run_coroutine_threadsafe(self._drop_all(), self._loop).result(10)

    def restore(self) -> None:
        self._up = True

    def reset_counters(self) -> None:
        self.bytes_up = self.bytes_down = 0

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> CellularLink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- the proxy (its own loop) ----------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)

    async def _drop_all(self) -> None:
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._drop_all()
        # Aborted transports end every pipe by themselves; wait for them to finish.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            _, stuck = await asyncio.wait(others, timeout=5)
            for task in stuck:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, upstream=True),
                self._pipe(up_reader, writer, upstream=False),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    def _airtime_s(self, upstream: bool, size: int) -> float | None:
        kbit_s = self.up_kbit_s if upstream else self.down_kbit_s
        if kbit_s is None:
            return None
        return (size + PACKET_OVERHEAD) * 8 / (kbit_s * 1000)

    def schedule(self, upstream: bool, data: bytes, now: float) -> list[tuple[float, bytes]]:
        """When each piece of ``data``, handed to the link at ``now``, reaches the other end:
        after the shared radio of its direction has carried it (if limited), plus the delay.
        Each call occupies the radio; the proxy calls it as bytes arrive."""
        if self._airtime_s(upstream, 0) is None:
            return [(now + self.delay_s, data)]
        out = []
        for start in range(0, len(data), MSS):
            piece = data[start : start + MSS]
            airtime = self._airtime_s(upstream, len(piece))
            assert airtime is not None
            done = max(now, self._radio_free_at[upstream]) + airtime
            self._radio_free_at[upstream] = done
            out.append((done + self.delay_s, piece))
        return out

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        queue: deque[tuple[float, bytes]] = deque()
        arrived = asyncio.Event()
        room = asyncio.Event()
        room.set()
        queued = 0
        done = False

        async def deliver() -> None:
            nonlocal queued
            try:
                while True:
                    while not queue:
                        if done:
                            return
                        arrived.clear()
                        await arrived.wait()
                    due, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    queue.popleft()
                    queued -= len(data)
                    if queued < QUEUE_LIMIT:
                        room.set()
                    writer.write(data)
                    await writer.drain()
            finally:
                room.set()  # never leave the reader waiting on a receiver that is gone

        sender = asyncio.create_task(deliver())
        try:
            while True:
                await room.wait()
                data = await reader.read(65536)
                if not data:
                    break
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                queue.extend(self.schedule(upstream, data, time.monotonic()))
                queued += len(data)
                if queued >= QUEUE_LIMIT:
                    room.clear()
                arrived.set()
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            arrived.set()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await sender
            with contextlib.suppress(ConnectionError, OSError):
                writer.write_eof()
