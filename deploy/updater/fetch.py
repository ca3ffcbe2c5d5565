"""Getting a bundle into root's own folder: copied from a file, or downloaded (resumable).

Either way it ends up in ``downloads/`` (0700, root's alone) before anything
reads it, so it cannot change or vanish while it is verified and unpacked; a
device node or an endless file is refused, never copied until the disk is full.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from deploy import spool
from deploy.errors import UpdateError, UpdateRefused
from deploy.progress import Progress
from deploy.updater.device import Updater
from deploy.updater.steps import log
from edge.files import write_atomic
from edge.link.commands import MAX_BUNDLE

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: see ssl_context().
_NO_CHECK_TIME = 0x200000


def stage_bundle(u: Updater, path: Path) -> Path:
    """Copy a bundle (e.g. from a USB stick) into our own folder, where it cannot vanish.

    Only a regular file, and at most :data:`MAX_BUNDLE` bytes of it (a device
    node or an endless file is refused, not copied until the disk is full).
    The copy is created afresh in root's own 0700 folder, mode 0600.
    """
    u.prepare()
    if path.parent == u.downloads and re.fullmatch(r"[A-Za-z0-9._-]+\.tar", path.name):
        return path
    name = path.name if re.fullmatch(r"[A-Za-z0-9._-]{1,200}", path.name) else "bundle.tar"
    try:
        src_fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UpdateError(f"{path}: cannot read bundle: {exc.strerror or exc}") from None
    with os.fdopen(src_fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UpdateRefused(f"{path}: not a regular file")
        if st.st_size > MAX_BUNDLE:
            raise UpdateRefused(f"{path}: {st.st_size} bytes is more than a bundle may be")
        dir_fd = spool.own_dir(u.downloads, 0o700)
        try:
            tmp = name + ".copy"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dir_fd)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            out_fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)
            copied = 0
            u.progress.phase("copying the bundle", total=st.st_size)
            try:
                with os.fdopen(out_fd, "wb") as out:
                    while block := src.read(1 << 20):
                        copied += len(block)
                        if copied > MAX_BUNDLE:
                            raise UpdateRefused(f"{path}: grew past {MAX_BUNDLE} bytes")
                        out.write(block)
                        u.progress.update(copied)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                os.unlink(tmp, dir_fd=dir_fd)
                raise UpdateError(f"{path}: cannot copy bundle: {exc.strerror or exc}") from None
            except UpdateRefused:
                os.unlink(tmp, dir_fd=dir_fd)
                raise
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return u.downloads / name


def fetch(
    u: Updater,
    url: str,
    *,
    sha256: str | None = None,
    size: int | None = None,
    allow_file: bool = True,
) -> Path:
    """Download a bundle into root's own downloads folder, resuming a partial download.

    ``https://`` only (``file://`` only for the operator's ``fetch`` command, never
    for a request the daemon passed on).  :class:`UpdateRefused`: the bundle can
    never be had this way (wrong scheme or name, bigger than ``size``, wrong
    sha256); :class:`UpdateError`: try again later (network).
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file" and allow_file:
        return stage_bundle(u, Path(urllib.parse.unquote(parsed.path)))
    if parsed.scheme != "https":
        raise UpdateRefused(f"{url[:200]}: only https:// bundles can be fetched")
    name = parsed.path.rsplit("/", 1)[-1]
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.tar", name):
        raise UpdateRefused(f"{url[:200]}: a bundle's name is NAME.tar (plain characters)")
    u.prepare()
    for stale in u.downloads.iterdir():  # one download at a time: no pile of partials
        ours = stale.name in (f"{name}.part", f"{name}.part.json")
        if stale.name.endswith((".part", ".part.json")) and not ours:
            log.info("removing an abandoned partial download %s", stale.name)
            stale.unlink(missing_ok=True)
    return download(
        url,
        u.downloads / name,
        sha256=sha256,
        size=size,
        context=ssl_context(u.host(u.config.ca_file) if u.config.ca_file else None),
        timeout=u.config.download_timeout_s,
        progress=u.progress,
    )


def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """TLS that still works when the Pi's clock says 1970.

    A Pi has no real-time clock; until NTP answers, every certificate looks
    "not yet valid".  The chain and the host name are still verified, only the
    validity dates are not (OpenSSL's X509_V_FLAG_NO_CHECK_TIME).  Integrity
    and authenticity of the bundle come from its Ed25519 signature anyway.
    """
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


