"""The device updater as a real process on a fake root: update, rollback, refusals, fetching."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import io
import ipaddress
import json
import os
import pty
import stat
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from deploy import spool
from deploy.errors import UpdateError
from deploy.updater.fetch import download, ssl_context
from deploy.updater.install import platform_refusal
from deploy.updater.steps import ROLLBACK_STEPS, STEPS
from edge.link.commands import CommandError, parse_command
from tests.deploy.conftest import Fleet, Keys
from tests.deploy.helpers import HOST_GLIBC, HOST_MACHINE, FakeDevice, build_fake_bundle


def test_update_installs_switches_restarts_and_keeps_n_releases(
    tmp_path: Path, fleet: Fleet
) -> None:
    dev = fleet.device(tmp_path / "root")
    trace = tmp_path / "trace"
    proc = dev.updater(
        "install", "--bundle", str(fleet.v3), env={"SATOYAMA_UPDATE_TRACE": str(trace)}
    )
    assert proc.returncode == 0, proc.stderr
    assert "0.2.0 -> 0.3.0" in proc.stdout
    # The power-cut test's fault points are real: a whole update passes each, in this order.
    assert tuple(trace.read_text().split()) == STEPS
    assert dev.assert_complete_release() == "0.3.0"
    assert dev.releases() == ["0.2.0", "0.3.0"], (
        "keep_releases = 2: the oldest went, the previous stayed"
    )
    assert dev.restarts() == 1
    [event] = dev.events()
    assert event["kind"] == "update_installed" and event["data"] == {
        "from_version": "0.2.0",
        "to_version": "0.3.0",
    }
    again = dev.updater("install", "--bundle", str(fleet.v3))
    assert again.returncode == 0 and "already running 0.3.0" in again.stdout
    status = json.loads(dev.updater("status").stdout)
    assert status["current"] == "0.3.0" and status["phase"] == "idle"


def test_a_daemon_that_never_reports_healthy_is_rolled_back(tmp_path: Path, fleet: Fleet) -> None:
    dev = fleet.device(tmp_path / "root")
    trace = tmp_path / "trace"
    proc = dev.updater(
        "install", "--bundle", str(fleet.v3_bad), env={"SATOYAMA_UPDATE_TRACE": str(trace)}
    )
    assert proc.returncode == 1, proc.stderr
    steps = tuple(trace.read_text().split())
    assert steps == STEPS[: STEPS.index("restarted") + 1] + ROLLBACK_STEPS
    assert "rolled back to 0.2.0" in proc.stdout
    assert dev.assert_complete_release() == "0.2.0"
    assert dev.releases() == ["0.1.0", "0.2.0"], "the bad release is gone"
    assert dev.restarts() == 2, "restarted into the new release, then back into the old one"
    [event] = dev.events()
    assert event["kind"] == "update_failed" and event["severity"] == "warning"
    assert event["data"]["stage"] == "health"  # type: ignore[index]
    assert event["data"]["from_version"] == "0.2.0" and event["data"]["to_version"] == "0.3.0"  # type: ignore[index]
    assert "rolled back to 0.2.0" in event["data"]["reason"]  # type: ignore[index]
    status = json.loads(dev.updater("status").stdout)
    assert status["failed_attempts"] == {"0.3.0": 1}


def test_a_daemon_that_does_not_even_start_is_rolled_back_and_the_report_says_so(
    tmp_path: Path, fleet: Fleet
) -> None:
    """With Type=notify, ``systemctl restart`` fails when the daemon dies before READY=1: no
    health wait runs, and the failure report must say the start failed, not a wait."""
    dev = fleet.device(tmp_path / "root")
    config = tmp_path / "root/etc/satoyama/updater.toml"
    restart = (
        "import os, sys; open(sys.argv[1], 'a').write('restart\\n'); "
        "sys.exit('Job for satoyama-edge.service failed.' "
        "if os.path.realpath(sys.argv[2]).endswith('0.3.0') else 0)"
    )
    lines = [
        line for line in config.read_text().splitlines(keepends=True)
        if not line.startswith(("restart_command", "  ", '                   "'))
    ]  # fmt: skip
    lines.append(
        f"restart_command = [{json.dumps(sys.executable)}, \"-c\", {json.dumps(restart)}, "
        '"{root}/restarts.log", "{release}"]\n'
    )
    config.write_text("".join(lines))
    proc = dev.updater("install", "--bundle", str(fleet.v3))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert dev.assert_complete_release() == "0.2.0"
    assert dev.restarts() == 2, "tried the new release, then started the old one again"
    [event] = dev.events()
    assert event["kind"] == "update_failed" and event["data"]["stage"] == "health"  # type: ignore[index]
    reason = str(event["data"]["reason"])  # type: ignore[index]
    assert reason.startswith("the daemon did not start (restarting the daemon failed (exit 1)")
    assert "Job for satoyama-edge.service failed." in reason
    assert "did not report healthy" not in reason


def test_a_release_whose_bytecode_cannot_be_compiled_is_not_switched_to(
    tmp_path: Path, fleet: Fleet
) -> None:
    dev = fleet.device(tmp_path / "root")
    proc = dev.updater(
        "install", "--bundle", str(fleet.v3), env={"SATOYAMA_FAKE_BYTECODE": "fail"}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert dev.assert_complete_release() == "0.2.0"
    assert dev.releases() == ["0.1.0", "0.2.0"], "the half release is gone"
    assert dev.restarts() == 0, "the running daemon was never touched"
    [event] = dev.events()
    assert event["kind"] == "update_failed" and event["data"]["stage"] == "bytecode"  # type: ignore[index]
    assert "disk full" in proc.stderr


def _tamper(bundle: Path, out: Path) -> Path:
    """Flip one byte inside a wheel in the bundle (the manifest and its signature untouched)."""
    data = bytearray(bundle.read_bytes())
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar if m.name.startswith("files/wheels/satoyama_edge"))
    data[member.offset_data + member.size // 2] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


@pytest.mark.parametrize(
    "case", ["tampered", "wrong-signature", "downgrade", "too-old", "not-a-bundle"]
)
def test_bad_bundles_are_rejected_before_anything_is_unpacked(
    tmp_path: Path, fleet: Fleet, ota_key: Keys, other_key: Keys, case: str
) -> None:
    dev = fleet.device(tmp_path / "root")
    if case == "tampered":
        bundle = _tamper(fleet.v3, tmp_path / "satoyama-edge-0.3.0.tar")
        expect = "does not match its manifest hash"
    elif case == "wrong-signature":
        bundle = build_fake_bundle(tmp_path, "0.3.0", other_key.private)
        expect = "signature rejected"
    elif case == "downgrade":
        bundle = fleet.v1
        expect = "older than the running 0.2.0"
    elif case == "too-old":
        bundle = build_fake_bundle(tmp_path, "0.4.0", ota_key.private, min_from="0.3.0")
        expect = "updates only from 0.3.0 or newer"
    else:
        bundle = tmp_path / "satoyama-edge-0.3.0.tar"
        bundle.write_bytes(b"\x1f\x8b" + b"not a tar" * 100)
        expect = "not a readable bundle"
    before = dev.snapshot()
    proc = dev.updater("install", "--bundle", str(bundle))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert expect in proc.stderr
    assert dev.snapshot() == before, "nothing under /opt/satoyama may change"
    assert dev.restarts() == 0
    assert dev.assert_complete_release() == "0.2.0"
    [event] = dev.events()
    assert event["kind"] == "update_failed"


OTHER_MACHINE = "aarch64" if HOST_MACHINE != "aarch64" else "x86_64"
NEWER_GLIBC = f"2.{int(HOST_GLIBC.split('.')[1]) + 1}"


def _with_platform(bundle: Path, out: Path, key: Keys, platform: str) -> Path:
    """The same bundle re-signed with another manifest ``platform`` (as older bundles wrote it)."""
    import msgspec

    from deploy import bundle as bundle_mod
    from deploy.keys import load_signing_key, sign

    with tarfile.open(bundle) as tin:
        members = [(m, tin.extractfile(m).read()) for m in tin]  # type: ignore[union-attr]
    manifest = msgspec.json.decode(dict((m.name, d) for m, d in members)["manifest.json"],
                                   type=bundle_mod.Manifest)  # fmt: skip
    manifest_bytes = msgspec.json.encode(msgspec.structs.replace(manifest, platform=platform))
    sig = json.dumps({"signatures": [sign(load_signing_key(key.private), manifest_bytes)]})
    replaced = {"manifest.json": manifest_bytes, "manifest.sig": sig.encode()}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tout:
        for m, data in members:
            data = replaced.get(m.name, data)
            m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    return out


@pytest.mark.parametrize("case", ["other-machine", "newer-glibc", "old-bundle-other-machine"])
def test_a_bundle_for_another_machine_or_a_newer_glibc_is_refused_before_unpacking(
    tmp_path: Path, fleet: Fleet, ota_key: Keys, case: str
) -> None:
    """The device's own interpreter says its machine and glibc; the manifest must fit them."""
    dev = fleet.device(tmp_path / "root")
    bundle = tmp_path / "satoyama-edge-0.3.0.tar"
    if case == "other-machine":
        bundle = build_fake_bundle(tmp_path, "0.3.0", ota_key.private, machine=OTHER_MACHINE)
        expect = (
            f"bundle is built for {OTHER_MACHINE} (manylinux_2_{HOST_GLIBC[2:]}_{OTHER_MACHINE}),"
            f" this device is {HOST_MACHINE}"
        )
    elif case == "newer-glibc":
        bundle = build_fake_bundle(tmp_path, "0.3.0", ota_key.private, glibc=NEWER_GLIBC)
        expect = (
            f"bundle needs glibc {NEWER_GLIBC} or newer (manylinux_2_{NEWER_GLIBC[2:]}_"
            f"{HOST_MACHINE}), this device has glibc {HOST_GLIBC}"
        )
    else:  # a bundle from before the manifest named the glibc: the machine alone
        _with_platform(fleet.v3, bundle, ota_key, OTHER_MACHINE)
        expect = f"bundle is built for {OTHER_MACHINE}, this device is {HOST_MACHINE}"
    before = dev.snapshot()
    proc = dev.updater("install", "--bundle", str(bundle))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    # What journald keeps of the run says why, after the phases that ran: nothing was unpacked.
    assert f"update refused: {expect}" in proc.stderr
    assert f"refused: {expect}" in proc.stderr.splitlines()[-1]
    assert "verifying the signature and every file's hash" in proc.stderr
    assert "unpacking" not in proc.stderr
    assert dev.snapshot() == before, "nothing under /opt/satoyama may change"
    assert dev.restarts() == 0
    assert dev.assert_complete_release() == "0.2.0"
    [event] = dev.events()
    assert event["kind"] == "update_failed"
    assert event["data"]["stage"] == "refused"
    assert str(event["data"]["reason"]).startswith(expect)
    status = json.loads(dev.updater("status").stdout)
    assert status["phase"] == "idle" and status["failed_attempts"] == {}, "not an attempt"


