"""Commands from the cloud (``PREFIX/DEVICE/cmd/NAME``), validated like configuration.

A command runs only if its name is known and its payload passes its schema;
anything else is refused with a ``command_rejected`` event and never executed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

MAX_PAYLOAD = 4096


class CommandError(ValueError):
    """A command that must not run; the message says why (it goes into the event)."""


class HeartbeatCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``cmd/heartbeat``: send a heartbeat now (payload ``{}`` or empty)."""


class UpdateCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """``cmd/update``: an update is available; handed to the updater as a request file.

    The request carries no authority: the updater installs only a bundle signed
    by a pinned key, never an older version (docs/ota.md).
    """

    cmd: Literal["update"] = "update"
    id: Annotated[str, Meta(min_length=1, max_length=64)]
    version: Annotated[str, Meta(pattern=r"^[0-9]+(\.[0-9]+){1,3}([a-z0-9.+-]*)$", max_length=40)]
    url: Annotated[str, Meta(pattern=r"^(https://|file:///)[^\s]+$", max_length=2000)]
    sha256: Annotated[str, Meta(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Meta(gt=0, le=2**32)]
    rollout: str = ""
    issued: str = ""


COMMANDS: dict[str, type[Any]] = {
    "heartbeat": HeartbeatCommand,
    "update": UpdateCommand,
}


def parse_command(name: str, payload: bytes) -> Any:
    """The validated command object, or :class:`CommandError`."""
    schema = COMMANDS.get(name)
    if schema is None:
        raise CommandError(f"unknown command {name[:64]!r}")
    if len(payload) > MAX_PAYLOAD:
        raise CommandError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    try:
        return msgspec.json.decode(payload or b"{}", type=schema)
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid payload: {exc}") from None
