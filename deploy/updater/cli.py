"""``satoyama-update``'s command line: recover, install, fetch, run, status.

Exit status: 0 done (or nothing to do), 1 failed (the running release kept or
restored), 2 configuration error, 3 refused (bad bundle or request, reported
once), 75 another updater run holds the lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.errors import DeployError, UpdateBusy, UpdateRefused, VerifyError
from deploy.progress import Progress
from deploy.spool import UnsafePathError
from deploy.updater.config import DEFAULT_CONFIG, load_config
from deploy.updater.device import Updater
from deploy.updater.fetch import fetch
from deploy.updater.install import install, install_locked
from deploy.updater.journal import recover
from deploy.updater.request import run_request
from deploy.updater.steps import (
    EXIT_BUSY,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_REFUSED,
    Outcome,
)


def status(updater: Updater) -> dict[str, Any]:
    state = updater.load_state()
    return {
        "current": updater.current_version(),
        "releases": updater.complete_releases(),
        "phase": state.phase,
        "last_result": state.last_result,
        "failed_attempts": state.attempts,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="satoyama-update",
        description="Install signed Satoyama Edge bundles with automatic rollback "
        "(runs on the device).",
    )
    p.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help="updater configuration (default: %(default)s)",
    )
    p.add_argument(
        "--root", default="/", help="prefix for every device path (tests, image building)"
    )
    p.add_argument("--verbose", "-v", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "recover",
        help="at boot: make 'current' a complete release (finish or undo an interrupted update)",
    )
    s = sub.add_parser("install", help="install a bundle file (a download, or from a USB stick)")
    s.add_argument("--bundle", required=True, type=Path)
    s.add_argument(
        "--no-restart",
        action="store_true",
        help="switch without restarting the daemon or waiting for health (first boot)",
    )
    s = sub.add_parser("fetch", help="download a bundle (resumable) and install it")
    s.add_argument("url")
    s.add_argument("--sha256")
    sub.add_parser(
        "run",
        help="carry out the update request the daemon left (the timer and path units run this)",
    )
    sub.add_parser("status", help="print the installed releases and the journal as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    root = Path(args.root)
    cfg_path = Path(args.config)
    if root != Path("/"):  # the config's path is a device path like every other
        cfg_path = root / str(cfg_path).lstrip("/")
    try:
        updater = Updater(load_config(cfg_path), root=root, progress=Progress(sys.stderr))
    except DeployError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handlers: dict[str, Callable[[], Outcome]] = {
        "recover": lambda: _recover(updater),
        "install": lambda: install(updater, args.bundle, restart=not args.no_restart),
        "fetch": lambda: _fetch_install(updater, args.url, args.sha256),
        "run": lambda: run_request(updater),
        "status": lambda: Outcome(EXIT_OK, json.dumps(status(updater), indent=2)),
    }
    try:
        try:
            outcome = handlers[args.command]()
        except BaseException:
            updater.progress.close("stopped")
            raise
        updater.progress.close("done" if outcome.code == EXIT_OK else "failed")
    except UpdateBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except UnsafePathError as exc:  # a configuration naming folders others may write
        print(f"refused: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    except UpdateRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except VerifyError as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.message)
    return outcome.code


def _fetch_install(updater: Updater, url: str, sha256: str | None) -> Outcome:
    with updater.locked():
        return install_locked(updater, fetch(updater, url, sha256=sha256), restart=True)


def _recover(updater: Updater) -> Outcome:
    with updater.locked():
        changed = recover(updater, restart=False)
    v = updater.current_version()
    return Outcome(EXIT_OK, f"current: {v}" + (" (recovered)" if changed else ""), v)
