"""Power may fail at any step of an update: kill the updater at every step in turn.

Each scenario copies a device at 0.2.0, starts the real updater process with
``SATOYAMA_UPDATE_FAULT=STEP`` (it SIGKILLs itself and its process group -
pip included - on reaching STEP, like a power cut), then "boots": runs
``satoyama-update recover`` as the boot unit does, and checks that
``current`` names a complete, working release - the old one, unless the new
one had been confirmed healthy - with no half release, no stray link and an
idle journal.  Some scenarios then run the update again to show it converges.
That every step is really reached, in order, is checked in test_updater.py.

Scenarios run two at a time (this machine has two cores); each owns its folder.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from deploy.updater.steps import ROLLBACK_STEPS, STEPS
from tests.deploy.conftest import Fleet
from tests.deploy.helpers import FakeDevice

#: From this step on the new release had been confirmed healthy and survives a power cut.
CONFIRMED_FROM = STEPS.index("state_confirmed")
#: Scenarios that also run the update again afterwards (one per phase: each costs a pip run).
RERUN = {"pip_running", "link_created", "healthy"}


def _check_boot(dev: FakeDevice, step: str) -> str:
    boot = dev.updater("recover")
    assert boot.returncode == 0, f"{step}: recover failed: {boot.stderr}"
    version = dev.assert_complete_release()
    assert not (dev.opt / "current.new").exists()
    incomplete = [
        r for r in dev.releases() if not (dev.opt / "releases" / r / ".complete").exists()
    ]
    assert not incomplete, f"{step}: half releases left: {incomplete}"
    state = json.loads((dev.root / "var/lib/satoyama-update/state.json").read_text())
    assert state["phase"] == "idle", f"{step}: journal left in {state['phase']}"
    return version


def _scenario(fleet: Fleet, where: Path, step: str, bundle: Path) -> str:
    dev = fleet.device(where)
    killed = dev.updater("install", "--bundle", str(bundle), env={"SATOYAMA_UPDATE_FAULT": step})
    assert killed.returncode == -9, (
        f"{step}: the updater was not killed there "
        f"(exit {killed.returncode}: {killed.stderr[-500:]})"
    )
    version = _check_boot(dev, step)
    if bundle == fleet.v3:
        expected = "0.3.0" if STEPS.index(step) >= CONFIRMED_FROM else "0.2.0"
        assert version == expected, f"{step}: booted {version}, expected {expected}"
        if step in RERUN:
            again = dev.updater("install", "--bundle", str(bundle))
            assert again.returncode == 0, f"{step}: update after recovery failed: {again.stderr}"
            assert _check_boot(dev, step) == "0.3.0"
    else:
        assert version == "0.2.0", f"{step}: a bad release survived ({version})"
    return version


def test_power_cut_at_every_step_boots_a_complete_release(tmp_path: Path, fleet: Fleet) -> None:
    scenarios = [(s, fleet.v3) for s in STEPS] + [(s, fleet.v3_bad) for s in ROLLBACK_STEPS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            step: pool.submit(_scenario, fleet, tmp_path / f"{i:02d}-{step}", step, bundle)
            for i, (step, bundle) in enumerate(scenarios)
        }
    errors = []
    for step, fut in futures.items():
        try:
            fut.result()
        except AssertionError as exc:
            errors.append(f"{step}: {exc}")
    if errors:
        pytest.fail("\n".join(errors))
