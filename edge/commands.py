"""Commands from the cloud (``PREFIX/DEVICE/cmd/NAME``), validated like configuration.

A command runs only if its name is known and its payload passes its schema;
anything else is refused with a ``command_rejected`` event and never executed.
"""

from __future__ import annotations

from typing import Any

import msgspec

MAX_PAYLOAD = 4096


class CommandError(ValueError):
    """A command that must not run; the message says why (it goes into the event)."""


class HeartbeatCommand(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """``cmd/heartbeat``: send a heartbeat now (payload ``{}`` or empty)."""


COMMANDS: dict[str, type[Any]] = {
    "heartbeat": HeartbeatCommand,
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
