"""The daemon's user cannot make the root updater write for it (finding: daemon user -> root).

An attacker who runs code as the daemon's user can write the daemon's own
folder (/var/lib/satoyama, its StateDirectory) and nothing else.  Each attack
below is carried out by a real unprivileged user (``setpriv``), against the
updater running as root on a fake device root; each must fail, and the updater
must refuse or go on safely - never write through the attacker's links.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.deploy.conftest import Fleet
from tests.deploy.helpers import FakeDevice


@pytest.fixture(autouse=True)
def _as_root() -> None:
    """These attacks need root (the updater) and another user (the attacker): fail, never skip."""
    if os.geteuid() != 0:
        pytest.fail("run as root: the updater runs as root, the attacker as another user")


ATTACKER = "satoyama-attacker"


@dataclass(frozen=True)
class Attacker:
    uid: int
    gid: int

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """Run a command as the attacker (no groups, no capabilities)."""
        return subprocess.run(
            [
                "setpriv",
                f"--reuid={self.uid}",
                f"--regid={self.gid}",
                "--clear-groups",
                "--",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )

    def symlink(self, target: Path, link: Path) -> subprocess.CompletedProcess[str]:
        return self.run("ln", "-s", str(target), str(link))


@pytest.fixture(scope="session")
def attacker() -> Attacker:
    """A real unprivileged user standing in for the daemon's user (created once if missing)."""
    try:
        pw = pwd.getpwnam(ATTACKER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ATTACKER],
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam(ATTACKER)
    return Attacker(pw.pw_uid, pw.pw_gid)


@pytest.fixture
def device(fleet: Fleet, attacker: Attacker) -> Iterator[FakeDevice]:
    """A device at 0.2.0 whose /var/lib/satoyama belongs to the attacker, as on a real one.

    Under /var/tmp (0755 all the way) rather than pytest's 0700 tmp folder, so the
    attacker can reach its own folder at all.
    """
    top = Path(tempfile.mkdtemp(prefix="satoyama-privsep-", dir="/var/tmp"))
    try:
        top.chmod(0o755)
        dev = fleet.device(top / "root")
        daemon_dir = dev.root / "var/lib/satoyama"
        (daemon_dir / "update-requests").mkdir(parents=True, exist_ok=True)
        for d in (daemon_dir, daemon_dir / "update-requests"):
            os.chown(d, attacker.uid, attacker.gid)
            d.chmod(0o750)
        yield dev
    finally:
        shutil.rmtree(top)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _configure(dev: FakeDevice, line: str) -> None:
    with open(dev.root / "etc/satoyama/updater.toml", "a") as f:
        f.write(line + "\n")


def _owned_by_attacker_only(folder: Path, attacker: Attacker) -> bool:
    return all(p.lstat().st_uid == attacker.uid for p in folder.rglob("*"))


# -- 1. a link planted where root copies a bundle -------------------------------------------


def test_a_link_planted_as_the_bundle_copy_is_never_written_through(
    device: FakeDevice, fleet: Fleet, attacker: Attacker
) -> None:
    """Before: downloads/NAME.tar.copy -> venv/bin/edge made root write the attacker's bytes
    into a program root runs.  Now root's downloads are in a folder the attacker cannot write,
    and a configuration still naming the old folder gets the new one."""
    victim = device.opt / "releases/0.2.0/venv/bin/edge"
    before = _sha(victim)
    own = device.root / "var/lib/satoyama-update/downloads"
    refused = attacker.symlink(victim, own / "satoyama-edge-0.3.0.tar.copy")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    legacy = device.root / "var/lib/satoyama/update/downloads"
    assert attacker.run("mkdir", "-p", str(legacy)).returncode == 0
    assert attacker.symlink(victim, legacy / "satoyama-edge-0.3.0.tar.copy").returncode == 0
    _configure(device, 'state_dir = "/var/lib/satoyama/update"')  # what old devices have
    proc = device.updater("install", "--bundle", str(fleet.v3))
    assert proc.returncode == 0, proc.stderr
    assert "writable by the daemon's user" in proc.stderr
    assert _sha(victim) == before, "root wrote through the attacker's link"
    assert (legacy / "satoyama-edge-0.3.0.tar.copy").is_symlink()
    assert _owned_by_attacker_only(device.root / "var/lib/satoyama", attacker)
    assert device.assert_complete_release() == "0.3.0"


def test_a_state_folder_the_daemon_user_can_write_is_refused(
    device: FakeDevice, fleet: Fleet, attacker: Attacker
) -> None:
    victim = device.opt / "releases/0.2.0/venv/bin/edge"
    before = _sha(victim)
    mine = device.root / "var/lib/satoyama/mystate"
    assert attacker.run("mkdir", "-p", str(mine / "downloads")).returncode == 0
    assert attacker.symlink(victim, mine / "downloads/satoyama-edge-0.3.0.tar.copy").returncode == 0
    _configure(device, 'state_dir = "/var/lib/satoyama/mystate"')
    proc = device.updater("install", "--bundle", str(fleet.v3))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to keep root's files" in proc.stderr
    assert _sha(victim) == before
    assert _owned_by_attacker_only(device.root / "var/lib/satoyama", attacker)
    assert device.assert_complete_release() == "0.2.0"


