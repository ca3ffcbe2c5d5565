"""``satoyama-console``: run the web console, and manage the people who may use it.

Exit status: 0 on success (and after SIGTERM / SIGINT), 1 when the console fails
at run time (the database is away, the port is taken), 2 for a command-line or
configuration error (a bad key, an unknown user, a password too short).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final, TextIO, TypeVar

from cloud.config import NotifierConfig, load_config
from cloud.console.accounts import (
    LANGUAGES,
    ROLES,
    AccountError,
    Accounts,
    check_password_strength,
    hash_password,
)
from cloud.errors import ConfigError, NotifierError

PROG: Final = "satoyama-console"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

log = logging.getLogger("cloud.console.cli")
_T = TypeVar("_T")

_DESCRIPTION = """\
The Satoyama Edge web console: a map of every device, trap, water gauge and
nap room, each device's page, the fleet's versions and rollouts, and the events
as they arrive.  It reads the notifier's database and configuration file (its
own settings are the [console] table; see docs/console.md).
"""

_EPILOG = """\
examples:
  satoyama-console --config /etc/satoyama-notifier/notifier.toml serve
  satoyama-console --config notifier.toml user add tanaka --role farmer --site kataoka-east
  satoyama-console --config notifier.toml user add ops --role operator --language en
  satoyama-console --config notifier.toml user list
  satoyama-console --config notifier.toml user password tanaka
  satoyama-console --config notifier.toml user remove tanaka

A new password is read from standard input (one line) when it is not a
terminal, else asked for twice.
exit status: 0 ok, 1 run-time failure, 2 usage or configuration error.
"""


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="the notifier's TOML configuration file (its [console] table: docs/console.md)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log debug too"
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-c", "--config", metavar="FILE", help="the notifier's TOML file")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        parents=[common],
        help="serve the console until SIGTERM or SIGINT",
        description="Listen on [console] host and port and serve the console until SIGTERM "
        "or SIGINT. Put a TLS-terminating reverse proxy in front of it.",
    )
    user = commands.add_parser(
        "user",
        parents=[common],
        help="add, list, remove a console user or change a password",
        description="Manage the console's users (kept in the notifier's database).",
    )
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser(
        "add",
        parents=[common],
        help="add a user",
        description="Add a user. An operator sees every site; every other role sees only "
        "the sites given with --site.",
    )
    add.add_argument("name", help="the login name (letters, digits, '_', '.', '@', '-')")
    add.add_argument("--role", required=True, choices=ROLES, help="what the person does")
    add.add_argument(
        "--site",
        action="append",
        default=[],
        metavar="SITE",
        help="a site id the user may see (repeat for several)",
    )
    add.add_argument(
        "--language", choices=LANGUAGES, default="ja", help="the pages' language (default ja)"
    )
    users.add_parser("list", parents=[common], help="list the users, their roles and sites")
    remove = users.add_parser("remove", parents=[common], help="remove a user (and log them out)")
    remove.add_argument("name")
    password = users.add_parser(
        "password", parents=[common], help="set a user's password (and log them out)"
    )
    password.add_argument("name")
    return parser


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None) -> int:
    """Entry point of ``satoyama-console``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.config:
        parser.error("the --config FILE option is required")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"config error: {exc.file or args.config}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "serve":
            return serve(config)
        return _user_command(config, args, stdin or sys.stdin, sys.stdout)
    except AccountError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NotifierError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_FAILURE


# --- users ---------------------------------------------------------------------------


def _with_accounts(config: NotifierConfig, work: Callable[[Accounts], _T]) -> _T:
    from cloud.console.app import connect

    db = connect(config.store)
    try:
        accounts = Accounts(db)
        accounts.open()
        return work(accounts)
    finally:
        db.close()


def _read_password(stdin: TextIO) -> str:
    if not stdin.isatty():
        password = stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            raise AccountError("the two passwords differ")
    check_password_strength(password)
    return password


def _user_command(
    config: NotifierConfig, args: argparse.Namespace, stdin: TextIO, out: TextIO
) -> int:
    command = args.user_command
    if command == "list":
        for user in _with_accounts(config, lambda a: a.users()):
            seen = "*" if user.operator else ",".join(sorted(user.sites))
            print(f"{user.name}\t{user.role}\t{seen}\t{user.language}", file=out)
        return EXIT_OK
    if command == "remove":
        if not _with_accounts(config, lambda a: a.remove(args.name)):
            raise AccountError(f"no user {args.name!r}")
        print(f"removed {args.name}", file=out)
        return EXIT_OK
    if command == "add":
        sites = frozenset(args.site)
        from cloud.console.accounts import check_user

        check_user(args.name, args.role, sites, args.language)
        unknown = sorted(sites - set(config.sites))
        if unknown:
            raise AccountError(f"not a configured site (no [sites.{unknown[0]}]): {unknown[0]}")
        hashed = hash_password(_read_password(stdin))
        user = _with_accounts(
            config,
            lambda a: a.add(
                args.name,
                role=args.role,
                sites=sites,
                language=args.language,
                password_hash=hashed,
                now=time.time(),
            ),
        )
        where = "every site" if user.operator else ", ".join(sorted(user.sites))
        print(f"added {user.name} ({user.role}; {where})", file=out)
        return EXIT_OK
    assert command == "password"
    if _with_accounts(config, lambda a: a.user(args.name)) is None:
        raise AccountError(f"no user {args.name!r}")
    hashed = hash_password(_read_password(stdin))
    _with_accounts(config, lambda a: a.set_password(args.name, hashed))
    print(f"password of {args.name} changed (their sessions ended)", file=out)
    return EXIT_OK


# --- serve ---------------------------------------------------------------------------


def serve(config: NotifierConfig) -> int:
    return asyncio.run(_serve(config))


async def _serve(config: NotifierConfig) -> int:
    from aiohttp import web

    from cloud.console.app import make_app, open_console
    from cloud.console.naps import nap_ack_sender

    sender = nap_ack_sender(
        config.mqtt, cert_file=config.console.mqtt_cert_file, key_file=config.console.mqtt_key_file
    )
    console = await open_console(config, nap_ack=sender)
    runner = web.AppRunner(make_app(console), access_log=None, handle_signals=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await runner.setup()
        site = web.TCPSite(runner, config.console.host, config.console.port)
        try:
            await site.start()
        except OSError as exc:
            print(
                f"{PROG}: cannot listen on {config.console.host}:{config.console.port}: {exc}",
                file=sys.stderr,
            )
            return EXIT_FAILURE
        log.info(
            "console: listening on http://%s:%d (store %s)",
            config.console.host,
            config.console.port,
            config.store.describe(),
        )
        await stop.wait()
        log.info("console: stopping")
    finally:
        await runner.cleanup()
        await console.close()
    return EXIT_OK
