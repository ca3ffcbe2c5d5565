"""Installing a bundle: refusals, journal, extract, venv, pip, precheck - then the switch.

Signature and hashes are verified before anything is unpacked; versions only
go up; a bundle built for another Python, machine or an older C library than
the device's is refused before anything is unpacked.  Until the release is
marked complete, a failed step removes the half release and keeps the running
one (:func:`fail`); from there on :mod:`deploy.updater.switch` takes over.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import subprocess
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from deploy.errors import DeployError, UpdateRefused, VerifyError
from deploy.updater.device import Updater
from deploy.updater.fetch import stage_bundle
from deploy.updater.journal import State, now, recover
from deploy.updater.steps import EXIT_FAILED, EXIT_OK, Outcome, checkpoint, log
from deploy.updater.switch import switch_over
from deploy.version import parse_version

if TYPE_CHECKING:
    from deploy.bundle import Manifest, VerifiedBundle

#: What the device's interpreter is asked about its platform (machine, C library).
PLATFORM_PROBE = "import os,platform;print(platform.machine(), os.confstr('CS_GNU_LIBC_VERSION'))"


class StepFailed(DeployError):
    """An install step before the switch failed: ``stage`` and ``reason`` go into the event."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


def install(u: Updater, bundle_path: Path, *, restart: bool = True) -> Outcome:
    """Verify, install and switch to a bundle; roll back if the daemon is not healthy."""
    with u.locked():
        return install_locked(u, bundle_path, restart=restart)


def install_locked(u: Updater, bundle_path: Path, *, restart: bool = True) -> Outcome:
    """:func:`install` for a caller that holds the lock already (fetch, then install)."""
    recover(u, restart=restart, allow_empty=True)
    checkpoint("locked")
    try:
        local = stage_bundle(u, bundle_path)
    except UpdateRefused as exc:
        u.report("update_failed", "warning", {"stage": "verify", "reason": str(exc)})
        raise
    checkpoint("copied")
    from deploy.bundle import verify  # cryptography: only when there is something to verify
    from deploy.keys import load_verify_keys

    trusted = load_verify_keys([u.host(k) for k in u.config.verify_keys])
    u.progress.phase("verifying the signature and every file's hash")
    try:
        vb = verify(local, trusted)
    except VerifyError as exc:
        u.report("update_failed", "warning", {"stage": "verify", "reason": str(exc)})
        local.unlink(missing_ok=True)  # damaged or forged: never worth keeping
        raise
    checkpoint("verified")
    try:
        outcome = install_verified(u, vb, restart=restart)
    except UpdateRefused:
        local.unlink(missing_ok=True)
        raise
    if outcome.code == EXIT_OK:  # a failed attempt keeps the download for a retry
        local.unlink(missing_ok=True)
    return outcome


def install_verified(u: Updater, vb: VerifiedBundle, *, restart: bool) -> Outcome:
    """The steps of an install, in order; each one is journalled or checkpointed."""
    version, current = vb.manifest.version, u.current_version()
    if current == version:
        return Outcome(EXIT_OK, f"already running {version}", version)
    state = u.load_state()
    refuse_unless_installable(u, vb.manifest, current, state)
    log.info("installing %s (running %s; signed by key %s)", version, current, vb.key_id)
    state = begin(u, version, current, state)
    rel = u.release_dir(version)
    try:
        unpack(u, vb, rel)
        create_venv(u, rel)
        pip_install(u, vb.manifest, rel)
        compile_bytecode(u, rel)
        precheck(u, rel)
    except StepFailed as exc:
        return fail(u, state, version, exc.stage, exc.reason)
    seal(u, version, rel)
    return switch_over(u, state, version, current, restart=restart)


# -- refusals: nothing is unpacked for a bundle that can never run here ----------------------


def refuse_unless_installable(u: Updater, m: Manifest, current: str | None, state: State) -> None:
    """Raise :class:`UpdateRefused` (reported: stage ``refused``) for a bundle not for here."""
    refusal = why_not_installable(u, m, current, state)
    if refusal:
        log.error("update refused: %s", refusal)
        u.report(
            "update_failed",
            "warning",
            {
                "from_version": current,
                "to_version": m.version,
                "stage": "refused",
                "reason": refusal,
            },
        )
        raise UpdateRefused(refusal)


def why_not_installable(u: Updater, m: Manifest, current: str | None, state: State) -> str | None:
    version = m.version
    if current is not None and parse_version(version) < parse_version(current):
        return f"{version} is older than the running {current} (downgrades are refused)"
    if (
        current is not None
        and m.min_from_version is not None
        and parse_version(current) < parse_version(m.min_from_version)
    ):
        return (
            f"{version} updates only from {m.min_from_version} or newer; this device runs {current}"
        )
    if state.attempts.get(version, 0) >= u.config.max_attempts:
        return (
            f"{version} already failed {state.attempts[version]} time(s); "
            "waiting for a newer version"
        )
    py = _probe(u, "import sys; print('%d.%d' % sys.version_info[:2])")
    if py != m.python:
        return f"bundle is built for Python {m.python}, this device has {py or 'no python'}"
    machine, _, libc = _probe(u, PLATFORM_PROBE).partition(" ")
    return platform_refusal(m.platform, machine, libc)