def test_an_old_bundle_naming_only_the_machine_installs_on_that_machine(
    tmp_path: Path, fleet: Fleet, ota_key: Keys
) -> None:
    bundle = _with_platform(fleet.v3, tmp_path / "satoyama-edge-0.3.0.tar", ota_key, HOST_MACHINE)
    dev = fleet.device(tmp_path / "root")
    proc = dev.updater("install", "--bundle", str(bundle))
    assert proc.returncode == 0, proc.stderr
    assert dev.assert_complete_release() == "0.3.0"


@pytest.mark.parametrize(
    ("platform", "machine", "libc", "verdict"),
    [
        ("manylinux_2_36_aarch64", "aarch64", "glibc 2.36", None),
        ("manylinux_2_36_aarch64", "aarch64", "glibc 2.41", None),  # newer glibc runs older wheels
        ("manylinux_2_41_aarch64", "aarch64", "glibc 2.36", "needs glibc 2.41 or newer"),
        ("manylinux_2_36_aarch64", "aarch64", "None", "this device has no glibc"),  # musl
        ("manylinux_2_36_aarch64", "armv7l", "glibc 2.36", "this device is armv7l"),
        ("manylinux_2_36_x86_64", "x86_64", "glibc 2.36", None),
        ("aarch64", "aarch64", "None", None),  # old bundles: the machine alone
        ("aarch64", "", "", "this device is unknown"),  # the interpreter said nothing
    ],
)
def test_platform_refusal_reads_the_manifest_platform(
    platform: str, machine: str, libc: str, verdict: str | None
) -> None:
    why = platform_refusal(platform, machine, libc)
    assert (why is None) if verdict is None else (why is not None and verdict in why), why


