"""What the deploy tests build: tiny wheels, fake daemons, signed bundles, FAT images.

Nothing here downloads anything: wheels are zip files made on the spot (the
same layout pip builds), pip's own wheel comes from this Python's ensurepip,
and disk images are made with mkfs.fat (dosfstools) and a hand-written MBR.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

from deploy import bundle as bundle_mod
from deploy.keys import generate_signing_key, load_signing_key

REPO = Path(__file__).resolve().parents[2]
#: This machine and its glibc (``2.36``): what a fake device's updater checks a bundle against.
HOST_MACHINE = platform.machine()
HOST_GLIBC = ".".join((os.confstr("CS_GNU_LIBC_VERSION") or "glibc 2.17").split()[1].split(".")[:2])
SECTOR = 512


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    out_dir: Path,
    dist: str,
    version: str,
    files: dict[str, str],
    *,
    requires: list[str] | None = None,
    scripts: dict[str, str] | None = None,
    extras: dict[str, list[str]] | None = None,
) -> Path:
    """A pure-Python wheel (py3-none-any) with the given module files.

    ``extras`` maps an extra's name to its requirements (``Provides-Extra``).
    """
    norm = dist.replace("-", "_")
    info = f"{norm}-{version}.dist-info"
    content: dict[str, bytes] = {k: v.encode() for k, v in files.items()}
    meta = f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    for extra, reqs in (extras or {}).items():
        meta += f"Provides-Extra: {extra}\n"
        meta += "".join(f'Requires-Dist: {r}; extra == "{extra}"\n' for r in reqs)
    content[f"{info}/METADATA"] = meta.encode()
    content[f"{info}/WHEEL"] = (
        b"Wheel-Version: 1.0\nGenerator: satoyama-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    if scripts:
        content[f"{info}/entry_points.txt"] = (
            "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())
        ).encode()
    record = [f"{k},{_record_hash(v)},{len(v)}" for k, v in content.items()] + [f"{info}/RECORD,,"]
    content[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{norm}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in content.items():
            z.writestr(name, data)
    return path


FAKE_DAEMON = '''"""A stand-in for the daemon in updater tests: its version and its health."""
import sys

VERSION = {version!r}
HEALTHY = {healthy!r}


def main(argv=None):
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--version"]:
        import satoyama_dep
        print("edge", VERSION, satoyama_dep.NAME)
        return 0
    if args[:1] == ["health"]:
        return 0 if HEALTHY else 1
    if args[:2] == ["bytecode", "--prefix"]:  # the updater's install step
        import os
        if os.environ.get("SATOYAMA_FAKE_BYTECODE") == "fail":
            print("error: cannot compile the daemon's bytecode: disk full", file=sys.stderr)
            return 1
        os.makedirs(args[2])
        with open(os.path.join(args[2], "compiled"), "w") as f:
            f.write(VERSION)
        return 0
    return 2
'''


def fake_daemon_wheels(out_dir: Path, version: str, *, healthy: bool = True) -> Path:
    """``satoyama-edge`` VERSION (a fake, depending on ``satoyama-dep``) and its dependency."""
    make_wheel(out_dir, "satoyama-dep", "1.0", {"satoyama_dep/__init__.py": 'NAME = "dep-1.0"\n'})
    return make_wheel(
        out_dir,
        "satoyama-edge",
        version,
        {
            "satoyama_fake/__init__.py": FAKE_DAEMON.format(version=version, healthy=healthy),
            "satoyama_fake/__main__.py": (
                "import sys\nfrom satoyama_fake import main\nsys.exit(main())\n"
            ),
        },
        requires=["satoyama-dep>=1.0"],
        scripts={"edge": "satoyama_fake:main"},
    )


def new_signing_key(folder: Path, name: str = "ota") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    priv, pub = folder / f"{name}.key", folder / f"{name}.pub"
    generate_signing_key(priv, pub)
    return priv, pub


def build_fake_bundle(
    work: Path,
    version: str,
    key: Path,
    *,
    healthy: bool = True,
    min_from: str | None = None,
    extra_keys: list[Path] | None = None,
    with_units: bool = False,
    machine: str = HOST_MACHINE,
    glibc: str = HOST_GLIBC,
) -> Path:
    """A real signed bundle of the fake daemon (pip's wheel included from ensurepip).

    For this machine and its glibc unless ``machine`` or ``glibc`` say otherwise.
    """
    wheels = work / f"wheels-{version}-{'ok' if healthy else 'bad'}"
    daemon = fake_daemon_wheels(wheels, version, healthy=healthy)
    return bundle_mod.build(
        daemon_wheel=daemon,
        out_dir=work / f"out-{version}-{'ok' if healthy else 'bad'}",
        signing_keys=[load_signing_key(k) for k in [key, *(extra_keys or [])]],
        wheelhouse=wheels,
        units=REPO / "systemd" if with_units else None,
        min_from_version=min_from,
        python=f"{sys.version_info.major}.{sys.version_info.minor}",
        platform=machine,  # the updater refuses a bundle for another machine or a newer glibc
        glibc=glibc,
        check_resolution=False,
    )


def make_fat_image(path: Path, *, size_mib: int = 48, files: dict[str, bytes] | None = None) -> int:
    """A disk image like Raspberry Pi OS's: MBR, partition 1 FAT32 at 4 MiB.  Returns the offset."""
    start = 8192  # sectors: 4 MiB, as Raspberry Pi OS images
    total = size_mib * 1024 * 1024
    with open(path, "wb") as f:
        f.truncate(total)
    subprocess.run(
        [
            "mkfs.fat",
            "-F",
            "32",
            "-n",
            "BOOTFS",
            "--offset",
            str(start),
            str(path),
            str((total - start * SECTOR) // 1024),
        ],
        check=True,
        capture_output=True,
    )
    mbr = bytearray(SECTOR)
    struct.pack_into("<B3xB3xII", mbr, 446, 0, 0x0C, start, total // SECTOR - start)
    struct.pack_into("<B3xB3xII", mbr, 462, 0, 0x83, 0, 0)  # (no root partition in the test image)
    mbr[440:444] = bytes.fromhex("5a7a0e11")  # disk identifier (PARTUUID prefix)
    mbr[510:512] = b"\x55\xaa"
    with open(path, "r+b") as f:
        f.write(mbr)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": os.devnull}
    tmp = path.with_suffix(".seed")
    for name, data in (files or {}).items():
        tmp.write_bytes(data)
        subprocess.run(
            ["mcopy", "-i", f"{path}@@{start * SECTOR}", str(tmp), f"::/{name}"],
            check=True,
            env=env,
            capture_output=True,
        )
    tmp.unlink(missing_ok=True)
    return start * SECTOR


BOOKWORM_BOOT = {
    "config.txt": b"# http://rptl.io/configtxt\ndtparam=audio=on\narm_64bit=1\n",
    "cmdline.txt": b"console=serial0,115200 console=tty1 root=PARTUUID=5a7a0e11-02 rootfstype=ext4 "
    b"fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot\n",
    "start4.elf": b"\0" * 64,
}
TRIXIE_BOOT = {
    **BOOKWORM_BOOT,
    "user-data": b"#cloud-config\n# This is the user-data configuration file for cloud-init.\n",
    "meta-data": b"dsmode: local\ninstance_id: rpios-image\n",
    "network-config": b"# This file contains a netplan-compatible configuration\n",
}


def write_fleet(folder: Path, *, bundle: Path, verify_keys: list[Path], ca_dir: Path) -> Path:
    """A fleet.toml next to its CA and keys."""
    text = (
        '[fleet]\nname = "shiojiri"\n\n'
        '[broker]\nhost = "broker.example.jp"\nport = 8883\n\n'
        f"[ca]\ncert = {json.dumps(str(ca_dir / 'ca.crt'))}\n"
        f"key = {json.dumps(str(ca_dir / 'ca.key'))}\n\n"
        f"[ota]\nverify_keys = {json.dumps([str(k) for k in verify_keys])}\n"
        f"bundle = {json.dumps(str(bundle))}\n"
    )
    path = folder / "fleet.toml"
    path.write_text(text)
    return path


UPDATER_TOML = """\
verify_keys = {keys}
python = {python}
keep_releases = 2
max_attempts = 3
restart_command = [{python}, "-c", "import sys; open(sys.argv[1], 'a').write('restart\\\\n')",
                   "{{root}}/restarts.log"]
health = "command"
health_command = ["{{release}}/venv/bin/python", "-m", "satoyama_fake", "health"]
health_timeout_s = {health_timeout}
health_settle_s = 0.2
health_interval_s = 0.05
precheck_command = ["{{release}}/venv/bin/python", "-m", "satoyama_fake", "--version"]
"""


class FakeDevice:
    """A device's file system under a folder; the updater runs on it as a real subprocess."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def create(
        cls, root: Path, verify_keys: list[Path], *, health_timeout: float = 1.0
    ) -> FakeDevice:
        keys_dir = root / "etc/satoyama/ota-keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        names = []
        for k in verify_keys:
            (keys_dir / k.name).write_bytes(k.read_bytes())
            names.append(f"/etc/satoyama/ota-keys/{k.name}")
        (root / "etc/satoyama/updater.toml").write_text(
            UPDATER_TOML.format(
                keys=json.dumps(names),
                python=json.dumps(sys.executable),
                health_timeout=health_timeout,
            )
        )
        return cls(root)

    def updater(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.updater", "--root", str(self.root), *args],
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            cwd=REPO,
            timeout=timeout,
            # Its own process group: a fault-injected kill takes pip along, not pytest.
            start_new_session=True,
        )

    @property
    def opt(self) -> Path:
        return self.root / "opt/satoyama"

    def current(self) -> str | None:
        try:
            return Path(os.readlink(self.opt / "current")).name
        except OSError:
            return None

    def releases(self) -> list[str]:
        d = self.opt / "releases"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def restarts(self) -> int:
        log = self.root / "restarts.log"
        return len(log.read_text().splitlines()) if log.exists() else 0

    def events(self) -> list[dict[str, object]]:
        spool = self.root / "var/lib/satoyama-update/spool/events.jsonl"
        if not spool.exists():
            return []
        return [json.loads(line) for line in spool.read_text().splitlines()]

    def snapshot(self) -> dict[str, tuple[int, int]]:
        """Every path under /opt/satoyama with its size and mtime: to prove nothing was unpacked."""
        out = {}
        for p in sorted(self.opt.rglob("*")):
            st = p.lstat()
            out[str(p.relative_to(self.opt))] = (st.st_size, st.st_mtime_ns)
        return out

    def run_daemon(self) -> str:
        """What a boot runs: the current release's daemon.  Returns its --version line."""
        proc = subprocess.run(
            [str(self.opt / "current/venv/bin/python"), "-m", "satoyama_fake", "--version"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    def assert_complete_release(self) -> str:
        """``current`` names a release whose marker, venv and every installed file are intact."""
        version = self.current()
        assert version is not None, "no current link"
        rel = self.opt / "releases" / version
        assert (rel / ".complete").read_text().strip() == version
        assert not (self.opt / "current.new").exists()
        site = next((rel / "venv/lib").glob("python*/site-packages"))
        for dist in ("satoyama_edge", "satoyama_dep"):
            info = next(site.glob(f"{dist}-*.dist-info"))
            for line in (info / "RECORD").read_text().splitlines():
                name, digest, _ = line.rsplit(",", 2)
                if not digest or name.startswith(".."):
                    continue
                assert _record_hash((site / name).read_bytes()) == digest, f"{name} damaged"
        # The daemon's bytecode, compiled into the release by its own ``edge bytecode``
        # (the default bytecode_command), readable by the daemon's user.
        compiled = rel / "pycache/compiled"
        assert compiled.read_text() == version and compiled.stat().st_mode & 0o777 == 0o644
        line = self.run_daemon()
        assert line == f"edge {version} dep-1.0", line
        return version
