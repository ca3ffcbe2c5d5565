"""The unit files: systemd-analyze verify where the binary exists, an INI check always."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.deploy.helpers import REPO

UNIT_DIR = REPO / "systemd"
UNITS = sorted(p for p in UNIT_DIR.iterdir() if p.suffix in (".service", ".timer", ".path"))
SECTIONS = {"Unit", "Service", "Install", "Timer", "Path"}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A strict reading of systemd's INI dialect: sections, KEY=VALUE, comments, continuations."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{path.name}:{n}: bad section header"
            name = line[1:-1]
            assert name in SECTIONS, f"{path.name}:{n}: unknown section [{name}]"
            current = sections.setdefault(name, {})
            continue
        assert current is not None, f"{path.name}:{n}: key outside a section"
        key, sep, value = line.partition("=")
        assert sep and key.strip().isidentifier(), f"{path.name}:{n}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    assert not pending, f"{path.name}: ends in a continuation"
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    values = unit[section][key]
    assert len(values) == 1, f"{section}.{key} given {len(values)} times"
    return values[0]


def test_units_parse_and_say_what_the_daemon_needs() -> None:
    assert {p.name for p in UNITS} >= {
        "satoyama-edge.service",
        "satoyama-update.service",
        "satoyama-update.timer",
        "satoyama-update.path",
        "satoyama-update-recover.service",
        "satoyama-notifier.service",
        "satoyama-console.service",
    }
    units = {p.name: parse_unit(p) for p in UNITS}
    edge = units["satoyama-edge.service"]
    assert one(edge, "Service", "Type") == "notify"
    assert int(one(edge, "Service", "WatchdogSec")) > 0
    assert one(edge, "Service", "Restart") == "on-failure"
    assert (
        int(one(edge, "Unit", "StartLimitBurst")) >= 3
        and int(one(edge, "Unit", "StartLimitIntervalSec")) > 0
    )
    assert one(edge, "Service", "User") == "satoyama"
    assert set(one(edge, "Service", "SupplementaryGroups").split()) == {"gpio", "i2c", "dialout"}
    assert one(edge, "Service", "StateDirectory") == "satoyama"
    for key, value in (
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
    ):
        assert one(edge, "Service", key) == value, key
    assert set(one(edge, "Service", "RestrictAddressFamilies").split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
    }
    assert "/opt/satoyama/current/" in one(edge, "Service", "ExecStart")
    assert "satoyama-update-recover.service" in one(edge, "Unit", "After")
    recover = units["satoyama-update-recover.service"]
    assert "satoyama-edge.service" in one(recover, "Unit", "Before")
    assert one(units["satoyama-update.path"], "Path", "Unit") == "satoyama-update.service"
    assert one(units["satoyama-update.timer"], "Timer", "Persistent") == "true"
    notifier = units["satoyama-notifier.service"]
    assert one(notifier, "Service", "User") == "satoyama-notifier"
    console = units["satoyama-console.service"]
    assert one(console, "Service", "User") == "satoyama-notifier"  # reads the notifier's store
    assert one(console, "Service", "ExecStart").endswith(" serve")
    for name, unit in units.items():
        if name.endswith(".service"):
            assert "ExecStart" in unit["Service"], name


def _exec_paths(unit: Path) -> list[str]:
    """The programs a unit starts (ExecStart's first word, without systemd's prefixes)."""
    starts = parse_unit(unit).get("Service", {}).get("ExecStart", [])
    return [v.lstrip("-@+!:").split()[0] for v in starts]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """Where systemd-analyze exists, it must accept every unit without a single warning.

    It checks that ExecStart's programs exist, so it runs on a scratch root
    holding stand-ins for them, the units, and this system's own unit files
    (for targets such as sysinit.target).  Without the binary the INI check
    below is what remains (also run by the test above).
    """
    for unit in UNITS:
        parse_unit(unit)
    analyze = shutil.which("systemd-analyze")
    system_units = next(
        (d for d in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system")) if d.is_dir()),
        None,
    )
    if analyze is None or system_units is None:
        return  # no systemd here: the INI check above is the check (documented in docs/ota.md)
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, root / "etc/systemd/system" / unit.name)
        for prog in _exec_paths(unit):
            stub = root / prog.lstrip("/")
            stub.parent.mkdir(parents=True, exist_ok=True)
            stub.write_text("#!/bin/sh\n")
            stub.chmod(0o755)
    proc = subprocess.run(
        [
            analyze,
            "verify",
            f"--root={root}",
            "--man=no",
            "--generators=no",
            *[str(root / "etc/systemd/system" / u.name) for u in UNITS],
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr
    )


def test_sysusers_file() -> None:
    lines = [
        ln.split()
        for ln in (UNIT_DIR / "satoyama.sysusers.conf").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert ["m", "satoyama", "gpio"] in lines and ["m", "satoyama", "dialout"] in lines
    assert any(ln[:2] == ["u", "satoyama"] for ln in lines)
    # dialout comes from systemd's own basic.conf: declaring it again is a conflict
    assert ["g", "dialout", "-", "-"] not in lines


#: The most ``systemd-analyze security`` may rate each service (lower is safer; 10 = unsandboxed).
EXPOSURE_LIMITS = {
    "satoyama-edge.service": 3.0,
    "satoyama-notifier.service": 3.0,
    "satoyama-console.service": 3.0,
    "satoyama-update.service": 5.0,
    "satoyama-update-recover.service": 5.0,
}


def test_services_are_sandboxed_within_their_exposure_limits() -> None:
    """``systemd-analyze security --offline=true`` on each unit file.

    No fallback: without systemd-analyze (Debian: the systemd package) this fails,
    because a sandbox nobody measures is a sandbox nobody keeps.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is required for this test (apt install systemd)"
    services = {p.name for p in UNITS if p.suffix == ".service"}
    assert services == set(EXPOSURE_LIMITS), "every service needs an exposure limit here"
    scores = {}
    for name in EXPOSURE_LIMITS:
        proc = subprocess.run(
            [analyze, "security", "--offline=true", "--no-pager", str(UNIT_DIR / name)],
            capture_output=True,
            text=True,
            env={"SYSTEMD_COLORS": "0", "PATH": "/usr/bin:/bin"},
        )
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
        assert match, f"{name}: no exposure level in:\n{proc.stdout}{proc.stderr}"
        scores[name] = float(match.group(1))
    assert all(scores[n] <= limit for n, limit in EXPOSURE_LIMITS.items()), scores


