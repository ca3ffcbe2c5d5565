"""SMTP delivery: how each kind of refusal is classified, against a real aiosmtpd server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from cloud.config import SmtpConfig
from cloud.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from cloud.mailer import Mailer
from edge.sim.broker import free_port

MESSAGE = b"From: alerts@example.jp\r\nTo: x@example.jp\r\nSubject: test\r\n\r\nhello\r\n"


class PickyServer:
    """aiosmtpd handler refusing some recipients the way real servers do."""

    def __init__(self) -> None:
        self.delivered: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.startswith("nobody@"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if address.startswith("full@"):
            return "452 4.2.2 Mailbox full, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.delivered.extend(envelope.rcpt_tos)
        return "250 OK queued"


@pytest.fixture
def picky() -> Iterator[tuple[PickyServer, int]]:
    handler, port = PickyServer(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def smtp_config(port: int) -> SmtpConfig:
    return SmtpConfig(host="127.0.0.1", port=port, sender="alerts@example.jp", timeout=5)


async def test_one_session_sends_several_mails_and_classifies_refusals(
    picky: tuple[PickyServer, int],
) -> None:
    handler, port = picky
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        await session.send("farmer@example.jp", MESSAGE)
        with pytest.raises(PermanentDeliveryError) as permanent:
            await session.send("nobody@example.jp", MESSAGE)
        with pytest.raises(TransientDeliveryError) as transient:
            await session.send("full@example.jp", MESSAGE)
        assert session.usable  # a refusal does not end the session
        await session.send("hunter@example.jp", MESSAGE)
    assert handler.delivered == ["farmer@example.jp", "hunter@example.jp"]
    assert permanent.value.reason == (
        "recipient refused: 550 5.1.1 <nobody@example.jp>: Recipient address rejected: User unknown"
    )
    assert transient.value.reason == "recipient refused: 452 4.2.2 Mailbox full, try again later"


async def test_unreachable_server_is_transient() -> None:
    mailer = Mailer(smtp_config(free_port()), local_hostname="notifier.test")
    with pytest.raises(TransientDeliveryError, match=r"cannot reach SMTP server 127\.0\.0\.1"):
        async with mailer.session():
            pass


async def test_starttls_required_but_not_offered_is_transient(
    picky: tuple[PickyServer, int],
) -> None:
    _, port = picky
    config = SmtpConfig(host="127.0.0.1", port=port, sender="alerts@example.jp", starttls=True)
    with pytest.raises(TransientDeliveryError):
        async with Mailer(config, local_hostname="notifier.test").session():
            pass


def test_delivery_errors_share_one_root() -> None:
    assert issubclass(PermanentDeliveryError, DeliveryError)
    assert issubclass(TransientDeliveryError, DeliveryError)
    assert issubclass(TransientDeliveryError, ConnectionError)