def _open_private(path: Path, flags: int) -> int:
    """Open a file of root's own folder for writing: never through a link, mode 0600."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | flags, 0o600)


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 60.0,
    chunk: int = 64 << 10,
    progress: Progress | None = None,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part`` with a Range request when one is left.

    A response of 200 to a Range request (server without Range support, or the
    file changed: ``If-Range``) starts over.  At most ``size`` bytes (else
    :data:`MAX_BUNDLE`) are ever written: a server sending more is refused at
    that point, and so is a file whose SHA-256 (hashed while it streams) is not
    ``sha256``: :class:`UpdateRefused`, the partial file discarded.  An
    interrupted transfer raises :class:`UpdateError`; the partial file is kept
    for the next try.
    """
    limit = size if size is not None else MAX_BUNDLE
    part = dest.with_name(dest.name + ".part")
    meta_path = dest.with_name(dest.name + ".part.json")

    def discard(reason: str) -> UpdateRefused:
        part.unlink(missing_ok=True)
        meta_path.unlink(missing_ok=True)
        return UpdateRefused(f"{url[:200]}: {reason}; discarded")

    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError, RecursionError):
        loaded = json.loads(meta_path.read_text())
        meta = loaded if isinstance(loaded, dict) else {}
    if meta.get("url") != url or meta.get("size") != size:
        part.unlink(missing_ok=True)
        meta = {"url": url, "size": size}
    h = hashlib.sha256()
    offset = 0
    if os.path.lexists(part):
        fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise discard("the partial download is not a regular file")
            while block := f.read(1 << 20):
                h.update(block)
                offset += len(block)
        if offset > limit:
            part.unlink()
            h, offset = hashlib.sha256(), 0
    headers = {"User-Agent": "satoyama-update"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = str(meta["validator"])
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout, context=context)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing more to send: we had it all
            resp = None
        else:
            raise UpdateError(f"{url[:200]}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UpdateError(f"{url[:200]}: cannot connect: {getattr(exc, 'reason', exc)}") from None
    got = offset
    if resp is not None:
        with resp:
            if resp.status == 206:
                start = re.match(r"bytes (\d+)-", resp.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    raise UpdateError(f"{url[:200]}: server resumed at the wrong place")
                flags = os.O_APPEND
            else:
                offset, got, flags, h = 0, 0, os.O_TRUNC, hashlib.sha256()
            length_header = resp.headers.get("Content-Length")
            length = int(length_header) if (length_header or "").isdigit() else None
            if length is not None and offset + length > limit:
                raise discard(f"the server offers {offset + length} bytes, more than {limit}")
            meta["validator"] = resp.headers.get("ETag") or resp.headers.get("Last-Modified") or ""
            write_atomic(meta_path, json.dumps(meta).encode(), mode=0o600)
            progress = progress or Progress.silent()
            whole = size if size is not None else (offset + length if length is not None else None)
            progress.phase(
                f"downloading {dest.name}" + (f" (resuming at {offset} bytes)" if offset else ""),
                total=whole,
            )
            progress.update(got)
            try:
                with os.fdopen(_open_private(part, flags), "wb") as out:
                    while data := resp.read(chunk):
                        if got + len(data) > limit:
                            raise discard(f"the server sent more than {limit} bytes")
                        out.write(data)
                        h.update(data)
                        got += len(data)
                        progress.update(got)
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, TimeoutError) as exc:
                raise UpdateError(
                    f"{url[:200]}: download interrupted at {got} bytes ({exc}); run again to resume"
                ) from None
            if length is not None and got - offset < length:
                raise UpdateError(
                    f"{url[:200]}: download interrupted at {got} bytes; run again to resume"
                )
            if length is None and size is not None and got < size:
                raise UpdateError(
                    f"{url[:200]}: download ended at {got} of {size} bytes; run again to resume"
                )
    if size is not None and got != size:
        raise discard(f"the file has {got} bytes, not the announced {size}")
    if sha256 and h.hexdigest() != sha256.lower():
        raise discard("downloaded file does not match the announced sha256")
    os.replace(part, dest)
    meta_path.unlink(missing_ok=True)
    return dest
