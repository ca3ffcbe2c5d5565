"""TLS session resumption against a real mosquitto that requires client certificates."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from edge.link.tlsresume import ResumingContext
from edge.sim.broker import Mosquitto
from edge.sim.cellular import CellularLink
from tests.support.pki import FleetCA, Issued

DEVICE = "shiojiri-kataoka-01"
ACL = """\
pattern write satoyama/v1/%u/events
user satoyama-cloud
topic read satoyama/v1/#
"""


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[FleetCA, Mosquitto]]:
    ca = FleetCA(tmp_path / "pki")
    server = ca.issue("broker.local", server=True)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    broker = Mosquitto(
        workdir=tmp_path / "broker", tls=(ca.ca_file, server.cert, server.key), acl_file=acl
    )
    broker.start()
    try:
        yield ca, broker
    finally:
        broker.close()


def resuming(ca: FleetCA, who: Issued) -> ResumingContext:
    ctx = ResumingContext()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=ca.ca_file)
    ctx.load_cert_chain(who.cert, who.key)
    return ctx


async def connect_once(ctx: ResumingContext, port: int, payload: bytes = b"") -> bool | None:
    """Connect as paho does (through aiomqtt), publish, disconnect: was the session resumed?"""
    async with aiomqtt.Client(
        "127.0.0.1", port, identifier=DEVICE, tls_context=ctx, tls_insecure=False, timeout=10
    ) as client:
        sock = client._client.socket()
        assert isinstance(sock, ssl.SSLSocket)
        reused = sock.session_reused
        if payload:
            await client.publish(f"satoyama/v1/{DEVICE}/events", payload, qos=1)
    return reused


def test_a_new_context_starts_with_a_full_handshake() -> None:
    ctx = ResumingContext()
    assert ctx.protocol == ssl.PROTOCOL_TLS_CLIENT
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.session is None
    assert (ctx.full_handshakes, ctx.resumed) == (0, 0)


async def test_the_second_connection_resumes_and_costs_fewer_bytes(
    fleet: tuple[FleetCA, Mosquitto],
) -> None:
    ca, broker = fleet
    ctx = resuming(ca, ca.issue(DEVICE))
    with CellularLink(broker.host, broker.port) as cell:
        assert await connect_once(ctx, cell.port) is False
        full = cell.bytes_up + cell.bytes_down
        assert ctx.session is not None and ctx.session.has_ticket
        cell.reset_counters()
        assert await connect_once(ctx, cell.port) is True
        resumed = cell.bytes_up + cell.bytes_down
    assert (ctx.full_handshakes, ctx.resumed) == (1, 1)
    assert resumed < full, (resumed, full)


async def test_a_resumed_connection_keeps_the_certificates_identity(
    fleet: tuple[FleetCA, Mosquitto],
) -> None:
    """The broker's ACL names the device by its certificate; a resumed session still does."""
    ca, broker = fleet
    ctx = resuming(ca, ca.issue(DEVICE))
    cloud_ctx = ssl.create_default_context(cafile=str(ca.ca_file))
    cloud = ca.issue("satoyama-cloud")
    cloud_ctx.load_cert_chain(cloud.cert, cloud.key)
    async with aiomqtt.Client(
        broker.host, broker.port, identifier="cloud", tls_context=cloud_ctx, timeout=10
    ) as spy:
        await spy.subscribe("satoyama/v1/+/events", qos=1)
        assert await connect_once(ctx, broker.port, b"first") is False
        assert await connect_once(ctx, broker.port, b"resumed") is True
        got = []
        async with asyncio.timeout(10):
            async for msg in spy.messages:
                got.append(msg.payload)
                if len(got) == 2:
                    break
    assert got == [b"first", b"resumed"]


async def test_a_broker_that_lost_its_tickets_gets_a_full_handshake(
    fleet: tuple[FleetCA, Mosquitto],
) -> None:
    ca, broker = fleet
    ctx = resuming(ca, ca.issue(DEVICE))
    assert await connect_once(ctx, broker.port) is False
    first = ctx.session
    broker.stop()  # a new process has new ticket keys
    broker.start()
    assert await connect_once(ctx, broker.port) is False
    assert ctx.session is not None and ctx.session is not first
    assert await connect_once(ctx, broker.port) is True
    assert (ctx.full_handshakes, ctx.resumed) == (2, 1)


async def test_a_failed_handshake_forgets_the_session(
    fleet: tuple[FleetCA, Mosquitto], tmp_path: Path
) -> None:
    """An impostor broker (another CA): the handshake fails and the session is not offered again."""
    ca, broker = fleet
    ctx = resuming(ca, ca.issue(DEVICE))
    assert await connect_once(ctx, broker.port) is False
    assert ctx.session is not None
    other = FleetCA(tmp_path / "other-pki", name="Someone Else's CA")
    impostor_cert = other.issue("broker.local", server=True)
    with Mosquitto(
        workdir=tmp_path / "impostor", tls=(other.ca_file, impostor_cert.cert, impostor_cert.key)
    ) as impostor:
        with pytest.raises(aiomqtt.MqttError):
            await connect_once(ctx, impostor.port)
    assert ctx.session is None
    assert await connect_once(ctx, broker.port) is False
