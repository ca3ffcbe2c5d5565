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
import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from cloud.config import StoreConfig, describe_dsn
from cloud.database import Database, PostgresDatabase, SqliteDatabase, Tx
from cloud.errors import StoreError
from cloud.store.journal import SentJournal

_T = TypeVar("_T")


class StoreThread:
    """The store's one thread: calls run one at a time, in order, the urgent ones first.

    Urgent are the sender's marks (a mail the SMTP server has just taken is
    "sent"): until that commit, a kill would mail it again after the restart,
    so it must not queue behind the receiver's and the timekeeper's work.
    """

    def __init__(self) -> None:
        self._queue: queue.PriorityQueue[
            tuple[int, int, Callable[[], Any] | None, Future[Any] | None]
        ] = queue.PriorityQueue()
        self._order = itertools.count()
        self._thread = threading.Thread(target=self._work, name="notifier-store", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], _T], *, urgent: bool = False) -> Future[_T]:
        future: Future[_T] = Future()
        self._queue.put((0 if urgent else 1, next(self._order), fn, future))
        return future

    def shutdown(self) -> None:
        """End the thread once the calls already submitted have run."""
        self._queue.put((2, next(self._order), None, None))

    def _work(self) -> None:
        while True:
            _, _, fn, future = self._queue.get()
            if fn is None or future is None:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's future
                future.set_exception(exc)
            else:
                future.set_result(result)


async def _on(thread: StoreThread, fn: Callable[[], _T], *, urgent: bool = False) -> _T:
    return await asyncio.wrap_future(thread.submit(fn, urgent=urgent))


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
