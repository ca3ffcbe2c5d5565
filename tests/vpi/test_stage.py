"""A real card image provisioned, first-booted and running the daemon under
qemu-system-aarch64, checked as a user would (scripts/vpi/stage.py does the work):
bench scenarios run inside the VM and mailed on the host, power cuts in the middle
of an event burst and of an update, on a card that loses what the guest never
flushed; updates fetched over HTTPS from the host, a bad release rolled back.

Run it with ``pytest -m vpi tests/vpi`` (or ``SATOYAMA_VPI=1``); the default run
deselects it.  It fails, never skips, when QEMU or the image tools are missing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.vpi, pytest.mark.timeout(3600)]


def test_the_virtual_pi_boots_updates_and_survives_power_cuts(tmp_path: Path) -> None:
    missing = [t for t in ("qemu-system-aarch64", "mtype", "ssh") if shutil.which(t) is None]
    assert not missing, (
        f"the virtual Pi stage needs {', '.join(missing)}: "
        "apt-get install qemu-system-arm mtools openssh-client"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/vpi/stage.py"),
            "--workdir",
            str(tmp_path),
            "--updates",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3500,
    )
    assert proc.returncode == 0, "the stage failed (its progress is above)"
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["release"] == "releases/0.1.0"
    assert figures["arm64"].startswith("aarch64")
    assert "posture.tflite" in figures["arm64"]
    assert figures["at_rest"]["time_to_ready_s"] > 0
    # The daemon runs on the optimised bytecode the updater compiled into its release.
    assert figures["bytecode"]["check"].startswith("0 of the daemon's modules lack")
    assert figures["bytecode"]["pyc_files"] > 300
    assert figures["mail"]["to"] == ["farmer@example.jp"]
    assert "watchdog" in figures["watchdog"]["journal"].lower()
    cuts = figures["burst_power_cuts"]
    assert [c["cut_at"] for c in cuts] == ["spooled", "delivering"]
    for cut in cuts:
        assert cut["delivered_after_boot"] == cut["spooled"] > 0, cut
        assert cut["duplicate_mails"] == 0, cut
    assert cuts[1]["delivered_before_cut"] >= 1, "the second cut is in the middle of delivery"
    bench = figures["bench"]
    assert [b["scenario"] for b in bench] == ["boar-deterrent"]
    for run in bench:
        assert run["passed"] is True and run["map_link"] is True, run
    assert figures["update"]["current"] == "0.2.0"
    assert [c["current"] for c in figures["power_cuts"]] == ["0.2.0", "0.2.0"]
    for cut in figures["power_cuts"]:
        assert cut["mail"]["to"] == ["farmer@example.jp"], cut
    bad = figures["bad_release"]
    assert bad["exit"] == 1 and bad["current_after_rollback"] == "0.2.0", bad
    assert bad["deaths_after_ready"] >= 2, bad
    assert bad["after_reboot"] == {"current": "releases/0.2.0", "daemon": "running"}, bad
    assert bad["mail"]["to"] == ["farmer@example.jp"]
    assert bad["failed_attempts"] == {"0.4.0": 3}, bad
    fetched = [r for r in figures["https_requests"] if '"GET /satoyama-edge-' in r]
    assert fetched, "the updates were not fetched over HTTPS from the host"
