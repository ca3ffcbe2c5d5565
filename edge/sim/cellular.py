"""A simulated cellular link: a TCP proxy that adds latency, counts bytes and can be cut.

Put it between the daemon and the broker (the daemon connects to
``link.port``).  ``delay_s`` is added in each direction, so the round trip
grows by twice that; bytes keep their order and the link's throughput is not
limited.  :meth:`cut` drops every connection and refuses new ones until
:meth:`restore`, which is what a lost cell tower looks like to the device.
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


class CellularLink:
    def __init__(self, target_host: str, target_port: int, *, delay_s: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay_s = delay_s
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

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        queue: deque[tuple[float, bytes]] = deque()
        arrived = asyncio.Event()
        done = False

        async def deliver() -> None:
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
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if upstream:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                queue.append((time.monotonic() + self.delay_s, data))
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
