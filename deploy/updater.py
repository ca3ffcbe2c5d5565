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
        request.json, events.ack              *reads*, never through a link (see below)

Privilege separation: the daemon's user can write its drop folder and nothing
the updater writes.  The updater reads the drop folder's two files with
``O_NOFOLLOW`` through every path component, checks that each is a regular
file owned by the folder's owner, with one link, and small
(:func:`read_drop_file`); it never creates, changes or removes anything there.

The rules that make it power-fail safe:

1. A release directory counts only once its ``.complete`` marker exists; the
   marker is written (and everything synced) after the venv is installed and
   checked, and removed *first* when a release is deleted.
2. ``current`` is switched by creating ``current.new`` and renaming it over
   ``current`` (atomic), then fsyncing the folder.  There is never a moment
   without a ``current`` link.
3. Every phase is journalled in ``state.json`` (written atomically) before it
   starts.  ``satoyama-update recover`` runs at boot before the daemon (and at
   the start of every updater run): it finishes or undoes whatever a power
   cut interrupted, so ``current`` always names a complete release - the old
   one, unless the new one had been confirmed healthy.
4. Signature and hashes are verified before anything is unpacked; versions
   only go up; a release is confirmed only after the restarted daemon stayed
   healthy for a while, else the previous release comes back and the failure
   is reported as an event through the spool (``deploy.spool``).

Fault injection for the power-cut test: with ``SATOYAMA_UPDATE_FAULT=STEP``
in its environment the updater SIGKILLs itself (and its process group when
it leads one, so a running pip dies too) on reaching STEP (see :data:`STEPS`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import ssl
import stat
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from deploy import spool
from deploy.errors import (
    DeployError,
    UpdateBusy,
    UpdateError,
    UpdateRefused,
    VerifyError,
)
from deploy.progress import Progress
from deploy.spool import UnsafePathError
from deploy.version import parse_version
from edge.link.commands import (
    MAX_BUNDLE,
    VERSION_PATTERN,
    CommandError,
    UpdateCommand,
    parse_update_request,
)

if TYPE_CHECKING:
    from deploy.bundle import VerifiedBundle

log = logging.getLogger("deploy.updater")

DEFAULT_CONFIG = "/etc/satoyama/updater.toml"
COMPLETE = ".complete"
SOURCE = "satoyama-update"

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

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: see _ssl_context().
_NO_CHECK_TIME = 0x200000


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


# -- configuration -------------------------------------------------------------------------


DEFAULT_STATE_DIR = "/var/lib/satoyama-update"
DEFAULT_SPOOL = "/var/lib/satoyama-update/spool/events.jsonl"
#: Where versions before 0.x kept root's state: inside the daemon's own StateDirectory,
#: which its user can write.  A configuration still naming them gets the new defaults.
LEGACY_PATHS = {
    "state_dir": ("/var/lib/satoyama/update", DEFAULT_STATE_DIR),
    "spool": ("/var/lib/satoyama/spool/events.jsonl", DEFAULT_SPOOL),
}
MAX_REQUEST = 16 << 10


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
        raise DeployError(f"{path}: {exc}") from None
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


# -- the journal -----------------------------------------------------------------------------


Version = Annotated[str, Meta(pattern=VERSION_PATTERN, max_length=40)]


class State(msgspec.Struct, kw_only=True):
    phase: Literal["idle", "installing", "switching", "switched", "rolling_back"] = "idle"
    target: Version | None = None
    previous: Version | None = None
    started: str | None = None
    attempts: dict[Version, int] = {}
    last_result: str | None = None
    request: str | None = None
    """Fingerprint of the last update request handled for good (it is never acted on again)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file so that after a power cut it holds either the old or the new bytes.

    The temporary file is created afresh (``O_EXCL | O_NOFOLLOW``, relative to the
    folder's fd): a link planted under its name is never written through.
    """
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        spool.write_replace(dir_fd, path.name, data, mode)
    finally:
        os.close(dir_fd)


def _trusted_chain(root: Path, path: Path) -> None:
    """Every existing folder from ``root`` down to ``path`` is a real folder only we may write.

    What root writes must never sit below a folder another user can write (or swap
    for a link): that user could redirect root's writes anywhere.
    """
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{here}: not a folder (a link?); refusing to use {path}")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePathError(
                f"{here}: writable by uid {st.st_uid} or by group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to keep root's files in {path}"
            )


