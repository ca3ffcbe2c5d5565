"""Worker processes that render events' mails, off the notifier's GIL.

The notifier is one busy core when it mails a burst: receiving, the store's
thread, SMTP and rendering (~0.3 ms of CPU a mail) share one GIL.  With
``delivery.render_processes`` > 0 the :class:`~cloud.plan.Planner` hands the
renderings of events to worker processes (``python -m cloud.render_workers``),
all those asked for in one turn of the event loop in one message.

Each worker is a child process that reads pickled batches on its stdin and
writes the pickled results on its stdout, each framed by a 4-byte length: no
multiprocessing machinery (no resource tracker, no forkserver, no feeder or
manager threads in the notifier).  A worker ends when its stdin closes, so
also when the notifier is killed.  The store, the sent journal and every
decision stay in the notifier; a worker only turns a job into bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import pickle
import signal
import struct
import sys
from collections import deque
from typing import Any, BinaryIO, Final

from cloud.errors import NotifierError

log = logging.getLogger("cloud.notifier")

_LENGTH: Final = struct.Struct("!I")
#: How long a stop waits for a worker to exit after its stdin closed.
STOP_S: Final = 2.0
#: The pipe that carries a worker's answers: one answer (12 events' mails, ~90 kB)
#: fits at once, where Linux's default 64 kB made the worker wait for the notifier
#: to read the first part before it could write the rest.
PIPE_SIZE: Final = 1 << 20


class WorkerLost(NotifierError):
    """A worker process ended or answered nonsense (the caller renders on its own)."""


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.reader = asyncio.create_task(self._read(), name=f"render-worker-{proc.pid}")

    async def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        error: BaseException = WorkerLost(f"render worker {self.proc.pid} ended")
        try:
            while True:
                head = await out.readexactly(_LENGTH.size)
                body = await out.readexactly(_LENGTH.unpack(head)[0])
                result = pickle.loads(body)
                if not self.waiting:
                    raise WorkerLost(f"render worker {self.proc.pid}: an answer nobody asked for")
                future = self.waiting.popleft()
                if not future.done():
                    future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            error = WorkerLost(f"render worker {self.proc.pid} ended: {exc}")
        except WorkerLost as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - unpickling raises anything: WorkerLost
            error = WorkerLost(f"render worker {self.proc.pid}: {exc}")
        finally:
            while self.waiting:
                future = self.waiting.popleft()
                if not future.done():
                    future.set_exception(error)
                    future.exception()  # retrieved: the caller may be gone

    def call(self, payload: bytes) -> asyncio.Future[Any]:
        stdin = self.proc.stdin
        if stdin is None or stdin.is_closing() or self.reader.done():
            raise WorkerLost(f"render worker {self.proc.pid} is gone")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append(future)
        stdin.write(_LENGTH.pack(len(payload)) + payload)
        return future


class RenderWorkers:
    """``count`` worker processes; :meth:`run` calls a function in one of them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._turn = itertools.count()

    async def start(self) -> None:
        for _ in range(self.count):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "cloud.render_workers",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "SATOYAMA_LOG_LEVEL": str(logging.getLogger().level)},
            )  # fmt: skip
            self._workers.append(_Worker(proc))

    @property
    def alive(self) -> bool:
        return any(not w.reader.done() for w in self._workers)

    async def run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` in the least busy worker (both must pickle)."""
        live = [w for w in self._workers if not w.reader.done()]
        if not live:
            raise WorkerLost("no render worker left")
        turn = next(self._turn)
        worker = min(live, key=lambda w: (len(w.waiting), (id(w) + turn) % 7))
        payload = pickle.dumps((function, args), protocol=pickle.HIGHEST_PROTOCOL)
        return await worker.call(payload)

    async def close(self) -> None:
        """Close each worker's stdin (it exits), wait for it, kill what lingers."""
        workers, self._workers = self._workers, []
        for worker in workers:
            if worker.proc.stdin is not None:
                worker.proc.stdin.close()
        for worker in workers:
            try:
                async with asyncio.timeout(STOP_S):
                    await worker.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
            worker.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker.reader


def _serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The worker's loop: a call in, its result out, until stdin closes."""
    while True:
        head = stdin.read(_LENGTH.size)
        if len(head) < _LENGTH.size:
            return
        function, args = pickle.loads(stdin.read(_LENGTH.unpack(head)[0]))
        result = pickle.dumps(function(*args), protocol=pickle.HIGHEST_PROTOCOL)
        stdout.write(_LENGTH.pack(len(result)) + result)
        stdout.flush()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the notifier's to handle
    level = int(os.environ.get("SATOYAMA_LOG_LEVEL", logging.INFO))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not break the framing
    with contextlib.suppress(OSError, AttributeError):  # Linux only; a limit may refuse it
        fcntl.fcntl(stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    import cloud.plan  # noqa: F401  (imported before the first call, not during it)

    _serve(stdin, stdout)


if __name__ == "__main__":
    main()
