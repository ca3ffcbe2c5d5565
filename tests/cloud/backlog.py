"""A notifier process facing a backlog: queue events in its persistent session, then
watch it drain them (how fast, and its resident memory meanwhile).

Used by ``tests/cloud/test_backlog.py`` and ``benchmarks/notifier.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from edge.event import Event, Location, encode, events_topic, new_event_id
from edge.sim.broker import Mosquitto
from tests.support.waiting import until_sync

REPO = Path(__file__).resolve().parents[2]
PREFIX = "satoyama/v1"


def heartbeat(seq: int, device: str, site: str) -> bytes:
    """A heartbeat event: recorded, never mailed (``skip_kinds``), nothing rendered."""
    return encode(
        Event(
            id=new_event_id(), device=device, site=site, kind="heartbeat", severity="info",
            ts=dt.datetime.now(dt.UTC), clock_synced=True, seq=seq, boot="bench-boot",
            location=Location(lat=36.0794321, lon=137.9543219),
            data={"interval_s": 3600, "uptime_s": seq, "outbox_depth": 0,
                  "oldest_undelivered_s": None},
        )
    )  # fmt: skip


def alarm(seq: int, device: str, site: str) -> bytes:
    """An alarm every recipient of the site is mailed about (unless coalesced)."""
    return encode(
        Event(
            id=new_event_id(), device=device, site=site, kind="animal_detected",
            severity="alarm", ts=dt.datetime.now(dt.UTC), clock_synced=True, seq=seq,
            boot="bench-boot", location=Location(lat=36.0794321, lon=137.9543219),
            data={"sensor": "pir-1", "deterrent": "sounded", "siren": True},
        )
    )  # fmt: skip


def publish(
    broker: Mosquitto, payloads: Iterator[tuple[str, bytes]], *, window: int = 20000
) -> int:
    """Publish ``(device, payload)`` pairs at QoS 1 as fast as the broker takes them.

    MQTT 3.1.1 written on a plain socket: paho takes ~300 us a message here,
    this ~10 us, which is what lets a test queue 100,000 events in seconds.
    Returns how many the broker acknowledged (all, or it raises).
    """
    sock = socket.create_connection((broker.host, broker.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client_id = f"backlog-{os.getpid()}".encode()
    body = _str(b"MQTT") + bytes([4, 0x02, 0, 60]) + _str(client_id)
    sock.sendall(bytes([0x10]) + _length(len(body)) + body)
    if sock.recv(4) != b"\x20\x02\x00\x00":
        raise RuntimeError("the broker refused the backlog's connection")
    acked = threading.Semaphore(0)
    failed: list[BaseException] = []

    def read_pubacks() -> None:
        buffer = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                whole = len(buffer) // 4 * 4  # PUBACK: 0x40 0x02 id id
                for _ in range(whole // 4):
                    acked.release()
                buffer = buffer[whole:]
        except OSError as exc:
            failed.append(exc)

    reader = threading.Thread(target=read_pubacks, daemon=True)
    reader.start()
    count = 0
    out: list[bytes] = []
    try:
        for device, payload in payloads:
            if count >= window and not acked.acquire(timeout=60):
                raise RuntimeError("the broker stopped acknowledging the backlog")
            mid = count % 65535 + 1
            topic = events_topic(PREFIX, device).encode()
            body = _str(topic) + mid.to_bytes(2, "big") + payload
            out.append(bytes([0x32]) + _length(len(body)) + body)
            count += 1
            if len(out) >= 500:
                sock.sendall(b"".join(out))
                out.clear()
        sock.sendall(b"".join(out))
        for _ in range(min(count, window)):
            if not acked.acquire(timeout=60):
                raise RuntimeError(f"the broker stopped acknowledging the backlog {failed}")
        sock.sendall(b"\xe0\x00")  # DISCONNECT
        return count
    finally:
        sock.close()
        reader.join(5)


def _str(data: bytes) -> bytes:
    return len(data).to_bytes(2, "big") + data


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = n // 128, n % 128
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS, kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


@dataclass
class NotifierProcess:
    """``satoyama-notifier run`` as its own process, its log in a file."""

    config: Path
    log: Path
    client_id: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)

    def start(self, timeout: float = 20.0) -> None:
        args = [sys.executable, "-m", "cloud", "run", "--config", str(self.config)]
        if self.client_id:
            args += ["--client-id", self.client_id]
        self._log_file = self.log.open("ab")
        self._offset = self.log.stat().st_size
        self.proc = subprocess.Popen(
            args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )  # fmt: skip
        self.wait_for_log("subscribed to", timeout)

    def wait_for_log(self, text: str, timeout: float) -> None:
        def logged() -> bool:
            with self.log.open("rb") as f:
                f.seek(self._offset)
                if text.encode() in f.read():
                    return True
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"notifier exited: {self.log.read_text()[-3000:]}")
            return False

        until_sync(logged, timeout, f"{text!r} in the notifier's log")

    def memory(self) -> str:
        """The RSS lines of /proc/PID/status (anonymous, file, shared memory)."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            return " ".join(" ".join(line.split()) for line in f if line.startswith("Rss"))

    def cpu_s(self) -> tuple[float, float]:
        """CPU time (user, system; all threads) the process has used so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def sample(self) -> int:
        assert self.proc is not None
        kb = rss_kb(self.proc.pid)
        self.samples.append((time.monotonic(), kb))
        return kb

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._log_file.close()

    def stop(self) -> None:
        if self._log_file.closed:
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def stored_events(store: Path) -> int:
    conn = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


@dataclass
class Drained:
    seconds: float
    """From the notifier's start to the last event stored."""
    peak_rss_mb: float
    end_rss_mb: float
    start_rss_mb: float
    samples: int


def drain(
    notifier: NotifierProcess, count: int, *, store: Path, timeout: float, every: float = 0.05
) -> Drained:
    """Start ``notifier`` and sample its RSS until ``count`` events are in ``store``."""
    began = time.monotonic()
    notifier.start()
    first = notifier.sample()
    deadline = began + timeout
    last_count_at = 0.0
    while True:
        notifier.sample()
        now = time.monotonic()
        if now - last_count_at >= 0.25:
            last_count_at = now
            if stored_events(store) >= count:
                break
        if now > deadline:
            raise AssertionError(
                f"{stored_events(store)} of {count} events stored after {timeout}s"
            )
        time.sleep(every)
    took = time.monotonic() - began
    peak = max(kb for _, kb in notifier.samples)
    return Drained(took, peak / 1024, notifier.sample() / 1024, first / 1024, len(notifier.samples))
