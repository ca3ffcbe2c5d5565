"""The named steps of an update, the fault injection at each, and how a run ends.

Fault injection for the power-cut test: with ``SATOYAMA_UPDATE_FAULT=STEP``
in its environment the updater SIGKILLs itself (and its process group when
it leads one, so a running pip dies too) on reaching STEP (see :data:`STEPS`);
with ``SATOYAMA_UPDATE_TRACE=FILE`` it appends every step it reaches to FILE.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass

log = logging.getLogger("deploy.updater")

#: Every point at which the power-cut test kills the updater, in the order an
#: update passes them (``rollback_*`` only on the way back from a bad release).
STEPS = (
    "locked",
    "copied",
    "verified",
    "state_installing",
    "extracting",
    "extracted",
    "venv_created",
    "pip_running",
    "installed",
    "bytecode_compiled",
    "prechecked",
    "marked_complete",
    "state_switching",
    "link_created",
    "switched",
    "state_switched",
    "restarted",
    "healthy",
    "state_confirmed",
    "pruning",
    "done",
)
ROLLBACK_STEPS = ("rollback_state", "rollback_switched", "rollback_restarted", "rolled_back")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_REFUSED = 3
EXIT_BUSY = 75


def checkpoint(step: str) -> None:
    """Fault injection: die like a power cut when ``SATOYAMA_UPDATE_FAULT`` names this step."""
    trace = os.environ.get("SATOYAMA_UPDATE_TRACE")
    if trace:
        with open(trace, "a") as f:
            f.write(step + "\n")
    if os.environ.get("SATOYAMA_UPDATE_FAULT") == step:
        log.warning("fault injection: killed at %s", step)
        if os.getpgrp() == os.getpid():  # our own group: take children (pip) down too
            os.killpg(os.getpid(), signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Outcome:
    """How a command ended: its exit status, the line printed, the version it leaves running."""

    code: int
    message: str
    version: str | None = None
