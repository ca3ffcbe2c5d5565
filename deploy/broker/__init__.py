"""The broker configuration the project ships: a mosquitto ``conf.d`` snippet and two ACLs.

``satoyama.conf`` goes to ``/etc/mosquitto/conf.d/``; ``fleet.acl``,
``claim.acl`` and the certificates to ``/etc/mosquitto/satoyama/``.  The files
are used as shipped: :func:`render` changes only that folder's path and the two
listener lines (port, bind address), so what the tests run is what operators
install.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from deploy.errors import DeployError

SHIPPED_DIR = "/etc/mosquitto/satoyama"
FLEET_PORT = 8883
CLAIM_PORT = 8884
FILES = ("satoyama.conf", "fleet.acl", "claim.acl")
CERT_FILES = ("fleet-ca.crt", "claim-ca.crt", "broker.crt", "broker.key")


def shipped(name: str) -> str:
    """The text of one shipped file, as it is in the package."""
    if name not in FILES:
        raise DeployError(f"no shipped broker file {name!r} (known: {', '.join(FILES)})")
    return resources.files("deploy.broker").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Rendered:
    conf: str
    fleet_acl: str
    claim_acl: str


def render(
    directory: Path | str = SHIPPED_DIR,
    *,
    fleet_port: int = FLEET_PORT,
    claim_port: int = CLAIM_PORT,
    bind: str | None = None,
) -> Rendered:
    """The shipped files with their folder, ports and (optionally) bind address changed."""
    conf = shipped("satoyama.conf")
    if str(directory) != SHIPPED_DIR:
        conf = conf.replace(f"{SHIPPED_DIR}/", f"{directory}/")
    where = f" {bind}" if bind else ""
    conf, n_fleet = re.subn(rf"(?m)^listener {FLEET_PORT}$", f"listener {fleet_port}{where}", conf)
    conf, n_claim = re.subn(rf"(?m)^listener {CLAIM_PORT}$", f"listener {claim_port}{where}", conf)
    if (n_fleet, n_claim) != (1, 1):  # the shipped file changed shape: fail, never guess
        raise DeployError("satoyama.conf: expected one fleet and one claim listener line")
    return Rendered(conf, shipped("fleet.acl"), shipped("claim.acl"))


def install(
    directory: Path,
    conf_dir: Path,
    *,
    fleet_port: int = FLEET_PORT,
    claim_port: int = CLAIM_PORT,
) -> list[Path]:
    """Write the ACLs into ``directory`` and ``satoyama.conf`` into ``conf_dir``.

    The certificates (:data:`CERT_FILES`) are the operator's to put into
    ``directory``; a missing one is named, and nothing is written."""
    missing = [n for n in CERT_FILES if not (directory / n).is_file()]
    if missing:
        raise DeployError(
            f"{directory}: missing {', '.join(missing)} (the fleet CA and claim CA "
            "certificates, the broker's certificate and key: docs/security.md)"
        )
    r = render(directory.resolve(), fleet_port=fleet_port, claim_port=claim_port)
    written = []
    for path, text in (
        (directory / "fleet.acl", r.fleet_acl),
        (directory / "claim.acl", r.claim_acl),
        (conf_dir / "satoyama.conf", r.conf),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
