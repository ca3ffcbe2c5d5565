"""The sent journal: the mails the SMTP server accepted, on disk the moment it said so."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import msgspec

log = logging.getLogger("cloud.store")  # the name its log lines had before the split

#: A line of JSON (UTF-8) in C: this runs in the callback that reads the SMTP server's
#: "250", twice an event, where json's encoder cost ~2 % of a busy notifier's main thread.
_LINE = msgspec.json.Encoder().encode


class SentJournal:
    """An append-only file of the mails the SMTP server accepted, written the moment
    its reply is read: the notifier's record of "sent" that no queue can delay.

    The store's own mark (:meth:`Store.mark_sent_many`) follows a little later, on
    the store's thread, possibly behind a commit of new events; a kill in between
    would mail it again after the restart.  One ``write(2)`` to this file closes
    that gap within the same callback that read the server's ``250``: a SIGKILL
    cannot undo it (the kernel has it), and at the next start
    :meth:`Store.apply_sent_journal` marks every mail it names sent before
    anything is sent.  Not synced to disk: a power cut can lose its last lines, and
    those mails are sent again, as before.  Emptied once the store's marks have
    caught up.  SQLite only (the file lies beside the store); with PostgreSQL
    several instances share the queue and the marks stay the store's alone.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.written = 0
        """Lines written since the last :meth:`clear`."""
        self.unmarked = 0
        """Lines whose mail the store has not yet marked sent (see :meth:`marked`)."""

    @classmethod
    def beside(cls, store: Path) -> SentJournal:
        return cls(store.with_name(store.name + "-sent"))

    def read(self) -> list[tuple[int, str, str]]:
        """``(mail id, event id, recipient)`` of every whole line (a torn last one is not)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        entries = []
        for line in data.split(b"\n")[:-1]:
            try:
                mail_id, event_id, recipient = json.loads(line)
                entries.append((int(mail_id), str(event_id), str(recipient)))
            except (ValueError, TypeError):
                continue  # not ours, or torn: that mail is sent again, never lost
        return entries

    def record(self, mail_id: int, event_id: str, recipient: str) -> None:
        """One mail the server accepted (a single ``write(2)``; errors are logged only)."""
        try:
            line = _LINE((mail_id, event_id, recipient)) + b"\n"
        except (msgspec.EncodeError, UnicodeError):  # a lone surrogate: escaped, in ASCII
            line = (json.dumps([mail_id, event_id, recipient]) + "\n").encode("ascii")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.write(self._fd, line)
            self.written += 1
            self.unmarked += 1
        except OSError as exc:
            log.warning("cannot write the sent journal %s (%s): the store's mark follows",
                        self.path, exc)  # fmt: skip

    def marked(self, count: int) -> None:
        """The store has committed the marks of ``count`` mails recorded here."""
        self.unmarked = max(0, self.unmarked - count)

    def clear(self) -> None:
        """Empty the file (every mail in it is marked sent in the store)."""
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            os.ftruncate(self._fd, 0)
            self.written = self.unmarked = 0
        except OSError as exc:
            log.warning("cannot empty the sent journal %s: %s", self.path, exc)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
