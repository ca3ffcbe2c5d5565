"""Notifier figures: memory under a backlog, events/s per instance, two instances.

    .venv/bin/python benchmarks/notifier.py [--quick] [--only backlog,alarms,shared] [--events N]

Everything runs through the real code: ``satoyama-notifier run`` as its own
process (as in production), a private mosquitto holding a backlog in the
notifier's persistent session, a real SMTP server (aiosmtpd, in a process of
its own that only counts what it takes, so that its parsing is not the
notifier's ceiling: ``--only smtp`` measures what it can take), a real SQLite
file on disk (``synchronous=FULL``) and, for two instances, a real PostgreSQL
(the tests' throw-away cluster, ``fsync=off``).  Targets:

* RSS while a 100,000-event backlog drains: flat, <= 60 MB;
* events/s per instance with coalescing off (every event mailed to two
  recipients): >= 1,000/s;
* two instances on a shared subscription: about twice one (``shared``: events only
  stored; ``shared-alarms``: every event mailed, as above, on PostgreSQL).

Also printed: the window between the SMTP server accepting a mail and the
store marking it sent (a SIGKILL inside it mails it again after the restart).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.sim.broker import Mosquitto, free_port
from edge.sim.mailbox import Mailbox
from tests.cloud.backlog import (
    NotifierProcess,
    alarm,
    drain,
    heartbeat,
    publish,
)
from tests.cloud.conftest import RECIPIENTS, SITE, PostgresServer, config_text

DEVICES = [f"pi-{n:02d}" for n in range(20)]
RSS_TARGET_MB = 60.0
RATE_TARGET = 1000.0


def payloads(count: int, make: Callable[[int, str, str], bytes]) -> list[tuple[str, bytes]]:
    return [(DEVICES[n % len(DEVICES)], make(n, DEVICES[n % len(DEVICES)], SITE))
            for n in range(count)]  # fmt: skip


class SmtpSink:
    """An SMTP server (aiosmtpd) in processes of its own that records, per mail, its
    ``X-Satoyama-Event`` and recipient in a file, and parses nothing else.

    The tests' :class:`~edge.sim.mailbox.Mailbox` parses every mail in the
    benchmark's process (~1 ms each): at a thousand mails a second it, not the
    notifier, would be what is measured.  ``processes`` > 1 share the port
    (``SO_REUSEPORT``: the kernel spreads the connections).
    """

    def __init__(self, work: Path, processes: int = 1, kind: str = "lean") -> None:
        self.port = free_port()
        self.processes = processes
        self.kind = kind
        self.logs = [work / f"sink-{self.port}-{n}.log" for n in range(processes)]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> SmtpSink:
        for log in self.logs:
            log.write_bytes(b"")
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--smtp-sink", str(self.port), str(log), self.kind],
                stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(0.3)  # every process listening (a connection reached one of them)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(10)

    def pairs(self) -> list[tuple[str, str]]:
        """``(X-Satoyama-Event, recipient)`` of every mail taken so far."""
        return [(event, rcpt) for event, rcpt, _ in self.taken()]

    def taken(self) -> list[tuple[str, str, float]]:
        """``(X-Satoyama-Event, recipient, time.time())`` of every mail taken so far."""
        out = []
        for log in self.logs:
            # [:-1]: a line the sink is still writing is not whole yet (it ends in b"\n").
            for line in log.read_bytes().split(b"\n")[:-1]:
                event, rcpt, at = line.decode().split(" ")
                out.append((event, rcpt, float(at)))
        return out

    def count(self) -> int:
        return sum(log.read_bytes().count(b"\n") for log in self.logs)

    def wait_for(self, count: int, timeout: float, every: float = 0.002) -> int:
        deadline = time.monotonic() + timeout
        while (got := self.count()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{got} of {count} mails after {timeout}s")
            time.sleep(every)
        return got


def run_sink(port: int, log: Path, kind: str) -> None:
    """``--smtp-sink PORT LOG KIND``: the sink's process (``aiosmtpd``, or ``lean``: a
    minimal SMTP server on asyncio's protocol layer, ~20x cheaper per mail)."""
    header = re.compile(rb"\r\nX-Satoyama-Event: ([^\r\n]*)")
    out = log.open("ab", buffering=0)

    def record(raw: bytes, rcpt: str) -> None:
        found = header.search(b"\r\n" + raw[:4096])
        event = found.group(1) if found else b"-"
        out.write(b"%s %s %.6f\n" % (event, rcpt.encode(), time.time()))

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        factory: Callable[[], asyncio.BaseProtocol]
        if kind == "aiosmtpd":
            from aiosmtpd.smtp import SMTP

            class Handler:
                async def handle_EHLO(
                    self, server: Any, session: Any, envelope: Any, name: str, lines: list[str]
                ) -> list[str]:
                    session.host_name = name
                    lines.insert(len(lines) - 1, "250-PIPELINING")  # it reads them in order
                    return lines

                async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                    record(envelope.original_content or envelope.content, envelope.rcpt_tos[0])
                    return "250 2.0.0 accepted"

            factory = lambda: SMTP(Handler(), hostname="sink.test", ident="sink")  # noqa: E731
        else:
            factory = lambda: _LeanSmtp(record)  # noqa: E731
        server = await loop.create_server(factory, "127.0.0.1", port, reuse_port=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(serve())


class _LeanSmtp(asyncio.Protocol):
    """Just enough SMTP (RFC 5321, with PIPELINING) to take mails as fast as possible."""

    def __init__(self, record: Callable[[bytes, str], None]) -> None:
        self._record = record
        self._buffer = b""
        self._data: list[bytes] | None = None
        self._rcpt: list[str] = []
        self._out: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._out = transport
        self._out.write(b"220 sink.test ESMTP lean\r\n")

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        replies: list[bytes] = []
        while True:
            if self._data is not None:
                end = self._buffer.find(b"\r\n.\r\n")
                if end < 0 and not self._buffer.startswith(b".\r\n"):
                    break
                if self._buffer.startswith(b".\r\n"):
                    body, self._buffer = b"", self._buffer[3:]
                else:
                    body, self._buffer = self._buffer[: end + 2], self._buffer[end + 5 :]
                rcpt = self._rcpt[0] if self._rcpt else ""
                self._record(body.replace(b"\r\n..", b"\r\n."), rcpt)
                self._data, self._rcpt = None, []
                replies.append(b"250 2.0.0 accepted")
                continue
            line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                break
            self._buffer = rest
            verb = line[:4].upper()
            if verb == b"EHLO":
                replies.append(b"250-sink.test\r\n250-PIPELINING\r\n250 SIZE 33554432")
            elif verb == b"HELO":
                replies.append(b"250 sink.test")
            elif verb == b"MAIL":
                self._rcpt = []
                replies.append(b"250 2.1.0 OK")
            elif verb == b"RCPT":
                address = line.partition(b":")[2].strip().split(b" ")[0].strip(b"<>")
                self._rcpt.append(address.decode(errors="replace"))
                replies.append(b"250 2.1.5 OK")
            elif verb == b"DATA":
                self._data = []
                replies.append(b"354 go ahead")
            elif verb == b"QUIT":
                replies.append(b"221 2.0.0 bye")
                self._out.write(b"\r\n".join(replies) + b"\r\n")
                self._out.close()
                return
            else:  # RSET, NOOP, ...
                self._rcpt = []
                replies.append(b"250 2.0.0 OK")
        if replies:
            self._out.write(b"\r\n".join(replies) + b"\r\n")


def smtp_capacity(work: Path, mails: int = 6000, connections: int = 4) -> None:
    """What the benchmark's SMTP servers can take, from a client that does nothing else."""
    import aiosmtplib

    from cloud.config import SiteConfig
    from cloud.render import as_bytes, render_mail
    from tests.cloud.conftest import PLACE, make_event

    print(f"\n== SMTP server capacity: {mails:,} mails over {connections} connections ==")
    site = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
    raw = as_bytes(render_mail(make_event(), site, language="ja",
                               sender="里山エッジ <alerts@example.jp>",
                               recipient="farmer@example.jp"))  # fmt: skip

    async def blast(port: int) -> float:
        async def one(n: int) -> None:
            smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                   local_hostname="bench.test")  # fmt: skip
            await smtp.connect()
            for _ in range(n):
                await smtp.sendmail("alerts@example.jp", ["farmer@example.jp"], raw)
            await smtp.quit()

        began = time.perf_counter()
        await asyncio.gather(*(one(mails // connections) for _ in range(connections)))
        return time.perf_counter() - began

    with Mailbox() as mailbox:
        took = asyncio.run(blast(mailbox.port))
    print(f"tests' Mailbox (aiosmtpd + email parser, in this process): "
          f"{mails / took:,.0f} mails/s ({len(raw):,} bytes each)")  # fmt: skip
    for kind in ("aiosmtpd", "lean"):
        with SmtpSink(work, kind=kind) as sink:
            took = asyncio.run(blast(sink.port))
            assert sink.count() == mails // connections * connections
        print(f"sink ({kind}, own process): {mails / took:,.0f} mails/s "
              "(the client's own cost included)")  # fmt: skip


#: ``--connections``: the notifier's ``smtp.connections`` (None: its default).
CONNECTIONS: int | None = None
#: ``--mqtt`` / ``--delivery``: extra lines for those tables of every notifier's file.
EXTRA_MQTT = ""
EXTRA_DELIVERY = ""


def write_config(path: Path, broker: Mosquitto, smtp_port: int, store: Path, **kw: str) -> Path:
    text = config_text(
        mqtt_port=broker.port, smtp_port=smtp_port, store=store,
        mqtt="session_expiry_s = 3600\n" + kw.get("mqtt", "") + "\n" + EXTRA_MQTT,
        store_table=kw.get("store_table"),
        delivery=kw.get("delivery", "") + "\n" + EXTRA_DELIVERY,
    )  # fmt: skip
    if CONNECTIONS is not None:
        smtp = f'sender = "里山エッジ <alerts@example.jp>"\nconnections = {CONNECTIONS}\n'
        text = text.replace('sender = "里山エッジ <alerts@example.jp>"\n', smtp, 1)
    path.write_text(text, encoding="utf-8")
    return path


def windows_ms(log: Path) -> list[float]:
    return [float(m) for m in re.findall(r"marked_in=([0-9.]+)ms", log.read_text())]


def backlog(count: int, work: Path) -> None:
    """RSS while a backlog of heartbeats (recorded, not mailed) drains from disk."""
    print(f"\n== backlog: {count:,} events queued in the notifier's session ==")
    with Mosquitto(workdir=work / "mq-backlog") as broker:
        store = work / "backlog.sqlite3"
        config = write_config(work / "backlog.toml", broker, 1, store)
        notifier = NotifierProcess(config, work / "backlog.log")
        notifier.start()
        notifier.stop()
        queued = publish(broker, iter(payloads(count, heartbeat)))
        notifier = NotifierProcess(config, work / "backlog.log")
        try:
            result = drain(notifier, queued, store=store, timeout=1800)
            memory = notifier.memory()
        finally:
            notifier.stop()
    rate = queued / result.seconds
    settled = [kb for t, kb in notifier.samples if t - notifier.samples[0][0] >= 2.0]
    print(f"drained {queued:,} events in {result.seconds:.1f} s: {rate:,.0f} events/s "
          f"(stored only, SQLite on disk, synchronous=FULL)")  # fmt: skip
    print(f"RSS: start {result.start_rss_mb:.1f} MB, peak {result.peak_rss_mb:.1f} MB, "
          f"end {result.end_rss_mb:.1f} MB ({memory})")  # fmt: skip
    if settled:
        print(f"RSS growth from 2 s in to the end: {(settled[-1] - settled[0]) / 1024:+.1f} MB")
    print(f"peak RSS / target ({RSS_TARGET_MB:.0f} MB): {result.peak_rss_mb / RSS_TARGET_MB:.2f}"
          f"  {'PASS' if result.peak_rss_mb <= RSS_TARGET_MB else 'FAIL'}")  # fmt: skip


def alarms(count: int, work: Path) -> None:
    """Events/s of one instance when every event is mailed (coalescing off)."""
    print(f"\n== alarms: {count:,} animal_detected, coalescing off, {len(RECIPIENTS)} "
          "recipients each, one instance ==")  # fmt: skip
    with Mosquitto(workdir=work / "mq-alarms") as broker, SmtpSink(work) as mailbox:
        store = work / "alarms.sqlite3"
        config = write_config(work / "alarms.toml", broker, mailbox.port, store)
        notifier = NotifierProcess(config, work / "alarms.log")
        notifier.start()
        notifier.stop()
        queued = publish(broker, iter(payloads(count, alarm)))
        notifier = NotifierProcess(config, work / "alarms.log")
        # What the rest of the machine spent meanwhile: the broker, the SMTP sink and
        # this harness share the notifier's cores here (in production they do not).
        others = [broker.pid, *(p.pid for p in mailbox.procs), os.getpid()]
        others_before = sum(_process_cpu_s(pid) for pid in others)
        machine_before = _machine_jiffies()
        try:
            result = drain(notifier, queued, store=store, timeout=1800)
            mails = queued * len(RECIPIENTS)
            mailbox.wait_for(mails, 1800, every=0.05)
            mailed_s = time.monotonic() - notifier.samples[0][0]
            assert notifier.proc is not None
            user_s, system_s, helpers = tree_cpu_s(notifier.proc.pid)
            cpu_s = user_s + system_s
            others_s = sum(_process_cpu_s(pid) for pid in others) - others_before
            busy, idle = (a - b for a, b in zip(_machine_jiffies(), machine_before, strict=True))
        finally:
            notifier.stop()
    rate = queued / result.seconds
    mailed = queued / mailed_s
    print(f"stored {queued:,} events in {result.seconds:.1f} s: {rate:,.0f} events/s; all "
          f"{mails:,} mails with the SMTP server after {mailed_s:.1f} s "
          f"({mails / mailed_s:,.0f} mails/s: {mailed:,.0f} events mailed/s)")  # fmt: skip
    print(f"events mailed/s / target ({RATE_TARGET:,.0f}/s): {mailed / RATE_TARGET:.2f}  "
          f"{'PASS' if mailed >= RATE_TARGET else 'FAIL'}")  # fmt: skip
    print(f"notifier CPU: {cpu_s:.1f} s, {cpu_s / queued * 1000:.2f} ms per mailed event "
          f"({user_s / queued * 1000:.2f} user, {system_s / queued * 1000:.2f} system; all "
          f"threads, {helpers} render worker process(es) included; "
          f"{cpu_s / mailed_s:.0%} of one core over the run); "
          f"peak RSS {result.peak_rss_mb:.1f} MB")  # fmt: skip
    print(f"meanwhile the broker, the SMTP sink and this harness used {others_s:.1f} s of CPU "
          f"({others_s / mailed_s:.0%} of one core); the machine's {os.cpu_count()} cores were "
          f"{busy / max(1, busy + idle):.0%} busy")  # fmt: skip
    window = sorted(windows_ms(work / "alarms.log"))
    if window:
        p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
        print(f"SMTP accepted -> marked sent, under this load: median "
              f"{statistics.median(window):.2f} ms, p99 {p99:.2f} ms, max {window[-1]:.2f} ms "
              f"over {len(window):,} mails")  # fmt: skip


def _process_cpu_s(pid: int) -> float:
    """CPU time (user + system) of one process, without its children."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_jiffies() -> tuple[int, int]:
    """(busy, idle) clock ticks of all cores since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, idle


def tree_cpu_s(pid: int) -> tuple[float, float, int]:
    """CPU time (user, system) of process ``pid`` and of its live descendants (the
    notifier's render workers), and how many descendants there are."""
    parents: dict[int, int] = {}
    times: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]), int(fields[12]))
    tree = {pid}
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    tick = os.sysconf("SC_CLK_TCK")
    user = sum(times[p][0] for p in tree if p in times) / tick
    system = sum(times[p][1] for p in tree if p in times) / tick
    return user, system, len(tree) - 1


