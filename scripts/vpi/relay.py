"""One guest connection to one host port: QEMU's ``guestfwd=...-cmd:`` runs this per connection.

The virtual Pi's user-mode network is ``restrict=on`` (it reaches nothing outside),
so each host service it may use is forwarded explicitly; a ``cmd:`` forward spawns
a program per connection with the guest's socket on its stdin/stdout (a ``tcp:``
chardev forward would accept only one connection, made when QEMU starts).

    python3 relay.py HOST PORT
"""

from __future__ import annotations

import selectors
import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    guest = socket.socket(fileno=0)
    try:
        upstream = socket.create_connection((host, port), timeout=10)
    except OSError:
        return 1
    upstream.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(guest, selectors.EVENT_READ, upstream)
    sel.register(upstream, selectors.EVENT_READ, guest)
    open_ends = 2
    while open_ends:
        for key, _ in sel.select():
            src: socket.socket = key.fileobj  # type: ignore[assignment]
            dst: socket.socket = key.data
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if data:
                try:
                    dst.sendall(data)
                except OSError:
                    return 0
            else:
                sel.unregister(src)
                open_ends -= 1
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
