"""Claim-based enrolment: the card carries a one-time claim, the device makes its own key.

The enroller's checks one by one (no broker), then the whole way on real
mosquitto with the shipped configuration: a card provisioned into a FAT image,
``python -m edge.link.enrol`` as first boot runs it, ``satoyama-deploy``'s enroller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from deploy.claim import Enroller, serve
from deploy.fatboot import BootImage
from deploy.fleet import Broker, FleetDB
from deploy.pki import CA, common_name, create_claim_ca, issue_claim, load_ca
from deploy.provision import provision
from edge.link.enrol import signing_request
from tests.deploy.conftest import Keys
from tests.deploy.helpers import BOOKWORM_BOOT, REPO, make_fat_image
from tests.deploy.test_provision import DEVICE, NOT_HERE, _request, claim_fleet
from tests.support.pki import FleetCA, Issued
from tests.support.shipped_broker import ShippedBroker, shipped_broker
from tests.support.waiting import until

PEM = Encoding.PEM


@pytest.fixture
def cas(tmp_path: Path, fleet_ca: Path) -> tuple[CA, CA]:
    create_claim_ca(tmp_path / "claim-ca", "shiojiri")
    return (
        load_ca(fleet_ca / "ca.crt", fleet_ca / "ca.key"),
        load_ca(tmp_path / "claim-ca" / "claim-ca.crt", tmp_path / "claim-ca" / "claim-ca.key"),
    )


def request(device: str, claim_pem: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    return json.dumps(
        {
            "device": device,
            "csr": signing_request(key, device).decode(),
            "claim": claim_pem.decode(),
        }
    ).encode()


# -- the enroller's checks -----------------------------------------------------------------------


def test_a_claim_gets_one_certificate_for_its_device_and_the_devices_own_key(
    tmp_path: Path, cas: tuple[CA, CA]
) -> None:
    fleet, claim_ca = cas
    claim = issue_claim(claim_ca, DEVICE)
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        enroller = Enroller(fleet, claim_ca.cert, db)
        key = ec.generate_private_key(ec.SECP256R1())
        reply = enroller.answer(claim.name, request(DEVICE, claim.cert_pem, key))
        assert reply["ok"], reply
        cert = x509.load_pem_x509_certificate(reply["cert"].encode())
        cert.verify_directly_issued_by(fleet.cert)
        assert cert.public_key() == key.public_key()
        assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == DEVICE
        # The same device asking again (its reply was lost) gets the same certificate ...
        assert enroller.answer(claim.name, request(DEVICE, claim.cert_pem, key)) == reply
        # ... anyone else with a copy of the claim gets nothing.
        again = enroller.answer(claim.name, request(DEVICE, claim.cert_pem))
        assert again == {"ok": False, "error": "claim: already used"}
        assert [r["state"] for r in db.devices()] == ["enrolled"]


@pytest.mark.parametrize(
    "case, error",
    [
        ("another device", "claim: issued for another device, not 'someone-else'"),
        ("expired", "claim: expired or not yet valid"),
        ("not the claim CA", "claim: not issued by the claim CA"),
        (
            "not this connection's claim",
            "claim: the certificate is not the one this connection used",
        ),
        ("csr for another id", "csr: common name must be the device id"),
        ("not a claim name", "is not a claim name"),
        ("garbage", "request is not JSON"),
        ("reserved id", "not a device id: 'claim'"),
        ("a service's id", "not a device id: 'satoyama-cloud': ids starting with 'satoyama-'"),
    ],
)
def test_the_enroller_refuses(
    tmp_path: Path, cas: tuple[CA, CA], case: str, error: str
) -> None:
    fleet, claim_ca = cas
    claim = issue_claim(claim_ca, DEVICE, days=1)
    name, payload = claim.name, request(DEVICE, claim.cert_pem)
    clock = lambda: dt.datetime.now(dt.UTC)  # noqa: E731
    if case == "another device":
        payload = request("someone-else", claim.cert_pem)
    elif case == "expired":
        clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(days=1, minutes=1)  # noqa: E731
    elif case == "not the claim CA":  # a device certificate of the fleet CA is no claim
        forged = issue_claim(fleet, DEVICE)
        name, payload = forged.name, request(DEVICE, forged.cert_pem)
    elif case == "not this connection's claim":
        name = issue_claim(claim_ca, DEVICE).name
    elif case == "csr for another id":
        key = ec.generate_private_key(ec.SECP256R1())
        req = json.loads(payload)
        req["csr"] = signing_request(key, "someone-else").decode()
        payload = json.dumps(req).encode()
    elif case == "not a claim name":
        name = DEVICE
    elif case == "garbage":
        payload = b"\xff\x00"
    elif case == "reserved id":
        payload = request("claim", claim.cert_pem)
    elif case == "a service's id":  # a claim CA key holder trying to mint the notifier's identity
        minted = _claim_for(claim_ca, "satoyama-cloud")
        name, payload = common_name(minted), request("satoyama-cloud", minted.public_bytes(PEM))
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        reply = Enroller(fleet, claim_ca.cert, db, clock=clock).answer(name, payload)
        assert reply["ok"] is False and error in reply["error"], reply
        assert db.devices() == []


def _claim_for(claim_ca: CA, device: str) -> x509.Certificate:
    """A claim certificate the claim CA signed for any id (issue_claim would refuse)."""
    from deploy.pki import CLAIM_URN, _client_cert

    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(CLAIM_URN + device)])
    return _client_cert(
        claim_ca, key.public_key(), "claim-0123456789abcdef",
        dt.datetime.now(dt.UTC) + dt.timedelta(days=1), san,
    )  # fmt: skip


def test_provisioning_refuses_a_claim_for_a_services_id(cas: tuple[CA, CA]) -> None:
    from deploy.errors import ProvisionError

    for device in ("satoyama-cloud", "Satoyama-Enroller", "claim", "claim-x"):
        with pytest.raises(ProvisionError, match="belong"):
            issue_claim(cas[1], device)


# -- the whole way, on the shipped broker ---------------------------------------------------------


@asynccontextmanager
async def enroller_running(
    sb: ShippedBroker, fleet: CA, claim_ca: CA, db: FleetDB
) -> AsyncIterator[None]:
    who = sb.fleet_ca.issue("satoyama-enroller")
    broker = Broker(
        sb.host, sb.port, tls_ca=sb.fleet_ca.ca_file, tls_cert=who.cert, tls_key=who.key
    )
    ready = asyncio.Event()
    task = asyncio.create_task(
        serve(Enroller(fleet, claim_ca.cert, db), broker, "satoyama/v1", ready=ready.set)
    )
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def first_boot_enrol(etc: Path, config: Path, claim_port: int) -> tuple[int, str]:
    """``python -m edge.link.enrol`` exactly as firstboot.sh runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edge.link.enrol", "--config", str(config),
        "--claim-cert", str(etc / "claim.crt"), "--claim-key", str(etc / "claim.key"),
        "--claim-port", str(claim_port), "--timeout", "30",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_a_provisioned_card_enrols_on_first_boot_and_its_claim_is_spent(
    tmp_path: Path, bundle_v1: Path, ota_key: Keys, fleet_ca: Path
) -> None:
    fleet_file = claim_fleet(tmp_path, bundle_v1, [ota_key.public], fleet_ca)
    image = tmp_path / "card.img"
    make_fat_image(image, files=BOOKWORM_BOOT)
    provision(_request(fleet_file), image=image, system=NOT_HERE)

    # First boot, step 2: the secrets move from the card into /etc/satoyama.
    etc = tmp_path / "etc-satoyama"
    etc.mkdir()
    boot = BootImage(image)
    for name in ("device.toml", "claim.crt", "claim.key", "ca.crt"):
        (etc / name).write_bytes(boot.read(f"satoyama/secrets/{name}"))  # type: ignore[arg-type]
    boot.close()
    claim_copy = tmp_path / "attacker"  # what someone who copied the card has
    claim_copy.mkdir()
    for name in ("claim.crt", "claim.key", "ca.crt"):
        shutil.copy(etc / name, claim_copy / name)

    fleet = load_ca(fleet_ca / "ca.crt", fleet_ca / "ca.key")
    claim_dir = tmp_path / "claim-ca"
    claim_ca = load_ca(claim_dir / "claim-ca.crt", claim_dir / "claim-ca.key")
    fleet_side = FleetCA(tmp_path / "issued", existing=(fleet_ca / "ca.crt", fleet_ca / "ca.key"))
    claim_side = FleetCA(
        tmp_path / "issued-claim",
        existing=(tmp_path / "claim-ca" / "claim-ca.crt", tmp_path / "claim-ca" / "claim-ca.key"),
    )
    with shipped_broker(tmp_path / "mq", fleet_side, claim_side) as sb, FleetDB(
        tmp_path / "fleet.sqlite3"
    ) as db:
        # The card's configuration, pointed at this broker and at this test's /etc.
        config = etc / "device.toml"
        text = config.read_text().replace('host = "broker.example.jp"', f'host = "{sb.host}"')
        text = text.replace("/etc/satoyama/", f"{etc}/")
        config.write_text(text)
        async with enroller_running(sb, fleet, claim_ca, db):
            rc, out = await first_boot_enrol(etc, config, sb.claim_port)
            assert rc == 0, out
            # The attacker's copy of the claim is worth nothing now.
            attacker_cfg = claim_copy / "device.toml"
            attacker_cfg.write_text(text.replace(f"{etc}/", f"{claim_copy}/"))
            rc2, out2 = await first_boot_enrol(claim_copy, attacker_cfg, sb.claim_port)
            assert rc2 == 2 and "claim: already used" in out2, out2
            assert not (claim_copy / "device.crt").exists()

        # The device made its key itself (0600); it was never on the card.
        key_pem = (etc / "device.key").read_bytes()
        assert (etc / "device.key").stat().st_mode & 0o777 == 0o600
        key = serialization.load_pem_private_key(key_pem, None)
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )  # fmt: skip
        card = image.read_bytes()
        assert key_pem not in card and der not in card
        cert = x509.load_pem_x509_certificate((etc / "device.crt").read_bytes())
        cert.verify_directly_issued_by(fleet.cert)
        assert cert.public_key() == key.public_key()
        assert not (etc / "claim.key").exists() and not (etc / "claim.crt").exists()

        # The new identity works on the fleet listener: the cloud hears the device.
        ctx = ssl.create_default_context(cafile=str(etc / "ca.crt"))
        ctx.load_cert_chain(etc / "device.crt", etc / "device.key")
        cloud = fleet_side.issue("satoyama-cloud")
        got: list[str] = []
        async with sb_client(sb, cloud) as c, aiomqtt.Client(
            sb.host, sb.port, identifier=DEVICE, tls_context=ctx
        ) as dev:
            await c.subscribe(f"satoyama/v1/{DEVICE}/events", qos=1)

            async def collect() -> None:
                async for m in c.messages:
                    got.append(m.topic.value)

            task = asyncio.create_task(collect())
            await dev.publish(f"satoyama/v1/{DEVICE}/events", b"{}", qos=1)
            await until(lambda: bool(got), 10, "the enrolled device's event")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def sb_client(sb: ShippedBroker, who: Issued) -> aiomqtt.Client:
    """A fleet-side client (its client id is its certificate's CN, whatever it asks)."""
    return aiomqtt.Client(sb.host, sb.port, identifier="x", tls_context=sb.tls(who))


