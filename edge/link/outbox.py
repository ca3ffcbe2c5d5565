"""The outbox: events and telemetry waiting for the cloud, durable in SQLite.

Promises, in order of importance:

1. **Recorded means durable.**  :meth:`Outbox.put` returns ``True`` only once the
   row is committed with ``synchronous=FULL`` in WAL mode (it survives a power
   cut, not just a crash).  A row leaves only when :meth:`Outbox.ack` is called
   for it (the uplink does so when the cloud says it stored the row).
2. **Nothing is lost silently.**  Every loss or suspected loss becomes one
   :class:`Notice` (:meth:`Outbox.take_notices`, :attr:`Outbox.notice_ready`)
   that the daemon reports exactly once:

   - a row that cannot be read or parsed (a flipped bit) is moved, raw bytes
     and all, to the ``quarantine`` table and the queue moves on; nothing
     waits behind it;
   - a file found corrupt (at open, while running, or by the background
     integrity check) is moved aside with its ``-wal``; every readable row is
     salvaged into the fresh file with its id (the cloud de-duplicates), and
     the notice says how many rows were salvaged and how many were not.
     Files set aside earlier and never salvaged are salvaged at the next open;
   - before SQLite may discard a ``-wal`` it is checked: a ``-wal`` of another
     outbox (the ``outbox_id`` in ``meta`` differs from the main file's, read
     with ``immutable=1``) is set aside unused; one whose committed frames
     SQLite would drop (damaged, truncated) is copied aside; a 0-byte file
     where an outbox was expected is reported (and its ``-wal``, which SQLite
     would delete, is kept and salvaged);
   - rows that neither disk nor memory can hold are counted by kind.
3. **Storage trouble never stops the device.**  When the disk is full,
   read-only, failing or locked, rows wait in a bounded memory buffer
   (``put`` returns ``False``: kept, but not durable), are still handed to the
   uplink, and are written when the disk takes writes again.  A fault is
   noticed once, and recovery only after a commit that really wrote rows.
4. **Alarms first, alarms last.**  Rows leave in (priority, age) order.  When
   the configured cap is reached the oldest rows of the lowest priority are
   evicted (through the ``(rank, n)`` index: the cost does not grow with the
   backlog); alarms only when nothing else is left.  Evictions are counted by
   kind until reported (:meth:`Outbox.forget_evictions`).
5. **Counts that cannot drift.**  The row count lives in ``meta`` and changes
   in the same transaction as the rows; a rolled-back transaction restores it.
   :meth:`stats` is O(1).
6. **Cheap to open.**  Opening reads the header, the schema and ``meta``; the
   full integrity check (:meth:`check_integrity`) runs later, off the start
   path, on its own read connection.  ``auto_vacuum=INCREMENTAL`` (version 2 of
   the schema; version-1 files are migrated) gives space back after a drain.

All SQLite work runs on one writer thread that owns the connection.  Jobs that
queue up while a commit is in flight go into the next transaction together
(group commit): a burst costs one fsync per batch, and an alarm waits at most
for the commit in progress plus its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import queue
import secrets
import shutil
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from edge.errors import EdgeError
from edge.event import SEVERITY_RANK, EnvelopeError, Event, decode, decode_telemetry, encode

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
TELEMETRY_RANK = 3
"""Telemetry leaves after every event and is evicted first."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    n        INTEGER PRIMARY KEY,      -- insertion order
    id       TEXT NOT NULL UNIQUE,     -- event id (or telemetry batch id)
    seq      INTEGER NOT NULL,         -- the event's seq (0 for telemetry)
    rank     INTEGER NOT NULL,         -- 0 alarm, 1 warning, 2 info, 3 telemetry
    kind     TEXT NOT NULL,
    channel  TEXT NOT NULL,            -- the topic leaf: 'events' or 'telemetry'
    created  REAL NOT NULL,            -- unix time it was stored
    payload  BLOB NOT NULL,            -- sent as is
    crc      INTEGER                   -- CRC-32 of the other columns but created (NULL: v1 rows)
);
CREATE INDEX IF NOT EXISTS events_by_priority ON events (rank, n);
CREATE TABLE IF NOT EXISTS quarantine (
    q        INTEGER PRIMARY KEY,
    at       REAL NOT NULL,            -- unix time it was moved here
    reason   TEXT NOT NULL,
    n ANY, id ANY, seq ANY, rank ANY, kind ANY, channel ANY, created ANY, payload ANY, crc ANY
);
"""
_V1_COLUMNS = {"n", "id", "seq", "rank", "kind", "channel", "created", "payload"}
_COLUMNS = _V1_COLUMNS | {"crc"}
_RAW_COLUMNS = (
    "n, CAST(id AS BLOB), seq, rank, CAST(kind AS BLOB), CAST(channel AS BLOB), created, "
    "CAST(payload AS BLOB), crc"
)
"""Every column as stored: text as bytes, decoded by us (a flipped bit is data, not a crash)."""

# SQLite primary result codes that mean "the storage is in trouble", not "our bug".
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_STORAGE_CODES = {
    _SQLITE_BUSY: "locked",
    _SQLITE_LOCKED: "locked",
    _SQLITE_READONLY: "read_only",
    _SQLITE_IOERR: "io_error",
    _SQLITE_FULL: "disk_full",
    _SQLITE_CANTOPEN: "cannot_open",
    _SQLITE_CORRUPT: "corrupt",
    _SQLITE_NOTADB: "corrupt",
}

_ROWS_PER_INSERT = 256  # 7 parameters a row: well below SQLite's 32,766 limit
_VACUUM_FREE_PAGES = 256
"""Give free pages back to the file system once this many are free (1 MiB at 4 KiB)."""
_VACUUM_STEP_PAGES = 1024
_WAL_MAGIC = (0x377F0682, 0x377F0683)


@functools.lru_cache(maxsize=8)
def _insert_sql(n: int) -> str:
    """``INSERT`` of ``n`` rows (Row's fields are the columns, in order)."""
    values = ",".join(["(?,?,?,?,?,?,?,?)"] * n)
    return (
        "INSERT OR IGNORE INTO events (id, seq, rank, kind, channel, created, payload, crc) "
        f"VALUES {values}"
    )


class OutboxError(EdgeError, RuntimeError):
    """The outbox cannot do what was asked (closed, or a bug in a query)."""


class CorruptOutbox(OutboxError):
    """The file is not a usable outbox (garbage, truncated, another schema)."""


@dataclass(frozen=True, slots=True)
class Pending:
    id: str
    kind: str
    rank: int
    channel: str
    payload: bytes


class Row(NamedTuple):
    """One stored message (a tuple: cheap to make on the hot path)."""

    id: str
    seq: int
    rank: int
    kind: str
    channel: str
    created: float
    payload: bytes

    @classmethod
    def of(cls, event: Event, created: float) -> Row:
        return cls(
            event.id,
            event.seq,
            SEVERITY_RANK.get(event.severity, 2),
            event.kind,
            "events",
            created,
            encode(event),
        )


def row_crc(
    id_b: bytes, seq: int, rank: int, kind_b: bytes, channel_b: bytes, payload: bytes
) -> int:
    """CRC-32 of a row as stored (``created`` aside): a flipped bit that still parses
    (a letter in a JSON string) must not be sent as if it were the event."""
    head = b"\0".join((id_b, b"%d" % seq, b"%d" % rank, kind_b, channel_b))
    return zlib.crc32(payload, zlib.crc32(head))


def _with_crc(r: Row) -> tuple[Any, ...]:
    crc = row_crc(r.id.encode(), r.seq, r.rank, r.kind.encode(), r.channel.encode(), r.payload)
    return (*r, crc)


def parse_row(raw: tuple[Any, ...]) -> Row | str:
    """A row as read with ``_RAW_COLUMNS`` (without ``n``), or why it is unusable.

    The text columns must be UTF-8, the numbers numbers, and the payload must
    parse as what its channel says (an event envelope, a telemetry batch)
    carrying the same id.
    """
    try:
        id_b, seq, rank, kind_b, channel_b, created, payload, crc = raw
        id_ = bytes(id_b).decode("utf-8")
        kind = bytes(kind_b).decode("utf-8")
        channel = bytes(channel_b).decode("utf-8")
    except (UnicodeDecodeError, TypeError, ValueError) as exc:
        return f"unreadable text: {exc}"
    if not isinstance(seq, int) or not isinstance(rank, int) or not 0 <= rank <= TELEMETRY_RANK:
        return f"bad numbers: seq {seq!r}, rank {rank!r}"
    if not isinstance(created, (int, float)) or not isinstance(payload, bytes):
        return "bad created time or payload type"
    if crc is not None and crc != row_crc(id_b, seq, rank, kind_b, channel_b, payload):
        return "checksum differs: the row was damaged"
    try:
        if channel == "events":
            if decode(payload).id != id_:
                return "payload's id differs from the row's"
        elif channel == "telemetry":
            batch_id = decode_telemetry(payload).id
            if batch_id and batch_id != id_:
                return "payload's id differs from the row's"
        else:
            return f"unknown channel {channel[:32]!r}"
    except EnvelopeError as exc:
        return str(exc)[:200]
    return Row(id_, seq, rank, kind, channel, float(created), payload)


@dataclass(frozen=True)
class StorageFault:
    code: str
    """``disk_full``, ``read_only``, ``io_error``, ``locked``, ``cannot_open``, ``corrupt``."""
    message: str
    since: float


@dataclass(frozen=True)
class Notice:
    """Something the daemon must report once (storage trouble, damage, loss)."""

    kind: str
    """``fault``, ``recovered``, ``quarantined``, ``corrupt`` (a file moved aside and
    salvaged), ``wal`` (a ``-wal`` set aside), ``empty_file``, ``evicting``,
    ``memory_full`` (rows lost from memory while the disk refused them)."""
    code: str
    """Short and stable: the fault code, or what was found (``foreign``, ``truncated`` …)."""
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    oldest_created: float | None
    evicted: dict[str, int] = field(default_factory=dict)
    buffered_in_memory: int = 0
    quarantined: int = 0


# -- jobs for the writer thread ------------------------------------------------


class _Job:
    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future


class _Put(_Job):
    __slots__ = ("probe", "rows")

    def __init__(self, loop: Any, future: Any, rows: list[Row], probe: bool = False) -> None:
        super().__init__(loop, future)
        self.rows = rows
        self.probe = probe
        """A retry: write something real even when nothing waits, to test the disk."""


class _Ack(_Job):
    __slots__ = ("ids",)

    def __init__(self, loop: Any, future: Any, ids: list[str]) -> None:
        super().__init__(loop, future)
        self.ids = ids


class _Query(_Job):
    __slots__ = ("fallback", "fn")

    def __init__(
        self,
        loop: Any,
        future: Any,
        fn: Callable[[sqlite3.Connection], Any],
        fallback: Callable[[], Any] | None,
    ) -> None:
        super().__init__(loop, future)
        self.fn = fn
        self.fallback = fallback


class _Repair(_Job):
    """The background check found trouble: ``corrupt`` (salvage) or ``recount``."""

    __slots__ = ("reason", "what")

    def __init__(self, loop: Any, future: Any, what: str, reason: str) -> None:
        super().__init__(loop, future)
        self.what = what
        self.reason = reason


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, exc in results:
        if future.done():
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


def _storage_code(exc: sqlite3.Error) -> str | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:  # e.g. raised before reaching SQLite
        text = str(exc).lower()
        if "disk is full" in text:
            return "disk_full"
        if "readonly" in text or "read-only" in text:
            return "read_only"
        if "not a database" in text or "malformed" in text:
            return "corrupt"
        return "io_error" if isinstance(exc, sqlite3.OperationalError) else None
    return _STORAGE_CODES.get(code & 0xFF)


def _stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def _free_name(path: Path, tag: str) -> Path:
    target = path.with_name(f"{path.name}.{tag}-{_stamp()}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{tag}-{_stamp()}-{n}")
    return target


# -- the -wal file, read by us before SQLite may discard any of it -----------------


@dataclass(frozen=True)
class WalScan:
    """What a ``-wal`` holds beyond what SQLite will use (frames are 1-based)."""

    page_size: int
    frames: int
    """Whole frames in the file."""
    partial_bytes: int
    """Bytes of a frame cut short at the end (0: none)."""
    dropped_commits: int
    """Commit frames of this WAL (its salts) after ``used``: committed, yet dropped."""


def _wal_checksum(data: bytes, big_endian: bool, s1: int, s2: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s1 = (s1 + words[i] + s2) & 0xFFFFFFFF
        s2 = (s2 + words[i + 1] + s1) & 0xFFFFFFFF
    return s1, s2


def wal_frames(wal: bytes) -> tuple[int, list[tuple[int, bytes]]]:
    """Page size and the (page number, page) frames SQLite would use, checksums checked."""
    if len(wal) < 32:
        return 0, []
    magic, _version, page_size, _ckpt, salt1, salt2 = struct.unpack(">6I", wal[:24])
    if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
        return 0, []
    big = bool(magic & 1)
    s1, s2 = _wal_checksum(wal[:24], big, 0, 0)
    if (s1, s2) != struct.unpack(">2I", wal[24:32]):
        return page_size, []
    used: list[tuple[int, bytes]] = []
    pending: list[tuple[int, bytes]] = []
    off = 32
    size = 24 + page_size
    while off + size <= len(wal):
        pgno, commit, f1, f2, c1, c2 = struct.unpack(">6I", wal[off : off + 24])
        if (f1, f2) != (salt1, salt2):
            break
        page = wal[off + 24 : off + size]
        s1, s2 = _wal_checksum(wal[off : off + 8], big, s1, s2)
        s1, s2 = _wal_checksum(page, big, s1, s2)
        if (s1, s2) != (c1, c2):
            break
        pending.append((pgno, page))
        if commit:
            used.extend(pending)
            pending = []
        off += size
    return page_size, used


def scan_wal(wal: Path, used: int) -> WalScan | None:
    """Look past the ``used`` frames SQLite accepted: committed frames it will drop?

    Reads only the frame headers after ``used`` (a -wal can be large)."""
    with wal.open("rb") as f:
        head = f.read(32)
        if len(head) < 32:
            return None
        magic, _v, page_size, _c, salt1, salt2 = struct.unpack(">6I", head[:24])
        if magic not in _WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
            return None
        size = 24 + page_size
        frames, partial = divmod(wal.stat().st_size - 32, size)
        dropped = 0
        for k in range(used, frames):
            f.seek(32 + k * size)
            _pgno, commit, f1, f2 = struct.unpack(">4I", f.read(16))
            if (f1, f2) == (salt1, salt2) and commit:
                dropped += 1
        if partial >= 16:
            f.seek(32 + frames * size)
            _pgno, commit, f1, f2 = struct.unpack(">4I", f.read(16))
            if (f1, f2) != (salt1, salt2):
                partial = 0  # an older WAL's bytes, cut where the file ended: not ours to miss
    return WalScan(page_size, frames, partial, dropped)


def _read_meta(conn: sqlite3.Connection, key: str) -> int | None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    return int(row[0]) if row and isinstance(row[0], int) else None


# -- salvage: every readable row of a damaged file ---------------------------------


@dataclass
class Salvage:
    rows: list[Row] = field(default_factory=list)
    bad: list[tuple[tuple[Any, ...], str]] = field(default_factory=list)
    """Rows read but unusable (raw values, reason): go to the quarantine."""
    expected: int | None = None
    """Rows the file said it held (its ``meta`` count or its index), when readable."""
    note: str = ""


def salvage_rows(src: sqlite3.Connection) -> Salvage:
    """Read what can be read from ``events``: by rowid, skipping damaged pages, then
    by the index for rows the table scan could not reach."""
    out = Salvage()
    seen: set[int] = set()
    taken: set[Any] = set()

    def take(raw: tuple[Any, ...]) -> None:
        # By id, not by n: a damaged cell may claim another row's n (and, read by a
        # scan, hide it); the lookups by n from the index find the real one.
        seen.add(raw[0])
        key = raw[1] if isinstance(raw[1], bytes) else raw
        if key in taken:
            return
        taken.add(key)
        parsed = parse_row(raw[1:])
        if isinstance(parsed, Row):
            out.rows.append(parsed)
        else:
            out.bad.append((raw, parsed))

    last = -(2**63)
    step = 0
    while True:
        try:
            if step:  # past a damaged page: probe further and further ahead
                nxt = src.execute(
                    "SELECT n FROM events WHERE n > ? ORDER BY n LIMIT 1", (last + step,)
                ).fetchone()
                if nxt is None:
                    break
                if nxt[0] <= last + step:  # a damaged page lies about its rowids
                    raise sqlite3.DatabaseError("rowid out of order")
                last, step = nxt[0] - 1, 0
            chunk = src.execute(
                f"SELECT {_RAW_COLUMNS} FROM events WHERE n > ? ORDER BY n LIMIT 1",
                (last,),
            ).fetchall()
        except sqlite3.DatabaseError:
            if step > 2**61 or last + max(step, 1) * 2 > 2**62:
                break
            step = max(1, step * 2)
            continue
        except OverflowError:
            break
        if not chunk:
            break
        if chunk[-1][0] <= last:  # no progress: a damaged page lies about its rowids
            step = max(1, step * 2)
            continue
        for raw in chunk:
            take(raw)
        last = chunk[-1][0]
    index_ns: list[int] = []
    try:
        index_ns = [
            r[0] for r in src.execute("SELECT n FROM events INDEXED BY events_by_priority")
        ]
    except sqlite3.DatabaseError:
        pass
    for n in index_ns:
        try:
            raw = src.execute(f"SELECT {_RAW_COLUMNS} FROM events WHERE n = ?", (n,)).fetchone()
        except sqlite3.DatabaseError:
            continue
        if raw is not None:
            take(raw)
    counted = _read_meta(src, "count")
    known = [x for x in (counted, len(index_ns) or None) if x is not None]
    out.expected = max(known) if known else None
    return out


def _open_for_salvage(aside: Path, scratch: Path) -> tuple[sqlite3.Connection | None, str]:
    """A connection on a copy of ``aside`` (and its ``-wal``), so the set-aside file
    stays exactly as found.  A copy shorter than its header says (a truncated file)
    is padded with zero pages, which SQLite then reads as damaged pages rather than
    refusing the whole file.  Without room for a copy: the main file alone."""
    wal = aside.with_name(aside.name + "-wal")
    note = ""
    try:
        scratch.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(aside, scratch)
        if wal.exists() and wal.stat().st_size > 0:
            shutil.copyfile(wal, scratch.with_name(scratch.name + "-wal"))
        with scratch.open("r+b") as f:
            header = f.read(100)
            if len(header) == 100 and header.startswith(b"SQLite format 3\x00"):
                page_size = struct.unpack(">H", header[16:18])[0]
                page_size = 65536 if page_size == 1 else page_size
                pages = struct.unpack(">I", header[28:32])[0]
                if pages * page_size > scratch.stat().st_size:
                    f.truncate(pages * page_size)
        return sqlite3.connect(scratch, isolation_level=None), note
    except OSError as exc:
        note = f"no room for a copy to read ({exc}); "
    except sqlite3.Error as exc:
        note = f"its copy could not be opened ({exc}); "
    _remove_scratch(scratch)
    try:
        uri = f"file:{aside}?mode=ro&immutable=1"
        return sqlite3.connect(uri, uri=True, isolation_level=None), note
    except sqlite3.Error as exc:
        return None, note + str(exc)


def salvaged_marker(aside: Path) -> Path:
    """The file that says ``aside`` was salvaged (hidden: not one of the set-aside files)."""
    return aside.with_name(f".{aside.name}.salvaged")


def _remove_scratch(scratch: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            scratch.with_name(scratch.name + suffix).unlink()
        except OSError:
            pass


class Outbox:
    """Durable, bounded, priority-ordered queue of encoded events; one writer thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_events: int = 100_000,
        memory_max_events: int = 2_000,
        max_batch: int = 512,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.max_events = max_events
        self.memory_max_events = memory_max_events
        self.max_batch = max_batch
        self.clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._count = 0
        """Rows in ``events`` as committed (kept in ``meta`` too; writer thread only)."""
        self._quarantined = 0
        # Writer-thread state for storage trouble:
        self._spill: dict[str, Row] = {}
        """Rows kept in memory while the disk refuses them (insertion-ordered)."""
        self._acked_unremoved: set[str] = set()
        """Acknowledged rows in the file we could not delete yet (never handed out again)."""
        self._memory_evicted: dict[str, int] = {}
        self._episode_lost: dict[str, int] = {}
        self._bad_n: set[int] = set()
        """Unusable rows not yet moved to the quarantine (skipped meanwhile)."""
        self._handed: dict[str, int] = {}
        """Rows handed out by :meth:`pending` (id -> n): an ack deletes by rowid, so a
        damaged id index cannot keep an acknowledged row (and it is cheaper)."""
        """Unusable rows not yet moved to the quarantine (skipped meanwhile)."""
        self._evicting = False
        self._staged: list[Notice] = []
        """Notices of the transaction in progress: published on commit, dropped on rollback."""
        self._notices: list[Notice] = []
        self._notice_lock = threading.Lock()
        self.fault: StorageFault | None = None
        self.moved_aside: list[tuple[Path, str]] = []
        """Corrupt files moved aside (new name, reason)."""
        self.last_seq = 0
        self.changed = asyncio.Event()
        """Set (in the loop) whenever rows were added or removed."""
        self.health_changed = asyncio.Event()
        """Set (in the loop) when :attr:`fault` appears or clears."""
        self.notice_ready = asyncio.Event()
        """Set (in the loop) when :meth:`take_notices` has something."""
        self.commits = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- notices -------------------------------------------------------------

    def take_notices(self) -> list[Notice]:
        """Everything noticed since the last call, oldest first; each given out once."""
        with self._notice_lock:
            notices, self._notices = self._notices, []
        return notices

    def _publish(self, notices: list[Notice]) -> None:
        if not notices:
            return
        with self._notice_lock:
            self._notices.extend(notices)
        self._wake(self.notice_ready)

    def _wake(self, event: asyncio.Event) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    # -- lifecycle -----------------------------------------------------------

    def open(self) -> None:
        """Open the file (checking its ``-wal``, salvaging a corrupt one) and start the writer.

        Never raises for storage trouble: a file that cannot be opened at all
        (read-only or missing disk) leaves the outbox in memory-only mode with
        :attr:`fault` set, and :meth:`retry` tries again.
        """
        if self._thread is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            pass
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            self._set_fault(_storage_code(exc) or "io_error", str(exc))
        except OSError as exc:
            self._set_fault("cannot_open", str(exc))
        except CorruptOutbox as exc:  # even a fresh file is refused: retried like the rest
            self._set_fault("corrupt", str(exc))
        self._thread = threading.Thread(target=self._writer, name="outbox-writer", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        """Connect and check; set a corrupt or foreign file aside and salvage it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        notices: list[Notice] = []
        self._check_files(notices)
        try:
            conn = self._connect_checked()
        except CorruptOutbox as exc:
            self._move_aside(str(exc))
            conn = self._connect_checked()
        try:
            self._salvage_asides(conn, notices)
        except sqlite3.Error as exc:  # the fresh file refuses: salvage at the next open
            log.error("cannot salvage into %s now: %s", self.path, exc)
        self._publish(notices)
        return conn

    def _check_files(self, notices: list[Notice]) -> None:
        """Before SQLite opens the file (and may discard frames of its ``-wal``)."""
        wal = self.path.with_name(self.path.name + "-wal")
        shm = self.path.with_name(self.path.name + "-shm")
        if not self.path.exists():
            if wal.exists() and wal.stat().st_size > 0:
                self._wal_aside(wal, "orphan", "a -wal without its outbox file", notices)
            return
        size = self.path.stat().st_size
        wal_size = wal.stat().st_size if wal.exists() else 0
        if size == 0:
            message = "the outbox file is empty (0 bytes) where an outbox was expected"
            if wal_size:
                # SQLite deletes the -wal of a 0-byte file: keep it and salvage from it.
                image = self._wal_image(wal)
                kept = self._wal_aside(wal, "empty", message, notices, report=False)
                message += f"; its -wal is kept as {kept.name if kept else '(not kept)'}"
                if image is not None:
                    self.path.unlink()
                    self.moved_aside.append((image, "0-byte outbox file, rebuilt from its -wal"))
            log.error("%s: %s", self.path, message)
            notices.append(Notice("empty_file", "empty_file", message, {"path": str(self.path)}))
            if self.path.exists():
                self.path.unlink()  # a fresh file; nothing is in it to keep
            shm.unlink(missing_ok=True)
            return
        if wal_size == 0:
            self._check_header_size(size)
            return
        main_id = self._outbox_id(f"file:{self.path}?mode=ro&immutable=1")
        shm.unlink(missing_ok=True)  # only we use the file; SQLite rebuilds it from the -wal
        try:
            ro = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
            try:
                ro.execute("SELECT count(*) FROM sqlite_master").fetchone()
                row = ro.execute("SELECT value FROM meta WHERE key = 'outbox_id'").fetchone()
                wal_id = row[0] if row else None
                used = self._wal_frames_used(shm)
            finally:
                ro.close()
        except sqlite3.Error as exc:
            # Salvage reads what it can of the file and its -wal together.
            shm.unlink(missing_ok=True)
            self._move_aside(f"cannot be read through its -wal: {exc}")
            return
        if main_id is not None and wal_id != main_id:
            self._wal_aside(
                wal, "foreign", "the -wal belongs to another outbox (its id differs)", notices
            )
            shm.unlink(missing_ok=True)
            return
        if used is None:
            return
        try:
            scan = scan_wal(wal, used)
        except (OSError, struct.error):
            return
        if scan is None:
            return
        if scan.dropped_commits or scan.partial_bytes:
            what = "damaged" if scan.dropped_commits else "truncated"
            message = (
                f"the -wal is {what}: SQLite uses its first {used} of {scan.frames} frames"
                + (f"; {scan.dropped_commits} committed transaction(s) after them are lost"
                   if scan.dropped_commits else "")
                + (f"; it ends in a frame cut short ({scan.partial_bytes} bytes)"
                   if scan.partial_bytes else "")
            )
            self._wal_aside(wal, what, message, notices, copy=True)

    def _check_header_size(self, size: int) -> None:
        """A main file shorter than its header says (and no -wal): truncated."""
        try:
            with self.path.open("rb") as f:
                header = f.read(100)
        except OSError:
            return
        if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
            return  # SQLite itself says what is wrong
        page_size = struct.unpack(">H", header[16:18])[0]
        page_size = 65536 if page_size == 1 else page_size
        pages = struct.unpack(">I", header[28:32])[0]
        valid_for, change = header[92:96], header[24:28]
        if valid_for == change and pages and pages * page_size > size:
            self._move_aside(f"truncated: {size} bytes, its header says {pages * page_size}")

    @staticmethod
    def _outbox_id(uri: str) -> int | None:
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        except sqlite3.Error:
            return None
        try:
            return _read_meta(conn, "outbox_id")
        finally:
            conn.close()

    @staticmethod
    def _wal_frames_used(shm: Path) -> int | None:
        """``mxFrame`` of the wal-index SQLite just built: the frames it will use."""
        try:
            with shm.open("rb") as f:
                head = f.read(48)
        except OSError:
            return None
        if len(head) < 48 or struct.unpack("=I", head[:4])[0] != 3007000:
            return None
        return int(struct.unpack("=I", head[16:20])[0])

    def _wal_aside(
        self,
        wal: Path,
        what: str,
        message: str,
        notices: list[Notice],
        *,
        copy: bool = False,
        report: bool = True,
    ) -> Path | None:
        """Keep a ``-wal`` aside (a copy, or moved so that SQLite never applies it)."""
        target: Path | None = _free_name(self.path, f"wal-{what}")
        assert target is not None
        try:
            if copy:
                shutil.copyfile(wal, target)
            else:
                wal.rename(target)
        except OSError as exc:
            message += f"; could not keep it aside ({exc})"
            target = None
            if not copy:
                wal.unlink(missing_ok=True)
        else:
            message += f"; kept as {target.name}"
        log.error("%s: %s", self.path, message)
        if report:
            notices.append(
                Notice("wal", what, message, {"kept": target.name if target else None})
            )
        return target

    def _wal_image(self, wal: Path) -> Path | None:
        """A database built from a ``-wal``'s committed frames alone (its file is gone)."""
        try:
            data = wal.read_bytes()
            page_size, frames = wal_frames(data)
            if not frames:
                return None
            target = _free_name(self.path, "corrupt")
            pages: dict[int, bytes] = dict(frames)  # the last version of each page
            with target.open("wb") as f:
                for pgno in sorted(pages):
                    f.seek((pgno - 1) * page_size)
                    f.write(pages[pgno])
            return target
        except OSError as exc:
            log.error("cannot rebuild %s from its -wal: %s", self.path, exc)
            return None

    def _connect_checked(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
        fresh = False
        try:
            try:
                tables = {
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                }
                if not tables:
                    conn.execute("PRAGMA auto_vacuum=INCREMENTAL")  # before any table exists
                    fresh = True
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if tables and version not in (1, SCHEMA_VERSION):
                    raise CorruptOutbox(
                        f"schema version {version}, expected {SCHEMA_VERSION} (tables: "
                        f"{', '.join(sorted(tables))})"
                    )
                if "events" in tables:
                    cols = {r[1] for r in conn.execute("PRAGMA table_info(events)")}
                    v1 = cols == _V1_COLUMNS
                    if cols not in (_COLUMNS, _V1_COLUMNS) or v1 != (version == 1):
                        raise CorruptOutbox(f"unexpected events columns: {sorted(cols)}")
                elif tables:
                    raise CorruptOutbox(f"not an outbox (tables: {', '.join(sorted(tables))})")
                if tables and version == 1:
                    self._migrate_v1(conn)
                    conn.execute("ALTER TABLE events ADD COLUMN crc INTEGER")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                count = _read_meta(conn, "count")
                if count is None:  # a version-1 file: counted once, kept in meta from now on
                    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                    conn.execute("INSERT OR REPLACE INTO meta VALUES ('count', ?)", (count,))
                if _read_meta(conn, "outbox_id") is None:
                    conn.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('outbox_id', ?)",
                        (secrets.randbits(62),),
                    )
                seq = _read_meta(conn, "last_seq") or 0
                quarantined = _read_meta(conn, "quarantined") or 0
                conn.execute("COMMIT")
                if fresh:  # the id reaches the main file: a -wal can be checked against it
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError as exc:
                if _storage_code(exc) == "corrupt":
                    raise CorruptOutbox(str(exc)) from exc
                raise
        except BaseException:
            conn.close()
            raise
        self._count = int(count)
        self._quarantined = quarantined
        self.last_seq = max(self.last_seq, seq)
        return conn

    def _migrate_v1(self, conn: sqlite3.Connection) -> None:
        """Version 1 had no auto_vacuum: VACUUM once so a drained file can shrink."""
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return
        try:
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("VACUUM")
            log.info("outbox %s migrated to auto_vacuum=INCREMENTAL", self.path)
        except sqlite3.OperationalError as exc:  # e.g. no room for the copy: next time
            log.warning("outbox %s: cannot VACUUM now (%s)", self.path, exc)

    def _move_aside(self, reason: str) -> Path:
        target = _free_name(self.path, "corrupt")
        self.path.rename(target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                if suffix == "-wal":
                    side.rename(target.with_name(target.name + suffix))
                else:
                    side.unlink()
        log.error("outbox %s is unusable (%s): moved aside to %s", self.path, reason, target.name)
        self.moved_aside.append((target, reason))
        return target

    def _salvage_asides(self, conn: sqlite3.Connection, notices: list[Notice]) -> None:
        """Salvage every set-aside file not salvaged yet (this run's, and older runs')."""
        reasons = dict(self.moved_aside)
        prefix = f"{self.path.name}.corrupt-"
        for aside in sorted(self.path.parent.glob(f"{prefix}*")):
            if aside.name.endswith(("-wal", "-shm", "-journal")):
                continue
            marker = salvaged_marker(aside)
            if marker.exists():
                continue
            reason = reasons.get(aside, "set aside earlier, not salvaged yet")
            notices.append(self._salvage(conn, aside, reason))
            try:
                marker.write_text("salvaged\n")
            except OSError as exc:  # salvaged again next time: the cloud de-duplicates
                log.warning("cannot mark %s as salvaged: %s", aside.name, exc)

    def _salvage(self, conn: sqlite3.Connection, aside: Path, reason: str) -> Notice:
        scratch = aside.with_name(f".{aside.name}.salvage-scratch")
        src, note = _open_for_salvage(aside, scratch)
        found = Salvage(note=note)
        if src is not None:
            try:
                found = salvage_rows(src)
                found.note = note + found.note
            except sqlite3.Error as exc:
                found.note = note + f"unreadable: {exc}"
            finally:
                src.close()
                _remove_scratch(scratch)
        count0, quarantined0 = self._count, self._quarantined
        conn.execute("BEGIN IMMEDIATE")
        try:
            before = self._count
            self._insert(conn, found.rows)
            saved = self._count - before
            for raw, why in found.bad:
                self._to_quarantine(conn, raw, f"salvage: {why}")
            self._write_count(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            self._count, self._quarantined = count0, quarantined0
            raise
        if found.rows:
            self.last_seq = max(self.last_seq, max(r.seq for r in found.rows))
        readable = len(found.rows)
        lost = None if found.expected is None else max(0, found.expected - readable)
        message = (
            f"outbox file unusable ({reason}); moved aside as {aside.name}, started a fresh "
            f"one; salvaged {readable} row(s) from it"
            + (f", {lost} could not be read" if lost is not None else ", how many lost: unknown")
            + (f", {len(found.bad)} damaged row(s) quarantined" if found.bad else "")
            + (f" ({found.note.rstrip('; ')})" if found.note else "")
        )
        log.error("%s", message)
        return Notice(
            "corrupt",
            "corrupt",
            message,
            {
                "moved_to": aside.name,
                "salvaged": readable,
                "new": saved,
                "unreadable": lost,
                "quarantined": len(found.bad),
            },
        )

    def close(self) -> None:
        """Finish queued work, stop the writer and close the file.  Idempotent."""
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- the writer thread ---------------------------------------------------

    def _writer(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            repairs = [j for j in batch if isinstance(j, _Repair)]
            if repairs:
                batch = [j for j in batch if not isinstance(j, _Repair)]
                self._repair(repairs)
            # Alarms first: they get a small transaction of their own rather than
            # waiting for everything else that queued up meanwhile.
            urgent: list[_Job] = [
                j for j in batch if isinstance(j, _Put) and any(r[2] == 0 for r in j.rows)
            ]
            rest = [j for j in batch if j not in urgent] if urgent else batch
            for part in (urgent, rest):
                if not part:
                    continue
                try:
                    self._run_batch(part)
                except BaseException as exc:  # never leave a caller waiting forever
                    log.exception("outbox writer failed")
                    err = OutboxError(f"outbox writer failed: {exc!r}")
                    self._deliver([(j, None, err) for j in part])
            if stop:
                return

    def _deliver(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for job, result, exc in results:
            by_loop.setdefault(job.loop, []).append((job.future, result, exc))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, items)
            except RuntimeError:  # that loop is gone
                pass

    def _repair(self, jobs: list[_Repair]) -> None:
        results: list[tuple[_Job, Any, BaseException | None]] = []
        for job in jobs:
            try:
                if job.what == "corrupt" and self._conn is not None:
                    self._handle_corruption(job.reason)
                elif job.what == "recount" and self._conn is not None:
                    conn = self._conn
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        self._count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                        self._write_count(conn)
                        conn.execute("COMMIT")
                    except BaseException:
                        if conn.in_transaction:
                            conn.rollback()
                        raise
                results.append((job, None, None))
            except (sqlite3.Error, OSError) as exc:
                results.append((job, None, OutboxError(f"{self.path}: {exc}")))
        self._deliver(results)

    def _handle_corruption(self, reason: str) -> bool:
        """Set the file aside, start a fresh one, salvage what can be read.  True if done."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        notices: list[Notice] = []
        try:
            self._move_aside(reason)
            self._conn = self._connect_checked()
            self._salvage_asides(self._conn, notices)
        except (sqlite3.Error, OSError) as exc:
            log.error("cannot set the corrupt outbox aside or start afresh: %s", exc)
            self._publish(notices)
            self._set_fault("corrupt", f"{reason}; {exc}")
            return False
        self._publish(notices)
        return True

    def _run_batch(self, batch: list[_Job], *, again: bool = True) -> None:
        if self._conn is None and self.fault is not None:
            try:
                self._conn = self._connect()
            except sqlite3.Error as exc:
                self._set_fault(_storage_code(exc) or "io_error", str(exc))
            except OSError as exc:
                self._set_fault("cannot_open", str(exc))
            except CorruptOutbox as exc:
                self._set_fault("corrupt", str(exc))
        conn = self._conn
        if conn is None:
            self._deliver(self._degraded(batch))
            return
        results: list[tuple[_Job, Any, BaseException | None]] = []
        count0 = self._count
        quarantined0 = self._quarantined
        evicting0 = self._evicting
        self._staged = []
        writes = any(isinstance(j, (_Put, _Ack)) for j in batch)
        flushed = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            changes0 = conn.total_changes
            # A batch of reads only leaves the memory buffer alone: no write, no verdict.
            flushed = self._flush_memory(conn) if writes else 0
            # One statement for all rows of all puts, one for all acks, then reads.
            puts = [j for j in batch if isinstance(j, _Put)]
            acks = [j for j in batch if isinstance(j, _Ack)]
            self._insert(conn, [r for j in puts for r in j.rows])
            self._delete(conn, [i for j in acks for i in j.ids])
            if self.fault is not None and any(j.probe for j in puts):
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('probe', ?)", (int(self.clock()),)
                )
            results.extend([(j, True, None) for j in puts])
            results.extend([(j, None, None) for j in acks])
            for job in batch:
                if isinstance(job, _Query):
                    results.append(self._run_query(conn, job))
            if self._count != count0:
                self._write_count(conn)
            wrote = conn.total_changes > changes0
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                try:
                    conn.rollback()
                except sqlite3.Error:
                    pass
            # Nothing of the transaction happened: neither the count nor its notices.
            self._count, self._quarantined, self._evicting = count0, quarantined0, evicting0
            self._staged = []
            code = _storage_code(exc)
            if code is None:
                raise
            if code == "corrupt" and again:
                if self._handle_corruption(f"corruption found while running: {exc}"):
                    self._run_batch(batch, again=False)
                    return
            self._set_fault(code, str(exc))
            self._deliver(self._degraded(batch))
            return
        self.commits += 1
        if self._count < count0:
            self._vacuum_some(conn)
        if flushed:
            self._spill.clear()
            self._acked_unremoved.clear()
        staged, self._staged = self._staged, []
        if self.fault is not None and wrote:
            fault, self.fault = self.fault, None
            lost, self._episode_lost = self._episode_lost, {}
            message = f"storage works again after {self.clock() - fault.since:.1f} s"
            if flushed:
                message += f"; {flushed} buffered row(s) written"
            log.warning("outbox %s", message)
            staged.append(
                Notice(
                    "recovered",
                    fault.code,
                    message,
                    {"down_s": round(self.clock() - fault.since, 1), "lost_in_memory": lost},
                )
            )
            self._wake(self.health_changed)
        self._publish(staged)
        self._deliver(results)

    def _remember(self, event_id: str, n: int) -> None:
        if len(self._handed) >= 20_000:  # never acknowledged: forget the oldest
            del self._handed[next(iter(self._handed))]
        self._handed[event_id] = n

    def _write_count(self, conn: sqlite3.Connection) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('count', ?)", (self._count,))

    def _vacuum_some(self, conn: sqlite3.Connection) -> None:
        """Give free pages back to the file system (a drained outbox shrinks).

        Its own small transaction after a commit that removed rows, and only once
        enough pages are free (the sqlite3 module steps the pragma to its end only
        through ``executescript``)."""
        try:
            free = conn.execute("PRAGMA freelist_count").fetchone()[0]
            if free >= _VACUUM_FREE_PAGES:
                conn.executescript(f"PRAGMA incremental_vacuum({_VACUUM_STEP_PAGES});")
        except sqlite3.Error as exc:  # the space comes back another time
            log.debug("incremental vacuum of %s failed: %s", self.path, exc)

    def _run_query(
        self, conn: sqlite3.Connection, job: _Query
    ) -> tuple[_Job, Any, BaseException | None]:
        conn.execute("SAVEPOINT q")
        try:
            result = job.fn(conn)
        except sqlite3.Error as exc:
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO q")
            conn.execute("RELEASE q")
            if _storage_code(exc) is not None:
                raise
            return job, None, OutboxError(f"{self.path}: {exc}")
        conn.execute("RELEASE q")
        return job, result, None

    def _insert(self, conn: sqlite3.Connection, rows: Iterable[Row]) -> int:
        rows = [r for r in rows if r.id not in self._acked_unremoved]
        if not rows:
            return 0
        # Many rows per statement: the sqlite3 module releases the GIL around each
        # step, so one statement per row would hand the GIL back and forth with
        # the event loop thousands of times per commit.
        before = conn.total_changes
        for start in range(0, len(rows), _ROWS_PER_INSERT):
            chunk = rows[start : start + _ROWS_PER_INSERT]
            conn.execute(_insert_sql(len(chunk)), [v for r in chunk for v in _with_crc(r)])
        self._count += conn.total_changes - before
        top = max(r[1] for r in rows)
        if top > 0:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
                (top,),
            )
        if self._count > self.max_events:
            self._evict(conn, self._count - self.max_events)
        elif self._count < self.max_events * 0.9:
            self._evicting = False
        return len(rows)

    def _evict(self, conn: sqlite3.Connection, n: int) -> None:
        """Drop ``n`` rows: lowest priority first, oldest first within it; count them.

        Through the ``(rank, n)`` index: the lowest priority present, then its
        oldest rows; the cost is that of the rows evicted, not of the backlog.
        """
        counts: dict[str, int] = {}
        while n > 0:
            top = conn.execute("SELECT max(rank) FROM events").fetchone()[0]
            if top is None:
                break
            victims = conn.execute(
                "SELECT n, CAST(kind AS BLOB) FROM events WHERE rank = ? ORDER BY n LIMIT ?",
                (top, n),
            ).fetchall()
            if not victims:
                break
            for start in range(0, len(victims), 500):
                part = victims[start : start + 500]
                conn.execute(
                    f"DELETE FROM events WHERE n IN ({','.join('?' * len(part))})",
                    [v[0] for v in part],
                )
            for _, kind_b in victims:
                kind = bytes(kind_b or b"?").decode("utf-8", "replace")
                counts[kind] = counts.get(kind, 0) + 1
            self._count -= len(victims)
            n -= len(victims)
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            [(f"evicted:{k}", c) for k, c in counts.items()],
        )
        if counts and not self._evicting:
            self._evicting = True
            message = (
                f"outbox full ({self.max_events} rows): evicting the oldest rows of the lowest "
                f"priority; first {counts}"
            )
            log.warning("%s", message)
            self._staged.append(Notice("evicting", "full", message, {"evicted": counts}))

    def _delete(self, conn: sqlite3.Connection, ids: Iterable[str]) -> None:
        by_id: list[tuple[str]] = []
        before = conn.total_changes
        for i in ids:
            n = self._handed.pop(i, None)
            # The row's id is compared too: after a salvage the same n is another row.
            if n is None or conn.execute(
                "DELETE FROM events WHERE n = ? AND id = ?", (n, i)
            ).rowcount < 1:
                by_id.append((i,))
        if by_id:
            conn.executemany("DELETE FROM events WHERE id = ?", by_id)
        self._count -= conn.total_changes - before

    def _flush_memory(self, conn: sqlite3.Connection) -> int:
        """Write rows kept in memory (storage trouble) now that the disk takes them."""
        if not self._spill and not self._acked_unremoved:
            return 0
        if self._acked_unremoved:
            self._delete(conn, self._acked_unremoved)
        rows = list(self._spill.values())
        if rows:
            self._insert(conn, rows)
        return len(rows) + len(self._acked_unremoved)

    def _to_quarantine(self, conn: sqlite3.Connection, raw: tuple[Any, ...], reason: str) -> None:
        """Move one unusable row (as read by ``_RAW_COLUMNS``) to the quarantine table."""
        conn.execute(
            "INSERT INTO quarantine (at, reason, n, id, seq, rank, kind, channel, created, payload,"
            " crc) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (self.clock(), reason, *raw),
        )
        self._quarantined += 1
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('quarantined', 1) "
            "ON CONFLICT (key) DO UPDATE SET value = value + 1"
        )

    def _quarantine(self, conn: sqlite3.Connection, bad: list[tuple[tuple[Any, ...], str]]) -> None:
        """Move unusable rows out of ``events``, in their own savepoint; noticed once."""
        count0, quarantined0 = self._count, self._quarantined
        conn.execute("SAVEPOINT quarantine")
        try:
            for raw, reason in bad:
                self._to_quarantine(conn, raw, reason)
                deleted = conn.execute("DELETE FROM events WHERE n = ?", (raw[0],)).rowcount
                self._count -= max(0, deleted)
            self._write_count(conn)
            conn.execute("RELEASE quarantine")
        except sqlite3.Error as exc:
            self._count, self._quarantined = count0, quarantined0
            if conn.in_transaction:
                conn.execute("ROLLBACK TO quarantine")
                conn.execute("RELEASE quarantine")
            log.warning("cannot quarantine %d damaged row(s) now (%s): skipped", len(bad), exc)
            return
        for raw, _ in bad:
            self._bad_n.discard(raw[0])
        reasons = sorted({reason for _, reason in bad})
        message = (
            f"{len(bad)} damaged row(s) in the outbox could not be read or parsed; moved to "
            f"its quarantine table, the queue goes on ({'; '.join(reasons)[:300]})"
        )
        log.error("%s", message)
        notice = Notice("quarantined", "quarantined", message, {"rows": len(bad)})
        if conn.in_transaction:
            self._staged.append(notice)  # published with the commit
        else:
            self._publish([notice])

    def _degraded(self, batch: list[_Job]) -> list[tuple[_Job, Any, BaseException | None]]:
        """Serve a batch from memory while the disk refuses writes."""
        results: list[tuple[_Job, Any, BaseException | None]] = []
        conn = self._conn
        for job in batch:
            if isinstance(job, _Put):
                for row in job.rows:
                    if row.id not in self._acked_unremoved:
                        self._spill[row.id] = row
                self._bound_memory()
                results.append((job, False, None))
            elif isinstance(job, _Ack):
                for i in job.ids:
                    if self._spill.pop(i, None) is None and self._in_file(conn, i):
                        self._acked_unremoved.add(i)
                results.append((job, None, None))
            elif isinstance(job, _Query):
                result: Any = None
                exc: BaseException | None = None
                try:
                    if conn is None:
                        raise sqlite3.OperationalError("no database")
                    result = job.fn(conn)  # reads usually still work on a full disk
                except sqlite3.Error:
                    if job.fallback is not None:
                        result = job.fallback()
                    else:
                        exc = OutboxError(f"{self.path}: storage unavailable")
                results.append((job, result, exc))
        return results

    @staticmethod
    def _in_file(conn: sqlite3.Connection | None, event_id: str) -> bool:
        if conn is None:
            return True  # cannot tell: delete it when the file is back
        try:
            row = conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone()
        except sqlite3.Error:
            return True
        return row is not None

    def _bound_memory(self) -> None:
        excess = len(self._spill) - self.memory_max_events
        if excess <= 0:
            return
        victims = sorted(self._spill.values(), key=lambda r: -r.rank)[:excess]
        # sorted() is stable: within one rank the oldest (inserted first) goes first.
        first = not self._episode_lost
        for row in victims:
            del self._spill[row.id]
            self._memory_evicted[row.kind] = self._memory_evicted.get(row.kind, 0) + 1
            self._episode_lost[row.kind] = self._episode_lost.get(row.kind, 0) + 1
        if first:
            message = (
                f"storage failing and the memory buffer full ({self.memory_max_events} rows): "
                f"losing the oldest rows of the lowest priority, first {dict(self._episode_lost)}"
            )
            log.error("%s", message)
            self._publish(
                [Notice("memory_full", "memory_full", message, {"lost": dict(self._episode_lost)})]
            )

    def _set_fault(self, code: str, message: str) -> None:
        if self.fault is not None:
            if self.fault.code != code:
                log.error("outbox storage failing (%s): %s", code, message)
                self.fault = StorageFault(code, message, self.fault.since)
            return
        log.error("outbox storage failing (%s): %s", code, message)
        self.fault = StorageFault(code, message, self.clock())
        self._publish([Notice("fault", code, message)])
        self._wake(self.health_changed)

    async def _submit(self, job_factory: Callable[[Any, Any], _Job]) -> Any:
        if self._thread is None:
            raise OutboxError("outbox is not open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put(job_factory(loop, future))
        return await future

    # -- the API -------------------------------------------------------------

    async def put(self, event: Event) -> bool:
        """Store one event.  True once durable on disk; False if only kept in memory."""
        if self._thread is None:
            raise OutboxError("outbox is not open")
        loop = asyncio.get_running_loop()
        self._loop = loop
        future: asyncio.Future[bool] = loop.create_future()
        self._jobs.put(_Put(loop, future, [Row.of(event, self.clock())]))
        durable = await future
        self.changed.set()
        return durable

    async def put_many(self, events: Iterable[Event]) -> bool:
        now = self.clock()
        return await self.put_rows([Row.of(e, now) for e in events])

    async def put_rows(self, rows: list[Row]) -> bool:
        durable = bool(await self._submit(lambda loop, fut: _Put(loop, fut, rows)))
        self.changed.set()
        return durable

    async def retry(self) -> bool:
        """Try to write what waits in memory (or a probe); True when the disk works again.

        Recovery is declared only by a commit that really wrote something.
        """
        await self._submit(lambda loop, fut: _Put(loop, fut, [], probe=True))
        return self.fault is None

    async def pending(self, limit: int, skip: Iterable[str] = ()) -> list[Pending]:
        """The next rows to send (alarms first, then oldest first), except ``skip``.

        Reads along the ``(rank, n)`` index and stops after ``limit`` usable rows,
        so the cost grows with ``limit`` plus the skipped rows met on the way.
        Rows that cannot be read or parsed go to the quarantine on the way.
        """
        skip = set(skip)

        def from_memory() -> list[tuple[int, int, Pending]]:
            return [
                (r.rank, 1, Pending(r.id, r.kind, r.rank, r.channel, r.payload))
                for r in self._spill.values()
                if r.id not in skip
            ]

        def select(conn: sqlite3.Connection) -> list[Pending]:
            hidden = {i.encode() for i in skip | self._acked_unremoved}
            rows: list[tuple[int, int, Pending]] = []
            bad: list[tuple[tuple[Any, ...], str]] = []
            if limit > 0:
                cur = conn.execute(f"SELECT {_RAW_COLUMNS} FROM events ORDER BY rank, n")
                for raw in cur:
                    if raw[1] in hidden or raw[0] in self._bad_n:
                        continue
                    parsed = parse_row(raw[1:])
                    if isinstance(parsed, str):
                        self._bad_n.add(raw[0])
                        bad.append((raw, parsed))
                        continue
                    p = parsed
                    self._remember(p.id, raw[0])
                    rows.append((p.rank, 0, Pending(p.id, p.kind, p.rank, p.channel, p.payload)))
                    if len(rows) >= limit:
                        break
                cur.close()
            if bad:
                self._quarantine(conn, bad)
            return merge(rows + from_memory())

        def merge(rows: list[tuple[int, int, Pending]]) -> list[Pending]:
            rows.sort(key=lambda t: (t[0], t[1]))  # stable: keeps age order inside
            # A row flushed from memory in this very batch is on disk and still in
            # memory until the commit completes: hand it out once.
            unique: dict[str, Pending] = {}
            for _, _, p in rows:
                unique.setdefault(p.id, p)
            return list(unique.values())[:limit]

        return list(
            await self._submit(
                lambda loop, fut: _Query(loop, fut, select, lambda: merge(from_memory()))
            )
        )

    async def ack(self, ids: Iterable[str]) -> None:
        """The cloud stored these rows: remove them for good (unknown ids are ignored)."""
        ids = list(ids)
        await self._submit(lambda loop, fut: _Ack(loop, fut, ids))
        self.changed.set()

    async def depth(self) -> int:
        return (await self.stats()).depth

    async def stats(self) -> OutboxStats:
        """Depth, oldest row, evictions: O(1) (the count is kept, the oldest is the first n)."""

        def read(conn: sqlite3.Connection) -> OutboxStats:
            first = conn.execute("SELECT created FROM events ORDER BY n LIMIT 1").fetchone()
            oldest = first[0] if first and isinstance(first[0], (int, float)) else None
            evicted = dict(self._memory_evicted)
            for key, value in conn.execute(
                "SELECT key, value FROM meta WHERE key >= 'evicted:' AND key < 'evicted;'"
            ):
                kind = key.removeprefix("evicted:")
                evicted[kind] = evicted.get(kind, 0) + int(value)
            mem_oldest = min((r.created for r in self._spill.values()), default=None)
            if oldest is None or (mem_oldest is not None and mem_oldest < oldest):
                oldest = mem_oldest
            return OutboxStats(
                depth=self._count + len(self._spill) - len(self._acked_unremoved),
                oldest_created=oldest,
                evicted={k: v for k, v in evicted.items() if v},
                buffered_in_memory=len(self._spill),
                quarantined=self._quarantined,
            )

        def fallback() -> OutboxStats:
            return OutboxStats(
                depth=len(self._spill),
                oldest_created=min((r.created for r in self._spill.values()), default=None),
                evicted=dict(self._memory_evicted),
                buffered_in_memory=len(self._spill),
                quarantined=self._quarantined,
            )

        return await self._submit(lambda loop, fut: _Query(loop, fut, read, fallback))  # type: ignore[no-any-return]

    async def forget_evictions(self, reported: dict[str, int]) -> None:
        """Subtract counts that a stored heartbeat has reported."""

        def sub(conn: sqlite3.Connection) -> None:
            for kind, n in reported.items():
                mem = min(n, self._memory_evicted.get(kind, 0))
                if mem:
                    self._memory_evicted[kind] -= mem
                if n - mem:
                    conn.execute(
                        "UPDATE meta SET value = max(0, value - ?) WHERE key = ?",
                        (n - mem, f"evicted:{kind}"),
                    )

        await self._submit(lambda loop, fut: _Query(loop, fut, sub, None))

    async def check_integrity(self) -> str:
        """SQLite's ``quick_check`` and the kept count, on a read connection of its own
        (off the start path: the writer and its callers never wait for it).

        A corrupt file is then set aside and salvaged by the writer; a count that
        differs from the rows is recounted.  Returns ``ok`` or what was found.
        """
        path = self.path

        def check() -> tuple[str, bool]:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            try:
                conn.execute("BEGIN")  # one snapshot for the check and the count
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    return f"integrity check failed: {result}", False
                rows = conn.execute("SELECT count(*) FROM events").fetchone()[0]
                kept = _read_meta(conn, "count")
                conn.execute("COMMIT")
                return "ok", kept is not None and kept != rows
            finally:
                conn.close()

        try:
            result, drift = await asyncio.to_thread(check)
        except sqlite3.Error as exc:
            if _storage_code(exc) != "corrupt":
                return f"not checked: {exc}"
            result, drift = f"integrity check failed: {exc}", False
        if result != "ok":
            log.error("outbox %s: %s", path, result)
            await self._submit(lambda loop, fut: _Repair(loop, fut, "corrupt", result))
        elif drift:
            log.warning("outbox %s: kept count differs from the rows: recounted", path)
            await self._submit(lambda loop, fut: _Repair(loop, fut, "recount", ""))
            return "recounted"
        return result
