"""Hand finished mails to the SMTP server, and say whether a failure is worth a retry.

The notifier decides what to do with a failed mail from the exception's class
alone (:class:`~cloud.errors.TransientDeliveryError` → retry later,
:class:`~cloud.errors.PermanentDeliveryError` → give up and report), so every
aiosmtplib error is classified here and nowhere else:

* 5xx to ``RCPT TO`` or ``DATA`` → permanent: this mail to this recipient
  will never be accepted.
* 4xx, timeouts, refused or dropped connections → transient.
* Problems of the setup rather than of one mail (authentication refused, the
  sender address refused, STARTTLS not offered) → transient too, even when the
  reply is 5xx: an operator can fix them, and no mail may be lost meanwhile.
"""

from __future__ import annotations

import asyncio
import collections
import email.policy
import functools
import logging
import re
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType
from typing import cast

import aiosmtplib
from aiosmtplib.email import parse_address, quote_address
from aiosmtplib.response import SMTPResponse

from cloud.config import SmtpConfig
from cloud.errors import PermanentDeliveryError, TransientDeliveryError

log = logging.getLogger(__name__)


class Mailer:
    """Opens SMTP sessions with the configured server (a context manager per batch)."""

    def __init__(self, config: SmtpConfig, *, local_hostname: str | None = None) -> None:
        self._config = config
        self._local_hostname = local_hostname

    def session(self) -> MailSession:
        return MailSession(self._config, self._local_hostname)


