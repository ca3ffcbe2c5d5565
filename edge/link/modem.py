"""The cellular modem's state, read from ModemManager's ``mmcli`` JSON output.

No ModemManager or no modem is normal (Wi-Fi, Ethernet, the bench): the
answer is then ``None`` and the heartbeat simply has no ``link`` field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from typing import Any

log = logging.getLogger(__name__)

TIMEOUT_S = 5.0


async def _mmcli(*args: str) -> Any:
    exe = shutil.which("mmcli")
    if exe is None:
        return None
    proc = await asyncio.create_subprocess_exec(
        exe, *args, "-J", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("mmcli %s did not answer within %.0f s", " ".join(args), TIMEOUT_S)
        return None
    if proc.returncode != 0:
        return None
    try:
        return json.loads(out)
    except ValueError:
        log.warning("mmcli %s printed something that is not JSON", " ".join(args))
        return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


async def modem_status() -> dict[str, Any] | None:
    """``{"access_tech", "signal_pct", "state", "operator", "registration"}`` or None."""
    listing = await _mmcli("-L")
    modems = (listing or {}).get("modem-list") or []
    if not modems:
        return None
    path = str(modems[0])
    info = await _mmcli("-m", path.rsplit("/", 1)[-1])
    modem = (info or {}).get("modem")
    if not isinstance(modem, dict):
        return None
    generic = modem.get("generic") or {}
    threegpp = modem.get("3gpp") or {}
    signal = generic.get("signal-quality") or {}
    techs = generic.get("access-technologies") or []
    out = {
        "access_tech": ",".join(str(t) for t in techs) if techs else None,
        "signal_pct": _int(signal.get("value")),
        "state": generic.get("state"),
        "operator": threegpp.get("operator-name"),
        "registration": threegpp.get("registration-state"),
    }
    return {k: v for k, v in out.items() if v not in (None, "", "--")}
