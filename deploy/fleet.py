"""The cloud side of updates: who runs what, staged rollouts, and the update command.

A small SQLite file (``fleet.sqlite3``) records every device's last reported
version and state (from its retained ``status`` message and its events) and
every rollout: which devices it targets, in which stage, and when each was
told.  A rollout goes out in two stages: first the devices whose id hashes
below the given percentage, then - once those report the new version and
none reported a failure - the rest.  The hash is SHA-256 of the device id
(plus an optional salt), so the first stage is the same set of devices every
time: a stable ring of canaries an operator can learn to watch.

The command a device receives (QoS 1, not retained; the device's persistent
session keeps it while the device is offline) on ``PREFIX/DEVICE/cmd/update``::

    {"cmd": "update", "id": "<command id>", "version": "1.4.2",
     "url": "https://ota.example.jp/satoyama-edge-1.4.2.tar",
     "sha256": "<of the bundle file>", "size": 12345678,
     "rollout": "<rollout id>", "issued": "2026-06-01T03:00:00Z"}

It carries no authority: the device installs only a bundle signed by a key it
pins, and never an older version than it runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import sqlite3
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.errors import DeployError
from deploy.version import parse_version
from edge.link.commands import CommandError, parse_update_request

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY,
    site TEXT,
    version TEXT,
    state TEXT,
    last_seen TEXT
);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    url TEXT NOT NULL,
    sha256 TEXT,
    size INTEGER,
    percent REAL NOT NULL,
    salt TEXT NOT NULL DEFAULT '',
    created TEXT NOT NULL,
    paused TEXT,      -- when an operator paused it (no stage is announced until resumed)
    paused_by TEXT
);
CREATE TABLE IF NOT EXISTS rollout_targets (
    rollout TEXT NOT NULL REFERENCES rollouts(id),
    device TEXT NOT NULL,
    stage INTEGER NOT NULL,
    announced TEXT,
    PRIMARY KEY (rollout, device)
);
CREATE TABLE IF NOT EXISTS claims (
    claim TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    public_key_sha256 TEXT NOT NULL,
    cert TEXT NOT NULL,
    enrolled TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS update_reports (
    event_id TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    kind TEXT NOT NULL,
    from_version TEXT,
    to_version TEXT,
    reason TEXT,
    ts TEXT
);
"""


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket(device: str, salt: str = "") -> float:
    """Where a device falls in [0, 100): the same place for the same id and salt, always."""
    digest = hashlib.sha256(f"{salt}{device}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def split_stages(
    devices: Iterable[str], percent: float, salt: str = ""
) -> tuple[list[str], list[str]]:
    """(first stage, the rest) for a rollout to ``percent`` % first."""
    if not 0 < percent <= 100:
        raise DeployError("the first stage's percentage must be in (0, 100]")
    first: list[str] = []
    rest: list[str] = []
    for d in sorted(set(devices)):
        (first if bucket(d, salt) < percent else rest).append(d)
    return first, rest


def update_topic(prefix: str, device: str) -> str:
    return f"{prefix}/{device}/cmd/update"


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes


