"""The store's plumbing: its one thread, opening and closing, running a transaction.

Every table family (:mod:`cloud.store.events`, :mod:`~cloud.store.mails`,
:mod:`~cloud.store.devices`, :mod:`~cloud.store.episodes`,
:mod:`~cloud.store.telemetry`, :mod:`~cloud.store.pruning`) is a
:class:`StoreBase` with the calls on its tables; :class:`cloud.store.Store`
is all of them.  The engine is SQLite (one instance) or PostgreSQL (several);
see :mod:`cloud.database`.  All calls run on one dedicated thread
(:class:`StoreThread`), so the event loop never waits on ``fsync`` and no two
calls interleave.
"""

from __future__ import annotations

import asyncio
import collections
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from cloud.config import StoreConfig, describe_dsn
from cloud.database import Database, PostgresDatabase, SqliteDatabase, Tx
from cloud.errors import StoreError
from cloud.store.journal import SentJournal

_T = TypeVar("_T")


#: A call for the store's thread: what to run, the future of its outcome, its loop.
_Call = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class StoreThread:
    """The store's one thread: calls run one at a time, in order, the urgent ones first.

    Urgent are the sender's marks (a mail the SMTP server has just taken is
    "sent"): until that commit, a kill would mail it again after the restart,
    so it must not queue behind the receiver's and the timekeeper's work.

    A call is handed over with its asyncio future and given back to its loop with
    ``loop.call_soon_threadsafe``: no ``concurrent.futures.Future`` in between,
    whose locks and conditions (and ``asyncio.wrap_future``'s chaining) cost the
    event loop's thread more than the hand-over itself, several times an event.
    A call whose future is cancelled before it starts does not run.
    """

    def __init__(self) -> None:
        self._urgent: collections.deque[_Call] = collections.deque()
        self._calls: collections.deque[_Call] = collections.deque()
        self._tokens: queue.SimpleQueue[None] = queue.SimpleQueue()
        """One for each call handed over, and one for :meth:`shutdown`."""
        self._closing = False
        self._thread = threading.Thread(target=self._work, name="notifier-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], _T], *, urgent: bool = False) -> asyncio.Future[_T]:
        """Run ``fn`` on the thread; its outcome comes back on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        (self._urgent if urgent else self._calls).append((fn, future, loop))
        self._tokens.put(None)
        return future

    def shutdown(self) -> None:
        """End the thread once the calls already submitted have run."""
        self._closing = True
        self._tokens.put(None)

    def _work(self) -> None:
        while True:
            self._tokens.get()
            if self._urgent:
                fn, future, loop = self._urgent.popleft()
            elif self._calls:
                fn, future, loop = self._calls.popleft()
            elif self._closing:
                return
            else:  # pragma: no cover - a token is put after its call, never before
                continue
            if future.cancelled():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                _give_back(loop, future, None, exc)
            else:
                _give_back(loop, future, result, None)


def _give_back(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    result: object,
    exc: BaseException | None,
) -> None:
    """Settle ``future`` with the outcome of its call, on its loop (from the thread)."""
    try:
        loop.call_soon_threadsafe(_settle, future, result, exc)
    except RuntimeError:  # the loop is closed: nobody waits for it any more
        pass


def _settle(future: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


async def _on(thread: StoreThread, fn: Callable[[], _T], *, urgent: bool = False) -> _T:
    return await thread.submit(fn, urgent=urgent)


class StoreBase:
    """What every table family shares: the connection, its thread, opening and closing.

    Open the whole store with ``await Store.open(config)`` (an async context manager).
    """

    def __init__(
        self, db: Database, thread: StoreThread, journal: SentJournal | None = None
    ) -> None:
        self._db = db
        self._thread = thread
        self._closed = False
        self.where = db.where
        self.shared = db.shared
        self.journal = journal
        """Beside an SQLite store: the mails accepted but maybe not yet marked sent."""

    # --- life cycle ---------------------------------------------------------

    @classmethod
    async def open(cls, where: StoreConfig | str | Path, *, readonly: bool = False) -> Self:
        """Open (creating and migrating unless ``readonly``) the configured store.

        ``where`` is the ``[store]`` configuration, or the path of an SQLite file.
        """
        thread = StoreThread()
        connect: Callable[[], Database]
        journal: SentJournal | None = None
        if isinstance(where, StoreConfig) and where.backend == "postgresql":
            assert where.dsn is not None  # checked with the configuration
            dsn, label = where.dsn.reveal(), describe_dsn(where.dsn)

            def connect() -> Database:
                return PostgresDatabase.connect(dsn, label, readonly=readonly)

        else:
            path = Path(where.path or "" if isinstance(where, StoreConfig) else where)
            journal = None if readonly else SentJournal.beside(path)

            def connect() -> Database:
                return SqliteDatabase.connect(path, readonly=readonly)

        try:
            db = await _on(thread, connect)
        except BaseException:
            thread.shutdown()
            raise
        return cls(db, thread, journal)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.journal is not None:
            self.journal.close()
        try:
            await _on(self._thread, self._db.close)
        finally:
            self._thread.shutdown()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- plumbing ---------------------------------------------------------------------

    async def _run(
        self,
        work: Callable[[Tx], _T],
        *,
        write: bool = True,
        urgent: bool = False,
        durable: bool = True,
    ) -> _T:
        if self._closed:
            raise StoreError(f"store {self.where} is closed")
        return await _on(
            self._thread, lambda: self._db.run(work, write=write, durable=durable), urgent=urgent
        )

    async def _read(self, sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return await self._run(lambda tx: tx.query(sql, args), write=False)

    async def _write(self, sql: str, args: tuple[object, ...], *, urgent: bool = False) -> None:
        await self._run(lambda tx: tx.execute(sql, args), urgent=urgent)