def shared(count: int, work: Path) -> None:
    """One instance, then two on a shared subscription, on one PostgreSQL store."""
    print(f"\n== shared subscription: {count:,} events (stored only), PostgreSQL ==")
    server = PostgresServer()
    server.start()
    try:
        rates = {}
        for instances in (1, 2):
            name = server.create_database()
            dsn = server.dsn(name)
            with Mosquitto(workdir=work / f"mq-shared-{instances}") as broker:
                procs = []
                for i in range(instances):
                    config = write_config(
                        work / f"shared-{instances}-{i}.toml", broker, 1, work / "unused",
                        mqtt='shared_group = "notifiers"',
                        store_table=f'backend = "postgresql"\ndsn = "{dsn}"',
                    )  # fmt: skip
                    procs.append(NotifierProcess(config, work / f"shared-{instances}-{i}.log",
                                                 client_id=f"notifier-{i}"))  # fmt: skip
                for proc in procs:  # each member's session subscribes to the group
                    proc.start()
                    proc.stop()
                queued = publish(broker, iter(payloads(count, heartbeat)))
                began = time.monotonic()
                try:
                    for proc in procs:
                        proc.start()
                    while _pg_events(server, name) < queued:
                        if time.monotonic() - began > 1800:
                            raise RuntimeError("the instances did not drain the backlog")
                        time.sleep(0.2)
                    took = time.monotonic() - began
                finally:
                    for proc in procs:
                        proc.stop()
            rates[instances] = queued / took
            print(f"{instances} instance(s): {queued:,} events in {took:.1f} s: "
                  f"{rates[instances]:,.0f} events/s")  # fmt: skip
            server.drop_database(name)
        print(f"two instances / one: {rates[2] / rates[1]:.2f}x")
    finally:
        server.stop()