def test_key_rotation_devices_trust_several_keys(
    tmp_path: Path, fleet: Fleet, ota_key: Keys, other_key: Keys
) -> None:
    # A bundle signed by both the old and the new key installs on devices trusting either.
    dual = build_fake_bundle(tmp_path, "0.3.0", other_key.private, extra_keys=[ota_key.private])
    dev = fleet.device(tmp_path / "old-key-only")
    assert dev.updater("install", "--bundle", str(dual)).returncode == 0
    assert dev.current() == "0.3.0"
    # A device that trusts old and new accepts a bundle signed by the new key alone.
    rotated = tmp_path / "rotated"
    dev2 = fleet.device(rotated)
    FakeDevice.create(rotated, [ota_key.public, other_key.public])
    new_only = build_fake_bundle(tmp_path / "n", "0.3.0", other_key.private)
    proc = dev2.updater("install", "--bundle", str(new_only))
    assert proc.returncode == 0, proc.stderr
    assert dev2.assert_complete_release() == "0.3.0"


def test_recover_repairs_a_broken_current_link_and_removes_half_releases(
    tmp_path: Path, fleet: Fleet
) -> None:
    dev = fleet.device(tmp_path / "root")
    current = dev.opt / "current"
    current.unlink()
    current.symlink_to("releases/9.9.9")  # dangling
    half = dev.opt / "releases/0.5.0"
    (half / "venv").mkdir(parents=True)  # no .complete marker: a half-written release
    proc = dev.updater("recover")
    assert proc.returncode == 0, proc.stderr
    assert dev.assert_complete_release() == "0.2.0"
    assert "0.5.0" not in dev.releases()