class MailSession:
    """One SMTP connection that sends mails one by one.

    ``async with mailer.session() as s`` connects (and logs in); a failure
    there raises :class:`TransientDeliveryError`.  After a transient failure
    of :meth:`send`, check :attr:`usable`: a dropped connection ends the batch.
    The notifier keeps a session open while mails keep coming (one connection
    for a whole burst) and runs up to ``smtp.connections`` of them at once.
    """

    def __init__(self, config: SmtpConfig, local_hostname: str | None) -> None:
        self._config = config
        self._envelope_sender = config.envelope_sender  # parsed once, not per mail
        password = config.password.reveal() if config.password is not None else None
        self._smtp = aiosmtplib.SMTP(
            hostname=config.host,
            port=config.port,
            username=config.username,
            password=password,
            local_hostname=local_hostname,
            timeout=config.timeout,
            use_tls=config.tls,
            # Explicit: aiosmtplib's default (None) upgrades opportunistically,
            # which would make `starttls = false` mean "maybe".
            start_tls=config.starttls,
        )

        self._pipe: _Pipeline | None = None
        """Set once connected to a server that offers PIPELINING (RFC 2920)."""

    @property
    def usable(self) -> bool:
        if self._pipe is not None:
            return self._pipe.usable
        return self._smtp.is_connected

    async def __aenter__(self) -> MailSession:
        try:
            await self._smtp.connect()  # also EHLO, STARTTLS and AUTH when configured
            if self._smtp.last_ehlo_response is None:
                try:
                    await self._smtp.ehlo()  # what it offers (PIPELINING, SIZE)
                except aiosmtplib.SMTPHeloError:
                    pass  # an old server: sendmail says HELO itself
        except aiosmtplib.SMTPAuthenticationError as exc:
            self._smtp.close()
            raise TransientDeliveryError(
                f"SMTP authentication refused by {self._where}: {_reply(exc)}"
            ) from exc
        except aiosmtplib.SMTPNotSupported as exc:
            self._smtp.close()
            raise TransientDeliveryError(f"{self._where}: {exc}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            self._smtp.close()
            raise TransientDeliveryError(
                f"{self._where} refused the session: {_reply(exc)}"
            ) from exc
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            self._smtp.close()
            raise TransientDeliveryError(f"cannot reach {self._where}: {_describe(exc)}") from exc
        except aiosmtplib.SMTPException as exc:  # e.g. AUTH not offered, disconnected in EHLO
            self._smtp.close()
            raise TransientDeliveryError(f"{self._where}: {_describe(exc)}") from exc
        except Exception as exc:  # a library bug must not become a crash loop
            self._smtp.close()
            log.exception("unexpected error connecting to %s", self._where)
            raise TransientDeliveryError(f"{self._where}: {_describe(exc)}") from exc
        transport = self._smtp.transport
        if self._smtp.supports_extension("pipelining") and transport is not None:
            # aiosmtplib sends one command per round trip and cannot read pipelined
            # replies: past the greeting, EHLO, STARTTLS and AUTH (its own), the
            # connection is ours.  (uvloop's transports do not descend from asyncio's
            # classes, so this is not an isinstance check: any transport writes.)
            size = self._smtp.supports_extension("size")
            writer = cast(asyncio.WriteTransport, transport)
            self._pipe = _Pipeline(writer, self._config.timeout, size=size)
            transport.set_protocol(self._pipe)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._pipe is not None:
            await self._pipe.quit()
            self._smtp.close()
            return
        if not self._smtp.is_connected:
            return
        try:
            await self._smtp.quit()
        except Exception:  # noqa: BLE001 - last-resort cleanup: the socket is closed
            self._smtp.close()  # the mails were sent or not; QUIT changes nothing

    async def send(
        self,
        recipient: str,
        message: bytes,
        on_accepted: Callable[[], None] | None = None,
        following: tuple[str, bytes] | None = None,
        *,
        ready: bool = False,
        following_ready: bool = False,
    ) -> None:
        """Send ``message`` to ``recipient``; raise a :class:`DeliveryError` leaf on failure.

        ``on_accepted`` is called once the server has taken the mail, as early as
        can be: with PIPELINING in the very callback that reads its ``250`` (so
        that no other work of the process comes in between; see
        :class:`cloud.store.SentJournal`).  It must not raise or block.

        ``following`` (recipient, message): the mail the caller sends next on this
        session (it must, or close the session).  With PIPELINING its envelope goes
        in the same write as this message's content (RFC 2920 allows the content
        first in a group): one write and one round trip a mail instead of two.

        ``ready`` (``following_ready``): ``message`` (the following one) is known to
        pass :func:`cloud.mime.ready_for_data` (checked where it was rendered, off
        this process): DATA carries it as it is, without looking at it again here.
        """
        try:
            if self._pipe is not None:
                await self._pipe.sendmail(
                    self._envelope_sender, recipient, message, on_accepted, following,
                    ready=ready, following_ready=following_ready,
                )  # fmt: skip
            else:
                await self._smtp.sendmail(self._envelope_sender, [recipient], message)
                if on_accepted is not None:
                    on_accepted()
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = exc.recipients[0] if exc.recipients else None
            if refused is None:
                raise TransientDeliveryError("recipient refused without a reply") from exc
            raise _by_code(refused.code, f"recipient refused: {_reply(refused)}") from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            # Not this mail's fault: every mail would be refused the same way.
            raise TransientDeliveryError(
                f"sender {self._config.envelope_sender} refused: {_reply(exc)}"
            ) from exc
        except aiosmtplib.SMTPResponseException as exc:  # DATA refused, or another reply
            raise _by_code(exc.code, f"message refused: {_reply(exc)}") from exc
        except ValueError as exc:  # an address that cannot be put on the SMTP line
            raise PermanentDeliveryError(f"invalid address: {exc}") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDeliveryError(f"{self._where}: {_describe(exc)}") from exc
        except Exception as exc:  # a library bug must not become a crash loop
            log.exception("unexpected error sending to %s via %s", recipient, self._where)
            raise TransientDeliveryError(f"{self._where}: {_describe(exc)}") from exc

    @property
    def _where(self) -> str:
        return f"SMTP server {self._config.host}:{self._config.port}"


class _Awaited:
    """The replies one write waits for, and who is told when they are all in."""

    __slots__ = ("expected", "future", "on_accepted", "replies")

    def __init__(
        self,
        expected: int,
        future: asyncio.Future[list[SMTPResponse]],
        on_accepted: Callable[[], None] | None,
    ) -> None:
        self.expected = expected
        self.future = future
        self.on_accepted = on_accepted
        self.replies: list[SMTPResponse] = []


class _Pipeline(asyncio.Protocol):
    """One SMTP connection past its set-up, sending with PIPELINING (RFC 2920).

    ``MAIL FROM``, ``RCPT TO`` and ``DATA`` go in one write, the message in a
    second: two round trips a mail instead of four.  Replies are matched to
    commands in order.  Failures raise the same aiosmtplib exceptions as
    ``SMTP.sendmail`` (a refused sender, recipient or message, a timeout, a
    dropped connection), so that :meth:`MailSession.send` classifies them the
    same way; after a refusal the envelope is reset (``RSET``), as aiosmtplib does.
    """

    def __init__(self, transport: asyncio.WriteTransport, timeout: float, *, size: bool) -> None:
        self._transport = transport
        self._timeout = timeout
        self._size = size
        """Whether the server offers SIZE (RFC 1870): then MAIL FROM says it."""
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._waiting: collections.deque[_Awaited] = collections.deque()
        self._lost: BaseException | None = None
        self._announced: tuple[bytes, bytes, asyncio.Future[list[SMTPResponse]]] | None = None
        """The next mail's envelope, already written with the last content: the message
        it is for, that message as DATA carries it, the future of its three replies."""
        self._loop = asyncio.get_running_loop()
        self._progress = 0.0
        """``loop.time()`` of the last reply read, or of the write that began the wait."""
        self._watchdog: asyncio.TimerHandle | None = None
        """Fails the connection when the server has said nothing for ``timeout`` seconds
        while replies are awaited (one timer per connection, not one per reply: an
        ``asyncio.timeout`` around every wait cost ~6 us, four times a mail)."""

    @property
    def usable(self) -> bool:
        return self._lost is None and not self._transport.is_closing()

    def data_received(self, data: bytes) -> None:
        # Split once per read (a read holds several replies: a mail's 250 and the next
        # envelope's three), not one bytearray search and cut per line.
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        *lines, rest = data.split(b"\n")
        if rest:
            if len(rest) > 65536:
                self._fail(aiosmtplib.SMTPResponseException(-1, "Response too long"))
                return
            self._buffer += rest
        now = None
        for line in lines:
            if line[3:4] == b"-":
                self._lines.append(line)
                continue
            try:
                code = int(line[:3])
            except ValueError:
                self._fail(aiosmtplib.SMTPResponseException(-1, f"Malformed reply {line!r}"))
                return
            if self._lines:
                self._lines.append(line)
                text = "\n".join(_reply_text(x) for x in self._lines)
                self._lines = []
            else:
                text = _reply_text(line)
            waiting = self._waiting
            if waiting:
                if now is None:
                    now = self._progress = self._loop.time()
                awaited = waiting[0]
                awaited.replies.append(SMTPResponse(code, text))
                if len(awaited.replies) < awaited.expected:
                    continue
                waiting.popleft()
                if awaited.on_accepted is not None and code == 250:
                    try:
                        awaited.on_accepted()
                    except Exception:
                        log.exception("recording an accepted mail failed")
                if not awaited.future.done():
                    awaited.future.set_result(awaited.replies)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(f"Connection lost: {exc}" if exc
                                                     else "Connection lost"))  # fmt: skip

    def _fail(self, exc: BaseException) -> None:
        if self._lost is None:
            self._lost = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self._waiting:
            waiter = self._waiting.popleft().future
            if not waiter.done():
                waiter.set_exception(exc)
                waiter.exception()  # retrieved: nobody may wait on it any more
        self._transport.close()

    def _send(
        self, data: bytes, replies: int, on_accepted: Callable[[], None] | None = None
    ) -> asyncio.Future[list[SMTPResponse]]:
        """Write ``data``; the future of its ``replies``, done when the last one is read
        (it calls ``on_accepted`` on a 250, in the callback that reads it).

        One future for the replies to a whole write, not one each: the replies come
        in order, so the last one's arrival means all of them are in.
        """
        if self._lost is not None:
            raise aiosmtplib.SMTPServerDisconnected(str(self._lost))
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        future: asyncio.Future[list[SMTPResponse]] = self._loop.create_future()
        self._awaiting(_Awaited(replies, future, on_accepted))
        self._transport.write(data)
        return future

    def _awaiting(self, awaited: _Awaited) -> None:
        """``awaited`` joins the replies waited for (the server's clock starts now if it
        owed nothing before)."""
        if not self._waiting:
            self._progress = self._loop.time()
        self._waiting.append(awaited)
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(self._progress + self._timeout, self._watch)

    def _watch(self) -> None:
        """The watchdog: fail the connection if the server has been silent for ``timeout``
        seconds while owing replies; else look again when it next could be."""
        self._watchdog = None
        if not self._waiting or self._lost is not None:
            return
        due = self._progress + self._timeout
        if self._loop.time() >= due:
            self._fail(aiosmtplib.SMTPReadTimeoutError("Timed out waiting for server response"))
            return
        self._watchdog = self._loop.call_at(due, self._watch)

    async def _replies(self, future: asyncio.Future[list[SMTPResponse]]) -> list[SMTPResponse]:
        """The replies ``future`` stands for; a server silent for ``timeout`` seconds while
        owing replies raises ``SMTPReadTimeoutError`` (see :meth:`_watch`)."""
        return await future

    async def _reply(self, future: asyncio.Future[list[SMTPResponse]]) -> SMTPResponse:
        return (await self._replies(future))[-1]

    def _envelope(self, sender: str, recipient: str, data: bytes) -> bytes:
        mail_from, rcpt_to = _quoted(sender), _quoted(recipient)  # ValueError: unsendable
        size = b" SIZE=%d" % (len(data) - 3) if self._size else b""
        return b"MAIL FROM:%s%s\r\nRCPT TO:%s\r\nDATA\r\n" % (mail_from, size, rcpt_to)

    async def sendmail(
        self,
        sender: str,
        recipient: str,
        message: bytes,
        on_accepted: Callable[[], None] | None = None,
        following: tuple[str, bytes] | None = None,
        *,
        ready: bool = False,
        following_ready: bool = False,
    ) -> None:
        """One mail to one recipient; raises what ``aiosmtplib.SMTP.sendmail`` would.

        ``following``, ``ready``, ``following_ready``: see :meth:`MailSession.send`.
        """
        announced, self._announced = self._announced, None
        if announced is not None and announced[0] is message:
            data, replied = announced[1], announced[2]
        else:
            if announced is not None:
                # The server waits for another message's content: only dropping the
                # connection ends that transaction without sending anything.
                self._fail(aiosmtplib.SMTPServerDisconnected("pipelined envelope not used"))
                raise aiosmtplib.SMTPServerDisconnected("pipelined envelope not used")
            data = _dot_stuffed(message, ready)
            replied = self._send(self._envelope(sender, recipient, data), 3)
        replies = await self._replies(replied)
        if replies[2].code == 354 and (replies[0].code != 250 or replies[1].code not in (250, 251)):
            # The server took DATA although the envelope was refused: end it empty.
            ended = await self._reply(self._send(b".\r\n", 1))
            replies[2] = SMTPResponse(554, ended.message)
        try:
            if replies[0].code != 250:
                raise aiosmtplib.SMTPSenderRefused(replies[0].code, replies[0].message, sender)
            if replies[1].code not in (250, 251):
                raise aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(
                    replies[1].code, replies[1].message, recipient)])  # fmt: skip
            if replies[2].code != 354:
                raise aiosmtplib.SMTPDataError(replies[2].code, replies[2].message)
        except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused):
            try:  # the envelope was refused: reset it before the next mail
                await self._reply(self._send(b"RSET\r\n", 1))
            except (ConnectionError, aiosmtplib.SMTPException):
                pass
            raise
        if following is None:
            done = await self._reply(self._send(data, 1, on_accepted))
        else:
            # This content and the next mail's envelope in one write.  No RSET may
            # follow now: the server is to read the next mail's content after it.
            next_recipient, next_message = following
            next_data = _dot_stuffed(next_message, following_ready)
            try:
                envelope = self._envelope(sender, next_recipient, next_data)
            except ValueError:  # the next one is unsendable: it will say so itself
                done = await self._reply(self._send(data, 1, on_accepted))
            else:
                sent, after = self._send_two(data, on_accepted, envelope)
                self._announced = (next_message, next_data, after)
                done = await self._reply(sent)
        if done.code != 250:
            raise aiosmtplib.SMTPDataError(done.code, done.message)

    def _send_two(
        self, data: bytes, on_accepted: Callable[[], None] | None, envelope: bytes
    ) -> tuple[asyncio.Future[list[SMTPResponse]], asyncio.Future[list[SMTPResponse]]]:
        """Write ``data`` (one reply) and ``envelope`` (three) in one write."""
        loop = self._loop
        first: asyncio.Future[list[SMTPResponse]] = loop.create_future()
        second: asyncio.Future[list[SMTPResponse]] = loop.create_future()
        if self._lost is not None:
            raise aiosmtplib.SMTPServerDisconnected(str(self._lost))
        if self._transport.is_closing():
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        self._awaiting(_Awaited(1, first, on_accepted))
        self._awaiting(_Awaited(3, second, None))
        self._transport.write(data + envelope)
        second.add_done_callback(_retrieved)  # a stop may leave it unawaited
        return first, second

    async def quit(self) -> None:
        """``QUIT`` and close (the mails were sent or not: its reply changes nothing).

        With a next mail's envelope written and its content not (a stop came in
        between), the connection is dropped instead: the server then discards that
        transaction (a QUIT would be read as the content)."""
        try:
            if self.usable and self._announced is None:
                await self._reply(self._send(b"QUIT\r\n", 1))
        except (ConnectionError, aiosmtplib.SMTPException):
            pass
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            self._transport.close()