def test_the_updater_keeps_its_state_where_the_daemon_cannot_write() -> None:
    """The root units own /var/lib/satoyama-update; the daemon's unit owns /var/lib/satoyama."""
    units = {p.name: parse_unit(p) for p in UNITS}
    edge = units["satoyama-edge.service"]
    assert one(edge, "Service", "StateDirectory") == "satoyama"
    assert "satoyama-update" not in " ".join(edge["Service"].get("ReadWritePaths", []))
    assert one(edge, "Service", "DevicePolicy") == "closed"
    filters = edge["Service"]["SystemCallFilter"]
    assert filters[0] == "@system-service" and filters[-1] == "adjtimex", (
        "the recorder needs adjtimex() (read-only) to tell whether the clock is synchronised"
    )
    for name in ("satoyama-update.service", "satoyama-update-recover.service"):
        service = units[name]["Service"]
        assert one(units[name], "Service", "StateDirectory") == "satoyama-update", name
        assert one(units[name], "Service", "StateDirectoryMode") == "0711", name
        assert one(units[name], "Service", "UMask") == "0077", name
        assert one(units[name], "Service", "ProtectSystem") == "strict", name
        rw = " ".join(service.get("ReadWritePaths", [])).split()
        assert rw == ["/opt/satoyama"], f"{name}: writes only the releases and its state"
        assert not any(p.startswith("/var/lib/satoyama") for p in rw), name
    caps = {
        n: set(one(units[n], "Service", "CapabilityBoundingSet").split())
        for n in units
        if n.startswith("satoyama-update") and n.endswith(".service")
    }
    assert caps == {
        # reading the daemon's drop folder; restarting the daemon through systemd (D-Bus)
        "satoyama-update.service": {"CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"},
        "satoyama-update-recover.service": {"CAP_DAC_READ_SEARCH"},
    }
    update = units["satoyama-update.service"]
    assert "AF_UNIX" in one(update, "Service", "RestrictAddressFamilies"), (
        "systemctl restart talks to systemd over D-Bus (a unix socket)"
    )
