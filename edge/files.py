"""Writing a file so that a crash leaves the old bytes or the new, and telling a private file.

:func:`write_atomic` is the one way the daemon (and the root updater, through
``deploy.spool.write_replace``) replaces a file: a temporary file beside it,
created afresh (``O_EXCL | O_NOFOLLOW``: a link planted under its name is never
written through), renamed over the old one.  A reader, or the next start after
a crash, finds the whole old file or the whole new one, never a torn one.
``durable=True`` (the default) also fsyncs the file before the rename and the
folder after it, so the promise holds across a power cut; a statistic that may
be lost passes ``durable=False`` and skips both fsyncs (the SD card's slowest
operation).

:func:`loose_mode` is the rule for a secret file (a key, a configuration that
holds a password): no permission bit for group or others.  The notifier
(``cloud/config.py``) and the deploy tools (``deploy/keys.py``) apply the same
rule to their own keys, so it is imported from here rather than written again:
it is a contract of the product, stated once in ``docs/security.md`` ("a key
with any group or other permission bit is refused"), not a detail of the daemon.
Each caller words its own error (the key it names, its exit code).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_MASK = stat.S_IRWXG | stat.S_IRWXO
"""Bits a secret file must not have (0o077)."""


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes,
    *,
    mode: int | None = None,
    durable: bool = True,
    dir_fd: int | None = None,
) -> None:
    """Replace ``path`` with ``data``: afterwards it holds the old bytes or the new, never part.

    ``mode``: the new file's exact permission bits (the umask does not decide);
    ``None``: as ``open()`` would create it (0o666 less the umask).
    ``durable``: fsync the file before the rename and the folder after it.
    ``dir_fd``: ``path`` is a bare name in the folder that fd is open on (how root
    writes into a folder it checked once, never re-resolving its path).
    Raises ``OSError``; the temporary file is removed when the write fails.
    """
    target = Path(path)
    if dir_fd is None:
        name, tmp = str(target), str(target.with_name(f".{target.name}.tmp"))
    else:
        name, tmp = target.name, f".{target.name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp, dir_fd=dir_fd)  # left by a crash: O_EXCL below must not trip on it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o666 if mode is None else mode, dir_fd=dir_fd)
    try:
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    if durable:
        fsync_dir(target.parent if dir_fd is None else None, dir_fd=dir_fd)


def fsync_dir(path: str | os.PathLike[str] | None, *, dir_fd: int | None = None) -> None:
    """Make a rename or an unlink in a folder survive a power cut (the folder's path, or its fd)."""
    if dir_fd is not None:
        os.fsync(dir_fd)
        return
    assert path is not None
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def loose_mode(path: str | os.PathLike[str]) -> int | None:
    """``None`` when only the owner may use ``path``; else its permission bits (for the message).

    Follows a link, as opening the file will.  Raises ``OSError`` when it cannot be read.
    """
    bits = stat.S_IMODE(os.stat(path).st_mode)
    return bits if bits & PRIVATE_MASK else None
