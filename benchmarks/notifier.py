"""Notifier figures: memory under a backlog, events/s per instance, two instances.

    .venv/bin/python benchmarks/notifier.py [--quick] [--only backlog,alarms,shared]

Everything runs through the real code: ``satoyama-notifier run`` as its own
process (as in production), a private mosquitto holding a backlog in the
notifier's persistent session, a real SMTP server (aiosmtpd, in this process),
a real SQLite file on disk (``synchronous=FULL``) and, for two instances, a
real PostgreSQL (the tests' throw-away cluster, ``fsync=off``).  Targets:

* RSS while a 100,000-event backlog drains: flat, <= 60 MB;
* events/s per instance with coalescing off (every event mailed to two
  recipients): >= 1,000/s;
* two instances on a shared subscription: about twice one.

Also printed: the window between the SMTP server accepting a mail and the
store marking it sent (a SIGKILL inside it mails it again after the restart).
"""

from __future__ import annotations

import argparse
import random
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox, ReceivedMail
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


def write_config(path: Path, broker: Mosquitto, smtp_port: int, store: Path, **kw: str) -> Path:
    path.write_text(
        config_text(
            mqtt_port=broker.port, smtp_port=smtp_port, store=store,
            mqtt="session_expiry_s = 3600\n" + kw.get("mqtt", ""),
            store_table=kw.get("store_table"), delivery=kw.get("delivery", ""),
        ),
        encoding="utf-8",
    )  # fmt: skip
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
    with Mosquitto(workdir=work / "mq-alarms") as broker, Mailbox() as mailbox:
        store = work / "alarms.sqlite3"
        config = write_config(work / "alarms.toml", broker, mailbox.port, store)
        notifier = NotifierProcess(config, work / "alarms.log")
        notifier.start()
        notifier.stop()
        queued = publish(broker, iter(payloads(count, alarm)))
        notifier = NotifierProcess(config, work / "alarms.log")
        try:
            result = drain(notifier, queued, store=store, timeout=1800)
            mails = queued * len(RECIPIENTS)
            mailbox.wait_for(mails, 1800)
            mailed_s = time.monotonic() - notifier.samples[0][0]
        finally:
            notifier.stop()
    rate = queued / result.seconds
    print(f"stored {queued:,} events in {result.seconds:.1f} s: {rate:,.0f} events/s; all "
          f"{mails:,} mails with the SMTP server after {mailed_s:.1f} s "
          f"({mails / mailed_s:,.0f} mails/s)")  # fmt: skip
    print(f"events/s / target ({RATE_TARGET:,.0f}/s): {rate / RATE_TARGET:.2f}  "
          f"{'PASS' if rate >= RATE_TARGET else 'FAIL'}")  # fmt: skip
    print(f"peak RSS {result.peak_rss_mb:.1f} MB")
    window = sorted(windows_ms(work / "alarms.log"))
    if window:
        p99 = window[min(len(window) - 1, int(len(window) * 0.99))]
        print(f"SMTP accepted -> marked sent, under this load: median "
              f"{statistics.median(window):.2f} ms, p99 {p99:.2f} ms, max {window[-1]:.2f} ms "
              f"over {len(window):,} mails")  # fmt: skip


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


def kills(rounds: int, work: Path, per_round: int = 100) -> None:
    """SIGKILL the notifier while it mails; count the mails the SMTP server got twice."""
    print(f"\n== SIGKILL while mailing: {rounds} kills, {per_round} alarms each ==")
    rng = random.Random(7)
    with Mosquitto(workdir=work / "mq-kills") as broker, Mailbox() as mailbox:
        store = work / "kills.sqlite3"
        config = write_config(work / "kills.toml", broker, mailbox.port, store)
        twice = 0
        for _ in range(rounds):
            notifier = NotifierProcess(config, work / "kills.log")
            notifier.start()
            before = len(mailbox.mails)
            publish(broker, iter(payloads(per_round, alarm)))
            # Kill somewhere in the middle of this round's mails, at a random moment:
            # not right after the SMTP server took one (that is inside the window
            # by construction), but up to a few mails' time later.
            mailbox.wait_for(before + rng.randint(10, 2 * per_round - 30), 120)
            time.sleep(rng.uniform(0.0, 0.05))
            notifier.kill()
            notifier = NotifierProcess(config, work / "kills.log")
            notifier.start()
            try:
                while len({_pair(m) for m in mailbox.mails[before:]}) < 2 * per_round:
                    time.sleep(0.05)
                while not _all_sent(store):
                    time.sleep(0.05)
            finally:
                notifier.stop()
            pairs = [_pair(m) for m in mailbox.mails[before:]]
            twice += len(pairs) - len(set(pairs))
    print(f"mails delivered twice: {twice} in {rounds} kills ({twice / rounds:.2f} per kill; "
          f"each kill at a random moment while mails were being sent)")  # fmt: skip


def _pair(mail: ReceivedMail) -> tuple[str, str]:
    return str(mail.message["X-Satoyama-Event"]), mail.rcpt_tos[0]


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
    parser.add_argument("--only", default="backlog,alarms,shared,kills",
                        help="comma-separated: backlog, alarms, shared, kills")  # fmt: skip
    args = parser.parse_args()
    only = set(args.only.split(","))
    work = Path(tempfile.mkdtemp(prefix="notifier-bench-", dir="/var/tmp"))
    print(f"work folder {work} (SQLite stores on disk)")
    if "backlog" in only:
        backlog(20_000 if args.quick else 100_000, work)
    if "alarms" in only:
        alarms(500 if args.quick else 3_000, work)
    if "shared" in only:
        shared(5_000 if args.quick else 20_000, work)
    if "kills" in only:
        kills(5 if args.quick else 25, work)


if __name__ == "__main__":
    main()
