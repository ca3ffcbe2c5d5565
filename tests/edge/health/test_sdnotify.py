"""sd_notify without libsystemd, against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.health.sdnotify import SystemdNotifier
from tests.edge.conftest import example_config_text

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """What systemd listens on: a datagram socket at a path, and its NOTIFY_SOCKET value."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(10)
    try:
        yield sock, path
    finally:
        sock.close()


def test_no_notify_socket_means_no_op() -> None:
    n = SystemdNotifier(env={})
    assert not n.enabled
    assert n.watchdog_interval_s is None
    assert n.ready() is False and n.watchdog() is False and n.stopping() is False
    n.close()


def test_ready_status_stopping_to_a_path_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    with SystemdNotifier(env={"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready("device x running")
        assert sock.recv(4096) == b"READY=1\nSTATUS=device x running"
        assert n.watchdog()
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.stopping()
        assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace_socket() -> None:
    name = f"satoyama-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(10)
    try:
        with SystemdNotifier(env={"NOTIFY_SOCKET": "@" + name}) as n:
            assert n.ready()
            assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_watchdog_usec_parsing() -> None:
    env = {"NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "60000000"}
    assert SystemdNotifier(env=env).watchdog_interval_s == 30.0
    assert (
        SystemdNotifier(env={**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval_s == 30.0
    )
    assert (
        SystemdNotifier(env={**env, "WATCHDOG_PID": "1"}).watchdog_interval_s is None
    )  # not for us
    assert SystemdNotifier(env={**env, "WATCHDOG_USEC": "soon"}).watchdog_interval_s is None
    assert SystemdNotifier(env={**env, "WATCHDOG_USEC": "0"}).watchdog_interval_s is None
    assert (
        SystemdNotifier(env={"WATCHDOG_USEC": "60000000"}).watchdog_interval_s is None
    )  # no socket
    assert not SystemdNotifier(env={"NOTIFY_SOCKET": "relative/path"}).enabled


async def test_watchdog_pings_at_half_the_interval(
    notify_socket: tuple[socket.socket, str],
) -> None:
    sock, path = notify_socket
    n = SystemdNotifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})  # ping every 20 ms
    assert n.watchdog_interval_s == 0.02
    task = asyncio.create_task(n.run_watchdog())
    loop = asyncio.get_running_loop()
    try:
        for _ in range(3):
            assert await loop.run_in_executor(None, sock.recv, 4096) == b"WATCHDOG=1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        n.close()


def test_a_vanished_socket_is_logged_once_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edge.health.sdnotify")
    n = SystemdNotifier(env={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.ready() is False
    assert n.watchdog() is False
    assert len([r for r in caplog.records if "cannot notify systemd" in r.getMessage()]) == 1
    n.close()


def test_edge_run_sends_ready_watchdog_and_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """The real daemon under a fake systemd: READY=1 once started, pings, STOPPING=1 on SIGTERM."""
    sock, path = notify_socket
    with socket.socket() as s:  # a port nobody listens on: the uplink just keeps retrying
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    text = example_config_text(port=port, outbox=tmp_path / "outbox.sqlite3").replace(
        'pin_factory = "auto"', 'pin_factory = "mock"'
    )
    config = tmp_path / "device.toml"
    config.write_text(text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge", "run", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"},
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        first = sock.recv(4096)
        assert (
            first.startswith(b"READY=1\n") and b"STATUS=device shiojiri-kataoka-01 running" in first
        )
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert sock.recv(4096) == b"WATCHDOG=1"
        proc.send_signal(signal.SIGTERM)
        while (msg := sock.recv(4096)) == b"WATCHDOG=1":
            pass
        assert msg == b"STOPPING=1"
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
