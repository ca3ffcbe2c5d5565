"""The cloud half of a simulated site: mosquitto, an SMTP server and the notifier process.

``edge demo``, the end-to-end tests and the benchmarks start the same pieces the
same way: a private mosquitto, a real SMTP server keeping ``.eml`` files, and
the cloud notifier as its own process (as it runs in production).  With a
:class:`ConsoleSetup`, the web console (``satoyama-console serve``) runs too, as
its own process on the notifier's file, with its users added through its own
command line.  The device half (the daemon on mock pins) is started by the caller.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from edge.event import DEFAULT_TOPIC_PREFIX, events_topic
from edge.sim import site_text
from edge.sim.broker import Mosquitto, free_port
from edge.sim.mailbox import Mailbox, ReceivedMail

DEVICE_ID = "shiojiri-kataoka-01"
SITE_ID = "shiojiri-kataoka"
SITE_NAME = "塩尻市 片丘 東の田"
LAT, LON = 36.103950, 137.965630
RECIPIENTS = ("farmer@example.jp",)
NOTIFIER_ID = "satoyama-notifier-sim"
EVENTS_FILTER = events_topic(DEFAULT_TOPIC_PREFIX, "+")


def device_config(
    outbox: Path,
    port: int,
    *,
    warmup_s: float = 60,
    on_s: float = 30,
    max_on_s: float = 120,
    cooldown_s: float = 60,
    reconnect_max_s: float = 2,
) -> str:
    """A paddy-edge device (one PIR on GPIO17, siren GPIO27, strobe GPIO22) on mock pins."""
    return f"""\
[device]
id = "{DEVICE_ID}"
site = "{SITE_ID}"
latitude = {LAT}
longitude = {LON}
description = "simulated paddy edge, north fence"

[uplink]
host = "127.0.0.1"
port = {port}
reconnect_min_s = 0.1
reconnect_max_s = {reconnect_max_s:g}

[outbox]
path = "{outbox}"

[gpio]
pin_factory = "mock"
""" + site_text.paddy_edge(warmup_s=warmup_s, on_s=on_s, max_on_s=max_on_s,
                           cooldown_s=cooldown_s)  # fmt: skip


def notifier_config(
    store: Path,
    mqtt_port: int,
    smtp_port: int,
    language: str = "ja",
    *,
    coalesce: bool = True,
    sites: Mapping[str, str] | None = None,
    console: str = "",
) -> str:
    """The notifier for the simulated site.  ``coalesce=False`` mails every event
    (tests that count one mail per device event); the default folds bursts as in
    production.  ``sites``: more ``[sites.ID]`` (id -> name) beside the simulated
    paddy edge's; ``console``: a ``[console]`` table to append (the notifier ignores it)."""
    recipients = ", ".join(f'"{r}"' for r in RECIPIENTS)
    top = "" if coalesce else "coalesce = []\n\n"
    more = "".join(
        f'\n[sites.{site}]\nname = "{name}"\nrecipients = [{recipients}]\n'
        for site, name in (sites or {}).items()
        if site != SITE_ID
    )
    return f"""\
{top}[mqtt]
host = "127.0.0.1"
port = {mqtt_port}
client_id = "{NOTIFIER_ID}"

[smtp]
host = "127.0.0.1"
port = {smtp_port}
sender = "satoyama-edge@example.jp"

[store]
path = "{store}"

[delivery]
retry_initial_s = 0.2
retry_max_s = 2
language = "{language}"

[sites.{SITE_ID}]
name = "{SITE_NAME}"
recipients = [{recipients}]
{more}{console}"""


@dataclass(frozen=True)
class ConsoleUser:
    """A console account the simulated site creates (through ``satoyama-console user add``)."""

    name: str
    role: str
    """``operator``, ``farmer``, ``hunter``, ``nursery`` or ``municipal``."""
    sites: tuple[str, ...] = ()
    """The sites the user sees (an operator sees every site and needs none)."""
    language: str = "ja"

    @property
    def password(self) -> str:
        """A simulated site's password: printed by ``edge demo``, typed by the tests."""
        return f"{self.name}-satoyama-sim"


#: One user per role, each on the simulated paddy edge's site.
DEMO_USERS: tuple[ConsoleUser, ...] = (
    ConsoleUser("ops", "operator"),
    ConsoleUser("tanaka", "farmer", (SITE_ID,)),
    ConsoleUser("ryoshi", "hunter", (SITE_ID,)),
    ConsoleUser("hoiku", "nursery", (SITE_ID,)),
    ConsoleUser("yakuba", "municipal", (SITE_ID,)),
)


@dataclass(frozen=True)
class ConsoleSetup:
    """The web console beside the notifier: its ``[console]`` table and its users."""

    users: tuple[ConsoleUser, ...] = DEMO_USERS
    tile_url: str | None = None
    """Map tiles (``None``: the console's default, 地理院タイル)."""
    credit: str | None = None
    extra: Mapping[str, object] = field(default_factory=dict)
    """More ``[console]`` keys (strings, numbers, booleans)."""

    def table(self, port: int) -> str:
        """The ``[console]`` table: on 127.0.0.1:``port``, plain HTTP (a cookie that is not
        ``Secure``: nothing here runs behind TLS)."""
        keys: dict[str, object] = {"host": "127.0.0.1", "port": port, "cookie_secure": False}
        if self.tile_url is not None:
            keys["tile_url"] = self.tile_url
        if self.credit is not None:
            keys["credit"] = self.credit
        keys.update(self.extra)
        lines = ["", "[console]"]
        for key, value in keys.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int | float):
                lines.append(f"{key} = {value!r}")
            else:
                text = str(value).replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'{key} = "{text}"')
        return "\n".join(lines) + "\n"


