"""Commands from the cloud (``PREFIX/DEVICE/cmd/NAME``), validated like configuration.

A command runs only if its name is known and its payload passes its schema;
anything else is refused with a ``command_rejected`` event and never executed.

:class:`UpdateCommand` is also the **update request** the daemon hands to the
root updater (docs/ota.md): the updater decodes the request file with
:func:`parse_update_request`, the very function the daemon's check uses, so the
two can never disagree about what a request may say.  (``deploy/`` imports this
module; ``edge/`` never imports ``deploy/``.)

:func:`parse_command` is the pure part; :class:`CommandRunner` is what the
uplink calls with each command (on the event loop): a refusal is recorded, a
heartbeat is asked for, an update request is written for the updater, a remote
acknowledgement of a nap alarm is handed to the nap room that has the cot.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import urllib.parse
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from edge.errors import EdgeError
from edge.event import CommandRejected, EventData
from edge.files import write_atomic

log = logging.getLogger(__name__)

MAX_PAYLOAD = 4096

#: The largest bundle a device accepts (the updater stops downloading there).
MAX_BUNDLE = 2 << 30

#: Release versions: one to four dotted decimal numbers (``1.4.2``), nothing else, so
#: "is this a downgrade?" is never ambiguous.  ``\Z``, not ``$``: ``$`` also matches
#: before a trailing newline.  ``[0-9]``, not ``\d``: ``\d`` matches other scripts' digits.
VERSION_PATTERN = r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}\Z"

_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?"
_SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
#: What a bundle's URL may look like: https only, a plain host, a path of plain segments
#: (no percent-encoding, so no hidden ``..`` or ``/``), an optional query (signed URLs).
URL_PATTERN = rf"^https://{_HOST}(?:/{_SEGMENT})+(?:\?[A-Za-z0-9._~=&%+/-]{{0,1500}})?\Z"


class CommandError(EdgeError, ValueError):
    """A command that must not run; the message says why (it goes into the event)."""


class HeartbeatCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``cmd/heartbeat``: send a heartbeat now (payload ``{}`` or empty)."""


class UpdateCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``cmd/update``: an update is available; handed to the updater as a request file.

    The request carries no authority: the updater installs only a bundle signed
    by a pinned key, never an older version (docs/ota.md).  ``sha256`` and
    ``size`` are required: the updater stops downloading at ``size`` bytes and
    refuses a file whose hash differs, before it looks inside.
    """

    cmd: Literal["update"] = "update"
    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}\Z")]
    version: Annotated[str, Meta(pattern=VERSION_PATTERN, max_length=40)]
    url: Annotated[str, Meta(pattern=URL_PATTERN, max_length=2000)]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
    size: Annotated[int, Meta(gt=0, le=MAX_BUNDLE)]
    rollout: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{0,64}\Z")] = ""
    issued: Annotated[str, Meta(pattern=r"^[0-9T:.+Z-]{0,40}\Z")] = ""


class NapAckCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``cmd/nap_ack``: a person acknowledged a cot's alarm in the cloud console.

    It says only that they saw it and are on the way: the device records it on the nap
    sheet as a remote acknowledgement (遠隔確認) and never silences the buzzer or ends
    the alarm for it (the child must be turned, and someone in the room must
    acknowledge).  ``at``: when they acknowledged (RFC 3339 with its offset).
    """

    cot: Annotated[str, Meta(min_length=1, max_length=32)]
    by: Annotated[str, Meta(pattern=r"^[^\x00-\x1f\x7f]{1,64}\Z")]
    """The console user's name: printable, no control characters."""
    at: dt.datetime
    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9._:-]{1,64}\Z")]


COMMANDS: dict[str, type[Any]] = {
    "heartbeat": HeartbeatCommand,
    "update": UpdateCommand,
    "nap_ack": NapAckCommand,
}

Command = HeartbeatCommand | UpdateCommand | NapAckCommand


