"""SMTP delivery: how each kind of refusal is classified, against a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from cloud.config import SmtpConfig
from cloud.errors import DeliveryError, PermanentDeliveryError, TransientDeliveryError
from cloud.mailer import Mailer
from edge.sim.broker import free_port
from tests.support.pki import FleetCA

MESSAGE = b"From: alerts@example.jp\r\nTo: x@example.jp\r\nSubject: test\r\n\r\nhello\r\n"


class PickyServer:
    """aiosmtpd handler refusing some recipients the way real servers do.

    ``pipelining``: it offers PIPELINING (RFC 2920) in its EHLO reply, so the
    notifier sends each mail's MAIL, RCPT and DATA in one write (aiosmtpd reads
    commands in order, however they arrive).
    """

    def __init__(self, pipelining: bool = False) -> None:
        self.delivered: list[str] = []
        self.messages: list[bytes] = []
        self.pipelining = pipelining
        self.refuse_data: str | None = None
        self.refuse_sender: str | None = None
        self.drop = False
        self.mail_options: list[list[str]] = []

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if self.refuse_sender is not None:
            return self.refuse_sender
        envelope.mail_from = address
        self.mail_options.append(list(options))
        return "250 OK"

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
        if self.drop:
            server.transport.close()  # no reply: the connection is simply gone
            return "421 4.3.2 closing"
        if self.refuse_data is not None:
            return self.refuse_data
        self.delivered.extend(envelope.rcpt_tos)
        self.messages.append(envelope.original_content)
        return "250 OK queued"


@pytest.fixture(params=[False, True], ids=["one-by-one", "pipelining"])
def picky(request: pytest.FixtureRequest) -> Iterator[tuple[PickyServer, int]]:
    handler, port = PickyServer(pipelining=request.param), free_port()
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


async def test_a_refused_message_or_sender_is_classified_and_the_session_goes_on(
    picky: tuple[PickyServer, int],
) -> None:
    handler, port = picky
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        handler.refuse_data = "554 5.6.0 Message rejected: spam"
        with pytest.raises(PermanentDeliveryError) as permanent:
            await session.send("farmer@example.jp", MESSAGE)
        handler.refuse_data = "451 4.3.0 Try again later"
        with pytest.raises(TransientDeliveryError) as transient:
            await session.send("farmer@example.jp", MESSAGE)
        handler.refuse_data = None
        handler.refuse_sender = "553 5.7.1 Sender not allowed"
        with pytest.raises(TransientDeliveryError) as sender:  # the setup, not the mail
            await session.send("farmer@example.jp", MESSAGE)
        handler.refuse_sender = None
        assert session.usable
        await session.send("hunter@example.jp", MESSAGE)
    assert handler.delivered == ["hunter@example.jp"]
    assert permanent.value.reason == "message refused: 554 5.6.0 Message rejected: spam"
    assert transient.value.reason == "message refused: 451 4.3.0 Try again later"
    assert sender.value.reason == ("sender alerts@example.jp refused: 553 5.7.1 Sender not allowed")


async def test_lines_starting_with_a_dot_arrive_unchanged(
    picky: tuple[PickyServer, int],
) -> None:
    """SMTP ends a message with a line of one dot: the body's own dots are escaped."""
    handler, port = picky
    body = b"Subject: dots\r\n\r\n.\r\n..two\r\n.three\r\nlast.\r\n"
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        for _ in range(3):
            await session.send("farmer@example.jp", body)
    assert handler.messages == [body] * 3


async def test_a_connection_dropped_mid_batch_is_transient_and_ends_the_session(
    picky: tuple[PickyServer, int],
) -> None:
    """The notifier defers the rest of its batch when ``usable`` turns false."""
    handler, port = picky
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        await session.send("farmer@example.jp", MESSAGE)
        handler.drop = True
        with pytest.raises(TransientDeliveryError):
            await session.send("hunter@example.jp", MESSAGE)
        assert not session.usable
    assert handler.delivered == ["farmer@example.jp"]


