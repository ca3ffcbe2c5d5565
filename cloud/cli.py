"""``satoyama-notifier``: run the notifier, check its configuration, show its queue.

Exit status: 0 on success (and after SIGTERM / SIGINT), 1 when the notifier
fails at run time (the store is broken, for instance), 2 for a command-line
or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TextIO

import msgspec

from cloud.config import KNOWN_KINDS, NotifierConfig, StoreConfig, check_tls, load_config
from cloud.errors import ConfigError, NotifierError
from cloud.mailer import DryRunMailer
from cloud.notifier import Notifier
from cloud.render import JST
from cloud.store import DeviceRow, InstanceRow, QueuedMail, Store, StoreCounts, TrapRow

PROG: Final = "satoyama-notifier"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

log = logging.getLogger("cloud.cli")

_DESCRIPTION = """\
The Satoyama Edge cloud notifier: receives the events that field devices
publish over MQTT (wild boar detected, trap closed, water rising, a child
sleeping face down, ...) and e-mails them, with map links, to the people
configured for each site.  Events are de-duplicated by id and every mail is
queued on disk until the mail server has taken it.
"""

_EPILOG = """\
examples:
  satoyama-notifier check-config --config /etc/satoyama/notifier.toml
  satoyama-notifier run --config /etc/satoyama/notifier.toml
  satoyama-notifier status --config /etc/satoyama/notifier.toml
  satoyama-notifier run --config /etc/satoyama/notifier.toml --dry-run /tmp/mails

