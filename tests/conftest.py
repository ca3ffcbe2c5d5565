"""Shared fixtures: real mosquitto, a real SMTP server, log-format checking, and a
check that no process the suite started outlives it."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory

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
def pins() -> Iterator[MockFactory]:
    """gpiozero's own mock pin factory; reset after each test (GPIOPinInUse otherwise)."""
    factory = MockFactory()
    try:
        yield factory
    finally:
        factory.reset()


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
        except Exception as exc:  # noqa: BLE001 - test helper: any error is the finding
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


SESSION_MARK = "SATOYAMA_TEST_SESSION"
"""Set in the suite's environment, so every process a test starts carries it (and
keeps carrying it if its parent dies and it is re-parented)."""


def processes_marked(token: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose environment has ``SESSION_MARK=token``."""
    wanted = f"{SESSION_MARK}={token}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if wanted not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z":  # a zombie is dead; only its parent's wait() is missing
            found.append((int(proc.name), cmdline.strip()))
    return found


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_suite() -> Iterator[None]:
    """Every process a test starts (mosquitto, the notifier, a daemon) must be stopped by
    its teardown, also when setup failed half-way.  Whatever is still running at the end
    is killed and fails the run, naming it."""
    token = f"{os.getpid()}-{time.time_ns()}"
    previous = os.environ.get(SESSION_MARK)
    os.environ[SESSION_MARK] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SESSION_MARK, None)
        else:
            os.environ[SESSION_MARK] = previous
    deadline = time.monotonic() + 2.0  # one already told to stop may be exiting now
    while (left := processes_marked(token)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _ in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert not left, "processes the tests started are still running (now killed):\n" + "\n".join(
        f"  {pid}: {cmdline}" for pid, cmdline in left
    )
