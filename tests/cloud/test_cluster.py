"""Several notifier instances behind an MQTT 5 shared subscription, one PostgreSQL store.

Two ``satoyama-notifier run`` processes share ``$share/notifiers/...`` on one
mosquitto and one real PostgreSQL database.  One is killed with SIGKILL in
the middle of a stream of events and restarted (as systemd would); every
event must be mailed exactly once to each of its recipients.

The SMTP server defers every mail (451) while the instance is killed, so the
kill cannot land between the server accepting a mail and the store marking
it sent: that window (documented in docs/notifier.md) can duplicate a mail and
no notifier can close it; this test is about everything else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from cloud.config import NotifierConfig, load_config
from cloud.store import Store
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import RECIPIENTS, Publisher, config_text, eventually, mails, make_event

REPO = Path(__file__).resolve().parents[2]
EVENTS = 30


def instance_config(tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, dsn: str,
                    name: str) -> Path:  # fmt: skip
    path = tmp_path / f"{name}.toml"
    path.write_text(
        config_text(
            mqtt_port=broker.port,
            smtp_port=mailbox.port,
            store=tmp_path / "unused",
            client_id=name,
            mqtt='shared_group = "notifiers"\nsession_expiry_s = 3600',
            store_table=f'backend = "postgresql"\ndsn = "{dsn}"',
            delivery="claim_timeout_s = 6\npoll_s = 0.2",
        ),
        encoding="utf-8",
    )
    return path


@contextlib.asynccontextmanager
async def instance(path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``satoyama-notifier run`` as a process, yielded once it is subscribed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cloud", "run", "--config", str(path),
        cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    log: list[str] = []
    assert proc.stderr is not None
    drainer: asyncio.Task[None] | None = None
    try:
        deadline = time.monotonic() + 20
        while not any("subscribed to" in line for line in log):
            left = deadline - time.monotonic()
            line = await asyncio.wait_for(proc.stderr.readline(), max(left, 0.01))
            if not line:
                raise AssertionError("notifier exited early:\n" + "".join(log))
            log.append(line.decode())

        async def drain() -> None:
            assert proc.stderr is not None
            async for raw in proc.stderr:
                log.append(raw.decode())

        drainer = asyncio.create_task(drain())
        proc.log = log  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drainer is not None:
            await drainer


async def store_counts(config: NotifierConfig) -> tuple[int, int, int]:
    async with await Store.open(config.store, readonly=True) as store:
        c = await store.counts()
    return c.events, c.pending, c.sent


async def test_two_instances_mail_every_event_once_while_one_is_killed(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher, pg_dsn: str
) -> None:
    one = instance_config(tmp_path, broker, mailbox, pg_dsn, "notifier-1")
    two = instance_config(tmp_path, broker, mailbox, pg_dsn, "notifier-2")
    config = load_config(one)
    events = [make_event("trap_triggered", seq=n, data={"sensor": f"trap-{n}"})
              for n in range(EVENTS)]  # fmt: skip
    mailbox.fail_with = "451 4.3.0 try again later"  # see the module's docstring
    async with instance(two) as survivor:
        async with instance(one) as victim:
            for n, event in enumerate(events):
                await publisher.event(event)
                if n == EVENTS // 3:
                    victim.kill()  # SIGKILL, mid-stream
                    await victim.wait()
        assert victim.returncode == -signal.SIGKILL
        # With mosquitto, the killed instance's session keeps its share of the
        # stream (in flight and queued) until that instance comes back.
        async with instance(one):

            async def all_stored() -> bool:
                return (await store_counts(config))[0] == EVENTS

            await eventually(all_stored, within=20, what=f"{EVENTS} events in the store")
            mailbox.fail_with = None
            received = await mails(mailbox, EVENTS * len(RECIPIENTS), within=30)

            async def all_sent() -> bool:
                return await store_counts(config) == (EVENTS, 0, EVENTS * len(RECIPIENTS))

            await eventually(all_sent, within=20, what="every mail marked sent")
        assert survivor.returncode is None
    # Nothing is pending or claimed any more: no mail can still be on its way.
    assert len(mailbox.mails) == EVENTS * len(RECIPIENTS)
    pairs = collections.Counter(
        (str(m.message["X-Satoyama-Event"]), m.rcpt_tos[0]) for m in received
    )
    assert set(pairs) == {(e.id, r) for e in events for r in RECIPIENTS}
    assert set(pairs.values()) == {1}
    handled = "".join(survivor.log)  # type: ignore[attr-defined]
    assert "event accepted" in handled  # both instances did part of the work
