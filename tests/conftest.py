"""Shared fixtures: real mosquitto, a real SMTP server, and log-format checking."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A private mosquitto on a free loopback port.  Fails (never skips) if missing."""
    b = Mosquitto(workdir=tmp_path / "mosquitto")
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def mailbox(tmp_path: Path) -> Iterator[Mailbox]:
    """A real SMTP server (aiosmtpd) keeping each mail as an .eml file."""
    with Mailbox(outdir=tmp_path / "mail") as m:
        yield m


class _FormatCheckingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.getMessage()
        except Exception as exc:  # a log call whose arguments don't match its format
            self.errors.append(f"{record.pathname}:{record.lineno}: {record.msg!r}: {exc}")


@pytest.fixture(autouse=True)
def _fail_on_bad_log_format() -> Iterator[None]:
    """A log line that cannot be formatted is a bug that hides exactly when needed."""
    handler = _FormatCheckingHandler()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert not handler.errors, "badly formatted log calls:\n" + "\n".join(handler.errors)