# -- 2. a link planted as the event spool ------------------------------------------------------


def test_a_linked_spool_cannot_make_root_create_files(
    device: FakeDevice, other_bundle: Path, attacker: Attacker
) -> None:
    """Before: spool -> /etc/ld.so.preload made root create it.  Now the spool is root's."""
    preload = device.root / "etc/ld.so.preload"
    legacy = device.root / "var/lib/satoyama/spool"
    assert attacker.run("mkdir", "-p", str(legacy)).returncode == 0
    assert attacker.symlink(preload, legacy / "events.jsonl").returncode == 0
    spool_dir = device.root / "var/lib/satoyama-update/spool"
    refused = attacker.symlink(preload, spool_dir / "x")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    _configure(device, 'spool = "/var/lib/satoyama/spool/events.jsonl"')  # old devices
    proc = device.updater("install", "--bundle", str(other_bundle))  # refused: it reports
    assert proc.returncode == 3, proc.stderr
    assert not preload.exists()
    [event] = device.events()
    assert event["kind"] == "update_failed"
    assert _owned_by_attacker_only(device.root / "var/lib/satoyama", attacker)


def test_a_spool_in_a_folder_the_daemon_user_can_write_is_refused(
    device: FakeDevice, other_bundle: Path, attacker: Attacker
) -> None:
    preload = device.root / "etc/ld.so.preload"
    assert (
        attacker.symlink(device.root / "etc", device.root / "var/lib/satoyama/evil").returncode == 0
    )
    _configure(device, 'spool = "/var/lib/satoyama/evil/ld.so.preload"')
    proc = device.updater("install", "--bundle", str(other_bundle))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not preload.exists()


@pytest.fixture
def other_bundle(tmp_path: Path, fleet: Fleet) -> Path:
    """A bundle the device refuses (a downgrade): the updater then reports an event."""
    return fleet.v1


# -- 3. a link planted as the journal's temporary file ----------------------------------------


def test_a_link_planted_as_the_journal_temporary_file_is_never_written_through(
    device: FakeDevice, fleet: Fleet, attacker: Attacker
) -> None:
    """Before: .state.json.tmp -> updater.toml let the journal overwrite root's settings."""
    settings = device.root / "etc/satoyama/updater.toml"
    state = device.root / "var/lib/satoyama-update"
    refused = attacker.symlink(settings, state / ".state.json.tmp")
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    legacy = device.root / "var/lib/satoyama/update"
    assert attacker.run("mkdir", "-p", str(legacy)).returncode == 0
    assert attacker.symlink(settings, legacy / ".state.json.tmp").returncode == 0
    _configure(device, 'state_dir = "/var/lib/satoyama/update"')
    before = _sha(settings)
    # Even a link that got into root's own folder somehow is replaced, not followed.
    (state / ".state.json.tmp").symlink_to(settings)
    proc = device.updater("install", "--bundle", str(fleet.v3))
    assert proc.returncode == 0, proc.stderr
    assert _sha(settings) == before, "the journal was written through a link"
    assert json.loads((state / "state.json").read_text())["phase"] == "idle"
    assert not (state / ".state.json.tmp").exists()


def test_a_forged_journal_cannot_put_text_into_events(device: FakeDevice) -> None:
    """The journal's versions are versions: anything else reads as damage, not as text to send."""
    state = device.root / "var/lib/satoyama-update/state.json"
    state.write_text(
        json.dumps({"phase": "installing", "target": "0.3.0\nEVIL", "previous": "0.2.0"})
    )
    proc = device.updater("recover")
    assert proc.returncode == 0, proc.stderr
    assert "EVIL" not in json.dumps(device.events())
    assert device.assert_complete_release() == "0.2.0"


# -- the drop folder: requests and acknowledgements, read but never followed -------------------


SECRET_REQUEST = {
    "cmd": "update",
    "id": "secret-token-1234",
    "version": "0.3.0",
    "url": "https://127.0.0.1:1/satoyama-edge-0.3.0.tar",
    "sha256": "ab" * 32,
    "size": 1000,
}