@pytest.mark.slow
async def test_a_claim_reaches_only_its_own_enrolment_topics(tmp_path: Path) -> None:
    with shipped_broker(tmp_path) as sb:
        claim_a = sb.claim_ca.issue("claim-aaaaaaaaaaaaaaaa")
        # A claim is no fleet certificate: the fleet listener refuses it.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(sb.host, sb.port, tls_context=sb.tls(claim_a), timeout=3):
                pass
        # A device certificate is no claim: the enrolment listener refuses it.
        with pytest.raises(aiomqtt.MqttError):
            async with aiomqtt.Client(
                sb.host, sb.claim_port, tls_context=sb.tls(sb.fleet_ca.issue("device-a")), timeout=3
            ):
                pass
        enroller = sb.fleet_ca.issue("satoyama-enroller")
        async with sb_client(sb, enroller) as en, aiomqtt.Client(
            sb.host, sb.claim_port, identifier="claim-bbbbbbbbbbbbbbbb",
            tls_context=sb.tls(claim_a),
        ) as a:  # fmt: skip
            await en.subscribe("satoyama/v1/#", qos=1)
            await a.subscribe("satoyama/v1/claim/claim-bbbbbbbbbbbbbbbb/reply", qos=1)  # refused
            await a.subscribe("satoyama/v1/claim/claim-aaaaaaaaaaaaaaaa/reply", qos=1)
            # A speaks as B, as a device, as itself: only the last gets through.
            await a.publish("satoyama/v1/claim/claim-bbbbbbbbbbbbbbbb/request", b"as-b", qos=1)
            await a.publish("satoyama/v1/claim-aaaaaaaaaaaaaaaa/events", b"as-device", qos=1)
            await a.publish("satoyama/v1/claim/claim-aaaaaaaaaaaaaaaa/request", b"own", qos=1)
            got = await asyncio.wait_for(anext(aiter(en.messages)), 10)
            assert (got.topic.value, got.payload) == (
                "satoyama/v1/claim/claim-aaaaaaaaaaaaaaaa/request", b"own"
            )
            # The enroller answers B, then A: A hears only its own.
            await en.publish("satoyama/v1/claim/claim-bbbbbbbbbbbbbbbb/reply", b"for-b", qos=1)
            await en.publish("satoyama/v1/claim/claim-aaaaaaaaaaaaaaaa/reply", b"for-a", qos=1)
            got_a = await asyncio.wait_for(anext(aiter(a.messages)), 10)
            assert got_a.payload == b"for-a"


