"""The ``satoyama-notifier`` command, run as the real process an operator starts."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud.config import NotifierConfig, load_config
from cloud.store import QueuedMail, Store
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    RECIPIENTS,
    Publisher,
    event_ids,
    eventually,
    mails,
    make_event,
    running,
)

REPO = Path(__file__).resolve().parents[2]
COMMAND = [sys.executable, "-m", "cloud"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )


def test_help_describes_the_commands() -> None:
    result = cli("--help")
    assert result.returncode == 0
    for command in ("run", "status", "check-config"):
        assert command in result.stdout
    result = cli("run", "--help")
    assert result.returncode == 0
    assert "--config FILE" in result.stdout and "--verbose" in result.stdout


def test_config_error_is_one_line_and_exit_2(config_path: Path, mailbox: Mailbox) -> None:
    text = config_path.read_text(encoding="utf-8")
    text = text.replace(f"port = {mailbox.port}", f'port = "{mailbox.port}"')
    config_path.write_text(text, encoding="utf-8")
    for command in ("check-config", "run", "status"):
        result = cli(command, "--config", str(config_path))
        assert result.returncode == 2, result.stderr
        assert (
            result.stderr == f"config error: {config_path}: smtp.port: Expected `int`, got `str`\n"
        )


def test_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = cli("check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert result.stderr == f"config error: {tmp_path / 'absent.toml'}: no such file\n"


def test_usage_error_is_exit_2() -> None:
    assert cli("run").returncode == 2  # --config is required
    assert cli("frobnicate", "--config", "x").returncode == 2


def test_check_config_ok(config_path: Path) -> None:
    result = cli("check-config", "--config", str(config_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"config ok: {config_path}:")
    assert "1 site(s), 2 recipient(s)" in result.stdout


def test_status_without_a_store_says_so(config_path: Path) -> None:
    result = cli("status", "--config", str(config_path))
    assert result.returncode == 1
    assert "no store at" in result.stderr


@contextlib.asynccontextmanager
async def notifier_process(
    config_path: Path, *extra: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``satoyama-notifier run`` as a child process, yielded once it is subscribed."""
    proc = await asyncio.create_subprocess_exec(
        *COMMAND, "run", "--config", str(config_path), *extra,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    log: list[str] = []
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 15
        while not any("subscribed to" in line for line in log):
            left = deadline - time.monotonic()
            line = await asyncio.wait_for(proc.stderr.readline(), max(left, 0.01))
            if not line:
                raise AssertionError("notifier exited early:\n" + "".join(log))
            log.append(line.decode())

        async def drain() -> None:  # keep the pipe from filling up
            assert proc.stderr is not None
            async for line in proc.stderr:
                log.append(line.decode())

        drainer = asyncio.create_task(drain())
        proc.log = log  # type: ignore[attr-defined]
        yield proc
        await asyncio.wait_for(proc.wait(), 15)
        await drainer
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_mails_events_and_stops_cleanly_on_signal(
    config_path: Path, mailbox: Mailbox, publisher: Publisher, signum: signal.Signals
) -> None:
    event = make_event()
    async with notifier_process(config_path) as proc:
        await publisher.event(event)
        received = await mails(mailbox, 2, within=10)
        proc.send_signal(signum)
    assert proc.returncode == 0, "".join(proc.log)  # type: ignore[attr-defined]
    assert event_ids(received) == [event.id, event.id]
    log = "".join(proc.log)  # type: ignore[attr-defined]
    assert f"mail sent event={event.id} kind=animal_detected to=" in log
    assert f"{signum.name} received: stopping" in log
    assert "notifier stopped" in log


async def test_secrets_do_not_reach_the_log(
    config_path: Path, mailbox: Mailbox, publisher: Publisher
) -> None:
    # The test SMTP server offers no AUTH on a plain connection, so the mail
    # is deferred; what matters is what the log says meanwhile.
    _add_smtp_login(config_path, "alerts", "pw-smtp-123")
    async with notifier_process(config_path, "-v") as proc:
        await publisher.event(make_event())

        async def deferred() -> bool:
            return any("mail deferred" in line for line in proc.log)  # type: ignore[attr-defined]

        await eventually(deferred, within=10, what="a deferral in the log")
        proc.send_signal(signal.SIGTERM)
    assert proc.returncode == 0
    log = "".join(proc.log)  # type: ignore[attr-defined]
    assert "pw-smtp-123" not in log


async def test_status_shows_pending_and_failed_mails_while_running(
    config: NotifierConfig, config_path: Path, mailbox: Mailbox, publisher: Publisher
) -> None:
    refused, deferred = make_event("trap_triggered"), make_event("water_level_alert", "warning")
    async with running(config):
        mailbox.fail_with = "550 5.1.1 mailbox unavailable"
        await publisher.event(refused)

        async def counts(pending: int, failed: int) -> bool:
            async with await Store.open(config.store.path, readonly=True) as store:
                c = await store.counts()
            return (c.pending, c.failed) == (pending, failed) and (
                pending == 0 or all(m.attempts for m in await _pending(config))
            )

        await eventually(lambda: counts(0, 2), what="two failed mails")
        mailbox.fail_with = "451 4.3.0 try again later"
        await publisher.event(deferred)
        await eventually(lambda: counts(2, 2), what="two deferred mails")

        result = await asyncio.to_thread(cli, "status", "--config", str(config_path))
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "mails: 2 pending, 0 sent, 2 failed" in out
        assert "events)" in out
        failed_part, pending_part = out.split("\npending:")
        for recipient in RECIPIENTS:
            assert f"to={recipient}  event={refused.id}  kind=trap_triggered" in failed_part
            assert f"to={recipient}  event={deferred.id}  kind=water_level_alert" in pending_part
        assert "error: message refused: 550 5.1.1 mailbox unavailable" in failed_part
        assert "last error: message refused: 451 4.3.0 try again later" in pending_part

        mailbox.fail_with = None
        received = await mails(mailbox, 2)
    assert event_ids(received) == [deferred.id, deferred.id]


def _add_smtp_login(config_path: Path, username: str, password: str) -> None:
    text = config_path.read_text(encoding="utf-8")
    login = f'timeout = 5\nusername = "{username}"\npassword = "{password}"'
    config_path.write_text(text.replace("timeout = 5", login), encoding="utf-8")


async def _pending(config: NotifierConfig) -> list[QueuedMail]:
    async with await Store.open(config.store.path, readonly=True) as store:
        return list(await store.mails("pending"))


async def test_dry_run_writes_mails_to_files_and_sends_nothing(
    tmp_path: Path, config_path: Path, mailbox: Mailbox, publisher: Publisher
) -> None:
    outdir = tmp_path / "dry"
    event = make_event(
        "prone_alarm", data={"cot": "ひよこ3", "posture": "prone", "duration_s": 61.0}
    )
    async with notifier_process(config_path, "--dry-run", str(outdir)) as proc:
        await publisher.event(event)

        async def written() -> bool:
            return len(list(outdir.glob("*.eml"))) == len(RECIPIENTS)

        await eventually(written, within=10, what="two .eml files")
        proc.send_signal(signal.SIGTERM)
    assert proc.returncode == 0
    assert mailbox.mails == []
    for path in outdir.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert msg["X-Satoyama-Event"] == event.id
        assert "うつぶせ寝警報" in msg["Subject"]
    # The production store was not touched.
    config = load_config(config_path)
    assert not Path(config.store.path or "").exists()  # noqa: ASYNC240 - one stat, in a test
    assert "DRY RUN" in "".join(proc.log)  # type: ignore[attr-defined]


def test_a_dry_run_acknowledges_nothing_to_the_devices(tmp_path: Path, config_path: Path) -> None:
    """Its store is a throwaway: a device must not delete what only a dry run kept."""
    from cloud.cli import dry_run_config

    config = load_config(config_path)
    assert config.mqtt.device_acks
    dry = dry_run_config(config, tmp_path / "dry")
    assert not dry.mqtt.device_acks
    assert dry.mqtt.client_id != config.mqtt.client_id


def test_a_dry_run_refuses_the_notifiers_certificate(tmp_path: Path, config_path: Path) -> None:
    """Under the shipped broker the CN is the client id: it would take over the session."""
    from tests.support.pki import FleetCA

    ca = FleetCA(tmp_path / "ca")
    main, acks = ca.issue("satoyama-notifier-test"), ca.issue("satoyama-notifier-test-acks")
    text = config_path.read_text(encoding="utf-8").replace(
        "\n[smtp]",
        f'\n[mqtt.tls]\nca_file = "{ca.ca_file}"\ncert_file = "{main.cert}"\n'
        f'key_file = "{main.key}"\nack_cert_file = "{acks.cert}"\nack_key_file = "{acks.key}"\n'
        "\n[smtp]",
        1,
    )
    config_path.write_text(text, encoding="utf-8")
    assert cli("check-config", "--config", str(config_path)).returncode == 0
    result = cli("run", "--config", str(config_path), "--dry-run", str(tmp_path / "dry"))
    assert result.returncode == 2
    assert "--dry-run is not supported with mutual TLS" in result.stderr
    result = cli("run", "--config", str(config_path), "--client-id", "other")
    assert result.returncode == 2
    assert "mqtt.tls.cert_file" in result.stderr and "--client-id" in result.stderr