@pytest.mark.parametrize("how", ["file-link", "folder-link", "fifo", "hardlink-owner"])
def test_an_unsafe_request_file_is_refused_once_and_not_read(
    device: FakeDevice, attacker: Attacker, how: str
) -> None:
    """A request that is a link (to a root-only file), a link to a folder, a FIFO (that
    would block a naive reader) or a file of someone else's: refused, reported once."""
    secret = device.root / "etc/satoyama/secret.json"
    secret.write_text(json.dumps(SECRET_REQUEST))
    secret.chmod(0o600)
    drop = device.root / "var/lib/satoyama/update-requests"
    if how == "file-link":
        assert attacker.symlink(secret, drop / "request.json").returncode == 0
    elif how == "folder-link":
        assert attacker.run("rmdir", str(drop)).returncode == 0
        (device.root / "etc/satoyama/request.json").write_text(json.dumps(SECRET_REQUEST))
        assert attacker.symlink(device.root / "etc/satoyama", drop).returncode == 0
    elif how == "fifo":
        assert attacker.run("mkfifo", str(drop / "request.json")).returncode == 0
    else:  # a root-owned file the attacker cannot have written (a stand-in for a hard link)
        (drop / "request.json").write_text(json.dumps(SECRET_REQUEST))
        os.chown(drop / "request.json", 12345, 12345)
    proc = device.updater("run", timeout=60)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "unsafe request file" in proc.stdout
    [event] = device.events()
    assert event["data"]["stage"] == "request"  # type: ignore[index]
    assert "secret-token" not in json.dumps(event)
    assert device.updater("run").stdout.strip() == "update request already handled"
    assert len(device.events()) == 1
    assert device.assert_complete_release() == "0.2.0"


def test_a_linked_acknowledgement_is_ignored(
    device: FakeDevice, other_bundle: Path, attacker: Attacker
) -> None:
    secret = device.root / "etc/satoyama/ota-keys/secret"
    secret.write_text("TOP-SECRET\n")
    secret.chmod(0o600)
    drop = device.root / "var/lib/satoyama/update-requests"
    assert attacker.symlink(secret, drop / "events.ack").returncode == 0
    proc = device.updater("install", "--bundle", str(other_bundle))
    assert proc.returncode == 3, proc.stderr
    assert "ignoring the daemon's acknowledgement" in proc.stderr
    assert len(device.events()) == 1 and "TOP-SECRET" not in json.dumps(device.events())


def _readable_copy(where: Path, *modules: str) -> Path:
    """A world-readable copy of ``modules`` (packages or single files, as imported here)."""
    where.mkdir(mode=0o755)
    for name in modules:
        origin = Path(importlib.import_module(name).__file__ or "")
        if origin.name == "__init__.py":
            shutil.copytree(origin.parent, where / name,
                            ignore=shutil.ignore_patterns("__pycache__", "sim", "tools"))
            home = origin.parent.parent
        else:
            shutil.copy2(origin, where / origin.name)
            home = origin.parent
        for info in home.glob(f"{name}-*.dist-info"):  # what importlib.metadata reads
            shutil.copytree(info, where / info.name)
    for p in [where, *where.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    return where


def test_the_daemon_acknowledges_what_it_sent_and_the_updater_drops_it(
    device: FakeDevice, other_bundle: Path, attacker: Attacker
) -> None:
    """The daemon's side (edge.link.spool) reads root's spool as its own user and acknowledges in
    its drop folder; the updater's next write drops what was acknowledged."""
    assert device.updater("install", "--bundle", str(other_bundle)).returncode == 3
    spool = device.root / "var/lib/satoyama-update/spool/events.jsonl"
    ack = device.root / "var/lib/satoyama/update-requests/events.ack"
    code = (
        "import sys, json; from pathlib import Path; from edge.link import spool;"
        "ev, taken = spool.read(Path(sys.argv[1]), ack=Path(sys.argv[2]));"
        "spool.remove_prefix(Path(sys.argv[1]), taken, ack=Path(sys.argv[2]));"
        "print(json.dumps([e['id'] for e in ev]))"
    )
    # The system's Python, and a copy of the code the reader imports: the checkout and its
    # virtualenv may sit where the attacker cannot reach (a CI clone in a 0700 temporary
    # folder), while on a device the daemon's user reads its own venv.
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    code_dir = _readable_copy(device.root / "daemon-code", "edge", "msgspec", "uuid6",
                              "typing_extensions")
    daemon = ("env", f"PYTHONPATH={code_dir}", python, "-c", code, str(spool), str(ack))
    read = attacker.run(*daemon)
    assert read.returncode == 0, read.stderr
    [first] = json.loads(read.stdout)
    assert ack.read_text().strip() == first and ack.stat().st_uid == attacker.uid
    again = attacker.run(*daemon)
    assert json.loads(again.stdout) == [], "acknowledged lines are not sent again"
    assert device.updater("install", "--bundle", str(other_bundle)).returncode == 3
    assert [e["id"] for e in device.events()] != [first] and len(device.events()) == 1
    tampered = attacker.run("sh", "-c", f"echo x >> {spool}")
    assert tampered.returncode != 0, "the daemon's user cannot write root's spool"
