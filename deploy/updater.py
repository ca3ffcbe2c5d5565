"""``satoyama-update``: the device-side updater.  A bad update must never brick a device.

Layout on the device (every path configurable in ``/etc/satoyama/updater.toml``)::

    /opt/satoyama/releases/1.4.2/      one complete release: venv/, models/, systemd/,
                                       manifest.json and the .complete marker
    /opt/satoyama/current -> releases/1.4.2   what systemd runs (relative symlink)
    /var/lib/satoyama/update/state.json       the updater's journal
    /var/lib/satoyama/update/downloads/       bundles, and resumable .part downloads

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
import json
import logging
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec
from msgspec import Meta

from deploy import spool
from deploy.errors import DeployError, UpdateBusy, UpdateError, UpdateRefused, VerifyError
from deploy.version import parse_version

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


class UpdaterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``/etc/satoyama/updater.toml``; paths are device paths (``--root`` prefixes them)."""

    verify_keys: Annotated[list[str], Meta(min_length=1)]
    releases_dir: str = "/opt/satoyama"
    state_dir: str = "/var/lib/satoyama/update"
    spool: str = "/var/lib/satoyama/spool/events.jsonl"
    request: str = "/var/lib/satoyama/update-requests/request.json"
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
    return cfg


# -- the journal -----------------------------------------------------------------------------


