"""An SMTP server (aiosmtpd) that keeps every received mail as an ``.eml`` file.

Used by ``edge demo``, the tests and the benchmarks as the real SMTP peer of the
cloud notifier.  It runs on its own thread (aiosmtpd's ``Controller``).
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from edge.sim.broker import free_port


@dataclass(frozen=True)
class ReceivedMail:
    received_at: float
    """``time.time()`` when the server accepted the DATA."""
    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    path: Path | None
    message: EmailMessage = field(repr=False)


class Mailbox:
    """A real SMTP server on a free loopback port.

    ``fail_with`` makes the server answer every DATA with that SMTP reply
    (e.g. ``"451 4.3.0 try again later"``) until it is set back to ``None``.
    """

    def __init__(
        self,
        outdir: Path | None = None,
        port: int | None = None,
        on_mail: Callable[[ReceivedMail], None] | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.outdir = outdir
        self.on_mail = on_mail
        self.fail_with: str | None = None
        self.mails: list[ReceivedMail] = []
        self._cond = threading.Condition()
        self._controller: Any = None

    # aiosmtpd handler hook
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.fail_with is not None:
            return self.fail_with
        raw: bytes = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode()
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        path = None
        with self._cond:
            n = len(self.mails) + 1
            if self.outdir is not None:
                self.outdir.mkdir(parents=True, exist_ok=True)
                path = self.outdir / f"mail-{n:04d}.eml"
                path.write_bytes(raw)
            mail = ReceivedMail(
                received_at=time.time(),
                mail_from=envelope.mail_from,
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=raw,
                path=path,
                message=msg,
            )
            self.mails.append(mail)
            self._cond.notify_all()
        if self.on_mail is not None:
            self.on_mail(mail)
        return "250 Message accepted for delivery"

    def wait_for(self, count: int, timeout: float) -> list[ReceivedMail]:
        """Block until at least ``count`` mails arrived; raise ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.mails) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"expected {count} mail(s) within {timeout}s, got {len(self.mails)}"
                    )
                self._cond.wait(left)
            return list(self.mails)

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> None:
        if self._controller is not None:
            return
        from aiosmtpd.controller import Controller

        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> Mailbox:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