exit status: 0 ok, 1 run-time failure, 2 usage or configuration error.
See docs/notifier.md for every configuration key.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        required=True,
        metavar="FILE",
        help="the notifier's TOML configuration file (see examples/notifier.toml)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="log debug messages as well")
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run",
        parents=[common],
        help="receive events and send e-mails until SIGTERM or SIGINT",
        description="Connect to the MQTT broker and the SMTP server and e-mail every new "
        "event; runs until SIGTERM or SIGINT, then finishes the mail in hand and exits 0.",
    )
    run.add_argument(
        "--client-id",
        metavar="ID",
        help="override mqtt.client_id (each instance of a shared group needs its own; "
        "e-mails already queued are not affected)",
    )
    run.add_argument(
        "--dry-run",
        metavar="DIR",
        type=Path,
        help="write every e-mail as an .eml file into DIR instead of sending it; uses its own "
        "store in DIR and its own short-lived MQTT session, so the production notifier "
        "and its queue are not touched",
    )
    commands.add_parser(
        "status",
        parents=[common],
        help="show how many mails are pending, sent and failed, and why failed ones failed",
        description="Read the notifier's store (safe while the notifier runs) and print the "
        "mail queue: counts, then every failed and pending mail with its last error.",
    )
    commands.add_parser(
        "check-config",
        parents=[common],
        help="validate the configuration file and exit",
        description="Validate the configuration file; print one line naming the key on "
        "error (exit 2), or a summary (exit 0).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``satoyama-notifier`` and ``python -m cloud``."""
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc.file or args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        return _check_config(args.config, config, sys.stdout)
    if args.command == "status":
        return _status(config, sys.stdout)
    if args.client_id:
        config = msgspec.structs.replace(
            config, mqtt=msgspec.structs.replace(config.mqtt, client_id=args.client_id)
        )
        try:
            check_tls(config.mqtt)
        except ConfigError as exc:
            print(f"config error: {args.config}: {exc} (--client-id)", file=sys.stderr)
            return EXIT_USAGE
    if args.dry_run is not None:
        if config.mqtt.tls is not None:
            # The broker makes the certificate's CN the client id: the dry run would
            # take over (and, with its clean start, discard) the notifier's session.
            print(
                f"config error: {args.config}: mqtt.tls: --dry-run is not supported with "
                "mutual TLS (the broker would give it the certificate's CN, the notifier's "
                "client id, and so the notifier's session)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        return _run(dry_run_config(config, args.dry_run), dry_run=args.dry_run)
    return _run(config)


def dry_run_config(config: NotifierConfig, outdir: Path) -> NotifierConfig:
    """The configuration of a dry run: its own store, MQTT session and no shared group.

    The production notifier's persistent session and store must not be
    touched: a dry run that took over the client id would steal its events,
    and one that marked queued mails "sent" would lose them.  Nor does it
    acknowledge anything to the devices: its store is a throwaway, and a
    device deletes what the cloud acknowledged.
    """
    outdir = outdir.resolve()
    mqtt = msgspec.structs.replace(
        config.mqtt,
        client_id=f"{config.mqtt.client_id}-dry-run-{os.getpid()}",
        protocol="5",
        session_expiry_s=0,
        shared_group=None,
        device_acks=False,
    )
    store = StoreConfig(backend="sqlite", path=str(outdir / "dry-run.sqlite3"))
    return msgspec.structs.replace(config, mqtt=mqtt, store=store)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _check_config(path: str, config: NotifierConfig, out: TextIO) -> int:
    addresses = {
        r.address.lower()
        for site in config.sites.values()
        for kind in (*KNOWN_KINDS, *(k for rule in site.routes for k in rule.kinds or ()))
        for severity in ("alarm", "warning", "info")
        for r in config.recipients_for(site, kind, severity)
    }
    group = f", shared group {config.mqtt.shared_group}" if config.mqtt.shared_group else ""
    print(
        f"config ok: {path}: mqtt {config.mqtt.host}:{config.mqtt.port} "
        f"({config.mqtt.topic_prefix}/+/events, MQTT {config.mqtt.protocol}{group}), "
        f"smtp {config.smtp.host}:{config.smtp.port}, store {config.store.describe()}, "
        f"{len(config.sites)} site(s), {len(addresses)} recipient(s)",
        file=out,
    )
    return EXIT_OK


# --- run ------------------------------------------------------------------------


def _run(config: NotifierConfig, *, dry_run: Path | None = None) -> int:
    try:
        # asyncio's own loop, not uvloop: under uvloop the notifier's MQTT connection
        # sometimes never noticed a broker killed under it (aiomqtt reads paho's socket with
        # add_reader), and stopped receiving for good (tests/e2e/test_cloud_ack.py).
        with asyncio.Runner() as runner:
            runner.run(_serve(config, None if dry_run is None else dry_run.resolve()))
    except NotifierError as exc:
        log.error("notifier stopped: %s", exc)
        return EXIT_FAILURE
    except Exception:
        log.exception("notifier crashed")
        return EXIT_FAILURE
    return EXIT_OK


async def _serve(config: NotifierConfig, dry_run: Path | None) -> None:
    mailer = None
    if dry_run is not None:
        log.warning(
            "DRY RUN: mails are written to %s and not sent; store %s, MQTT session %s "
            "(the production notifier's store and session are not touched)",
            dry_run,
            config.store.path,
            config.mqtt.client_id,
        )
        mailer = DryRunMailer(dry_run)  # resolved by _run
    notifier = Notifier(config, mailer=mailer)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s received: stopping", signal.Signals(signum).name)
            notifier.stop()
        else:  # a second signal: do not wait for the mail in hand
            log.warning("%s received again: stopping now", signal.Signals(signum).name)
            task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await notifier.run()
    except asyncio.CancelledError:
        if signals == 0:
            raise
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


# --- status ------------------------------------------------------------------------


def _status(config: NotifierConfig, out: TextIO) -> int:
    try:
        report = asyncio.run(_read_status(config))
    except NotifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    now = time.time()
    counts = report.counts
    print(f"store: {config.store.describe()} ({counts.events} events)", file=out)
    print(f"mails: {counts.pending} pending, {counts.sent} sent, {counts.failed} failed", file=out)
    if report.failed:
        print("\nfailed (will not be retried):", file=out)
        for mail in report.failed:
            print(_mail_line(mail), file=out)
            print(f"    error: {mail.last_error or '-'}", file=out)
    if report.pending:
        print("\npending:", file=out)
        for mail in report.pending:
            due = mail.next_attempt - now
            when = "now" if due <= 0 else f"in {due:.0f} s"
            print(f"{_mail_line(mail)}  next attempt {when}", file=out)
            if mail.last_error:
                print(f"    last error: {mail.last_error}", file=out)
    offline = [d for d in report.devices if d.state == "offline"]
    if offline:
        print("\ndevices offline:", file=out)
        for d in offline:
            mailed = "mailed" if d.notified else "not mailed yet"
            print(f"  {d.device}  site={d.site or '-'}  since {_when(d.since)} JST"
                  f"  reason={d.reason or '-'}  ({mailed})", file=out)  # fmt: skip
    if report.traps:
        print("\ntraps closed (reminders running):", file=out)
        for t in report.traps:
            print(f"  {t.device} {t.sensor}  site={t.site}  closed since "
                  f"{_when(t.closed_since)} JST  reminders={t.reminders}  next "
                  f"{_when(t.next_reminder_at)} JST", file=out)  # fmt: skip
    if report.instances:
        print("\ninstances:", file=out)
        for i in report.instances:
            age = now - i.last_seen
            print(f"  {i.id}  host={i.host} pid={i.pid}  last seen {age:.0f} s ago", file=out)
    return EXIT_OK


@dataclass(frozen=True)
class _Report:
    counts: StoreCounts
    failed: list[QueuedMail]
    pending: list[QueuedMail]
    devices: list[DeviceRow]
    traps: list[TrapRow]
    instances: list[InstanceRow]


async def _read_status(config: NotifierConfig) -> _Report:
    async with await Store.open(config.store, readonly=True) as store:
        return _Report(
            counts=await store.counts(),
            failed=await store.mails("failed"),
            pending=await store.mails("pending"),
            devices=await store.devices(),
            traps=await store.open_traps(),
            instances=await store.instances(),
        )


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, JST).strftime("%Y-%m-%d %H:%M:%S")


def _mail_line(mail: QueuedMail) -> str:
    created = dt.datetime.fromtimestamp(mail.created_at, JST).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"  {created} JST  to={mail.recipient}  event={mail.event_id}  kind={mail.kind}  "
        f"site={mail.site}  attempts={mail.attempts}"
    )