def test_event_spool_contract(tmp_path: Path) -> None:
    path = tmp_path / "spool/events.jsonl"
    first = spool.append(path, "update_failed", "warning", {"stage": "health"}, source="test")
    spool.append(path, "update_installed", "info", {"to_version": "1.0"}, source="test")
    with open(path, "ab") as f:
        f.write(b'{"v":1,"kind":"cut sho')  # a write cut short by a power loss
    events = spool.read_and_clear(path)
    assert [e["kind"] for e in events] == ["update_failed", "update_installed"]
    assert events[0]["id"] == first and events[0]["v"] == 1 and events[0]["ts"].endswith("Z")
    assert path.read_bytes() == b""
    assert spool.read_and_clear(path) == []


# -- fetching: resumable HTTPS with Range, a clock that says 1970 -------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    cut_after: int | None = None
    no_length = False  # no Content-Length: the body ends when the connection does
    sent = 0
    ranges: ClassVar[list[str | None]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        cls = type(self)
        rng = self.headers.get("Range")
        cls.ranges.append(rng)
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        body = cls.payload[start:]
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header(
                "Content-Range", f"bytes {start}-{len(cls.payload) - 1}/{len(cls.payload)}"
            )
        if not cls.no_length:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        if cls.cut_after is not None:
            self.wfile.write(body[: cls.cut_after])
            cls.cut_after = None
            self.wfile.flush()
            self.connection.shutdown(2)  # the cellular link drops mid-download
            return
        try:
            for i in range(0, len(body), 64 << 10):
                self.wfile.write(body[i : i + (64 << 10)])
                cls.sent += min(64 << 10, len(body) - i)
        except OSError:
            pass  # the client hung up (it stops at the declared size)


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on loopback whose certificate is valid only from next year on:
    to a device whose clock says 1970 (or today) every certificate looks like that."""
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ota.test")])
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(future)
        .not_valid_after(future + dt.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "ota.crt", tmp_path / "ota.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_path, key_path)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", cert_path
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_download_resumes_with_range_after_the_link_drops(
    tmp_path: Path, fleet: Fleet, https_server: tuple[str, Path]
) -> None:
    base, ca = https_server
    _Handler.payload = fleet.v3.read_bytes()
    _Handler.cut_after = len(_Handler.payload) // 3
    _Handler.ranges = []
    url = f"{base}/satoyama-edge-0.3.0.tar"
    dest = tmp_path / "satoyama-edge-0.3.0.tar"
    ctx = ssl_context(ca)
    with pytest.raises(UpdateError, match="interrupted"):
        download(url, dest, context=ctx, timeout=10)
    part = dest.with_name(dest.name + ".part")
    got = part.stat().st_size
    assert 0 < got < len(_Handler.payload) and not dest.exists()
    download(
        url, dest, context=ctx, timeout=10, sha256=hashlib.sha256(_Handler.payload).hexdigest()
    )
    assert dest.read_bytes() == _Handler.payload
    assert _Handler.ranges == [None, f"bytes={got}-"], (
        "the second request resumed where the first stopped"
    )
    assert not part.exists()


def test_download_refuses_a_file_that_does_not_match_the_announced_hash(
    tmp_path: Path, https_server: tuple[str, Path]
) -> None:
    base, ca = https_server
    _Handler.payload = b"x" * 1000
    _Handler.cut_after = None
    with pytest.raises(UpdateError, match="does not match the announced sha256"):
        download(
            f"{base}/b.tar",
            tmp_path / "b.tar",
            context=ssl_context(ca),
            sha256="00" * 32,
            timeout=10,
        )
    assert not (tmp_path / "b.tar").exists() and not (tmp_path / "b.tar.part").exists()


# -- update requests: the daemon's drop folder, one schema, refusals reported once -------------


def _serve(device: FakeDevice, https_server: tuple[str, Path], payload: bytes) -> str:
    """Serve ``payload`` over HTTPS to the device (its updater trusts the server's CA)."""
    base, ca = https_server
    (device.root / "etc/satoyama/ota-ca.crt").write_bytes(ca.read_bytes())
    with open(device.root / "etc/satoyama/updater.toml", "a") as f:
        f.write('ca_file = "/etc/satoyama/ota-ca.crt"\n')
    _Handler.payload, _Handler.cut_after, _Handler.no_length = payload, None, False
    _Handler.ranges, _Handler.sent = [], 0
    return base


def _request(device: FakeDevice, **fields: object) -> Path:
    """What the daemon writes into its drop folder for ``cmd/update``."""
    path = device.root / "var/lib/satoyama/update-requests/request.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    return path


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_update_request_from_the_cloud_is_carried_out_once(
    tmp_path: Path, fleet: Fleet, https_server: tuple[str, Path]
) -> None:
    dev = fleet.device(tmp_path / "root")
    payload = fleet.v3.read_bytes()
    base = _serve(dev, https_server, payload)
    request = _request(
        dev,
        cmd="update",
        id="c1",
        version="0.3.0",
        url=f"{base}/satoyama-edge-0.3.0.tar",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
        rollout="r1",
        issued="2026-06-01T03:00:00Z",
    )
    abandoned = dev.root / "var/lib/satoyama-update/downloads/satoyama-edge-0.2.9.tar.part"
    abandoned.write_bytes(b"x" * 1000)  # an earlier request's cut-off download
    proc = dev.updater("run")
    assert proc.returncode == 0, proc.stderr
    assert dev.assert_complete_release() == "0.3.0"
    assert not abandoned.exists(), "partial downloads do not pile up"
    assert request.exists(), "root never changes the daemon's drop folder"
    again = dev.updater("run")
    assert again.returncode == 0 and again.stdout.strip() == "update request already handled"
    assert [e["kind"] for e in dev.events()] == ["update_installed"]
    # Everything the updater keeps is root's alone; the release is readable by the daemon.
    state = dev.root / "var/lib/satoyama-update"
    assert _mode(state) == 0o711 and _mode(state / "state.json") == 0o600
    assert _mode(state / "lock") == 0o600 and _mode(state / "downloads") == 0o700
    assert _mode(state / "spool") == 0o755 and _mode(state / "spool/events.jsonl") == 0o644
    release = dev.opt / "releases/0.3.0"
    assert _mode(release) == 0o755 and _mode(release / "manifest.json") == 0o644
    assert _mode(release / "venv/bin/edge") == 0o755


BAD_REQUESTS: dict[str, dict[str, object]] = {
    "file-shadow": {"url": "file:///etc/shadow"},
    "file-dev-zero": {"url": "file:///dev/zero"},
    "http": {"url": "http://127.0.0.1:1/satoyama-edge-0.3.0.tar"},
    "percent-dotdot": {"url": "https://127.0.0.1:1/a/%2e%2e/%2e%2e/satoyama-edge-0.3.0.tar"},
    "url-newline": {"url": "https://127.0.0.1:1/satoyama-edge-0.3.0.tar\n"},
    "version-newline": {"version": "0.3.0\n"},
    "version-rc": {"version": "9.9.9-rc1"},
    "no-size": {"size": None},
    "no-sha256": {"sha256": None},
    "too-big": {"size": 3 << 30},
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_update_requests_are_refused_by_daemon_and_updater_alike_and_reported_once(
    tmp_path: Path, fleet: Fleet, case: str
) -> None:
    good: dict[str, object] = {
        "cmd": "update",
        "id": "c1",
        "version": "0.3.0",
        "url": "https://127.0.0.1:1/satoyama-edge-0.3.0.tar",
        "sha256": "ab" * 32,
        "size": 1000,
    }
    fields: dict[str, object] = {**good, **BAD_REQUESTS[case]}
    dev = fleet.device(tmp_path / "root")
    path = _request(dev, **fields)
    with pytest.raises(CommandError):  # the daemon refuses it from the cloud...
        parse_command("update", path.read_bytes())
    proc = dev.updater("run")  # ...and the updater, with the same schema
    assert proc.returncode == 3, proc.stdout + proc.stderr
    [event] = dev.events()
    assert event["kind"] == "update_failed" and event["data"]["stage"] == "request"  # type: ignore[index]
    assert not list((dev.root / "var/lib/satoyama-update/downloads").iterdir()), "nothing fetched"
    again = dev.updater("run")
    assert again.returncode == 0 and again.stdout.strip() == "update request already handled"
    assert len(dev.events()) == 1, "a refused request is reported once, not at every timer run"
    assert dev.assert_complete_release() == "0.2.0"


@pytest.mark.parametrize("length", ["with-length", "no-length"])
def test_a_download_stops_at_the_declared_size(
    tmp_path: Path, fleet: Fleet, https_server: tuple[str, Path], length: str
) -> None:
    """A server sending more than the request's ``size`` is cut off there, never copied whole."""
    dev = fleet.device(tmp_path / "root")
    payload = b"\0" * (8 << 20)  # think /dev/zero behind a URL
    base = _serve(dev, https_server, payload)
    _Handler.no_length = length == "no-length"
    _request(
        dev,
        cmd="update",
        id="c2",
        version="0.3.0",
        url=f"{base}/satoyama-edge-0.3.0.tar",
        sha256=hashlib.sha256(payload[:100_000]).hexdigest(),
        size=100_000,
    )
    proc = dev.updater("run")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "more than 100000" in proc.stdout
    assert not list((dev.root / "var/lib/satoyama-update/downloads").iterdir())
    [event] = dev.events()
    assert event["data"]["stage"] == "request"  # type: ignore[index]
    assert dev.updater("run").stdout.strip() == "update request already handled"


def test_a_download_with_the_wrong_hash_is_refused_and_discarded(
    tmp_path: Path, fleet: Fleet, https_server: tuple[str, Path]
) -> None:
    dev = fleet.device(tmp_path / "root")
    payload = fleet.v3.read_bytes()
    base = _serve(dev, https_server, payload)
    _request(
        dev,
        cmd="update",
        id="c3",
        version="0.3.0",
        url=f"{base}/satoyama-edge-0.3.0.tar",
        sha256="00" * 32,
        size=len(payload),
    )
    proc = dev.updater("run")
    assert proc.returncode == 3 and "sha256" in proc.stdout, proc.stdout + proc.stderr
    assert not list((dev.root / "var/lib/satoyama-update/downloads").iterdir())
    assert dev.assert_complete_release() == "0.2.0"
    assert [e["kind"] for e in dev.events()] == ["update_failed"]


def test_an_interrupted_download_keeps_the_request_and_resumes(
    tmp_path: Path, fleet: Fleet, https_server: tuple[str, Path]
) -> None:
    dev = fleet.device(tmp_path / "root")
    payload = fleet.v3.read_bytes()
    base = _serve(dev, https_server, payload)
    _Handler.cut_after = len(payload) // 2
    _request(
        dev,
        cmd="update",
        id="c4",
        version="0.3.0",
        url=f"{base}/satoyama-edge-0.3.0.tar",
        sha256=hashlib.sha256(payload).hexdigest(),
        size=len(payload),
    )
    first = dev.updater("run")
    assert first.returncode == 1 and "run again to resume" in first.stderr, first.stderr
    assert dev.events() == [], "a network failure is not a refusal"
    second = dev.updater("run")
    assert second.returncode == 0, second.stderr
    assert dev.assert_complete_release() == "0.3.0"
    assert _Handler.ranges[-1] == f"bytes={len(payload) // 2}-"


# -- bundles that must end in a clear refusal ---------------------------------------------------


def test_a_deeply_nested_signature_file_is_refused_with_an_event(
    tmp_path: Path, fleet: Fleet
) -> None:
    bad = tmp_path / "satoyama-edge-0.3.0.tar"
    with tarfile.open(fleet.v3) as tin, tarfile.open(bad, "w", format=tarfile.PAX_FORMAT) as tout:
        for m in tin:
            data = tin.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name == "manifest.sig":
                data = b'{"x":' + b"[" * 30_000 + b"]" * 30_000 + b',"signatures":[]}'
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data))
    dev = fleet.device(tmp_path / "root")
    proc = dev.updater("install", "--bundle", str(bad))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "manifest.sig is malformed" in proc.stderr
    [event] = dev.events()
    assert event["kind"] == "update_failed" and event["data"]["stage"] == "verify"  # type: ignore[index]
    assert not list((dev.root / "var/lib/satoyama-update/downloads").iterdir()), "forgery kept"


def _sdist(marker: Path) -> bytes:
    """A source package whose setup.py, if anyone built it, would leave ``marker`` behind."""
    setup = f"open({str(marker)!r}, 'w').write('ran as root')\nfrom setuptools import setup\n"
    setup += "setup(name='evil', version='1.0')\n"
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in (
            ("evil-1.0/setup.py", setup),
            ("evil-1.0/PKG-INFO", "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return out.getvalue()


def test_a_signed_bundle_with_a_source_package_is_not_built(
    tmp_path: Path, fleet: Fleet, ota_key: Keys
) -> None:
    """Only wheels are installed: pip never runs a bundle's setup.py as root."""
    import msgspec

    from deploy import bundle as bundle_mod
    from deploy.keys import load_signing_key, sign

    marker = tmp_path / "setup-py-ran"
    sdist = _sdist(marker)
    files: dict[str, bytes] = {}
    with tarfile.open(fleet.v3) as tin:
        manifest = msgspec.json.decode(
            tin.extractfile("manifest.json").read(),  # type: ignore[union-attr]
            type=bundle_mod.Manifest,
        )
        for m in tin:
            if m.name.startswith("files/"):
                files[m.name.removeprefix("files/")] = tin.extractfile(m).read()  # type: ignore[union-attr]
    files["wheels/evil-1.0.tar.gz"] = sdist
    entries = {
        k: bundle_mod.FileEntry(sha256=hashlib.sha256(v).hexdigest(), size=len(v))
        for k, v in files.items()
    }
    forged = msgspec.structs.replace(
        manifest, files=entries, install=[*manifest.install, "evil==1.0"]
    )
    manifest_bytes = msgspec.json.encode(forged)
    sig = json.dumps({"signatures": [sign(load_signing_key(ota_key.private), manifest_bytes)]})
    bundle = tmp_path / "satoyama-edge-0.3.0.tar"
    with tarfile.open(bundle, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in [
            ("manifest.json", manifest_bytes),
            ("manifest.sig", sig.encode()),
            *((f"files/{k}", v) for k, v in sorted(files.items())),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    dev = fleet.device(tmp_path / "root")
    proc = dev.updater("install", "--bundle", str(bundle))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "not wheels: wheels/evil-1.0.tar.gz" in proc.stdout
    assert not marker.exists(), "a source package's setup.py ran"
    assert dev.assert_complete_release() == "0.2.0"
    [event] = dev.events()
    assert event["kind"] == "update_failed"


# -- progress: an install takes minutes on an SD card --------------------------------------------


def test_an_install_names_each_phase_once_in_the_journal(tmp_path: Path, fleet: Fleet) -> None:
    """Under systemd (no terminal) each phase is one line, in order, nothing redrawn."""
    dev = fleet.device(tmp_path / "root")
    proc = dev.updater("install", "--bundle", str(fleet.v3))
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    phases = [
        "copying the bundle (",
        "verifying the signature and every file's hash",
        "unpacking ",
        "creating the virtual environment",
        "installing ",
        "compiling the daemon's bytecode",
        "checking the new release before switching",
        "switching to 0.3.0",
        "restarting the daemon",
        "waiting for the daemon to stay healthy for 0.2 s (at most 1 s)",
    ]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(tuple(phases))]
    assert len(lines) == len(phases), proc.stderr
    for line, phase in zip(lines, phases, strict=True):
        assert line.startswith(phase), (line, phase)
    assert lines[0].endswith(" MB)") and " MB)" in lines[2], lines  # sizes, as they start
    assert lines[4].endswith("wheels (pip, offline)"), lines[4]


def test_on_a_terminal_the_health_wait_counts_the_seconds_waited(
    tmp_path: Path, fleet: Fleet
) -> None:
    dev = fleet.device(tmp_path / "root")
    config = dev.root / "etc/satoyama/updater.toml"
    text = config.read_text()
    assert "health_timeout_s = 1.0" in text
    config.write_text(text.replace("health_timeout_s = 1.0", "health_timeout_s = 2.5"))
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.updater", "--root", str(dev.root),
         "install", "--bundle", str(fleet.v3_bad)],
        stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2], start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    seen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the updater closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(timeout=120) == 1
    terminal = seen.decode()
    wait = "\rwaiting for the daemon to stay healthy for 0.2 s: "
    assert f"{wait}0 of at most 2.5 s" in terminal, terminal
    assert f"{wait}1 of at most 2.5 s" in terminal, terminal  # redrawn as the seconds pass
    assert f"{wait}2 of at most 2.5 s" in terminal, terminal
    assert "healthy for 0.2 s: not healthy (" in terminal  # the line stays, with its verdict
    assert "\rrolling back to 0.2.0" in terminal
    assert "unpacking " in terminal and " MB " in terminal and " %" in terminal


def test_a_wrong_value_in_updater_toml_names_its_key(tmp_path: Path) -> None:
    """The updater's own configuration errors read like the daemon's: one line naming the key."""
    from deploy.errors import DeployError
    from deploy.updater.config import load_config

    path = tmp_path / "updater.toml"
    path.write_text('health_timeout_s = "soon"\n', encoding="utf-8")
    with pytest.raises(DeployError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: health_timeout_s: expected `float`, got `str`"