async def test_pipelining_after_starttls_sends_and_classifies_over_tls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipelined sender takes the connection over after aiosmtplib's STARTTLS: the
    mails go encrypted, replies are still matched to their mails."""
    ca = FleetCA(tmp_path / "pki")
    server_cert = ca.issue("localhost", server=True)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert.cert, server_cert.key)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))  # the client trusts the test CA
    handler, port = PickyServer(pipelining=True), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, tls_context=context,
                            require_starttls=True)  # fmt: skip
    controller.start()
    try:
        config = SmtpConfig(host="localhost", port=port, sender="alerts@example.jp",
                            starttls=True, timeout=5)  # fmt: skip
        async with Mailer(config, local_hostname="notifier.test").session() as session:
            await session.send("farmer@example.jp", MESSAGE)
            with pytest.raises(PermanentDeliveryError):
                await session.send("nobody@example.jp", MESSAGE)
            await session.send("hunter@example.jp", MESSAGE)
            assert session._pipe is not None  # pipelined, not aiosmtplib's one by one
    finally:
        controller.stop()
    assert handler.delivered == ["farmer@example.jp", "hunter@example.jp"]


async def test_mails_announced_with_the_previous_content_arrive_whole_and_each_classified(
    picky: tuple[PickyServer, int],
) -> None:
    """Each mail's envelope goes in the write of the previous mail's content
    (``following``): every mail arrives whole, to its own recipient, and a refused
    recipient or message among them costs that mail only."""
    handler, port = picky
    mails = [("farmer@example.jp", b"Subject: 1\r\n\r\n.one\r\n"),
             ("nobody@example.jp", b"Subject: 2\r\n\r\ntwo\r\n"),
             ("hunter@example.jp", b"Subject: 3\r\n\r\nthree\r\n"),
             ("office@example.jp", b"Subject: 4\r\n\r\nfour\r\n")]  # fmt: skip
    outcomes: list[str] = []
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        for n, (recipient, message) in enumerate(mails):
            following = mails[n + 1] if n + 1 < len(mails) else None
            handler.refuse_data = "554 5.6.0 spam" if n == 2 else None
            try:
                await session.send(recipient, message, None, following)
                outcomes.append("sent")
            except PermanentDeliveryError as exc:
                outcomes.append(exc.reason)
        assert session.usable
    assert outcomes == [
        "sent",
        "recipient refused: 550 5.1.1 <nobody@example.jp>: Recipient address rejected: "
        "User unknown",
        "message refused: 554 5.6.0 spam",
        "sent",
    ]
    assert handler.delivered == ["farmer@example.jp", "office@example.jp"]
    assert handler.messages == [mails[0][1], mails[3][1]]


async def test_a_session_closed_with_a_mail_announced_delivers_nothing_of_it(
    picky: tuple[PickyServer, int],
) -> None:
    """A stop between a mail and the one announced with it: the server never gets that
    one's content (the connection is dropped, not QUIT), so it is sent whole later."""
    handler, port = picky
    later = ("hunter@example.jp", b"Subject: later\r\n\r\nlater\r\n")
    mailer = Mailer(smtp_config(port), local_hostname="notifier.test")
    async with mailer.session() as session:
        await session.send("farmer@example.jp", MESSAGE, None, later)
    async with mailer.session() as session:
        await session.send(*later)
    assert handler.delivered == ["farmer@example.jp", "hunter@example.jp"]
    assert handler.messages == [MESSAGE, later[1]]


async def test_a_pipelining_server_that_falls_silent_times_the_session_out() -> None:
    """The SMTP timeout holds for pipelined replies too (one watchdog per connection):
    a server that takes the envelope and then says nothing is a transient failure
    after ``smtp.timeout``, not a sender stuck for ever, and the session is done."""
    heard: list[bytes] = []

    async def silent_after_ehlo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 silent.test ESMTP\r\n")
        ehlo = await reader.readline()
        heard.append(ehlo)
        writer.write(b"250-silent.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
        while line := await reader.readline():  # reads the mail, answers nothing
            heard.append(line)
        writer.close()

    server = await asyncio.start_server(silent_after_ehlo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = SmtpConfig(host="127.0.0.1", port=port, sender="alerts@example.jp", timeout=0.5)
    waited = -1.0

    async def one_mail() -> None:
        nonlocal waited
        async with Mailer(config, local_hostname="notifier.test").session() as session:
            started = time.monotonic()
            with pytest.raises(TransientDeliveryError, match="Timed out waiting"):
                await session.send("farmer@example.jp", MESSAGE)
            waited = time.monotonic() - started
            assert not session.usable

    try:
        # The outer limit: a session stuck for ever (its QUIT included) fails the test.
        await asyncio.wait_for(one_mail(), 15)
    finally:
        server.close()
        await server.wait_closed()
    assert 0.4 <= waited < 5.0, waited
    assert any(line.startswith(b"MAIL FROM:") for line in heard)


async def test_a_mail_said_ready_for_data_arrives_as_the_one_looked_at_here(
    picky: tuple[PickyServer, int],
) -> None:
    """``ready``: the sender does not look at the message again (the renderer did); it
    arrives byte for byte as the same message sent without it, announced or not."""
    handler, port = picky
    message = b"Subject: ready\r\n\r\nline one\r\nline. two\r\n"
    async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
        await session.send("farmer@example.jp", message, None, ("hunter@example.jp", message),
                           ready=True, following_ready=True)  # fmt: skip
        await session.send("hunter@example.jp", message, ready=True)
        await session.send("office@example.jp", message)
    assert handler.delivered == ["farmer@example.jp", "hunter@example.jp", "office@example.jp"]
    assert handler.messages == [message] * 3


async def test_replies_cut_anywhere_and_replies_of_several_lines_are_read_whole() -> None:
    """The pipelined session reads what the server says however the network cuts it: a
    byte at a time here, with a reply of several lines (``250-...``, then ``250 ...``)."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def dribble(text: bytes) -> None:
            for n in range(len(text)):
                writer.write(text[n : n + 1])
                await writer.drain()

        writer.write(b"220 test ESMTP\r\n")
        await reader.readline()  # EHLO
        writer.write(b"250-test\r\n250-PIPELINING\r\n250 SIZE 100000\r\n")
        for _ in range(3):  # MAIL FROM, RCPT TO, DATA: in one write
            got.append(await reader.readline())
        await dribble(b"250-sender\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go on\r\n")
        got.append(await reader.readuntil(b"\r\n.\r\n"))
        await dribble(b"250-2.0.0 queued\r\n250 2.0.0 as 1\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    accepted: list[str] = []
    try:
        async with Mailer(smtp_config(port), local_hostname="notifier.test").session() as session:
            await session.send("farmer@example.jp", MESSAGE, lambda: accepted.append("250"))
            assert session._pipe is not None
    finally:
        server.close()
        await server.wait_closed()
    assert got[0].startswith(b"MAIL FROM:") and got[1].startswith(b"RCPT TO:<farmer@")
    assert got[3].endswith(b"\r\n.\r\n")
    assert accepted == ["250"]
