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
import signal
import sys
import time
from collections.abc import Sequence
from typing import Final, TextIO

from cloud.config import NotifierConfig, load_config
from cloud.errors import ConfigError, NotifierError
from cloud.notifier import Notifier
from cloud.render import JST
from cloud.store import QueuedMail, Store, StoreCounts

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
    commands.add_parser(
        "run",
        parents=[common],
        help="receive events and send e-mails until SIGTERM or SIGINT",
        description="Connect to the MQTT broker and the SMTP server and e-mail every new "
        "event; runs until SIGTERM or SIGINT, then finishes the mail in hand and exits 0.",
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
    return _run(config)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _check_config(path: str, config: NotifierConfig, out: TextIO) -> int:
    recipients = sum(len(site.recipients) for site in config.sites.values())
    print(
        f"config ok: {path}: mqtt {config.mqtt.host}:{config.mqtt.port} "
        f"({config.mqtt.topic_prefix}/+/events), smtp {config.smtp.host}:{config.smtp.port}, "
        f"store {config.store.path}, {len(config.sites)} site(s), {recipients} recipient(s)",
        file=out,
    )
    return EXIT_OK


# --- run ------------------------------------------------------------------------


def _run(config: NotifierConfig) -> int:
    try:
        asyncio.run(_serve(config))
    except NotifierError as exc:
        log.error("notifier stopped: %s", exc)
        return EXIT_FAILURE
    except Exception:
        log.exception("notifier crashed")
        return EXIT_FAILURE
    return EXIT_OK


async def _serve(config: NotifierConfig) -> None:
    notifier = Notifier(config)
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
        counts, failed, pending = asyncio.run(_read_status(config))
    except NotifierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"store: {config.store.path} ({counts.events} events)", file=out)
    print(f"mails: {counts.pending} pending, {counts.sent} sent, {counts.failed} failed", file=out)
    now = time.time()
    if failed:
        print("\nfailed (will not be retried):", file=out)
        for mail in failed:
            print(_mail_line(mail), file=out)
            print(f"    error: {mail.last_error or '-'}", file=out)
    if pending:
        print("\npending:", file=out)
        for mail in pending:
            due = mail.next_attempt - now
            when = "now" if due <= 0 else f"in {due:.0f} s"
            print(f"{_mail_line(mail)}  next attempt {when}", file=out)
            if mail.last_error:
                print(f"    last error: {mail.last_error}", file=out)
    return EXIT_OK


async def _read_status(
    config: NotifierConfig,
) -> tuple[StoreCounts, list[QueuedMail], list[QueuedMail]]:
    async with await Store.open(config.store.path, readonly=True) as store:
        return await store.counts(), await store.mails("failed"), await store.mails("pending")


def _mail_line(mail: QueuedMail) -> str:
    created = dt.datetime.fromtimestamp(mail.created_at, JST).strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"  {created} JST  to={mail.recipient}  event={mail.event_id}  kind={mail.kind}  "
        f"site={mail.site}  attempts={mail.attempts}"
    )
