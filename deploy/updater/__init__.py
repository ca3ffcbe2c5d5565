"""``satoyama-update``: the device-side updater.  A bad update must never brick a device.

Layout on the device (every path configurable in ``/etc/satoyama/updater.toml``)::

    /opt/satoyama/releases/1.4.2/      one complete release: venv/, models/, systemd/,
                                       manifest.json and the .complete marker
    /opt/satoyama/current -> releases/1.4.2   what systemd runs (relative symlink)
    /var/lib/satoyama-update/                 root's alone (0711): nobody else may write here
        state.json, lock                      the updater's journal and lock (0600)
        downloads/                            bundles, and resumable .part downloads (0700)
        spool/events.jsonl                    events for the daemon to send (0755/0644)
    /var/lib/satoyama/update-requests/        the daemon's drop folder, which root only
        request.json, events.ack              *reads*, never through a link

One module per phase of an update, in the order an update passes them:

- :mod:`.config`: ``updater.toml``, validated once at start;
- :mod:`.request`: the update request the daemon left in its drop folder
  (privilege separation: root only reads it, never through a link);
- :mod:`.fetch`: the bundle into root's own folder (copied, or downloaded with resume);
- :mod:`.install`: refusals (version, Python, machine and glibc), journal,
  extract, venv, pip, precheck;
- :mod:`.switch`: switch, restart, health wait, confirm - or roll back;
- :mod:`.journal`: the durable journal and the recovery at boot after a power cut;
- :mod:`.device`: the folders, lock, releases and event spool every phase works on;
- :mod:`.privsep`: root's folders checked, the drop folder read without following links;
- :mod:`.steps`: the named steps (and fault injection at each), how a run ends;
- :mod:`.cli`: the command line (``python -m deploy.updater`` runs it too).

The rules that make it power-fail safe: a release counts only once its
``.complete`` marker exists, and ``current`` is switched by an atomic rename
(:mod:`.device`); every phase is journalled before it starts and recovery
finishes or undoes an interrupted one (:mod:`.journal`); signature and hashes
are verified before anything is unpacked, and a release is confirmed only
after the restarted daemon stayed healthy for a while (:mod:`.install`,
:mod:`.switch`).
"""

from __future__ import annotations

from deploy.updater.cli import build_parser, main, status
from deploy.updater.config import UpdaterConfig, load_config
from deploy.updater.device import Updater
from deploy.updater.fetch import download
from deploy.updater.request import UpdateRequest, run_request
from deploy.updater.steps import ROLLBACK_STEPS, STEPS, Outcome

__all__ = [
    "ROLLBACK_STEPS",
    "STEPS",
    "Outcome",
    "UpdateRequest",
    "Updater",
    "UpdaterConfig",
    "build_parser",
    "download",
    "load_config",
    "main",
    "run_request",
    "status",
]