class FleetDB:
    """The fleet registry.  A context manager; every write is its own transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.db = sqlite3.connect(path)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        columns = {row["name"] for row in self.db.execute("PRAGMA table_info(rollouts)")}
        if "paused" not in columns:  # a fleet file from before rollouts could be paused
            with self.db:
                self.db.execute("ALTER TABLE rollouts ADD COLUMN paused TEXT")
                self.db.execute("ALTER TABLE rollouts ADD COLUMN paused_by TEXT")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> FleetDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # what devices say
    def add_device(self, device: str, site: str | None = None, version: str | None = None) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO devices(device, site, version, state, last_seen) "
                "VALUES (?, ?, ?, 'provisioned', NULL) "
                "ON CONFLICT(device) DO UPDATE SET site=COALESCE(excluded.site, site), "
                "version=COALESCE(excluded.version, version)",
                (device, site, version),
            )

    def record_status(self, device: str, payload: dict[str, Any]) -> None:
        """A retained ``status`` message: ``{"state", "version", ...}``."""
        version = payload.get("version")
        with self.db:
            self.db.execute(
                "INSERT INTO devices(device, version, state, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(device) DO UPDATE SET version=COALESCE(excluded.version, version), "
                "state=excluded.state, last_seen=excluded.last_seen",
                (
                    device,
                    version if isinstance(version, str) else None,
                    str(payload.get("state", "")),
                    _now(),
                ),
            )

    def record_event(self, device: str, event: dict[str, Any]) -> None:
        """An event envelope: heartbeats mark the device alive; update events are kept."""
        kind = event.get("kind")
        raw_data = event.get("data")
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        with self.db:
            self.db.execute(
                "INSERT INTO devices(device, site, state, last_seen) VALUES (?, ?, 'online', ?) "
                "ON CONFLICT(device) DO UPDATE SET site=COALESCE(excluded.site, site), "
                "last_seen=excluded.last_seen",
                (device, event.get("site"), _now()),
            )
            if kind == "update_installed" and isinstance(data.get("to_version"), str):
                self.db.execute(
                    "UPDATE devices SET version=? WHERE device=?", (data["to_version"], device)
                )
            if kind in ("update_installed", "update_failed"):
                self.db.execute(
                    "INSERT OR IGNORE INTO update_reports VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        str(event.get("id") or uuid.uuid4()),
                        device,
                        kind,
                        data.get("from_version"),
                        data.get("to_version"),
                        data.get("reason"),
                        event.get("ts"),
                    ),
                )

    # enrolment (deploy.claim): each claim is exchanged for one device certificate, once
    def claim_used(self, claim: str) -> sqlite3.Row | None:
        row = self.db.execute("SELECT * FROM claims WHERE claim=?", (claim,)).fetchone()
        return row  # type: ignore[no-any-return]

    def record_enrolment(self, claim: str, device: str, public_key_sha256: str, cert: str) -> bool:
        """Mark ``claim`` used for ``device``; False if it was already used (nothing changed)."""
        with self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?, ?)",
                (claim, device, public_key_sha256, cert, _now()),
            )
            if cur.rowcount == 0:
                return False
            self.db.execute(
                "INSERT INTO devices(device, state) VALUES (?, 'enrolled') "
                "ON CONFLICT(device) DO UPDATE SET state='enrolled'",
                (device,),
            )
        return True

    def devices(self, *, site: str | None = None) -> list[sqlite3.Row]:
        if site is None:
            return list(self.db.execute("SELECT * FROM devices ORDER BY device"))
        return list(self.db.execute("SELECT * FROM devices WHERE site=? ORDER BY device", (site,)))

    # rollouts
    def create_rollout(
        self,
        *,
        version: str,
        url: str,
        devices: list[str],
        percent: float,
        sha256: str | None = None,
        size: int | None = None,
        salt: str = "",
        rollout_id: str | None = None,
    ) -> str:
        parse_version(version)
        if sha256 is None or size is None:
            raise DeployError(
                "a rollout needs the bundle's sha256 and size (devices refuse an update "
                "request without them): pass --bundle FILE, or --sha256 and --size"
            )
        try:  # the very check each device makes: a rollout devices would refuse is no rollout
            parse_update_request(json.dumps({
                "cmd": "update", "id": "0" * 32, "version": version, "url": url,
                "sha256": sha256, "size": size,
            }).encode())  # fmt: skip
        except CommandError as exc:
            raise DeployError(f"devices would refuse this update: {exc}") from None
        if not devices:
            raise DeployError("a rollout needs at least one device")
        first, rest = split_stages(devices, percent, salt)
        if not first:  # a tiny fleet: the canary stage must not be empty
            first, rest = rest[:1], rest[1:]
        rid = rollout_id or f"{version}-{uuid.uuid4().hex[:8]}"
        with self.db:
            self.db.execute(
                "INSERT INTO rollouts (id, version, url, sha256, size, percent, salt, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (rid, version, url, sha256, size, percent, salt, _now()),
            )
            self.db.executemany(
                "INSERT INTO rollout_targets(rollout, device, stage) VALUES (?, ?, ?)",
                [(rid, d, 1) for d in first] + [(rid, d, 2) for d in rest],
            )
        return rid

    def rollout(self, rid: str) -> sqlite3.Row:
        row = self.db.execute("SELECT * FROM rollouts WHERE id=?", (rid,)).fetchone()
        if row is None:
            raise DeployError(f"no rollout {rid!r}")
        return row  # type: ignore[no-any-return]

    def progress(self, rid: str) -> list[dict[str, Any]]:
        """Per target device: stage, announced, running version, reported failure."""
        r = self.rollout(rid)
        rows = self.db.execute(
            "SELECT t.device, t.stage, t.announced, d.version, d.last_seen, "
            "(SELECT reason FROM update_reports u "
            " WHERE u.device=t.device AND u.kind='update_failed' "
            " AND u.to_version=? ORDER BY ts DESC LIMIT 1) AS failure "
            "FROM rollout_targets t LEFT JOIN devices d ON d.device=t.device "
            "WHERE t.rollout=? ORDER BY t.stage, t.device",
            (r["version"], rid),
        )
        out = []
        for row in rows:
            running = row["version"]
            updated = running is not None and _version_at_least(running, r["version"])
            out.append({**dict(row), "updated": updated})
        return out

    def pause(self, rid: str, *, by: str = "") -> bool:
        """Stop announcing ``rid``: no stage goes out (not even with ``force``) until
        :meth:`resume`.  Commands already sent stay with their devices (an MQTT command
        cannot be recalled; each device still installs only a signed, newer bundle).
        False if it was already paused."""
        self.rollout(rid)
        with self.db:
            cur = self.db.execute(
                "UPDATE rollouts SET paused=?, paused_by=? WHERE id=? AND paused IS NULL",
                (_now(), by, rid),
            )
        return cur.rowcount == 1

    def resume(self, rid: str) -> bool:
        """Undo :meth:`pause`; False if it was not paused."""
        self.rollout(rid)
        with self.db:
            cur = self.db.execute(
                "UPDATE rollouts SET paused=NULL, paused_by=NULL WHERE id=? AND paused IS NOT NULL",
                (rid,),
            )
        return cur.rowcount == 1

    def announce(self, rid: str, stage: int, prefix: str, *, force: bool = False) -> list[Message]:
        """The update commands for one stage; the second stage waits for a healthy first one.
        A paused rollout announces nothing (:class:`DeployError`)."""
        r = self.rollout(rid)
        if r["paused"] is not None:
            who = f" by {r['paused_by']}" if r["paused_by"] else ""
            raise DeployError(
                f"rollout {rid} is paused (since {r['paused']}{who}): "
                f"satoyama-deploy rollout resume --id {rid} first"
            )
        prog = self.progress(rid)
        if stage == 2 and not force:
            first = [p for p in prog if p["stage"] == 1]
            failed = [p["device"] for p in first if p["failure"]]
            pending = [p["device"] for p in first if not p["updated"] and not p["failure"]]
            if failed:
                raise DeployError(
                    f"first stage has failures ({', '.join(failed)}); "
                    "fix and publish a new version, "
                    "or --force"
                )
            if pending:
                raise DeployError(
                    f"first stage not done yet ({len(pending)} device(s) not on {r['version']}: "
                    f"{', '.join(pending[:5])}); wait, or --force"
                )
        issued = _now()
        msgs = []
        for p in prog:
            if p["stage"] != stage or p["updated"]:
                continue
            payload = {
                "cmd": "update",
                "id": uuid.uuid4().hex,
                "version": r["version"],
                "url": r["url"],
                "sha256": r["sha256"],
                "size": r["size"],
                "rollout": rid,
                "issued": issued,
            }
            msgs.append(Message(update_topic(prefix, p["device"]), json.dumps(payload).encode()))
        with self.db:
            self.db.executemany(
                "UPDATE rollout_targets SET announced=? WHERE rollout=? AND device=?",
                [(issued, rid, m.topic.split("/")[-3]) for m in msgs],
            )
        return msgs


def _version_at_least(have: str, want: str) -> bool:
    try:
        return parse_version(have) >= parse_version(want)
    except DeployError:
        return False


# -- MQTT -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Broker:
    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    def __repr__(self) -> str:
        return f"Broker({self.host}:{self.port})"

    def client(self, identifier: str, *, clean_session: bool | None = None) -> Any:
        """An aiomqtt client.  On the shipped broker the client id is this tool's
        certificate CN whatever ``identifier`` says (deploy/broker/)."""
        import aiomqtt

        tls = (
            aiomqtt.TLSParameters(
                ca_certs=str(self.tls_ca),
                certfile=str(self.tls_cert) if self.tls_cert else None,
                keyfile=str(self.tls_key) if self.tls_key else None,
            )
            if self.tls_ca
            else None
        )
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=identifier,
            username=self.username,
            password=self.password,
            tls_params=tls,
            clean_session=clean_session,
        )


async def publish(broker: Broker, messages: list[Message]) -> None:
    """Publish update commands at QoS 1 (not retained: a persistent session queues them)."""
    async with broker.client(f"satoyama-deploy-{uuid.uuid4().hex[:8]}") as client:
        for m in messages:
            await client.publish(m.topic, m.payload, qos=1)


async def record(
    db: FleetDB,
    broker: Broker,
    prefix: str,
    *,
    max_messages: int | None = None,
    listen_s: float | None = None,
) -> int:
    """Listen to devices' status and events and record who runs what.  Returns messages seen.

    Stops after ``max_messages`` or ``listen_s`` seconds, whichever comes first.
    """
    seen = 0
    async with broker.client(f"satoyama-deploy-record-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(f"{prefix}/+/status", qos=1)
        await client.subscribe(f"{prefix}/+/events", qos=1)

        async def loop() -> None:
            nonlocal seen
            async for msg in client.messages:
                parts = str(msg.topic).split("/")
                device, leaf = parts[-2], parts[-1]
                try:
                    payload = json.loads(bytes(msg.payload))
                except (ValueError, TypeError):
                    continue
                if not isinstance(payload, dict):
                    continue
                if leaf == "status":
                    db.record_status(device, payload)
                elif leaf == "events":
                    db.record_event(device, payload)
                seen += 1
                if max_messages is not None and seen >= max_messages:
                    return

        try:
            await asyncio.wait_for(loop(), listen_s)
        except TimeoutError:
            pass
    return seen
