"""``satoyama-console``: users added, listed, re-passworded and removed through the command
line (into the notifier's real SQLite file), and ``serve`` answering over a real socket
until SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import aiomqtt
import msgspec
import pytest

from cloud.config import NotifierConfig, load_config
from cloud.console.accounts import verify_password
from cloud.console.cli import EXIT_OK, EXIT_USAGE, build_parser, main
from cloud.console.naps import nap_ack_sender
from edge.sim.broker import Mosquitto, free_port
from tests.cloud.console.conftest import DEVICE_B_NAP, SITE_A, SITE_B, console_toml, serve
from tests.support.waiting import until, until_sync

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "notifier.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3"), encoding="utf-8")
    return path


def run(config: Path, *args: str, password: str = "a long enough password") -> int:
    return main(["--config", str(config), *args], stdin=io.StringIO(password + "\n"))


def users(config: Path) -> dict[str, tuple[str, str, str]]:
    store = load_config(config).store.path
    assert store is not None
    if not Path(store).exists():
        return {}
    with contextlib.closing(sqlite3.connect(store)) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'console_users'").fetchall():
            return {}
        rows = conn.execute("SELECT name, role, sites, password FROM console_users").fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def test_user_add_list_password_remove(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "user", "add", "tanaka", "--role", "farmer", "--site", SITE_A) == 0
    assert run(config_file, "user", "add", "ops", "--role", "operator", "--language", "en") == 0
    assert "added tanaka (farmer; kataoka-east)" in capsys.readouterr().out
    stored = users(config_file)
    assert stored["tanaka"][:2] == ("farmer", f'["{SITE_A}"]')
    assert verify_password("a long enough password", stored["tanaka"][2])
    assert run(config_file, "user", "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ops\toperator\t*\ten", f"tanaka\tfarmer\t{SITE_A}\tja"]
    # --config may also follow the subcommand
    assert main(["user", "list", "--config", str(config_file)]) == 0
    assert run(config_file, "user", "password", "tanaka", password="another good one") == 0
    new = users(config_file)["tanaka"][2]
    assert verify_password("another good one", new) and not verify_password(
        "a long enough password", new
    )
    assert run(config_file, "user", "remove", "tanaka") == 0
    assert set(users(config_file)) == {"ops"}


@pytest.mark.parametrize(
    ("args", "password", "says"),
    [
        (["user", "add", "x", "--role", "farmer"], "long enough pw", "at least one --site"),
        (["user", "add", "x", "--role", "farmer", "--site", "nowhere"], "long enough pw",
         "not a configured site"),
        (["user", "add", "x", "--role", "farmer", "--site", SITE_B], "short", "at least 10"),
        (["user", "add", "bad name", "--role", "operator"], "long enough pw", "user name"),
        (["user", "remove", "nobody"], "", "no user 'nobody'"),
        (["user", "password", "nobody"], "long enough pw", "no user 'nobody'"),
    ],
)  # fmt: skip
def test_user_errors_exit_2_and_say_why(
    config_file: Path, capsys: pytest.CaptureFixture[str], args: list[str], password: str, says: str
) -> None:
    assert run(config_file, *args, password=password) == EXIT_USAGE
    assert says in capsys.readouterr().err
    assert users(config_file) == {}


def test_a_user_cannot_be_added_twice(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(config_file, "user", "add", "sato", "--role", "hunter", "--site", SITE_B) == 0
    assert run(config_file, "user", "add", "sato", "--role", "hunter", "--site", SITE_B) == 2
    assert "already exists" in capsys.readouterr().err


def test_configuration_errors_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "notifier.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra="tile_url = 'ftp://x/{z}'"))
    assert main(["--config", str(path), "user", "list"]) == EXIT_USAGE
    assert "console.tile_url" in capsys.readouterr().err
    path.write_text(console_toml(tmp_path / "n.sqlite3", extra="prot = 1"))
    assert main(["--config", str(path), "serve"]) == EXIT_USAGE
    assert "console.prot: unknown key (did you mean `port`?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["user", "list"])
    assert exc.value.code == EXIT_USAGE


def test_help_names_every_command() -> None:
    text = build_parser().format_help()
    for word in ("serve", "user", "docs/console.md"):
        assert word in text


def test_serve_answers_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "notifier.toml"
    path.write_text(console_toml(tmp_path / "n.sqlite3").replace("port = 8080", f"port = {port}"))
    assert main(["--config", str(path), "user", "add", "ops", "--role", "operator"],
                stdin=io.StringIO("a long enough password\n")) == EXIT_OK  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cloud.console.cli import main; sys.exit(main())",
         "--config", str(path), "serve"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        answers: list[int] = []

        def login_page() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=2) as r:
                    answers.append(r.status)
                    body = r.read().decode()
                    return "ログイン" in body
            except (urllib.error.URLError, ConnectionError):
                return proc.poll() is not None

        until_sync(login_page, 30, "the console to answer on its port")
        assert answers and answers[-1] == 200, proc.poll()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/map", timeout=2)
        assert refused.value.code == 401
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
        assert proc.returncode == 0, out
        assert f"listening on http://127.0.0.1:{port}" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


async def test_a_nap_acknowledgement_reaches_the_device_over_the_broker(
    seeded: NotifierConfig, broker: Mosquitto
) -> None:
    """``serve`` wires the console's "acknowledge" to ``cmd/nap_ack`` on the notifier's
    broker; with the broker gone the acknowledgement is still recorded and the page says
    the device was not told."""
    config = msgspec.structs.replace(
        seeded, mqtt=msgspec.structs.replace(seeded.mqtt, port=broker.port)
    )
    got: list[aiomqtt.Message] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="the-device") as device:
        await device.subscribe(f"satoyama/v1/{DEVICE_B_NAP}/cmd/#", qos=1)

        async def listen() -> None:
            async for message in device.messages:
                got.append(message)

        listener = asyncio.create_task(listen())
        try:
            sender = nap_ack_sender(config.mqtt)
            async for s in serve(config, live_task=False, nap_ack=sender):
                bob = await s.as_user("bob")
                page_url = f"/device/{DEVICE_B_NAP}"
                status, headers, _ = await bob.post(f"{page_url}/cot/cot-1/ack")
                assert (status, headers["Location"]) == (303, page_url)
                _, _, page = await bob.get(page_url)
                assert 'data-testid="action-done"' in page
                assert 'data-testid="ack-unsent"' not in page
                await until(lambda: bool(got), 10, "cmd/nap_ack at the device")
                body = json.loads(got[0].payload)  # type: ignore[arg-type]
                assert str(got[0].topic) == f"satoyama/v1/{DEVICE_B_NAP}/cmd/nap_ack"
                assert (body["cot"], body["by"]) == ("cot-1", "bob") and body["id"]
                broker.close()  # the broker goes away
                status, headers, _ = await bob.post(f"{page_url}/cot/cot-1/ack")
                assert (status, headers["Location"]) == (303, page_url)
                _, _, page = await bob.get(page_url)
                assert 'data-testid="ack-unsent"' in page
                assert 'data-testid="action-done"' not in page
                _, _, page = await bob.get(page_url)  # said once
                assert 'data-testid="ack-unsent"' not in page
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
