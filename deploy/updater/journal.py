"""The durable journal (``state.json``) and the recovery that reads it after a power cut.

Every phase is journalled before it starts (written atomically: after a power
cut the file holds the old or the new phase, never a torn one).
``satoyama-update recover`` runs at boot before the daemon, and every updater
run starts with it: it finishes or undoes whatever a power cut interrupted, so
``current`` always names a complete release - the old one, unless the new one
had been confirmed healthy.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from msgspec import Meta

from deploy.errors import DeployError, UpdateError
from deploy.updater.steps import log
from edge.files import write_atomic
from edge.link.commands import VERSION_PATTERN

if TYPE_CHECKING:
    from deploy.updater.device import Updater

Version = Annotated[str, Meta(pattern=VERSION_PATTERN, max_length=40)]
Phase = Literal["idle", "installing", "switching", "switched", "rolling_back"]


class State(msgspec.Struct, kw_only=True):
    phase: Phase = "idle"
    target: Version | None = None
    previous: Version | None = None
    started: str | None = None
    attempts: dict[Version, int] = {}
    last_result: str | None = None
    request: str | None = None
    """Fingerprint of the last update request handled for good (it is never acted on again)."""


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_journal(path: Path) -> State:
    try:
        return msgspec.json.decode(path.read_bytes(), type=State)
    except FileNotFoundError:
        return State()
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        # write_atomic never leaves a torn file; this is outside damage. Start over safely.
        log.error("update journal %s unreadable (%s); treating as interrupted", path, exc)
        return State(phase="switched")


def write_journal(path: Path, state: State) -> None:
    write_atomic(path, msgspec.json.encode(state), mode=0o600)


def recover(u: Updater, *, restart: bool, allow_empty: bool = False) -> bool:
    """Make ``current`` name a complete release, finishing or undoing an interrupted update.

    Returns whether ``current`` changed (and restarts the daemon then, if asked).
    ``allow_empty``: no release at all is not an error (before the first install).
    """
    u.base.mkdir(parents=True, exist_ok=True)
    u.releases.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (u.base / "current.new").unlink()
    changed = False
    state = u.load_state()
    linked = u.link_target()
    if state.phase != "idle":
        changed = _undo_interrupted(u, state, linked)
        linked = u.link_target()
    if linked is None or not u.is_complete(linked):
        releases = u.complete_releases()
        if not releases and allow_empty:
            return changed
        if not releases:
            raise UpdateError(f"no complete release under {u.releases}; reinstall the device")
        pick = releases[-1]  # the newest complete release: the last one confirmed or installed
        log.error("current release %s is missing or incomplete; switching to %s", linked, pick)
        u.switch_to(pick, step=None)
        changed = True
    keep = u.link_target()
    for d in u.releases.iterdir():
        if d.name.startswith(".trash-") or (d.name != keep and not u.is_complete(d.name)):
            shutil.rmtree(d, ignore_errors=True)
    if changed and restart:
        u.restart_daemon()
    return changed


def _undo_interrupted(u: Updater, state: State, linked: str | None) -> bool:
    """Go back to the previous release (or drop the half-installed one); report it once."""
    changed = False
    target, previous = state.target, state.previous
    if state.phase == "installing":
        reason = "interrupted while installing (power cut or crash); kept the running release"
    elif previous is None:
        reason = "interrupted before the first release was confirmed"
    else:
        reason = (
            "interrupted before the new release was confirmed healthy; "
            "went back to the previous one"
        )
    if previous is not None and u.is_complete(previous):
        if linked != previous:
            u.switch_to(previous, step=None)
            changed = True
        if target is not None and target != previous:
            with contextlib.suppress(DeployError):
                u.remove_release(target)
    elif target is not None and linked != target:
        with contextlib.suppress(DeployError):
            u.remove_release(target)
    log.warning("update to %s %s", target, reason)
    if state.phase != "rolling_back":  # a rollback reported its failure already
        u.report(
            "update_failed",
            "warning",
            {
                "from_version": previous,
                "to_version": target,
                "stage": state.phase,
                "reason": reason,
            },
        )
    state.phase, state.last_result = "idle", f"interrupted: {target}"
    u.save_state(state)
    return changed