def _check_update(cmd: UpdateCommand) -> UpdateCommand:
    """What a pattern cannot say: the URL's path holds no dot segments and names a .tar."""
    path = urllib.parse.urlsplit(cmd.url).path
    segments = path.split("/")[1:]
    if any(s in (".", "..") for s in segments) or not re.fullmatch(
        r"[A-Za-z0-9._~-]+\.tar", segments[-1]
    ):
        raise CommandError(f"url: not a bundle (…/NAME.tar) path: {path[:100]!r}")
    return cmd


def parse_update_request(payload: bytes) -> UpdateCommand:
    """A request file's (or ``cmd/update``'s) bytes, validated; :class:`CommandError` if not."""
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        cmd = msgspec.json.decode(payload, type=UpdateCommand)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CommandError(f"invalid payload: {exc}") from None
    return _check_update(cmd)


def parse_command(name: str, payload: bytes) -> Command:
    """The validated command object, or :class:`CommandError`."""
    schema = COMMANDS.get(name)
    if schema is None:
        raise CommandError(f"unknown command {name[:64]!r}")
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if schema is UpdateCommand:
        return parse_update_request(payload)
    try:
        command: Command = msgspec.json.decode(payload or b"{}", type=schema)
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid payload: {exc}") from None
    if isinstance(command, NapAckCommand):
        if command.at.tzinfo is None:
            raise CommandError("invalid payload: `at` must carry a UTC offset - at `$.at`")
        if command.by != command.by.strip():
            raise CommandError("invalid payload: `by` has leading or trailing spaces - at `$.by`")
    return command


def _write_request(path: Path, payload: bytes) -> None:
    """``payload`` at ``path``, atomically and durably (the updater may read it any time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, payload)


class CommandRunner:
    """Runs the commands the uplink receives (``Uplink(on_command=runner)``)."""

    def __init__(
        self,
        *,
        record: Callable[[EventData], Coroutine[Any, Any, Any]],
        spawn: Callable[[Coroutine[Any, Any, Any], str], object],
        heartbeat_now: Callable[[], None],
        request_path: Path,
        nap_ack: Callable[[NapAckCommand], bool] | None = None,
    ) -> None:
        """``request_path``: where an update request is handed to the updater
        (``[updates] request_path``); ``nap_ack``: records a remote acknowledgement in the
        nap room that has its cot (False: no cot of that name; None: no nap room)."""
        self._record = record
        self._spawn = spawn
        self._heartbeat_now = heartbeat_now
        self.request_path = request_path
        self._nap_ack = nap_ack

    def __call__(self, name: str, payload: bytes) -> None:
        try:
            command = parse_command(name, payload)
            if isinstance(command, NapAckCommand):
                self._acknowledge_nap(command)
        except CommandError as exc:
            log.warning("command %s rejected: %s", name[:64], exc)
            self._spawn(
                self._record(CommandRejected(command=name[:64], reason=str(exc))),
                "record rejected command",
            )
            return
        log.info("command %s accepted", name)
        if isinstance(command, HeartbeatCommand):
            self._heartbeat_now()
        elif isinstance(command, UpdateCommand):
            self._spawn(self.request_update(command), "update request")

    def _acknowledge_nap(self, command: NapAckCommand) -> None:
        """Recorded by the nap room with the cot; :class:`CommandError` when none has it."""
        if self._nap_ack is None:
            raise CommandError("no nap room on this device")
        if not self._nap_ack(command):
            raise CommandError(f"unknown cot {command.cot!r}")

    async def request_update(self, command: UpdateCommand) -> None:
        """Hand ``cmd/update`` to the updater: the request file, written atomically."""
        path = self.request_path
        try:
            await asyncio.to_thread(_write_request, path, msgspec.json.encode(command))
        except OSError as exc:
            log.error("cannot write the update request %s: %s", path, exc)
            return
        log.info("update to %s requested (%s): handed to the updater", command.version, path)
