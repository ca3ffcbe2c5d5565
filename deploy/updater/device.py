"""What the updater works on: one device's folders, lock, journal, releases and event spool.

:class:`Updater` holds the primitive operations every phase uses (paths under
``--root``, the lock, reading and writing the journal, reporting an event,
switching and removing a release, running a configured command); the phases
themselves are functions in their own modules (:mod:`.install`,
:mod:`.switch`, :mod:`.journal`'s recovery, :mod:`.request`).

Two of the power-fail rules are kept here:

1. A release directory counts only once its ``.complete`` marker exists; the
   marker is written (and everything synced) after the venv is installed and
   checked, and removed *first* when a release is deleted.
2. ``current`` is switched by creating ``current.new`` and renaming it over
   ``current`` (atomic), then fsyncing the folder.  There is never a moment
   without a ``current`` link.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy import spool
from deploy.errors import DeployError, UpdateBusy, UpdateError
from deploy.progress import Progress
from deploy.spool import UnsafePathError
from deploy.updater.config import UpdaterConfig
from deploy.updater.journal import State, read_journal, write_journal
from deploy.updater.privsep import read_drop_file, trusted_chain
from deploy.updater.steps import checkpoint, log
from deploy.version import parse_version
from edge.files import fsync_dir, write_atomic

COMPLETE = ".complete"
SOURCE = "satoyama-update"


@dataclass
class Updater:
    """One device's releases, journal and update procedure, under ``root`` ('/' on a device)."""

    config: UpdaterConfig
    root: Path = Path("/")
    progress: Progress = field(default_factory=Progress.silent)
    """Where the phases of an install are shown (the command line: standard error)."""
    last_failure: str = ""
    """Why the last command :meth:`run` ran failed, in one line (for the failure report)."""

    # paths
    def host(self, device_path: str) -> Path:
        return Path(device_path) if self.root == Path("/") else self.root / device_path.lstrip("/")

    @property
    def base(self) -> Path:
        return self.host(self.config.releases_dir)

    @property
    def releases(self) -> Path:
        return self.base / "releases"

    @property
    def current(self) -> Path:
        return self.base / "current"

    @property
    def state_dir(self) -> Path:
        return self.host(self.config.state_dir)

    @property
    def downloads(self) -> Path:
        return self.state_dir / "downloads"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def spool_path(self) -> Path:
        return self.host(self.config.spool)

    @property
    def ack_device_path(self) -> str:
        return self.config.ack or str(Path(self.config.request).with_name("events.ack"))

    def prepare(self) -> None:
        """Refuse to run on folders anyone but root could write; create ours with tight modes.

        The state folder is 0711: others may reach ``spool/`` inside (0755, the
        daemon reads it) but neither list nor write anything; the journal, the
        lock and ``downloads/`` (0700) are root's alone.
        """
        for d in (self.state_dir, self.spool_path.parent, self.base):
            trusted_chain(self.root, d)
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        os.close(spool.own_dir(self.state_dir, 0o711))
        os.close(spool.own_dir(self.downloads, 0o700))
        self.spool_path.parent.parent.mkdir(parents=True, exist_ok=True)
        os.close(spool.own_dir(self.spool_path.parent, 0o755))
        self.base.mkdir(parents=True, exist_ok=True)
        for d in (self.state_dir, self.downloads, self.spool_path.parent, self.base):
            trusted_chain(self.root, d)

    def release_dir(self, version: str) -> Path:
        parse_version(version)
        return self.releases / version

    # journal
    def load_state(self) -> State:
        return read_journal(self.state_file)

    def save_state(self, state: State) -> None:
        write_journal(self.state_file, state)

    # events
    def acked(self) -> str | None:
        """The id of the last spooled event the daemon has recorded (its drop folder)."""
        try:
            raw, _ = read_drop_file(self.root, self.ack_device_path, 256)
        except (UnsafePathError, OSError) as exc:
            log.warning("ignoring the daemon's acknowledgement: %s", exc)
            return None
        text = (raw or b"").decode("ascii", "replace").strip()
        return text if text and text.isprintable() else None

    def report(self, kind: str, severity: str, data: dict[str, Any]) -> None:
        try:
            spool.append(self.spool_path, kind, severity, data, source=SOURCE, acked=self.acked())
        except (OSError, DeployError) as exc:
            log.error("could not spool %s event: %s", kind, exc)

    # releases
    def is_complete(self, version: str) -> bool:
        try:
            return (self.release_dir(version) / COMPLETE).read_text().strip() == version
        except (OSError, DeployError):
            return False

    def link_target(self) -> str | None:
        """The release name ``current`` points at (complete or not), or None."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        name = Path(target).name
        return name if Path(target).parent.name == "releases" else None

    def current_version(self) -> str | None:
        """The running release if ``current`` names a complete one."""
        name = self.link_target()
        return name if name is not None and self.is_complete(name) else None

    def complete_releases(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        found = []
        for d in self.releases.iterdir():
            with contextlib.suppress(DeployError):
                parse_version(d.name)
                if self.is_complete(d.name):
                    found.append(d.name)
        return sorted(found, key=parse_version)

    def switch_to(self, version: str, step: str | None = "link_created") -> None:
        """Point ``current`` at a complete release atomically: new link renamed over the old."""
        if not self.is_complete(version):
            raise UpdateError(f"refusing to switch to incomplete release {version}")
        tmp = self.base / "current.new"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"releases/{version}", tmp)
        if step:
            checkpoint(step)
        os.replace(tmp, self.current)
        fsync_dir(self.base)
        log.info("current -> releases/%s", version)

    def remove_release(self, version: str) -> None:
        """Delete a release so that no power cut can leave it looking complete."""
        d = self.release_dir(version)
        if not d.exists():
            return
        with contextlib.suppress(FileNotFoundError):
            (d / COMPLETE).unlink()
            fsync_dir(d)
        trash = self.releases / f".trash-{version}-{os.getpid()}"
        os.replace(d, trash)
        fsync_dir(self.releases)
        shutil.rmtree(trash, ignore_errors=True)

    def mark_complete(self, version: str) -> None:
        os.sync()  # every file of the release on the card before the marker says so
        write_atomic(self.release_dir(version) / COMPLETE, f"{version}\n".encode(), mode=0o644)
        os.sync()

    # locking
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.prepare()
        fd = os.open(
            self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UpdateBusy("another updater run is in progress") from None
        try:
            yield
        finally:
            os.close(fd)

    # commands
    def format(self, argv: list[str], release: Path | None = None) -> list[str]:
        """A configured command with ``{root}`` and ``{release}`` filled in."""
        subs = {"root": str(self.root), "release": str(release or self.current)}
        return [a.format(**subs) for a in argv]

    def run(self, argv: list[str], what: str, timeout: float = 600, umask: int = -1) -> bool:
        """Run a command; False (and its last lines in the log) when it fails or hangs."""
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, umask=umask
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.last_failure = f"{what}: {exc}"
            log.error("%s", self.last_failure)
            return False
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            self.last_failure = f"{what} failed (exit {proc.returncode})"
            if tail:
                self.last_failure += ": " + " | ".join(tail)
            log.error("%s", self.last_failure)
            return False
        return True

    def restart_daemon(self) -> bool:
        return self.run(self.format(self.config.restart_command), "restarting the daemon", 300)