def read_drop_file(root: Path, device_path: str, limit: int) -> tuple[bytes | None, str]:
    """Read a file the daemon's user left for us, without ever following a link.

    Every component is opened with ``O_NOFOLLOW`` relative to the one before
    (``openat``), so no link anywhere on the way is followed; the file must be a
    regular file with one link, owned by root or by the owner of its folder, of at
    most ``limit`` bytes.  Returns ``(bytes, fingerprint)``, ``(None, "")`` when
    the file is absent; :class:`UnsafePathError` (with the fingerprint of what was
    found in ``args[1]``) when it is not acceptable.
    """
    rel = Path(device_path.lstrip("/"))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts[:-1]:
            try:
                nxt = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                return None, ""
            except OSError as exc:
                raise UnsafePathError(
                    f"{device_path}: {part} is not a plain folder ({exc.strerror})", "path:" + part
                ) from None
            os.close(fd)
            fd = nxt
        owner = os.fstat(fd).st_uid
        name = rel.name
        try:
            lst = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None, ""
        seen = f"{lst.st_dev}:{lst.st_ino}:{lst.st_mtime_ns}:{lst.st_size}:{lst.st_mode:o}"
        if not stat.S_ISREG(lst.st_mode):
            raise UnsafePathError(f"{device_path}: not a regular file (a link?)", seen)
        try:
            ffd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=fd,
            )
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            raise UnsafePathError(f"{device_path}: cannot open ({exc.strerror})", seen) from None
        with os.fdopen(ffd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise UnsafePathError(f"{device_path}: not a regular file with one link", seen)
            if st.st_uid not in (0, owner):
                raise UnsafePathError(
                    f"{device_path}: owned by uid {st.st_uid}, not by its folder's owner", seen
                )
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePathError(f"{device_path}: larger than {limit} bytes", seen)
        return data, "sha256:" + hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the updater -------------------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    message: str
    version: str | None = None


@dataclass
class Updater:
    """One device's releases, journal and update procedure, under ``root`` ('/' on a device)."""

    config: UpdaterConfig
    root: Path = Path("/")
    progress: Progress = field(default_factory=Progress.silent)
    """Where the phases of an install are shown (the command line: standard error)."""

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
            _trusted_chain(self.root, d)
        self.state_dir.parent.mkdir(parents=True, exist_ok=True)
        os.close(spool.own_dir(self.state_dir, 0o711))
        os.close(spool.own_dir(self.downloads, 0o700))
        self.spool_path.parent.parent.mkdir(parents=True, exist_ok=True)
        os.close(spool.own_dir(self.spool_path.parent, 0o755))
        self.base.mkdir(parents=True, exist_ok=True)
        for d in (self.state_dir, self.downloads, self.spool_path.parent, self.base):
            _trusted_chain(self.root, d)

    def release_dir(self, version: str) -> Path:
        parse_version(version)
        return self.releases / version

    # journal
    def load_state(self) -> State:
        try:
            return msgspec.json.decode(self.state_file.read_bytes(), type=State)
        except FileNotFoundError:
            return State()
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            # write_atomic never leaves a torn file; this is outside damage. Start over safely.
            log.error(
                "update journal %s unreadable (%s); treating as interrupted", self.state_file, exc
            )
            return State(phase="switched")

    def save_state(self, state: State) -> None:
        write_atomic(self.state_file, msgspec.json.encode(state))

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
        _fsync_dir(self.base)
        log.info("current -> releases/%s", version)

    def remove_release(self, version: str) -> None:
        """Delete a release so that no power cut can leave it looking complete."""
        d = self.release_dir(version)
        if not d.exists():
            return
        with contextlib.suppress(FileNotFoundError):
            (d / COMPLETE).unlink()
            _fsync_dir(d)
        trash = self.releases / f".trash-{version}-{os.getpid()}"
        os.replace(d, trash)
        _fsync_dir(self.releases)
        shutil.rmtree(trash, ignore_errors=True)

    def _mark_complete(self, version: str) -> None:
        os.sync()  # every file of the release on the card before the marker says so
        write_atomic(self.release_dir(version) / COMPLETE, f"{version}\n".encode(), 0o644)
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
    def _format(self, argv: list[str], release: Path | None = None) -> list[str]:
        subs = {"root": str(self.root), "release": str(release or self.current)}
        return [a.format(**subs) for a in argv]

    def _run(self, argv: list[str], what: str, timeout: float = 600, umask: int = -1) -> bool:
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, umask=umask
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.error("%s: %s", what, exc)
            return False
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            log.error("%s failed (exit %d): %s", what, proc.returncode, " | ".join(tail))
            return False
        return True

    def restart_daemon(self) -> bool:
        return self._run(self._format(self.config.restart_command), "restarting the daemon", 300)

    # health
    def _systemd_show(self) -> dict[str, str]:
        proc = subprocess.run(
            [
                "systemctl",
                "show",
                self.config.health_unit,
                "--property=ActiveState,SubState,NRestarts,InvocationID",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)

    def wait_healthy(self) -> bool:
        """Healthy for ``health_settle_s`` without a break, within ``health_timeout_s``.

        systemd: ActiveState=active/running (with Type=notify that means the
        daemon sent READY=1; the watchdog keeps it honest) and no restart
        since we started watching.  command: the health command exits 0.
        """
        cfg = self.config
        baseline: str | None = None
        start = time.monotonic()
        healthy_since: float | None = None
        self.progress.phase(
            f"waiting for the daemon to stay healthy for {cfg.health_settle_s:g} s",
            total=cfg.health_timeout_s,
            unit="s",
        )
        while True:
            if cfg.health == "systemd":
                try:
                    props = self._systemd_show()
                except (OSError, subprocess.TimeoutExpired) as exc:
                    log.warning("health probe: %s", exc)
                    props = {}
                ok = props.get("ActiveState") == "active" and props.get("SubState") == "running"
                if ok and baseline is None:
                    baseline = props.get("InvocationID", "")
                ok = ok and props.get("InvocationID", "") == baseline
            else:
                ok = self._run(
                    self._format(cfg.health_command), "health check", cfg.health_interval_s * 10 + 5
                )
            now = time.monotonic()
            if ok:
                healthy_since = now if healthy_since is None else healthy_since
                if now - healthy_since >= cfg.health_settle_s:
                    self.progress.finish("healthy")
                    return True
            else:
                healthy_since = None
            self.progress.update(
                now - start,
                note=f"healthy for {now - healthy_since:.0f} s" if healthy_since else "not yet",
            )
            if now - start >= cfg.health_timeout_s:
                self.progress.finish("not healthy")
                return False
            time.sleep(cfg.health_interval_s)

    # recovery
    def recover(self, *, restart: bool, allow_empty: bool = False) -> bool:
        """Make ``current`` name a complete release, finishing or undoing an interrupted update.

        Returns whether ``current`` changed (and restarts the daemon then, if asked).
        ``allow_empty``: no release at all is not an error (before the first install).
        """
        self.base.mkdir(parents=True, exist_ok=True)
        self.releases.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.base / "current.new").unlink()
        changed = False
        state = self.load_state()
        linked = self.link_target()
        if state.phase != "idle":
            target, previous = state.target, state.previous
            if state.phase == "installing":
                reason = (
                    "interrupted while installing (power cut or crash); kept the running release"
                )
            elif previous is None:
                reason = "interrupted before the first release was confirmed"
            else:
                reason = (
                    "interrupted before the new release was confirmed healthy; "
                    "went back to the previous one"
                )
            if previous is not None and self.is_complete(previous):
                if linked != previous:
                    self.switch_to(previous, step=None)
                    changed = True
                if target is not None and target != previous:
                    with contextlib.suppress(DeployError):
                        self.remove_release(target)
            elif target is not None and linked != target:
                with contextlib.suppress(DeployError):
                    self.remove_release(target)
            log.warning("update to %s %s", target, reason)
            if state.phase != "rolling_back":  # a rollback reported its failure already
                self.report(
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
            self.save_state(state)
            linked = self.link_target()
        if linked is None or not self.is_complete(linked):
            releases = self.complete_releases()
            if not releases and allow_empty:
                return changed
            if not releases:
                raise UpdateError(
                    f"no complete release under {self.releases}; reinstall the device"
                )
            pick = releases[-1]  # the newest complete release: the last one confirmed or installed
            log.error("current release %s is missing or incomplete; switching to %s", linked, pick)
            self.switch_to(pick, step=None)
            changed = True
        keep = self.link_target()
        for d in self.releases.iterdir():
            if d.name.startswith(".trash-") or (d.name != keep and not self.is_complete(d.name)):
                shutil.rmtree(d, ignore_errors=True)
        if changed and restart:
            self.restart_daemon()
        return changed

    # the update
    def _device_python(self) -> str:
        proc = subprocess.run(
            [self.config.python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        )
        return proc.stdout.strip()

    def _fail(self, state: State, version: str, stage: str, reason: str) -> Outcome:
        """An install step failed before the switch: drop the half release, keep the old one."""
        # Report first: a power cut right after then costs a duplicate report, never a lost one.
        self.report(
            "update_failed",
            "warning",
            {
                "from_version": state.previous,
                "to_version": version,
                "stage": stage,
                "reason": reason,
            },
        )
        with contextlib.suppress(DeployError, OSError):
            self.remove_release(version)
        state.phase, state.last_result = "idle", f"failed: {version} ({stage})"
        self.save_state(state)
        return Outcome(EXIT_FAILED, f"update to {version} failed at {stage}: {reason}", version)

    def install(self, bundle_path: Path, *, restart: bool = True) -> Outcome:
        """Verify, install and switch to a bundle; roll back if the daemon is not healthy."""
        with self.locked():
            return self.install_locked(bundle_path, restart=restart)

    def install_locked(self, bundle_path: Path, *, restart: bool = True) -> Outcome:
        """:meth:`install` for a caller that holds the lock already (fetch, then install)."""
        self.recover(restart=restart, allow_empty=True)
        checkpoint("locked")
        try:
            local = self._stage_bundle(bundle_path)
        except UpdateRefused as exc:
            self.report("update_failed", "warning", {"stage": "verify", "reason": str(exc)})
            raise
        checkpoint("copied")
        from deploy.bundle import verify  # cryptography: only when there is something to verify
        from deploy.keys import load_verify_keys

        trusted = load_verify_keys([self.host(k) for k in self.config.verify_keys])
        self.progress.phase("verifying the signature and every file's hash")
        try:
            vb = verify(local, trusted)
        except VerifyError as exc:
            self.report("update_failed", "warning", {"stage": "verify", "reason": str(exc)})
            local.unlink(missing_ok=True)  # damaged or forged: never worth keeping
            raise
        checkpoint("verified")
        try:
            outcome = self._install_verified(vb, restart=restart)
        except UpdateRefused:
            local.unlink(missing_ok=True)
            raise
        if outcome.code == EXIT_OK:  # a failed attempt keeps the download for a retry
            local.unlink(missing_ok=True)
        return outcome

    def _stage_bundle(self, path: Path) -> Path:
        """Copy a bundle (e.g. from a USB stick) into our own folder, where it cannot vanish.

        Only a regular file, and at most :data:`MAX_BUNDLE` bytes of it (a device
        node or an endless file is refused, not copied until the disk is full).
        The copy is created afresh in root's own 0700 folder, mode 0600.
        """
        self.prepare()
        if path.parent == self.downloads and re.fullmatch(r"[A-Za-z0-9._-]+\.tar", path.name):
            return path
        name = path.name if re.fullmatch(r"[A-Za-z0-9._-]{1,200}", path.name) else "bundle.tar"
        try:
            src_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as exc:
            raise UpdateError(f"{path}: cannot read bundle: {exc.strerror or exc}") from None
        with os.fdopen(src_fd, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise UpdateRefused(f"{path}: not a regular file")
            if st.st_size > MAX_BUNDLE:
                raise UpdateRefused(f"{path}: {st.st_size} bytes is more than a bundle may be")
            dir_fd = spool.own_dir(self.downloads, 0o700)
            try:
                tmp = name + ".copy"
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                out_fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
                copied = 0
                self.progress.phase("copying the bundle", total=st.st_size)
                try:
                    with os.fdopen(out_fd, "wb") as out:
                        while block := src.read(1 << 20):
                            copied += len(block)
                            if copied > MAX_BUNDLE:
                                raise UpdateRefused(f"{path}: grew past {MAX_BUNDLE} bytes")
                            out.write(block)
                            self.progress.update(copied)
                        out.flush()
                        os.fsync(out.fileno())
                except OSError as exc:
                    os.unlink(tmp, dir_fd=dir_fd)
                    raise UpdateError(
                        f"{path}: cannot copy bundle: {exc.strerror or exc}"
                    ) from None
                except UpdateRefused:
                    os.unlink(tmp, dir_fd=dir_fd)
                    raise
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return self.downloads / name

    def _install_verified(self, vb: VerifiedBundle, *, restart: bool) -> Outcome:
        m = vb.manifest
        version = m.version
        current = self.current_version()
        state = self.load_state()
        refusal = None
        if current is not None and parse_version(version) < parse_version(current):
            refusal = f"{version} is older than the running {current} (downgrades are refused)"
        elif current == version:
            return Outcome(EXIT_OK, f"already running {version}", version)
        elif (
            current is not None
            and m.min_from_version is not None
            and parse_version(current) < parse_version(m.min_from_version)
        ):
            refusal = (
                f"{version} updates only from {m.min_from_version} or newer; "
                f"this device runs {current}"
            )
        elif state.attempts.get(version, 0) >= self.config.max_attempts:
            refusal = (
                f"{version} already failed {state.attempts[version]} time(s); "
                "waiting for a newer version"
            )
        else:
            py = self._device_python()
            if py != m.python:
                refusal = (
                    f"bundle is built for Python {m.python}, this device has {py or 'no python'}"
                )
        if refusal:
            log.error("update refused: %s", refusal)
            self.report(
                "update_failed",
                "warning",
                {
                    "from_version": current,
                    "to_version": version,
                    "stage": "refused",
                    "reason": refusal,
                },
            )
            raise UpdateRefused(refusal)

        log.info("installing %s (running %s; signed by key %s)", version, current, vb.key_id)
        state = State(
            phase="installing",
            target=version,
            previous=current,
            started=_now(),
            attempts={**state.attempts, version: state.attempts.get(version, 0) + 1},
            request=state.request,
        )
        self.save_state(state)
        checkpoint("state_installing")
        rel = self.release_dir(version)
        if rel.exists():
            self.remove_release(version)
        rel.mkdir(parents=True)
        first = [True]
        self.progress.phase(
            f"unpacking {len(m.files)} files", total=sum(f.size for f in m.files.values())
        )

        def on_file(name: str) -> None:
            self.progress.advance(m.files[name].size)
            if first[0]:
                first[0] = False
                checkpoint("extracting")

        from deploy.bundle import extract

        odd = sorted(f for f in m.files if f.startswith("wheels/") and not f.endswith(".whl"))
        if odd:  # pip would build a source package, running its code as root
            return self._fail(state, version, "verify", f"not wheels: {', '.join(odd[:3])}")
        try:
            extract(vb, rel, on_file=on_file)
        except (VerifyError, OSError) as exc:
            return self._fail(state, version, "extract", str(exc))
        checkpoint("extracted")
        venv = rel / "venv"
        self.progress.phase("creating the virtual environment")
        if not self._run(
            [self.config.python, "-m", "venv", "--without-pip", str(venv)],
            "creating the venv",
            umask=0o022,
        ):
            return self._fail(state, version, "venv", "could not create the virtual environment")
        checkpoint("venv_created")
        pip = [str(venv / "bin" / "python")]
        if m.pip_wheel:
            # pip runs from its own wheel (the device needs no pip of its own); unzipped it
            # starts faster than through zipimport.  The wheel's bytes were verified above.
            pip_dir = rel / ".pip"
            with zipfile.ZipFile(rel / m.pip_wheel) as zf:
                zf.extractall(pip_dir)
            pip += [str(pip_dir / "pip")]
        else:
            pip += ["-m", "pip"]
        argv = [
            *pip,
            "install",
            "--isolated",  # no pip.conf, no PIP_* from the environment
            "--no-index",
            "--find-links",
            str(rel / "wheels"),
            "--only-binary=:all:",  # wheels only: nothing of the bundle's is built (run) as root
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--quiet",
            *m.install,
        ]
        self.progress.phase(
            f"installing {sum(f.startswith('wheels/') for f in m.files)} wheels (pip, offline)"
        )
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=0o022
        )
        checkpoint("pip_running")
        out, _ = proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            return self._fail(state, version, "install", f"pip failed: {tail}")
        checkpoint("installed")
        if self.config.precheck_command:
            self.progress.phase("checking the new release before switching")
        if self.config.precheck_command and not self._run(
            self._format(self.config.precheck_command, rel), "pre-switch check of the new release"
        ):
            return self._fail(
                state, version, "precheck", "the new release failed its check before switching"
            )
        checkpoint("prechecked")
        shutil.rmtree(rel / "wheels", ignore_errors=True)  # installed; the SD card is small
        shutil.rmtree(rel / ".pip", ignore_errors=True)
        _publish_release(rel)
        self._mark_complete(version)
        checkpoint("marked_complete")

        self.progress.phase(f"switching to {version}")
        state.phase = "switching"
        self.save_state(state)
        checkpoint("state_switching")
        self.switch_to(version)
        checkpoint("switched")
        state.phase = "switched"
        self.save_state(state)
        checkpoint("state_switched")

        if restart:
            self.progress.phase("restarting the daemon")
            restarted = self.restart_daemon()
            checkpoint("restarted")
            healthy = restarted and self.wait_healthy()
            if not healthy:
                return self._rollback(
                    state,
                    version,
                    f"the daemon did not report healthy within {self.config.health_timeout_s:g} s",
                )
            checkpoint("healthy")
        state.phase, state.last_result = "idle", f"installed: {version}"
        state.attempts.pop(version, None)
        self.save_state(state)
        checkpoint("state_confirmed")
        self.report("update_installed", "info", {"from_version": current, "to_version": version})
        self.prune()
        checkpoint("done")
        return Outcome(EXIT_OK, f"updated {current or 'nothing'} -> {version}", version)

    def _rollback(self, state: State, version: str, reason: str) -> Outcome:
        previous = state.previous
        log.error("update to %s failed: %s", version, reason)
        if previous is None or not self.is_complete(previous):
            # First install: there is nothing to go back to; keep the new release running.
            state.phase, state.last_result = "idle", f"unhealthy: {version} (no previous release)"
            self.save_state(state)
            self.report(
                "update_failed",
                "alarm",
                {
                    "from_version": None,
                    "to_version": version,
                    "stage": "health",
                    "reason": reason + "; no previous release to go back to",
                },
            )
            return Outcome(
                EXIT_FAILED, f"{version} is not healthy and there is nothing to go back to"
            )
        self.report(
            "update_failed",
            "warning",
            {
                "from_version": previous,
                "to_version": version,
                "stage": "health",
                "reason": reason + f"; rolled back to {previous}",
            },
        )
        self.progress.phase(f"rolling back to {previous}")
        state.phase = "rolling_back"
        self.save_state(state)
        checkpoint("rollback_state")
        self.switch_to(previous, step=None)
        checkpoint("rollback_switched")
        self.restart_daemon()
        checkpoint("rollback_restarted")
        self.remove_release(version)
        state.phase, state.last_result = "idle", f"rolled back: {version} -> {previous}"
        self.save_state(state)
        checkpoint("rolled_back")
        if not self.wait_healthy():
            log.error("the previous release %s is not healthy either", previous)
        return Outcome(
            EXIT_FAILED, f"{version} was not healthy; rolled back to {previous}", previous
        )

    def prune(self) -> None:
        """Keep at most ``keep_releases`` releases: never the current or the previous one."""
        releases = self.complete_releases()
        state = self.load_state()
        protect = {self.link_target(), state.previous}
        excess = len(releases) - self.config.keep_releases
        for version in releases:  # oldest first
            if excess <= 0:
                break
            if version in protect:
                continue
            self.remove_release(version)
            excess -= 1
            log.info("removed old release %s", version)
            checkpoint("pruning")

    # fetching
    def fetch(
        self,
        url: str,
        *,
        sha256: str | None = None,
        size: int | None = None,
        allow_file: bool = True,
    ) -> Path:
        """Download a bundle into root's own downloads folder, resuming a partial download.

        ``https://`` only (``file://`` only for the operator's ``fetch`` command, never
        for a request the daemon passed on).  :class:`UpdateRefused`: the bundle can
        never be had this way (wrong scheme or name, bigger than ``size``, wrong
        sha256); :class:`UpdateError`: try again later (network).
        """
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "file" and allow_file:
            return self._stage_bundle(Path(urllib.parse.unquote(parsed.path)))
        if parsed.scheme != "https":
            raise UpdateRefused(f"{url[:200]}: only https:// bundles can be fetched")
        name = parsed.path.rsplit("/", 1)[-1]
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar", name):
            raise UpdateRefused(f"{url[:200]}: a bundle's name is NAME.tar (plain characters)")
        self.prepare()
        for stale in self.downloads.iterdir():  # one download at a time: no pile of partials
            ours = stale.name in (f"{name}.part", f"{name}.part.json")
            if stale.name.endswith((".part", ".part.json")) and not ours:
                log.info("removing an abandoned partial download %s", stale.name)
                stale.unlink(missing_ok=True)
        return download(
            url,
            self.downloads / name,
            sha256=sha256,
            size=size,
            context=_ssl_context(self.host(self.config.ca_file) if self.config.ca_file else None),
            timeout=self.config.download_timeout_s,
            progress=self.progress,
        )


def _publish_release(rel: Path) -> None:
    """A release is run by the daemon's user: folders 0755, files 0644 (0755 if executable).

    The updater's umask is 0077 (everything else it writes is root's alone), so
    the release tree gets its modes explicitly; nothing in it is writable but by root.
    """
    for d, _dirs, files in os.walk(rel):
        os.chmod(d, 0o755)
        for n in files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                os.chmod(p, 0o755 if st.st_mode & stat.S_IXUSR else 0o644)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS that still works when the Pi's clock says 1970.

    A Pi has no real-time clock; until NTP answers, every certificate looks
    "not yet valid".  The chain and the host name are still verified, only the
    validity dates are not (OpenSSL's X509_V_FLAG_NO_CHECK_TIME).  Integrity
    and authenticity of the bundle come from its Ed25519 signature anyway.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


def _open_private(path: Path, flags: int) -> int:
    """Open a file of root's own folder for writing: never through a link, mode 0600."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
    chunk: int = 64 << 10,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` with a Range request when one is left.

    A response of 200 to a Range request (server without Range support, or the
    file changed: ``If-Range``) starts over.  At most ``size`` bytes (else
    :data:`MAX_BUNDLE`) are ever written: a server sending more is refused at
    that point, and so is a file whose SHA-256 (hashed while it streams) is not
    ``sha256``: :class:`UpdateRefused`, the partial file discarded.  An
    interrupted transfer raises :class:`UpdateError`; the partial file is kept
    for the next try.
    """
    limit = size if size is not None else MAX_BUNDLE
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")

    def discard(reason: str) -> UpdateRefused:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return UpdateRefused(f"{url[:200]}: {reason}; discarded")

    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, RecursionError):
        loaded = json.loads(meta_path.read_text())
        meta = loaded if isinstance(loaded, dict) else {}
    if meta.get("url") != url or meta.get("size") != size:
        part.unlink(missing_ok=True)
        meta = {"url": url, "size": size}
    h = hashlib.sha256()
    offset = 0
    if os.path.lexists(part):
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise discard("the partial download is not a regular file")
            while block := f.read(1 << 20):
                h.update(block)
                offset += len(block)
        if offset > limit:
            part.unlink()
            h, offset = hashlib.sha256(), 0
    headers = {"User-Agent": "satoyama-update"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = str(meta["validator"])
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout, context=context)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing more to send: we had it all
            resp = None
        else:
            raise UpdateError(f"{url[:200]}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpdateError(f"{url[:200]}: cannot connect: {getattr(exc, 'reason', exc)}") from None
    got = offset
    if resp is not None:
        with resp:
            if resp.status == 206:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    raise UpdateError(f"{url[:200]}: server resumed at the wrong place")
                flags = os.O_APPEND
            else:
                offset, got, flags, h = 0, 0, os.O_TRUNC, hashlib.sha256()
            length_header = resp.headers.get("Content-Length")
            length = int(length_header) if (length_header or "").isdigit() else None
            if length is not None and offset + length > limit:
                raise discard(f"the server offers {offset + length} bytes, more than {limit}")
            meta["validator"] = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
            write_atomic(meta_path, json.dumps(meta).encode())
            progress = progress or Progress.silent()
            whole = size if size is not None else (offset + length if length is not None else None)
            progress.phase(
                f"downloading {dest.name}" + (f" (resuming at {offset} bytes)" if offset else ""),
                total=whole,
            )
            progress.update(got)
            try:
                with os.fdopen(_open_private(part, flags), "wb") as out:
                    while data := resp.read(chunk):
                        if got + len(data) > limit:
                            raise discard(f"the server sent more than {limit} bytes")
                        out.write(data)
                        h.update(data)
                        got += len(data)
                        progress.update(got)
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, TimeoutError) as exc:
                raise UpdateError(
                    f"{url[:200]}: download interrupted at {got} bytes ({exc}); run again to resume"
                ) from None
            if length is not None and got - offset < length:
                raise UpdateError(
                    f"{url[:200]}: download interrupted at {got} bytes; run again to resume"
                )
            if length is None and size is not None and got < size:
                raise UpdateError(
                    f"{url[:200]}: download ended at {got} of {size} bytes; run again to resume"
                )
    if size is not None and got != size:
        raise discard(f"the file has {got} bytes, not the announced {size}")
    if sha256 and h.hexdigest() != sha256.lower():
        raise discard("downloaded file does not match the announced sha256")
    os.replace(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest


# -- update requests (written by the daemon from PREFIX/DEVICE/cmd/update) ---------------------
#
# The schema is the daemon's own (edge.link.commands.UpdateCommand, parse_update_request): what the
# daemon accepts from the cloud is exactly what the updater carries out.


#: The request's schema, under the name the cloud side's tools know it by.
UpdateRequest = UpdateCommand


def _settle_request(updater: Updater, seen: str) -> None:
    """Never act on this request again (the daemon's user owns the file; root leaves it)."""
    state = updater.load_state()
    state.request = seen
    updater.save_state(state)


def _refuse_request(updater: Updater, seen: str, reason: str, request_id: str = "") -> Outcome:
    """A request that can never succeed: reported once, then ignored."""
    log.error("update request refused: %s", reason)
    data: dict[str, Any] = {"stage": "request", "reason": reason[:500]}
    if request_id:
        data["request"] = request_id
    updater.report("update_failed", "warning", data)
    _settle_request(updater, seen)
    return Outcome(EXIT_REFUSED, f"update request refused: {reason}")


def run_request(updater: Updater) -> Outcome:
    """Carry out a pending update request, if there is one, once.

    The request file lives in the daemon's drop folder, which root only reads
    (:func:`read_drop_file`); a request handled for good (done, or refused) is
    remembered by its fingerprint in root's journal instead of being deleted.
    A network failure leaves it pending for the timer's next run.
    """
    with updater.locked():
        try:
            raw, seen = read_drop_file(updater.root, updater.config.request, MAX_REQUEST)
        except UnsafePathError as exc:
            seen = str(exc.args[1]) if len(exc.args) > 1 else "unsafe"
            if updater.load_state().request == seen:
                return Outcome(EXIT_OK, "update request already handled")
            return _refuse_request(updater, seen, f"unsafe request file: {exc.args[0]}")
        if raw is None:
            updater.recover(restart=True)
            return Outcome(EXIT_OK, "no update requested")
        if updater.load_state().request == seen:
            updater.recover(restart=True)
            return Outcome(EXIT_OK, "update request already handled")
        try:
            req = parse_update_request(raw)
        except CommandError as exc:
            return _refuse_request(updater, seen, f"malformed request: {exc}")
        current = updater.current_version()
        if current is not None and parse_version(req.version) <= parse_version(current):
            _settle_request(updater, seen)
            return Outcome(EXIT_OK, f"already at {current}; request for {req.version} dropped")
        try:
            bundle = updater.fetch(req.url, sha256=req.sha256, size=req.size, allow_file=False)
        except UpdateRefused as exc:
            return _refuse_request(updater, seen, str(exc), req.id)
        # any other UpdateError (the network) keeps the request: the timer retries, resuming
        try:
            outcome = updater.install_locked(bundle)
        except (UpdateRefused, VerifyError) as exc:  # reported by install_locked
            _settle_request(updater, seen)
            return Outcome(EXIT_REFUSED, str(exc))
        _settle_request(updater, seen)
        return outcome


def status(updater: Updater) -> dict[str, Any]:
    state = updater.load_state()
    return {
        "current": updater.current_version(),
        "releases": updater.complete_releases(),
        "phase": state.phase,
        "last_result": state.last_result,
        "failed_attempts": state.attempts,
    }


# -- command line ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="satoyama-update",
        description="Install signed Satoyama Edge bundles with automatic rollback "
        "(runs on the device).",
    )
    p.add_argument(
        "--config",
        "-c",
        default=DEFAULT_CONFIG,
        help="updater configuration (default: %(default)s)",
    )
    p.add_argument(
        "--root", default="/", help="prefix for every device path (tests, image building)"
    )
    p.add_argument("--verbose", "-v", action="store_true")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser(
        "recover",
        help="at boot: make 'current' a complete release (finish or undo an interrupted update)",
    )
    s = sub.add_parser("install", help="install a bundle file (a download, or from a USB stick)")
    s.add_argument("--bundle", required=True, type=Path)
    s.add_argument(
        "--no-restart",
        action="store_true",
        help="switch without restarting the daemon or waiting for health (first boot)",
    )
    s = sub.add_parser("fetch", help="download a bundle (resumable) and install it")
    s.add_argument("url")
    s.add_argument("--sha256")
    sub.add_parser(
        "run",
        help="carry out the update request the daemon left (the timer and path units run this)",
    )
    sub.add_parser("status", help="print the installed releases and the journal as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    root = Path(args.root)
    cfg_path = Path(args.config)
    if root != Path("/"):  # the config's path is a device path like every other
        cfg_path = root / str(cfg_path).lstrip("/")
    try:
        updater = Updater(load_config(cfg_path), root=root, progress=Progress(sys.stderr))
    except DeployError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    handlers: dict[str, Callable[[], Outcome]] = {
        "recover": lambda: _recover(updater),
        "install": lambda: updater.install(args.bundle, restart=not args.no_restart),
        "fetch": lambda: _fetch_install(updater, args.url, args.sha256),
        "run": lambda: run_request(updater),
        "status": lambda: Outcome(EXIT_OK, json.dumps(status(updater), indent=2)),
    }
    try:
        try:
            outcome = handlers[args.command]()
        except BaseException:
            updater.progress.close("stopped")
            raise
        updater.progress.close("done" if outcome.code == EXIT_OK else "failed")
    except UpdateBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except UnsafePathError as exc:  # a configuration naming folders others may write
        print(f"refused: {exc.args[0]}", file=sys.stderr)
        return EXIT_CONFIG
    except UpdateRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except VerifyError as exc:
        print(f"rejected: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(outcome.message)
    return outcome.code


def _fetch_install(updater: Updater, url: str, sha256: str | None) -> Outcome:
    with updater.locked():
        return updater.install_locked(updater.fetch(url, sha256=sha256), restart=True)


def _recover(updater: Updater) -> Outcome:
    with updater.locked():
        changed = updater.recover(restart=False)
    v = updater.current_version()
    return Outcome(EXIT_OK, f"current: {v}" + (" (recovered)" if changed else ""), v)


if __name__ == "__main__":
    sys.exit(main())