@pytest.mark.slow
async def test_the_enroller_command_answers_a_claim_from_edge_enrol(
    tmp_path: Path, fleet_ca: Path
) -> None:
    """``satoyama-deploy enrol serve`` and ``python -m edge.link.enrol``, both as processes; the
    broker's and the enroller's certificates from ``satoyama-deploy ca issue``."""
    create_claim_ca(tmp_path / "claim-ca", "shiojiri")
    claim_dir = tmp_path / "claim-ca"
    fleet_side = FleetCA(tmp_path / "issued", existing=(fleet_ca / "ca.crt", fleet_ca / "ca.key"))
    claim_side = FleetCA(
        tmp_path / "issued-claim", existing=(claim_dir / "claim-ca.crt", claim_dir / "claim-ca.key")
    )
    claim = issue_claim(load_ca(claim_dir / "claim-ca.crt", claim_dir / "claim-ca.key"), DEVICE)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "claim.crt").write_bytes(claim.cert_pem)
    (etc / "claim.key").write_bytes(claim.key_pem)
    (etc / "claim.key").chmod(0o600)
    shutil.copy(fleet_ca / "ca.crt", etc / "ca.crt")
    svc = tmp_path / "services"
    for what in (["--broker", "localhost", "127.0.0.1"], ["--service", "satoyama-enroller"]):
        proc = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "deploy.cli", "ca", "issue", "--dir", str(fleet_ca), *what,
             "--out", str(svc)],
            cwd=REPO, capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    assert (svc / "satoyama-enroller.key").stat().st_mode & 0o777 == 0o600
    server = Issued(svc / "broker.crt", svc / "broker.key")
    with shipped_broker(tmp_path / "mq", fleet_side, claim_side, server) as sb:
        config = etc / "device.toml"
        config.write_text(
            f'[device]\nid = "{DEVICE}"\nsite = "s"\nlatitude = 36.0\nlongitude = 137.0\n\n'
            f'[uplink]\nhost = "{sb.host}"\nport = {sb.port}\n\n'
            f'[uplink.tls]\nca_file = "{etc}/ca.crt"\ncert_file = "{etc}/device.crt"\n'
            f'key_file = "{etc}/device.key"\n'
        )
        who = Issued(svc / "satoyama-enroller.crt", svc / "satoyama-enroller.key")
        since = sb.broker.log_size()
        enroller = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "deploy.cli", "enrol", "serve",
            "--db", str(tmp_path / "fleet.sqlite3"),
            "--ca-cert", str(fleet_ca / "ca.crt"), "--ca-key", str(fleet_ca / "ca.key"),
            "--claim-ca-cert", str(claim_dir / "claim-ca.crt"),
            "--broker", f"{sb.host}:{sb.port}", "--tls-ca", str(fleet_ca / "ca.crt"),
            "--tls-cert", str(who.cert), "--tls-key", str(who.key), "--max-requests", "1",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            await asyncio.to_thread(
                sb.broker.wait_for_subscription,
                "satoyama-enroller", "satoyama/v1/claim/+/request", 30, since=since,
            )  # fmt: skip
            rc, out = await first_boot_enrol(etc, config, sb.claim_port)
            assert rc == 0, out
            served, _ = await asyncio.wait_for(enroller.communicate(), 30)
        finally:
            if enroller.returncode is None:
                enroller.kill()
                await enroller.wait()
        assert enroller.returncode == 0, served
        assert b"answered 1 enrolment request(s)" in served
    cert = x509.load_pem_x509_certificate((etc / "device.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value == DEVICE
    assert sorted(p.name for p in etc.iterdir()) == [
        "ca.crt", "device.crt", "device.key", "device.toml"
    ]
    with FleetDB(tmp_path / "fleet.sqlite3") as db:
        used = db.claim_used(claim.name)
        assert used is not None and used["device"] == DEVICE


def test_broker_install_writes_the_shipped_files_or_names_what_is_missing(tmp_path: Path) -> None:
    from deploy.broker import CERT_FILES, install, shipped
    from deploy.errors import DeployError

    etc, confd = tmp_path / "satoyama", tmp_path / "conf.d"
    etc.mkdir()
    with pytest.raises(DeployError, match=r"missing fleet-ca\.crt, claim-ca\.crt, broker\.crt"):
        install(etc, confd)
    assert not confd.exists()
    for name in CERT_FILES:
        (etc / name).write_text("x")
    install(etc, confd)
    assert (etc / "fleet.acl").read_text() == shipped("fleet.acl")
    assert (etc / "claim.acl").read_text() == shipped("claim.acl")
    conf = (confd / "satoyama.conf").read_text()
    assert conf.replace(str(etc.resolve()), "/etc/mosquitto/satoyama") == shipped("satoyama.conf")


async def test_no_broker_means_exit_1_and_the_key_and_claim_are_kept_for_the_next_boot(
    tmp_path: Path, cas: tuple[CA, CA]
) -> None:
    from edge.sim.broker import free_port

    fleet, claim_ca = cas
    claim = issue_claim(claim_ca, DEVICE)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "claim.crt").write_bytes(claim.cert_pem)
    (etc / "claim.key").write_bytes(claim.key_pem)
    (etc / "ca.crt").write_bytes(fleet.pem)
    config = etc / "device.toml"
    config.write_text(
        f'[device]\nid = "{DEVICE}"\nsite = "s"\nlatitude = 36.0\nlongitude = 137.0\n\n'
        '[uplink]\nhost = "127.0.0.1"\n\n'
        f'[uplink.tls]\nca_file = "{etc}/ca.crt"\ncert_file = "{etc}/device.crt"\n'
        f'key_file = "{etc}/device.key"\n'
    )
    proc = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "edge.link.enrol", "--config", str(config),
         "--claim-cert", str(etc / "claim.crt"), "--claim-key", str(etc / "claim.key"),
         "--claim-port", str(free_port()), "--timeout", "3"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "error: no answer from 127.0.0.1" in proc.stderr
    key = (etc / "device.key").read_bytes()  # made once, kept: the next boot asks with it
    assert (etc / "claim.key").exists() and not (etc / "device.crt").exists()
    assert b"PRIVATE KEY" in key and (etc / "device.key").stat().st_mode & 0o777 == 0o600