@functools.lru_cache(maxsize=4096)
def _quoted(address: str) -> bytes:
    """``<addr>`` for an SMTP command, checked as aiosmtplib checks it (ValueError)."""
    parse_address(address)
    return quote_address(address).encode("ascii")


_LINE_ENDS = re.compile(rb"(?:\r\n|\n|\r(?!\n))")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(message: bytes, ready: bool = False) -> bytes:
    """``message`` as DATA carries it: CRLF line ends, leading dots doubled, ``.`` ended.

    ``ready``: the caller knows it passes :func:`~cloud.mime.ready_for_data` (nothing
    to look at).
    """
    if ready:
        return message + b".\r\n"
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:  # ours never has any
        message = _LINE_ENDS.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if message.startswith(b".") or b"\n." in message:
        message = _LEADING_DOT.sub(b"..", message)
    return message + b".\r\n"


def _reply_text(line: bytes) -> str:
    """The text of one line of a reply (after its code and separator)."""
    return line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")


def _retrieved(future: asyncio.Future[list[SMTPResponse]]) -> None:
    if not future.cancelled():
        future.exception()


def _by_code(code: int, reason: str) -> TransientDeliveryError | PermanentDeliveryError:
    if 500 <= code <= 599:
        return PermanentDeliveryError(reason)
    return TransientDeliveryError(reason)


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    """The server's reply as it said it: ``451 4.3.0 try again``."""
    return " ".join(f"{exc.code} {exc.message}".split())


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class DryRunMailer:
    """``run --dry-run``: every mail is written to a ``.eml`` file instead of being sent."""

    def __init__(self, outdir: Path) -> None:
        self.outdir = outdir
        self._count = 0

    def session(self) -> DryRunSession:
        return DryRunSession(self)

    def _path(self, recipient: str, message: bytes) -> Path:
        self._count += 1
        headers = BytesHeaderParser(policy=email.policy.default).parsebytes(message)
        notice = re.sub(r"[^A-Za-z0-9._-]", "_", str(headers.get("X-Satoyama-Event", "mail")))
        kind = re.sub(r"[^A-Za-z0-9._-]", "_", str(headers.get("X-Satoyama-Kind", "")))
        to = re.sub(r"[^A-Za-z0-9._@-]", "_", recipient)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return self.outdir / f"{stamp}-{self._count:05d}-{kind}-{notice[:60]}-{to}.eml"


class DryRunSession:
    """The dry run's stand-in for :class:`MailSession` (same interface)."""

    usable = True

    def __init__(self, mailer: DryRunMailer) -> None:
        self._mailer = mailer

    async def __aenter__(self) -> DryRunSession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(
        self,
        recipient: str,
        message: bytes,
        on_accepted: Callable[[], None] | None = None,
        following: tuple[str, bytes] | None = None,
        *,
        ready: bool = False,
        following_ready: bool = False,
    ) -> None:
        """Write the message; a disk problem is transient (the mail stays queued)."""
        try:
            self._mailer.outdir.mkdir(parents=True, exist_ok=True)
            path = self._mailer._path(recipient, message)
            path.write_bytes(message)
        except OSError as exc:
            raise TransientDeliveryError(f"dry run: cannot write the mail: {exc}") from exc
        if on_accepted is not None:
            on_accepted()
        log.info("dry run: mail to %s written to %s", recipient, path)
