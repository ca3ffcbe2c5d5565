"""Privilege separation: what root writes and reads beside a daemon it does not trust.

The daemon's user can write its drop folder and nothing the updater writes.
Root keeps its files only below folders no one else may write
(:func:`trusted_chain`, checked before every run), and reads the two files
the daemon's user leaves for it (``request.json``, ``events.ack``) with
``O_NOFOLLOW`` through every path component, only if each is a regular file
owned by the folder's owner, with one link, and small (:func:`read_drop_file`);
it never creates, changes or removes anything in the drop folder.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from deploy.spool import UnsafePathError


def trusted_chain(root: Path, path: Path) -> None:
    """Every existing folder from ``root`` down to ``path`` is a real folder only we may write.

    What root writes must never sit below a folder another user can write (or swap
    for a link): that user could redirect root's writes anywhere.
    """
    here = root
    for part in path.relative_to(root).parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafePathError(f"{here}: not a folder (a link?); refusing to use {path}")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise UnsafePathError(
                f"{here}: writable by uid {st.st_uid} or by group/others "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); refusing to keep root's files in {path}"
            )


def read_drop_file(root: Path, device_path: str, limit: int) -> tuple[bytes | None, str]:
    """Read a file the daemon's user left for us, without ever following a link.

    Every component is opened with ``O_NOFOLLOW`` relative to the one before
    (``openat``), so no link anywhere on the way is followed; the file must be a
    regular file with one link, owned by root or by the owner of its folder, of at
    most ``limit`` bytes.  Returns ``(bytes, fingerprint)``, ``(None, "")`` when
    the file is absent; :class:`UnsafePathError` (with the fingerprint of what was
    found in ``args[1]``) when it is not acceptable.
    """
    rel = Path(device_path.lstrip("/"))
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts[:-1]:
            try:
                nxt = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                return None, ""
            except OSError as exc:
                raise UnsafePathError(
                    f"{device_path}: {part} is not a plain folder ({exc.strerror})", "path:" + part
                ) from None
            os.close(fd)
            fd = nxt
        owner = os.fstat(fd).st_uid
        name = rel.name
        try:
            lst = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None, ""
        seen = f"{lst.st_dev}:{lst.st_ino}:{lst.st_mtime_ns}:{lst.st_size}:{lst.st_mode:o}"
        if not stat.S_ISREG(lst.st_mode):
            raise UnsafePathError(f"{device_path}: not a regular file (a link?)", seen)
        try:
            ffd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC,
                dir_fd=fd,
            )
        except FileNotFoundError:
            return None, ""
        except OSError as exc:
            raise UnsafePathError(f"{device_path}: cannot open ({exc.strerror})", seen) from None
        with os.fdopen(ffd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                raise UnsafePathError(f"{device_path}: not a regular file with one link", seen)
            if st.st_uid not in (0, owner):
                raise UnsafePathError(
                    f"{device_path}: owned by uid {st.st_uid}, not by its folder's owner", seen
                )
            data = f.read(limit + 1)
        if len(data) > limit:
            raise UnsafePathError(f"{device_path}: larger than {limit} bytes", seen)
        return data, "sha256:" + hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
