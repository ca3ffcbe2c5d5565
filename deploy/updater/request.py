"""Update requests: what the daemon leaves in its drop folder, carried out once.

The daemon writes a valid ``PREFIX/DEVICE/cmd/update`` as ``request.json`` in
its drop folder.  The schema is the daemon's own
(:class:`edge.link.commands.UpdateCommand`, :func:`~edge.link.commands.parse_update_request`):
what the daemon accepts from the cloud is exactly what the updater carries out.

Root only reads the drop folder, never through a link
(:func:`deploy.updater.privsep.read_drop_file`), and never creates, changes or
removes anything there: a request handled for good is remembered by its
fingerprint in root's journal instead of being deleted.
"""

from __future__ import annotations

from typing import Any

from deploy.errors import UpdateRefused, VerifyError
from deploy.spool import UnsafePathError
from deploy.updater.device import Updater
from deploy.updater.fetch import fetch
from deploy.updater.install import install_locked
from deploy.updater.journal import recover
from deploy.updater.privsep import read_drop_file
from deploy.updater.steps import EXIT_OK, EXIT_REFUSED, Outcome, log
from deploy.version import parse_version
from edge.link.commands import CommandError, UpdateCommand, parse_update_request

MAX_REQUEST = 16 << 10

#: The request's schema, under the name the cloud side's tools know it by.
UpdateRequest = UpdateCommand


def settle_request(u: Updater, seen: str) -> None:
    """Never act on this request again (the daemon's user owns the file; root leaves it)."""
    state = u.load_state()
    state.request = seen
    u.save_state(state)


def refuse_request(u: Updater, seen: str, reason: str, request_id: str = "") -> Outcome:
    """A request that can never succeed: reported once, then ignored."""
    log.error("update request refused: %s", reason)
    data: dict[str, Any] = {"stage": "request", "reason": reason[:500]}
    if request_id:
        data["request"] = request_id
    u.report("update_failed", "warning", data)
    settle_request(u, seen)
    return Outcome(EXIT_REFUSED, f"update request refused: {reason}")


def run_request(u: Updater) -> Outcome:
    """Carry out a pending update request, if there is one, once.

    The request file lives in the daemon's drop folder, which root only reads
    (:func:`read_drop_file`); a request handled for good (done, or refused) is
    remembered by its fingerprint in root's journal instead of being deleted.
    A network failure leaves it pending for the timer's next run.
    """
    with u.locked():
        try:
            raw, seen = read_drop_file(u.root, u.config.request, MAX_REQUEST)
        except UnsafePathError as exc:
            seen = str(exc.args[1]) if len(exc.args) > 1 else "unsafe"
            if u.load_state().request == seen:
                return Outcome(EXIT_OK, "update request already handled")
            return refuse_request(u, seen, f"unsafe request file: {exc.args[0]}")
        if raw is None:
            recover(u, restart=True)
            return Outcome(EXIT_OK, "no update requested")
        if u.load_state().request == seen:
            recover(u, restart=True)
            return Outcome(EXIT_OK, "update request already handled")
        try:
            req = parse_update_request(raw)
        except CommandError as exc:
            return refuse_request(u, seen, f"malformed request: {exc}")
        current = u.current_version()
        if current is not None and parse_version(req.version) <= parse_version(current):
            settle_request(u, seen)
            return Outcome(EXIT_OK, f"already at {current}; request for {req.version} dropped")
        try:
            bundle = fetch(u, req.url, sha256=req.sha256, size=req.size, allow_file=False)
        except UpdateRefused as exc:
            return refuse_request(u, seen, str(exc), req.id)
        # any other UpdateError (the network) keeps the request: the timer retries, resuming
        try:
            outcome = install_locked(u, bundle)
        except (UpdateRefused, VerifyError) as exc:  # reported by install_locked
            settle_request(u, seen)
            return Outcome(EXIT_REFUSED, str(exc))
        settle_request(u, seen)
        return outcome
