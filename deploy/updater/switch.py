"""Switching to a new release: switch, restart, wait for health, confirm - or roll back.

A release is confirmed only after the restarted daemon stayed healthy for
``health_settle_s`` (within ``health_timeout_s``); else the previous release
comes back and the failure is reported as an event through the spool.
"""

from __future__ import annotations

import subprocess
import time

from deploy.updater.device import Updater
from deploy.updater.journal import State
from deploy.updater.steps import EXIT_FAILED, EXIT_OK, Outcome, checkpoint, log


def switch_over(
    u: Updater, state: State, version: str, current: str | None, *, restart: bool
) -> Outcome:
    """Make a complete release current; with ``restart``, keep it only if the daemon is healthy."""
    u.progress.phase(f"switching to {version}")
    state.phase = "switching"
    u.save_state(state)
    checkpoint("state_switching")
    u.switch_to(version)
    checkpoint("switched")
    state.phase = "switched"
    u.save_state(state)
    checkpoint("state_switched")
    if restart:
        u.progress.phase("restarting the daemon")
        restarted = u.restart_daemon()
        checkpoint("restarted")
        if not restarted:
            # With Type=notify, systemctl restart fails when the daemon exits before READY=1:
            # no health wait ran, so say what failed, not that a wait ran out.
            return rollback(u, state, version, f"the daemon did not start ({u.last_failure})")
        if not wait_healthy(u):
            return rollback(
                u,
                state,
                version,
                f"the daemon did not report healthy within {u.config.health_timeout_s:g} s",
            )
        checkpoint("healthy")
    return confirm(u, state, version, current)


def confirm(u: Updater, state: State, version: str, current: str | None) -> Outcome:
    """The new release stays: journal it, report it, prune the oldest releases."""
    state.phase, state.last_result = "idle", f"installed: {version}"
    state.attempts.pop(version, None)
    u.save_state(state)
    checkpoint("state_confirmed")
    u.report("update_installed", "info", {"from_version": current, "to_version": version})
    prune(u)
    checkpoint("done")
    return Outcome(EXIT_OK, f"updated {current or 'nothing'} -> {version}", version)


def _systemd_show(u: Updater) -> dict[str, str]:
    proc = subprocess.run(
        [
            "systemctl",
            "show",
            u.config.health_unit,
            "--property=ActiveState,SubState,NRestarts,InvocationID",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)


def wait_healthy(u: Updater) -> bool:
    """Healthy for ``health_settle_s`` without a break, within ``health_timeout_s``.

    systemd: ActiveState=active/running (with Type=notify that means the
    daemon sent READY=1; the watchdog keeps it honest) and no restart
    since we started watching.  command: the health command exits 0.
    """
    cfg = u.config
    baseline: str | None = None
    start = time.monotonic()
    healthy_since: float | None = None
    u.progress.phase(
        f"waiting for the daemon to stay healthy for {cfg.health_settle_s:g} s",
        total=cfg.health_timeout_s,
        unit="s",
    )
    while True:
        if cfg.health == "systemd":
            try:
                props = _systemd_show(u)
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("health probe: %s", exc)
                props = {}
            ok = props.get("ActiveState") == "active" and props.get("SubState") == "running"
            if ok and baseline is None:
                baseline = props.get("InvocationID", "")
            ok = ok and props.get("InvocationID", "") == baseline
        else:
            ok = u.run(u.format(cfg.health_command), "health check", cfg.health_interval_s * 10 + 5)
        now = time.monotonic()
        if ok:
            healthy_since = now if healthy_since is None else healthy_since
            if now - healthy_since >= cfg.health_settle_s:
                u.progress.finish("healthy")
                return True
        else:
            healthy_since = None
        u.progress.update(
            now - start,
            note=f"healthy for {now - healthy_since:.0f} s" if healthy_since else "not yet",
        )
        if now - start >= cfg.health_timeout_s:
            u.progress.finish("not healthy")
            return False
        time.sleep(cfg.health_interval_s)


def rollback(u: Updater, state: State, version: str, reason: str) -> Outcome:
    """The new release is not healthy: go back to the previous one (if there is one)."""
    previous = state.previous
    log.error("update to %s failed: %s", version, reason)
    if previous is None or not u.is_complete(previous):
        # First install: there is nothing to go back to; keep the new release running.
        state.phase, state.last_result = "idle", f"unhealthy: {version} (no previous release)"
        u.save_state(state)
        u.report(
            "update_failed",
            "alarm",
            {
                "from_version": None,
                "to_version": version,
                "stage": "health",
                "reason": reason + "; no previous release to go back to",
            },
        )
        return Outcome(EXIT_FAILED, f"{version} is not healthy and there is nothing to go back to")
    u.report(
        "update_failed",
        "warning",
        {
            "from_version": previous,
            "to_version": version,
            "stage": "health",
            "reason": reason + f"; rolled back to {previous}",
        },
    )
    u.progress.phase(f"rolling back to {previous}")
    state.phase = "rolling_back"
    u.save_state(state)
    checkpoint("rollback_state")
    u.switch_to(previous, step=None)
    checkpoint("rollback_switched")
    u.restart_daemon()
    checkpoint("rollback_restarted")
    u.remove_release(version)
    state.phase, state.last_result = "idle", f"rolled back: {version} -> {previous}"
    u.save_state(state)
    checkpoint("rolled_back")
    if not wait_healthy(u):
        log.error("the previous release %s is not healthy either", previous)
    return Outcome(EXIT_FAILED, f"{version} was not healthy; rolled back to {previous}", previous)


def prune(u: Updater) -> None:
    """Keep at most ``keep_releases`` releases: never the current or the previous one."""
    releases = u.complete_releases()
    state = u.load_state()
    protect = {u.link_target(), state.previous}
    excess = len(releases) - u.config.keep_releases
    for version in releases:  # oldest first
        if excess <= 0:
            break
        if version in protect:
            continue
        u.remove_release(version)
        excess -= 1
        log.info("removed old release %s", version)
        checkpoint("pruning")
