"""A real mosquitto running the broker configuration the project ships (deploy/broker/).

Only what :func:`deploy.broker.render` changes differs from what operators
install: the certificate folder, the two ports, the loopback bind address.
"""

from __future__ import annotations

import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.broker import render
from edge.sim.broker import Mosquitto, free_port
from tests.support.pki import FleetCA, Issued


@dataclass(frozen=True)
class ShippedBroker:
    broker: Mosquitto
    fleet_ca: FleetCA
    claim_ca: FleetCA
    claim_port: int

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    def tls(self, who: Issued | None) -> ssl.SSLContext:
        """A client's TLS: trusts the fleet CA (the broker's issuer), shows ``who``."""
        ctx = ssl.create_default_context(cafile=str(self.fleet_ca.ca_file))
        if who is not None:
            ctx.load_cert_chain(who.cert, who.key)
        return ctx


@contextmanager
def shipped_broker(
    folder: Path,
    fleet_ca: FleetCA | None = None,
    claim_ca: FleetCA | None = None,
    server: Issued | None = None,
) -> Iterator[ShippedBroker]:
    """Start mosquitto with the shipped satoyama.conf, fleet.acl and claim.acl
    (``server``: the broker's certificate and key; default: one for localhost)."""
    fleet_ca = fleet_ca or FleetCA(folder / "fleet-ca")
    claim_ca = claim_ca or FleetCA(folder / "claim-ca", name="Satoyama Test Claim CA")
    etc = folder / "etc-mosquitto-satoyama"
    etc.mkdir(parents=True)
    server = server or fleet_ca.issue("localhost", server=True)
    shutil.copy(fleet_ca.ca_file, etc / "fleet-ca.crt")
    shutil.copy(claim_ca.ca_file, etc / "claim-ca.crt")
    shutil.copy(server.cert, etc / "broker.crt")
    shutil.copy(server.key, etc / "broker.key")
    port, claim_port = free_port(), free_port()
    shipped = render(etc, fleet_port=port, claim_port=claim_port, bind="127.0.0.1")
    (etc / "fleet.acl").write_text(shipped.fleet_acl)
    (etc / "claim.acl").write_text(shipped.claim_acl)
    workdir = folder / "broker"
    workdir.mkdir()
    broker = Mosquitto(workdir=workdir, port=port, listeners=shipped.conf)
    broker.start()
    try:
        yield ShippedBroker(broker, fleet_ca, claim_ca, claim_port)
    finally:
        broker.close()
