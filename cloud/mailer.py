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

import email.policy
import logging
import re
import time
from email.parser import BytesHeaderParser
from pathlib import Path
from types import TracebackType

import aiosmtplib

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
    """

    def __init__(self, config: SmtpConfig, local_hostname: str | None) -> None:
        self._config = config
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

    @property
    def usable(self) -> bool:
        return self._smtp.is_connected

    async def __aenter__(self) -> MailSession:
        try:
            await self._smtp.connect()  # also EHLO, STARTTLS and AUTH when configured
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
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._smtp.is_connected:
            return
        try:
            await self._smtp.quit()
        except Exception:
            self._smtp.close()  # the mails were sent or not; QUIT changes nothing

    async def send(self, recipient: str, message: bytes) -> None:
        """Send ``message`` to ``recipient``; raise a :class:`DeliveryError` leaf on failure."""
        try:
            await self._smtp.sendmail(self._config.envelope_sender, [recipient], message)
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

    async def send(self, recipient: str, message: bytes) -> None:
        """Write the message; a disk problem is transient (the mail stays queued)."""
        try:
            self._mailer.outdir.mkdir(parents=True, exist_ok=True)
            path = self._mailer._path(recipient, message)
            path.write_bytes(message)
        except OSError as exc:
            raise TransientDeliveryError(f"dry run: cannot write the mail: {exc}") from exc
        log.info("dry run: mail to %s written to %s", recipient, path)