def shared_alarms(count: int, work: Path) -> None:
    """Events mailed/s (coalescing off, two recipients each) by one instance, then by
    two on a shared subscription, on one PostgreSQL store (no sent journal there: each
    session waits for its mark's commit before its next mail)."""
    print(f"\n== shared subscription, mailed: {count:,} animal_detected, coalescing off, "
          f"{len(RECIPIENTS)} recipients each, PostgreSQL ==")  # fmt: skip
    server = PostgresServer()
    server.start()
    try:
        rates = {}
        for instances in (1, 2):
            name = server.create_database()
            dsn = server.dsn(name)
            mq = work / f"mq-shared-alarms-{instances}"
            with Mosquitto(workdir=mq) as broker, SmtpSink(work) as mailbox:
                procs = []
                for i in range(instances):
                    config = write_config(
                        work / f"shared-alarms-{instances}-{i}.toml", broker, mailbox.port,
                        work / "unused", mqtt='shared_group = "notifiers"',
                        store_table=f'backend = "postgresql"\ndsn = "{dsn}"',
                    )  # fmt: skip
                    log = work / f"shared-alarms-{instances}-{i}.log"
                    procs.append(NotifierProcess(config, log, client_id=f"notifier-{i}"))
                for proc in procs:  # each member's session subscribes to the group
                    proc.start()
                    proc.stop()
                queued = publish(broker, iter(payloads(count, alarm)))
                try:
                    for proc in procs:
                        proc.start()
                    began = time.monotonic()  # all subscribed: from now on they mail
                    mailbox.wait_for(queued * len(RECIPIENTS), 1800, every=0.05)
                    took = time.monotonic() - began
                finally:
                    for proc in procs:
                        proc.stop()
                pairs = mailbox.pairs()
                assert len(set(pairs)) == len(pairs) == queued * len(RECIPIENTS)
            rates[instances] = queued / took
            print(f"{instances} instance(s): {queued:,} events mailed in {took:.1f} s: "
                  f"{rates[instances]:,.0f} events mailed/s "
                  f"({rates[instances] * len(RECIPIENTS):,.0f} mails/s), none twice")  # fmt: skip
            server.drop_database(name)
        print(f"two instances / one: {rates[2] / rates[1]:.2f}x")
    finally:
        server.stop()