class State(msgspec.Struct, kw_only=True):
    phase: Literal["idle", "installing", "switching", "switched", "rolling_back"] = "idle"
    target: str | None = None
    previous: str | None = None
    started: str | None = None
    attempts: dict[str, int] = {}
    last_result: str | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write a file so that after a power cut it holds either the old or the new bytes."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_file, msgspec.json.encode(state))

    # events
    def report(self, kind: str, severity: str, data: dict[str, Any]) -> None:
        try:
            spool.append(self.host(self.config.spool), kind, severity, data, source=SOURCE)
        except OSError as exc:
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
        write_atomic(self.release_dir(version) / COMPLETE, f"{version}\n".encode())
        os.sync()

    # locking
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
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

    def _run(self, argv: list[str], what: str, timeout: float = 600) -> bool:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
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
                    return True
            else:
                healthy_since = None
            if now - start >= cfg.health_timeout_s:
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
        local = self._stage_bundle(bundle_path)
        checkpoint("copied")
        from deploy.bundle import verify  # cryptography: only when there is something to verify
        from deploy.keys import load_verify_keys

        trusted = load_verify_keys([self.host(k) for k in self.config.verify_keys])
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
        """Copy a bundle (e.g. from a USB stick) into our own folder, where it cannot vanish."""
        self.downloads.mkdir(parents=True, exist_ok=True)
        if path.parent.resolve() == self.downloads.resolve():
            return path
        dest = self.downloads / path.name
        tmp = dest.with_name(dest.name + ".copy")
        try:
            with open(path, "rb") as src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
        except OSError as exc:
            raise UpdateError(f"{path}: cannot read bundle: {exc.strerror or exc}") from None
        os.replace(tmp, dest)
        return dest

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
        )
        self.save_state(state)
        checkpoint("state_installing")
        rel = self.release_dir(version)
        if rel.exists():
            self.remove_release(version)
        rel.mkdir(parents=True)
        first = [True]

        def on_file(_: str) -> None:
            if first[0]:
                first[0] = False
                checkpoint("extracting")

        from deploy.bundle import extract

        try:
            extract(vb, rel, on_file=on_file)
        except (VerifyError, OSError) as exc:
            return self._fail(state, version, "extract", str(exc))
        checkpoint("extracted")
        venv = rel / "venv"
        if not self._run(
            [self.config.python, "-m", "venv", "--without-pip", str(venv)], "creating the venv"
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
            "--no-index",
            "--find-links",
            str(rel / "wheels"),
            "--disable-pip-version-check",
            "--no-cache-dir",
            "--quiet",
            *m.install,
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        checkpoint("pip_running")
        out, _ = proc.communicate()
        if proc.returncode != 0:
            tail = " | ".join(out.strip().splitlines()[-3:])
            return self._fail(state, version, "install", f"pip failed: {tail}")
        checkpoint("installed")
        if self.config.precheck_command and not self._run(
            self._format(self.config.precheck_command, rel), "pre-switch check of the new release"
        ):
            return self._fail(
                state, version, "precheck", "the new release failed its check before switching"
            )
        checkpoint("prechecked")
        shutil.rmtree(rel / "wheels", ignore_errors=True)  # installed; the SD card is small
        shutil.rmtree(rel / ".pip", ignore_errors=True)
        self._mark_complete(version)
        checkpoint("marked_complete")

        state.phase = "switching"
        self.save_state(state)
        checkpoint("state_switching")
        self.switch_to(version)
        checkpoint("switched")
        state.phase = "switched"
        self.save_state(state)
        checkpoint("state_switched")

        if restart:
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
    def fetch(self, url: str, *, sha256: str | None = None) -> Path:
        """Download a bundle into the downloads folder, resuming a partial download (HTTP Range)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "file":
            return self._stage_bundle(Path(urllib.parse.unquote(parsed.path)))
        if parsed.scheme not in ("https", "http"):
            raise UpdateError(f"{url}: only https://, http:// and file:// bundles can be fetched")
        name = Path(urllib.parse.unquote(parsed.path)).name
        if not re.fullmatch(r"[A-Za-z0-9._-]+\.tar", name):
            raise UpdateError(f"{url}: a bundle's name ends in .tar")
        self.downloads.mkdir(parents=True, exist_ok=True)
        return download(
            url,
            self.downloads / name,
            sha256=sha256,
            context=_ssl_context(self.host(self.config.ca_file) if self.config.ca_file else None),
            timeout=self.config.download_timeout_s,
        )


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


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
    chunk: int = 64 << 10,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` with a Range request when one is left.

    A response of 200 to a Range request (server without Range support, or the
    file changed: ``If-Range``) starts over.  Raises :class:`UpdateError` on an
    interrupted transfer; the partial file is kept for the next try.
    """
    import hashlib

    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")
    meta: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads(meta_path.read_text())
    if meta.get("url") != url:
        part.unlink(missing_ok=True)
        meta = {"url": url}
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "satoyama-update"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout, context=context)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing more to send: we had it all
            resp = None
        else:
            raise UpdateError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpdateError(f"{url}: cannot connect: {getattr(exc, 'reason', exc)}") from None
    if resp is not None:
        with resp:
            if resp.status == 206:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    raise UpdateError(f"{url}: server resumed at the wrong place")
                mode = "ab"
            else:
                offset, mode = 0, "wb"
            validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
            meta["validator"] = validator
            meta_path.write_text(json.dumps(meta))
            got = offset
            try:
                with open(part, mode) as out:
                    while True:
                        data = resp.read(chunk)
                        if not data:
                            break
                        out.write(data)
                        got += len(data)
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, TimeoutError) as exc:
                raise UpdateError(
                    f"{url}: download interrupted at {got} bytes ({exc}); run again to resume"
                ) from None
            length = resp.headers.get("Content-Length")
            if length is not None and got - offset < int(length):
                raise UpdateError(
                    f"{url}: download interrupted at {got} bytes; run again to resume"
                )
    if sha256:
        h = hashlib.sha256()
        with open(part, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        if h.hexdigest() != sha256.lower():
            part.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            raise UpdateError(
                f"{url}: downloaded file does not match the announced sha256; discarded"
            )
    os.replace(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest


# -- update requests (written by the daemon from PREFIX/DEVICE/cmd/update) ---------------------


class UpdateRequest(msgspec.Struct, kw_only=True, frozen=True):
    """The command the cloud sends on ``PREFIX/DEVICE/cmd/update`` (see docs/ota.md)."""

    cmd: Literal["update"] = "update"
    id: str = ""
    version: str
    url: str
    sha256: str | None = None
    size: int | None = None
    rollout: str | None = None


def run_request(updater: Updater) -> Outcome:
    """Carry out a pending update request, if there is one; remove it when handled."""
    path = updater.host(updater.config.request)
    with updater.locked():
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            updater.recover(restart=True)
            return Outcome(EXIT_OK, "no update requested")
        try:
            req = msgspec.json.decode(raw, type=UpdateRequest)
            parse_version(req.version)
        except (msgspec.DecodeError, msgspec.ValidationError, DeployError) as exc:
            path.unlink(missing_ok=True)
            updater.report(
                "update_failed",
                "warning",
                {"stage": "request", "reason": f"malformed request: {exc}"},
            )
            return Outcome(EXIT_REFUSED, f"malformed update request removed: {exc}")
        current = updater.current_version()
        if current is not None and parse_version(req.version) <= parse_version(current):
            path.unlink(missing_ok=True)
            return Outcome(EXIT_OK, f"already at {current}; request for {req.version} dropped")
        bundle = updater.fetch(req.url, sha256=req.sha256)  # UpdateError keeps the request: retried
        try:
            outcome = updater.install_locked(bundle)
        except (UpdateRefused, VerifyError) as exc:
            path.unlink(missing_ok=True)
            return Outcome(EXIT_REFUSED, str(exc))
        path.unlink(missing_ok=True)
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
        "run", help="carry out a pending update request (the timer and path units run this)"
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
        updater = Updater(load_config(cfg_path), root=root)
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
        outcome = handlers[args.command]()
    except UpdateBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return EXIT_BUSY
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
        return updater.install_locked(updater.fetch(url, sha256=sha256))


def _recover(updater: Updater) -> Outcome:
    with updater.locked():
        changed = updater.recover(restart=False)
    v = updater.current_version()
    return Outcome(EXIT_OK, f"current: {v}" + (" (recovered)" if changed else ""), v)


if __name__ == "__main__":
    sys.exit(main())
