"""``/etc/satoyama/updater.toml``: the updater's settings, validated once at start."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from deploy.errors import DeployError
from deploy.updater.steps import log
from edge.config import explain_validation

DEFAULT_CONFIG = "/etc/satoyama/updater.toml"
DEFAULT_STATE_DIR = "/var/lib/satoyama-update"
DEFAULT_SPOOL = "/var/lib/satoyama-update/spool/events.jsonl"
#: Where versions before 0.x kept root's state: inside the daemon's own StateDirectory,
#: which its user can write.  A configuration still naming them gets the new defaults.
LEGACY_PATHS = {
    "state_dir": ("/var/lib/satoyama/update", DEFAULT_STATE_DIR),
    "spool": ("/var/lib/satoyama/spool/events.jsonl", DEFAULT_SPOOL),
}


class UpdaterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``/etc/satoyama/updater.toml``; paths are device paths (``--root`` prefixes them)."""

    verify_keys: Annotated[list[str], Meta(min_length=1)]
    releases_dir: str = "/opt/satoyama"
    state_dir: str = DEFAULT_STATE_DIR
    spool: str = DEFAULT_SPOOL
    request: str = "/var/lib/satoyama/update-requests/request.json"
    ack: str = ""
    """The daemon's acknowledgement of spooled events; ``""``: ``events.ack`` beside ``request``."""
    python: str = "/usr/bin/python3"
    keep_releases: Annotated[int, Meta(ge=2, le=20)] = 3
    max_attempts: Annotated[int, Meta(ge=1, le=100)] = 3
    restart_command: list[str] = msgspec.field(
        default_factory=lambda: ["systemctl", "restart", "satoyama-edge.service"]
    )
    health: Literal["systemd", "command"] = "systemd"
    health_unit: str = "satoyama-edge.service"
    health_command: list[str] = []
    health_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 180.0
    health_settle_s: Annotated[float, Meta(ge=0, le=3600)] = 30.0
    health_interval_s: Annotated[float, Meta(gt=0, le=60)] = 2.0
    precheck_command: list[str] = msgspec.field(
        default_factory=lambda: [
            "{release}/venv/bin/edge",
            "validate",
            "--config",
            "/etc/satoyama/device.toml",
        ]
    )
    bytecode_command: list[str] = msgspec.field(
        default_factory=lambda: [
            "{release}/venv/bin/edge",
            "bytecode",
            "--prefix",
            "{release}/pycache",
        ]
    )
    """Compiles the daemon's optimised bytecode into the new release (its unit reads it
    there); ``[]``: none (the daemon then compiles its modules at every start)."""
    ca_file: str = ""
    download_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 60.0


def load_config(path: Path) -> UpdaterConfig:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DeployError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DeployError(f"{path}: not valid TOML: {exc}") from None
    try:
        cfg = msgspec.convert(raw, UpdaterConfig)
    except msgspec.ValidationError as exc:
        raise DeployError(f"{path}: {explain_validation(exc)}") from None
    if cfg.health == "command" and not cfg.health_command:
        raise DeployError(f'{path}: health_command: required when health = "command"')
    for key, (old, new) in LEGACY_PATHS.items():
        if getattr(cfg, key) == old:
            log.warning(
                "%s: %s = %r is writable by the daemon's user; using %r", path, key, old, new
            )
            cfg = msgspec.structs.replace(cfg, **{key: new})
    for key in ("state_dir", "spool", "releases_dir"):
        value = getattr(cfg, key)
        if not value.startswith("/") or ".." in Path(value).parts:
            raise DeployError(f"{path}: {key}: an absolute path without '..' is required")
    return cfg