def _probe(u: Updater, code: str) -> str:
    """What the device's interpreter prints for ``code`` ("" when it cannot run)."""
    try:
        proc = subprocess.run(
            [u.config.python, "-c", code], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("%s: %s", u.config.python, exc)
        return ""
    return proc.stdout.strip()


def platform_refusal(platform: str, machine: str, libc: str) -> str | None:
    """Why a bundle for ``platform`` cannot run on ``machine`` with C library ``libc``.

    ``platform`` is the manifest's: ``manylinux_2_36_aarch64`` (the newest glibc
    the wheels may need, and the machine), or for bundles from before it named
    the glibc, just the machine (``aarch64``).  ``libc`` is what glibc's
    ``confstr`` says (``glibc 2.36``); anything else is no glibc.
    """
    tag = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", platform)
    if tag is None:  # an old bundle: the machine alone
        if machine != platform:
            return f"bundle is built for {platform}, this device is {machine or 'unknown'}"
        return None
    if machine != tag.group(2):
        return (
            f"bundle is built for {tag.group(2)} ({platform}), "
            f"this device is {machine or 'unknown'}"
        )
    need = int(tag.group(1))
    found = re.fullmatch(r"glibc (\d+)\.(\d+)(?:\.\d+)?", libc)
    if found is None:
        return f"bundle needs glibc 2.{need} or newer ({platform}), this device has no glibc"
    if (int(found.group(1)), int(found.group(2))) < (2, need):
        return (
            f"bundle needs glibc 2.{need} or newer ({platform}), "
            f"this device has glibc {found.group(1)}.{found.group(2)}"
        )
    return None


# -- the steps before the switch -------------------------------------------------------------


def begin(u: Updater, version: str, current: str | None, state: State) -> State:
    """Journal the install (and count the attempt) before anything is written."""
    state = State(
        phase="installing",
        target=version,
        previous=current,
        started=now(),
        attempts={**state.attempts, version: state.attempts.get(version, 0) + 1},
        request=state.request,
    )
    u.save_state(state)
    checkpoint("state_installing")
    return state


def unpack(u: Updater, vb: VerifiedBundle, rel: Path) -> None:
    """Write the bundle's files into a fresh release folder, hashing them again."""
    m = vb.manifest
    if rel.exists():
        u.remove_release(m.version)
    rel.mkdir(parents=True)
    first = [True]
    u.progress.phase(f"unpacking {len(m.files)} files", total=sum(f.size for f in m.files.values()))

    def on_file(name: str) -> None:
        u.progress.advance(m.files[name].size)
        if first[0]:
            first[0] = False
            checkpoint("extracting")

    from deploy.bundle import extract

    odd = sorted(f for f in m.files if f.startswith("wheels/") and not f.endswith(".whl"))
    if odd:  # pip would build a source package, running its code as root
        raise StepFailed("verify", f"not wheels: {', '.join(odd[:3])}")
    try:
        extract(vb, rel, on_file=on_file)
    except (VerifyError, OSError) as exc:
        raise StepFailed("extract", str(exc)) from None
    checkpoint("extracted")


def create_venv(u: Updater, rel: Path) -> None:
    u.progress.phase("creating the virtual environment")
    if not u.run(
        [u.config.python, "-m", "venv", "--without-pip", str(rel / "venv")],
        "creating the venv",
        umask=0o022,
    ):
        raise StepFailed("venv", "could not create the virtual environment")
    checkpoint("venv_created")


def pip_install(u: Updater, m: Manifest, rel: Path) -> None:
    """pip, offline, from the bundle's wheels only: nothing of the bundle's is built as root."""
    pip = [str(rel / "venv" / "bin" / "python")]
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
    u.progress.phase(
        f"installing {sum(f.startswith('wheels/') for f in m.files)} wheels (pip, offline)"
    )
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, umask=0o022
    )
    checkpoint("pip_running")
    out, _ = proc.communicate()
    if proc.returncode != 0:
        tail = " | ".join(out.strip().splitlines()[-3:])
        raise StepFailed("install", f"pip failed: {tail}")
    checkpoint("installed")


def compile_bytecode(u: Updater, rel: Path) -> None:
    """The daemon's optimised bytecode, into the release (``edge bytecode``): the daemon
    runs with ``PYTHONOPTIMIZE=2`` and cannot write bytecode of its own there."""
    if u.config.bytecode_command:
        u.progress.phase("compiling the daemon's bytecode")
        if not u.run(
            u.format(u.config.bytecode_command, rel), "compiling the daemon's bytecode",
            umask=0o022,
        ):
            raise StepFailed("bytecode", "could not compile the daemon's bytecode")
    checkpoint("bytecode_compiled")


def precheck(u: Updater, rel: Path) -> None:
    """The new release's own check (``edge validate``) before anything depends on it."""
    if u.config.precheck_command:
        u.progress.phase("checking the new release before switching")
    if u.config.precheck_command and not u.run(
        u.format(u.config.precheck_command, rel), "pre-switch check of the new release"
    ):
        raise StepFailed("precheck", "the new release failed its check before switching")
    checkpoint("prechecked")


def seal(u: Updater, version: str, rel: Path) -> None:
    """Drop what was only needed to install, open the release to the daemon, mark it complete."""
    shutil.rmtree(rel / "wheels", ignore_errors=True)  # installed; the SD card is small
    shutil.rmtree(rel / ".pip", ignore_errors=True)
    _publish_release(rel)
    u.mark_complete(version)
    checkpoint("marked_complete")


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


def fail(u: Updater, state: State, version: str, stage: str, reason: str) -> Outcome:
    """An install step failed before the switch: drop the half release, keep the old one."""
    # Report first: a power cut right after then costs a duplicate report, never a lost one.
    u.report(
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
        u.remove_release(version)
    state.phase, state.last_result = "idle", f"failed: {version} ({stage})"
    u.save_state(state)
    return Outcome(EXIT_FAILED, f"update to {version} failed at {stage}: {reason}", version)