def kills(rounds: int, work: Path, per_round: int = 100) -> None:
    """SIGKILL the notifier while it mails; count the mails the SMTP server got twice."""
    print(f"\n== SIGKILL while mailing: {rounds} kills, {per_round} alarms each ==")
    rng = random.Random(7)
    with Mosquitto(workdir=work / "mq-kills") as broker, SmtpSink(work) as mailbox:
        store = work / "kills.sqlite3"
        config = write_config(work / "kills.toml", broker, mailbox.port, store)
        twice = doubled = mid = 0
        rates: list[float] = []
        for _ in range(rounds):
            notifier = NotifierProcess(config, work / "kills.log")
            notifier.start()
            before = mailbox.count()
            publish(broker, iter(payloads(per_round, alarm)))
            # Kill at a random moment of this round's mails: once the SMTP server has
            # taken the k-th (k at random), after a random 0-20 ms, so that the moment
            # is random against the mail stream (a kill right as the server takes a
            # mail would be inside the window by construction).
            mailbox.wait_for(before + rng.randint(10, 2 * per_round - 60), 120)
            time.sleep(rng.uniform(0.0, 0.02))
            notifier.kill()
            killed_at = time.time()
            taken = [at for _, _, at in mailbox.taken()[before:] if at <= killed_at]
            mid += len(taken) < 2 * per_round
            if len(taken) > 1:
                rates.append((len(taken) - 1) / max(1e-3, taken[-1] - taken[0]))
            notifier = NotifierProcess(config, work / "kills.log")
            notifier.start()
            try:
                while len(set(mailbox.pairs()[before:])) < 2 * per_round:
                    time.sleep(0.05)
                while not _all_sent(store):
                    time.sleep(0.05)
            finally:
                notifier.stop()
            pairs = mailbox.pairs()[before:]
            extra = len(pairs) - len(set(pairs))
            twice += extra
            doubled += extra > 0
    rate = statistics.median(rates)
    print(f"kills that mailed something twice: {doubled} of {rounds}; mails delivered twice: "
          f"{twice} ({twice / rounds:.2f} per kill); {mid} of {rounds} kills landed while "
          f"the round's mails were still going out")  # fmt: skip
    print(f"mails/s before the kills (median of the rounds): {rate:,.0f}; mean window per "
          f"mail implied (mails twice per kill / mails per s): {twice / rounds / rate * 1000:.2f}"
          f" ms")  # fmt: skip


