"""A private mosquitto broker on a free loopback port, for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from edge.errors import EdgeError

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])


class BrokerError(EdgeError, RuntimeError):
    """mosquitto is missing or would not start."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str:
    path = shutil.which("mosquitto", path=SEARCH_PATH)
    if path is None:
        raise BrokerError(
            "mosquitto is not installed: run `bash scripts/setup.sh` "
            "(or `apt-get install mosquitto`)"
        )
    return path


class Mosquitto:
    """Start, stop and restart one mosquitto process.

    The port stays the same across :meth:`stop` / :meth:`start`, so clients can
    reconnect to "the same broker coming back".  Persistent sessions and their
    queued messages are saved on a clean stop and restored on start, as a
    production broker does.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        tls: tuple[Path, Path, Path] | None = None,
        acl_file: Path | None = None,
        persistence: bool = True,
        listeners: str | None = None,
    ) -> None:
        """``tls``: (CA, broker certificate, broker key): TLS only, and every client
        must present a certificate from that CA; its common name becomes the MQTT
        user name that ``acl_file`` patterns (``%u``) refer to.  ``persistence``
        off: sessions and queued messages live in memory only (a crash or a stop
        loses them), as on a broker configured without a persistence file.
        ``listeners``: configuration text written instead of the listener, TLS and
        ACL lines made from ``port``, ``tls`` and ``acl_file`` (e.g. the shipped
        ``deploy/broker/satoyama.conf`` with its paths and ports filled in); one of
        its listeners must be ``port``, on 127.0.0.1."""
        self.binary = find_mosquitto()
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="satoyama-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.acl_file = acl_file
        self.persistence = persistence
        self.listeners = listeners

    def _listener_lines(self) -> list[str]:
        if self.listeners is not None:
            return [self.listeners]
        lines = [f"listener {self.port} {self.host}"]
        if self.tls:
            lines += [
                f"cafile {self.tls[0]}",
                f"certfile {self.tls[1]}",
                f"keyfile {self.tls[2]}",
                "require_certificate true",
                "use_identity_as_username true",
                "allow_anonymous false",
            ]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file:
            lines.append(f"acl_file {self.acl_file}")
        return lines

    def _write_config(self) -> None:
        self.conf.write_text(
            "\n".join(
                [
                    "# written by edge.sim.broker",
                    *self._listener_lines(),
                    # As root, mosquitto would switch to user "mosquitto", who may not
                    # read this folder; stay whoever started it.
                    f"user {pwd.getpwuid(os.getuid()).pw_name}",
                    # Sessions and queued QoS 1 messages survive a restart (saved on
                    # SIGTERM), as on a production broker; kill() loses them.
                    *(
                        [
                            "persistence true",
                            f"persistence_location {self.workdir}/",
                            "autosave_interval 60",
                        ]
                        if self.persistence
                        else ["persistence false"]
                    ),
                    # mosquitto 2.0 silently drops messages to a subscriber whose
                    # queue passes this (default 1000); a fast publisher would "lose" events.
                    "max_queued_messages 100000",
                    "max_inflight_messages 100",
                    # Without it the first message after a subscribe waits ~40 ms (Nagle).
                    "set_tcp_nodelay true",
                    f"log_dest file {self.log}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type subscribe",
                    "log_timestamp false",
                    "connection_messages true",
                    "",
                ]
            )
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int:
        """The broker process's id (it must be running)."""
        if self._proc is None:
            raise RuntimeError("mosquitto is not running")
        return self._proc.pid

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self._write_config()
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            self._wait_listening(self._proc, timeout)
        except BaseException:
            # Whatever stops the wait (mosquitto failing, a timeout, Ctrl-C): never
            # leave a broker running that nobody will stop.
            self.stop()
            raise

    def _wait_listening(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise BrokerError(f"mosquitto exited at start: {err}{log}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout}s")

    def stop(self) -> None:
        """Terminate the broker (clients see the connection drop)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """SIGKILL the broker: what it held only in memory is gone, as in a crash."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def wait_for_subscription(
        self, client_id: str, topic: str, timeout: float = 10.0, *, since: int = 0
    ) -> None:
        """Block until the broker logged ``client_id`` subscribing to ``topic``.

        ``since``: only log lines after this byte offset (see :meth:`log_size`) count.
        """
        wanted = f"{client_id} "
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists():
                with self.log.open("rb") as f:
                    f.seek(since)
                    text = f.read().decode(errors="replace")
                for line in text.splitlines():
                    if line.startswith(wanted) and line.endswith(f" {topic}"):
                        return
            time.sleep(0.02)
        raise TimeoutError(f"{client_id} did not subscribe to {topic} within {timeout}s")

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