def console_command() -> list[str]:
    """``satoyama-console`` beside this Python (its installed entry point), else the same
    ``main`` through this interpreter."""
    script = Path(sys.executable).with_name("satoyama-console")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    run = "import sys; from cloud.console.cli import main; sys.exit(main())"
    return [sys.executable, "-c", run]


class CloudSide:
    """mosquitto + SMTP server + notifier process, in one folder."""

    def __init__(
        self,
        workdir: Path,
        *,
        language: str = "ja",
        on_mail: Callable[[ReceivedMail], None] | None = None,
        coalesce: bool = True,
        broker_persistence: bool = True,
        sites: Mapping[str, str] | None = None,
        console: ConsoleSetup | None = None,
    ) -> None:
        """``broker_persistence`` off: the broker keeps sessions and queued messages in
        memory only (a crash loses them).  ``sites``: more sites (id -> name) the notifier
        knows.  ``console``: start the web console too (:attr:`console_url`)."""
        self.workdir = workdir
        self.coalesce = coalesce
        self.sites = dict(sites or {})
        self.console_setup = console
        self.console_port = free_port() if console is not None else None
        self.console_log = workdir / "notifier" / "console.log"
        self.console: subprocess.Popen[bytes] | None = None
        for sub in ("broker", "mail", "notifier"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(workdir=workdir / "broker", persistence=broker_persistence)
        self.mailbox = Mailbox(outdir=workdir / "mail", on_mail=on_mail)
        self.language = language
        self.notifier_config = workdir / "notifier" / "notifier.toml"
        self.notifier_log = workdir / "notifier" / "notifier.log"
        self.notifier: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the broker, the SMTP server and the notifier; if one fails, the ones
        already running are stopped before the error propagates."""
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.broker.start()
        self.mailbox.start()
        self.notifier_config.write_text(
            notifier_config(
                self.workdir / "notifier" / "notifier.sqlite3",
                self.broker.port,
                self.mailbox.port,
                self.language,
                coalesce=self.coalesce,
                sites=self.sites,
                console=(
                    self.console_setup.table(self.console_port)
                    if self.console_setup is not None and self.console_port is not None
                    else ""
                ),
            ),
            encoding="utf-8",
        )
        self.start_notifier()
        if self.console_setup is not None:
            self.add_console_users(self.console_setup.users)
            self.start_console()

    @property
    def console_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the console (only with a :class:`ConsoleSetup`)."""
        if self.console_port is None:
            raise RuntimeError("this simulated site has no console")
        return f"http://127.0.0.1:{self.console_port}"

    def add_console_users(self, users: Sequence[ConsoleUser], timeout: float = 60.0) -> None:
        """Each user through the console's own command line (``user add``, the password on
        standard input), as an administrator would; the commands run side by side."""
        running = []
        for user in users:
            sites = [arg for site in user.sites for arg in ("--site", site)]
            args = ["user", "add", user.name, "--role", user.role, *sites,
                    "--language", user.language]  # fmt: skip
            proc = subprocess.Popen(
                [*console_command(), "--config", str(self.notifier_config), *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            running.append((args, proc, user.password + "\n"))
        failed = []
        for args, proc, password in running:
            try:
                _, err = proc.communicate(password, timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if proc.returncode != 0:
                failed.append(f"satoyama-console {' '.join(args)}: exit {proc.returncode}: "
                              f"{err.strip()}")  # fmt: skip
        if failed:
            raise RuntimeError("; ".join(failed))

    def start_console(self, timeout: float = 30.0) -> None:
        """Start ``satoyama-console serve`` and wait until its login page answers."""
        log = self.console_log.open("ab")
        self.console = subprocess.Popen(
            [*console_command(), "--config", str(self.notifier_config), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.console.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.console_url + "/login", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling a starting process's port
        tail = self.console_log.read_text(errors="replace")[-2000:]
        self.stop_console()
        raise RuntimeError(f"the console did not answer; its log ends:\n{tail}")

    def stop_console(self) -> None:
        proc, self.console = self.console, None
        _stop(proc)

    def start_notifier(self, timeout: float = 20.0) -> None:
        """Start the notifier process and wait until it has subscribed to events."""
        since = self.broker.log_size()
        log = self.notifier_log.open("ab")
        self.notifier = subprocess.Popen(
            [sys.executable, "-m", "cloud", "run", "--config", str(self.notifier_config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        try:
            self.broker.wait_for_subscription(
                NOTIFIER_ID, EVENTS_FILTER, timeout=timeout, since=since
            )
        except TimeoutError:
            tail = self.notifier_log.read_text(errors="replace")[-2000:]
            self.stop_notifier()
            raise RuntimeError(f"the notifier did not subscribe; its log ends:\n{tail}") from None

    def stop_notifier(self) -> None:
        proc, self.notifier = self.notifier, None
        _stop(proc)

    def close(self) -> None:
        """Stop them all, each whatever the others raise; idempotent."""
        try:
            self.stop_console()
        finally:
            try:
                self.stop_notifier()
            finally:
                try:
                    self.mailbox.stop()
                finally:
                    self.broker.stop()

    def __enter__(self) -> CloudSide:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a process of the cloud side and wait for it (SIGKILL after 10 s)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
