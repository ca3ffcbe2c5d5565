"""TLS session resumption for the uplink's connection to the broker.

A full mutual-TLS handshake carries both certificates, the broker's request for
ours and a signature each way: several kB on a SIM billed by the 100 kB, paid
again on every reconnect.  Resuming the previous session (a TLS 1.3 ticket, or
a TLS 1.2 session) skips all of that; the broker still knows who we are, since
the resumed session carries the identity proven in the full handshake.

paho-mqtt 2 wraps its socket itself with the context it is given (aiomqtt's
``tls_context=``): ``context.wrap_socket(sock, server_hostname=...,
do_handshake_on_connect=False)``, then ``do_handshake()``, then ``recv`` for
every read.  :class:`ResumingContext` is that context: its ``wrap_socket``
offers the last resumable session, and its sockets keep the new one.  In TLS
1.3 the broker's tickets arrive *after* the handshake, and Python's ssl only
takes them in while reading, so a socket keeps its session at its first read
that finds a ticket (the CONNACK's), not at the end of the handshake.

* The session is kept in memory only (a ticket is a key to the session; it does
  not belong on the SD card), so the first connection after a restart is a full
  handshake.
* A handshake that fails while offering a session forgets it, so the next
  attempt is a full handshake; a broker that will not resume simply answers
  with a full handshake, which is kept instead.
* A ticket is good for its lifetime, which the broker decides (mosquitto with
  OpenSSL's default: 2 hours from the handshake that issued it).  An older one
  is not offered: the reconnect after a long-lived connection is a full
  handshake unless the broker issues longer tickets (TLS 1.3 allows 7 days).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger(__name__)


class ResumingContext(ssl.SSLContext):
    """A client ``SSLContext`` whose next connection resumes its last TLS session.

    Configure it like any ``ssl.SSLContext`` (CA, client certificate); counters
    say what happened: ``full_handshakes`` and ``resumed`` count connections
    that got far enough to read from the broker.
    """

    def __new__(cls, protocol: int = ssl.PROTOCOL_TLS_CLIENT, *args: Any, **kwargs: Any) -> Any:
        return super().__new__(cls, protocol, *args, **kwargs)

    def __init__(self, protocol: int = ssl.PROTOCOL_TLS_CLIENT) -> None:
        super().__init__()
        self.sslsocket_class = ResumingSocket
        self._session: ssl.SSLSession | None = None
        self._lock = threading.Lock()  # paho handshakes on an executor thread, reads on the loop
        self.full_handshakes = 0
        self.resumed = 0

    @property
    def session(self) -> ssl.SSLSession | None:
        """The session the next connection will offer (None: a full handshake)."""
        return self._session

    def forget(self) -> None:
        """Make the next connection a full handshake."""
        with self._lock:
            self._session = None

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        if session is None and not server_side:
            session = self._session
        wrapped = super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=server_hostname,
            session=session,
        )
        if isinstance(wrapped, ResumingSocket):
            wrapped.offered = session
        return wrapped

    def _keep(self, sock: ResumingSocket, session: ssl.SSLSession) -> None:
        with self._lock:
            self._session = session
            if sock.session_reused:
                self.resumed += 1
            else:
                self.full_handshakes += 1
        log.debug(
            "TLS session %s (%s); kept for the next connection",
            "resumed" if sock.session_reused else "new",
            sock.version(),
        )

    def _failed(self, sock: ResumingSocket) -> None:
        with self._lock:
            if sock.offered is not None and self._session is sock.offered:
                self._session = None
        log.info("TLS handshake failed while offering a saved session; next one is full")


class ResumingSocket(ssl.SSLSocket):
    """The sockets :class:`ResumingContext` makes: each keeps its session once resumable."""

    offered: ssl.SSLSession | None = None
    """The session this connection offered to resume (None: a full handshake)."""
    _kept = False

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except (ssl.SSLError, OSError):
            if self.offered is not None and isinstance(self.context, ResumingContext):
                self.context._failed(self)
            raise
        self._maybe_keep()  # TLS 1.2: the session is complete at the end of the handshake

    def read(self, len: int = 1024, buffer: WriteableBuffer | None = None) -> bytes:
        data = super().read(len, buffer)
        if not self._kept:
            self._maybe_keep()
        return data

    def _maybe_keep(self) -> None:
        context = self.context
        if self._kept or not isinstance(context, ResumingContext):
            return
        try:
            session = self.session
        except (ValueError, OSError):
            return
        if session is None:
            return
        if self.version() == "TLSv1.3":
            if not session.has_ticket:  # its tickets have not been read yet
                return
        elif not (session.has_ticket or session.id):
            return
        self._kept = True
        context._keep(self, session)