def _all_sent(store: Path) -> bool:
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        row = conn.execute("SELECT COUNT(*) FROM mails WHERE status = 'pending'").fetchone()
        return int(row[0]) == 0
    finally:
        conn.close()


def _pg_events(server: PostgresServer, name: str) -> int:
    import psycopg

    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(row[0]) if row else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a minute or two)")
    parser.add_argument("--only", default="smtp,backlog,alarms,shared,shared-alarms,kills",
                        help="comma-separated: smtp, backlog, alarms, shared, "
                             "shared-alarms, kills")  # fmt: skip
    parser.add_argument("--smtp-sink", nargs=3, metavar=("PORT", "LOG", "KIND"),
                        help=argparse.SUPPRESS)  # fmt: skip
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="the notifier's smtp.connections (default: its own default)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        help="how many alarms the alarms section mails (default 3,000; 500 with --quick)",
    )
    parser.add_argument("--mqtt", default="", metavar="TOML",
                        help='extra [mqtt] lines, e.g. "receive_maximum = 100"')  # fmt: skip
    parser.add_argument("--delivery", default="", metavar="TOML",
                        help='extra [delivery] lines, e.g. "render_processes = 2"')  # fmt: skip
    args = parser.parse_args()
    global CONNECTIONS, EXTRA_MQTT, EXTRA_DELIVERY
    CONNECTIONS = args.connections
    EXTRA_MQTT = args.mqtt.replace("\\n", "\n")
    EXTRA_DELIVERY = args.delivery.replace("\\n", "\n")
    if args.smtp_sink:
        run_sink(int(args.smtp_sink[0]), Path(args.smtp_sink[1]), args.smtp_sink[2])
        return
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="notifier-bench-", dir="/var/tmp"))
    print(f"work folder {work} (SQLite stores on disk); {os.cpu_count()} CPUs")
    if "smtp" in only:
        smtp_capacity(work)
    if "backlog" in only:
        backlog(20_000 if args.quick else 100_000, work)
    if "alarms" in only:
        alarms(args.events or (500 if args.quick else 3_000), work)
    if "shared" in only:
        shared(5_000 if args.quick else 20_000, work)
    if "shared-alarms" in only:
        shared_alarms(1_000 if args.quick else 3_000, work)
    if "kills" in only:
        kills(5 if args.quick else 25, work)


if __name__ == "__main__":
    main()
