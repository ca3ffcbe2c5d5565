"""``satoyama-deploy``: the installer's and operator's tool.

satoyama-deploy ca init          the fleet CA (device certificates) and the claim CA
satoyama-deploy broker install   the shipped mosquitto configuration and ACLs
satoyama-deploy enrol serve      sign devices' own keys for their one-time claims
satoyama-deploy signing-key new  an OTA signing key pair (Ed25519)
satoyama-deploy bundle build     a signed OTA bundle
satoyama-deploy bundle verify    check a bundle against verify keys
satoyama-deploy profiles         the wiring profiles
satoyama-deploy provision        write a device's SD card
satoyama-deploy fleet ...        who runs what (SQLite, fed from MQTT)
satoyama-deploy rollout ...      announce an update, staged
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from deploy import bundle as bundle_mod
from deploy import fleet as fleet_mod
from deploy import profiles
from deploy.errors import DeployError, UnsafeTargetError
from deploy.keys import (
    check_private_file,
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verify_keys,
)
from deploy.provision import InputFileError

EXIT_ERROR = 1
EXIT_USAGE = 2


def _broker(args: argparse.Namespace) -> fleet_mod.Broker:
    host, _, port = args.broker.partition(":")
    password = None
    if args.mqtt_password_file:
        from deploy.provision import read_secret_file

        password = read_secret_file(Path(args.mqtt_password_file), "MQTT password")
    if args.tls_key:
        check_private_file(Path(args.tls_key), "MQTT client key")
    return fleet_mod.Broker(
        host=host,
        port=int(port or 1883),
        username=args.mqtt_username,
        password=password,
        tls_ca=Path(args.tls_ca) if args.tls_ca else None,
        tls_cert=Path(args.tls_cert) if args.tls_cert else None,
        tls_key=Path(args.tls_key) if args.tls_key else None,
    )


def cmd_ca_init(args: argparse.Namespace) -> int:
    from deploy.pki import create_ca, create_claim_ca

    key, cert = create_ca(Path(args.dir), args.fleet)
    ckey, ccert = create_claim_ca(Path(args.dir), args.fleet)
    print(
        f"fleet CA: {cert} (key {key}, mode 0600 - for the enroller only, keep it off "
        f"installers' machines)\nclaim CA: {ccert} (key {ckey}, mode 0600 - for provisioning)"
    )
    return 0


def cmd_ca_issue(args: argparse.Namespace) -> int:
    from deploy.pki import issue_broker_identity, issue_service_identity, load_ca, write_identity

    ca_dir = Path(args.dir)
    ca = load_ca(ca_dir / "ca.crt", ca_dir / "ca.key")
    if args.broker:
        identity = issue_broker_identity(ca, list(args.broker))
        stem = "broker"
    else:
        identity = issue_service_identity(ca, args.service)
        stem = args.service
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_identity(identity, out / f"{stem}.key", out / f"{stem}.crt")
    print(f"{out / f'{stem}.crt'} (key {out / f'{stem}.key'}, mode 0600)")
    return 0


def cmd_broker_install(args: argparse.Namespace) -> int:
    from deploy.broker import install

    for path in install(Path(args.dir), Path(args.conf_dir)):
        print(path)
    print("reload mosquitto: systemctl reload mosquitto (or restart)")
    return 0


def cmd_enrol_serve(args: argparse.Namespace) -> int:
    from cryptography import x509

    from deploy.claim import Enroller, serve
    from deploy.pki import load_ca

    fleet_ca = load_ca(Path(args.ca_cert), Path(args.ca_key))
    try:
        claim_ca = x509.load_pem_x509_certificate(Path(args.claim_ca_cert).read_bytes())
    except (OSError, ValueError) as exc:
        raise DeployError(f"{args.claim_ca_cert}: cannot read the claim CA: {exc}") from None
    with fleet_mod.FleetDB(Path(args.db)) as db:
        enroller = Enroller(fleet_ca, claim_ca, db)

        async def run() -> int:
            return await serve(enroller, _broker(args), args.prefix, max_requests=args.max_requests)

        n = asyncio.run(run())
    print(f"answered {n} enrolment request(s)")
    return 0


def cmd_signing_key(args: argparse.Namespace) -> int:
    pub = generate_signing_key(Path(args.private), Path(args.public))
    print(f"OTA signing key {key_id(pub)}: private {args.private} (0600), public {args.public}")
    return 0


def cmd_bundle_build(args: argparse.Namespace) -> int:
    out = bundle_mod.build(
        daemon_wheel=Path(args.daemon_wheel),
        out_dir=Path(args.out),
        signing_keys=[load_signing_key(Path(k)) for k in args.signing_key],
        wheelhouse=Path(args.wheelhouse) if args.wheelhouse else None,
        models=Path(args.models) if args.models else None,
        units=Path(args.units) if args.units else None,
        min_from_version=args.min_from,
        extras=args.extra,
        python=args.python,
        platform=args.platform,
        glibc=args.glibc,
        check_resolution=not args.no_resolve_check,
    )
    print(f"{out}\nsha256 {bundle_mod.file_sha256(out)}\nsize {out.stat().st_size}")
    return 0


def cmd_bundle_verify(args: argparse.Namespace) -> int:
    vb = bundle_mod.verify(Path(args.bundle), load_verify_keys([Path(k) for k in args.verify_key]))
    m = vb.manifest
    print(
        f"{args.bundle}: ok - {m.name} {m.version} (from {m.min_from_version or 'any'}), "
        f"Python {m.python} {m.platform}, {len(m.files)} files, signed by {vb.key_id}"
    )
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    for name in profiles.available():
        p = profiles.load(name)
        print(f"{name:<16} {p.title_ja}\n{'':<16} {p.title_en}")
        if p.interfaces:
            print(f"{'':<16} first boot switches on: {', '.join(p.interfaces)}")
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from deploy import provision as prov

    fleet = prov.load_fleet(Path(args.fleet))
    if args.lat is not None and args.lon is not None:
        lat, lon, description = args.lat, args.lon, ""
    elif args.sites:
        lat, lon, description = prov.lookup_place(Path(args.sites), args.site, args.place)
    else:
        raise DeployError("give the position: --lat and --lon, or --sites FILE (and --place)")
    wifi_psk = None
    if args.wifi_ssid:
        if args.wifi_psk_file:
            wifi_psk = prov.read_secret_file(Path(args.wifi_psk_file), "Wi-Fi passphrase")
        else:
            wifi_psk = os.environ.get("SATOYAMA_WIFI_PSK")
    req = prov.Request(
        device_id=args.device,
        site=args.site,
        fleet=fleet,
        latitude=lat,
        longitude=lon,
        description=args.description if args.description is not None else description,
        profile=None if args.config else args.profile,
        config_file=Path(args.config) if args.config else None,
        mqtt_username=args.mqtt_username,
        mqtt_password=prov.read_secret_file(Path(args.mqtt_password_file), "MQTT password")
        if args.mqtt_password_file
        else None,
        wifi_ssid=args.wifi_ssid,
        wifi_psk=wifi_psk,
        wifi_country=args.wifi_country,
        cellular_apn=args.cellular_apn,
        cellular_username=args.cellular_username,
        cellular_password=prov.read_secret_file(
            Path(args.cellular_password_file), "cellular password"
        )
        if args.cellular_password_file
        else None,
        first_boot=args.first_boot,
        ssh_key=Path(args.ssh_key) if args.ssh_key else None,
        replace_customisation=args.replace_customisation,
    )
    from deploy.progress import Progress

    plan = prov.provision(
        req,
        image=Path(args.image) if args.image else None,
        boot_dir=Path(args.boot_dir) if args.boot_dir else None,
        progress=Progress(sys.stderr),
    )
    if args.fleet_db:
        with fleet_mod.FleetDB(Path(args.fleet_db)) as db:
            db.add_device(args.device, args.site)
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(plan.summary, end="")
    return 0


def cmd_fleet_record(args: argparse.Namespace) -> int:
    with fleet_mod.FleetDB(Path(args.db)) as db:
        n = asyncio.run(
            fleet_mod.record(
                db,
                _broker(args),
                args.prefix,
                max_messages=args.max_messages,
                listen_s=args.timeout,
            )
        )
    print(f"recorded {n} message(s)")
    return 0


def cmd_fleet_devices(args: argparse.Namespace) -> int:
    with fleet_mod.FleetDB(Path(args.db)) as db:
        rows = db.devices(site=args.site)
    print(f"{'device':<28} {'site':<20} {'version':<10} {'state':<12} last seen")
    for r in rows:
        print(
            f"{r['device']:<28} {r['site'] or '-':<20} {r['version'] or '-':<10} "
            f"{r['state'] or '-':<12} {r['last_seen'] or '-'}"
        )
    return 0


def cmd_rollout_create(args: argparse.Namespace) -> int:
    sha256, size = args.sha256, args.size
    if args.bundle:
        path = Path(args.bundle)
        sha256 = bundle_mod.file_sha256(path)
        size = path.stat().st_size
    with fleet_mod.FleetDB(Path(args.db)) as db:
        if args.device:
            devices = list(args.device)
        elif args.site:
            devices = [r["device"] for s in args.site for r in db.devices(site=s)]
        else:
            devices = [r["device"] for r in db.devices()]
        rid = db.create_rollout(
            version=args.version,
            url=args.url,
            devices=devices,
            percent=args.percent,
            sha256=sha256,
            size=size,
            salt=args.salt,
            rollout_id=args.id,
        )
        prog = db.progress(rid)
    first = [p["device"] for p in prog if p["stage"] == 1]
    print(
        f"rollout {rid}: {len(prog)} device(s); "
        f"first stage ({args.percent:g} %): {', '.join(first)}"
    )
    return 0


def cmd_rollout_announce(args: argparse.Namespace) -> int:
    stage = 1 if args.stage == "first" else 2
    with fleet_mod.FleetDB(Path(args.db)) as db:
        msgs = db.announce(args.id, stage, args.prefix, force=args.force)
        asyncio.run(fleet_mod.publish(_broker(args), msgs))
    print(f"announced {args.id} stage {args.stage} to {len(msgs)} device(s)")
    return 0


def cmd_rollout_pause(args: argparse.Namespace) -> int:
    with fleet_mod.FleetDB(Path(args.db)) as db:
        changed = db.pause(args.id, by=args.by)
    print(f"rollout {args.id} " + ("paused" if changed else "was already paused"))
    return 0


def cmd_rollout_resume(args: argparse.Namespace) -> int:
    with fleet_mod.FleetDB(Path(args.db)) as db:
        changed = db.resume(args.id)
    print(f"rollout {args.id} " + ("resumed" if changed else "was not paused"))
    return 0


def cmd_rollout_status(args: argparse.Namespace) -> int:
    with fleet_mod.FleetDB(Path(args.db)) as db:
        prog = db.progress(args.id)
        rollout = db.rollout(args.id)
    if args.json:
        print(json.dumps(prog, indent=2))
        return 0
    if rollout["paused"] is not None:
        who = f" by {rollout['paused_by']}" if rollout["paused_by"] else ""
        print(f"PAUSED since {rollout['paused']}{who}: no stage is announced until resumed")
    for p in prog:
        what = (
            "updated"
            if p["updated"]
            else f"FAILED: {p['failure']}"
            if p["failure"]
            else ("announced" if p["announced"] else "waiting")
        )
        print(f"stage {p['stage']}  {p['device']:<28} {p['version'] or '-':<10} {what}")
    return 0


def _mqtt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, metavar="HOST[:PORT]")
    p.add_argument("--prefix", default="satoyama/v1", help="topic prefix (default: %(default)s)")
    p.add_argument("--mqtt-username")
    p.add_argument(
        "--mqtt-password-file", metavar="FILE", help="file (mode 0600) holding the password"
    )
    p.add_argument("--tls-ca", metavar="FILE", help="the fleet CA (TLS to the broker)")
    p.add_argument("--tls-cert", metavar="FILE", help="this tool's client certificate")
    p.add_argument("--tls-key", metavar="FILE", help="... and its key (mode 0600)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="satoyama-deploy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ca = sub.add_parser("ca", help="the fleet CA").add_subparsers(dest="sub", required=True)
    p = ca.add_parser(
        "init", help="create ca.key/ca.crt (fleet CA) and claim-ca.key/claim-ca.crt (claim CA)"
    )
    p.add_argument("--dir", required=True)
    p.add_argument("--fleet", required=True, help="fleet name (in the CA's name)")
    p.set_defaults(func=cmd_ca_init)
    p = ca.add_parser(
        "issue",
        help="a certificate of the fleet CA for the broker or one of the fleet's services",
        description="The broker's server certificate (--broker HOST...) or a service's client "
        "certificate (--service satoyama-cloud | satoyama-enroller | satoyama-operator | "
        "satoyama-recorder): the CN is the service's identity and client id on the broker.",
    )
    p.add_argument("--dir", required=True, help="the fleet CA folder (ca.crt, ca.key)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--broker", nargs="+", metavar="HOST", help="the broker's names / addresses")
    who.add_argument("--service", help="a service name starting with satoyama-")
    p.add_argument("--out", required=True, help="folder for NAME.key (0600) and NAME.crt")
    p.set_defaults(func=cmd_ca_issue)

    br = sub.add_parser("broker", help="the broker's configuration").add_subparsers(
        dest="sub", required=True
    )
    p = br.add_parser(
        "install",
        help="write the shipped satoyama.conf and ACLs",
        description="Write fleet.acl and claim.acl into --dir (which must already hold "
        "fleet-ca.crt, claim-ca.crt, broker.crt, broker.key) and satoyama.conf into --conf-dir.",
    )
    p.add_argument("--dir", default="/etc/mosquitto/satoyama")
    p.add_argument("--conf-dir", default="/etc/mosquitto/conf.d")
    p.set_defaults(func=cmd_broker_install)

    en = sub.add_parser("enrol", help="first-boot enrolment").add_subparsers(
        dest="sub", required=True
    )
    p = en.add_parser(
        "serve",
        help="answer devices' claims with certificates (fleet side)",
        description="Connect as satoyama-enroller and sign each device's own key once its "
        "one-time claim checks out (deploy/claim.py).",
    )
    p.add_argument("--db", required=True, help="the fleet database (claims used are kept here)")
    p.add_argument("--ca-cert", required=True, help="the fleet CA certificate")
    p.add_argument("--ca-key", required=True, help="the fleet CA key (mode 0600)")
    p.add_argument("--claim-ca-cert", required=True, help="the claim CA certificate")
    p.add_argument("--max-requests", type=int, help="stop after this many requests")
    _mqtt_args(p)
    p.set_defaults(func=cmd_enrol_serve)

    sk = sub.add_parser("signing-key", help="OTA signing keys").add_subparsers(
        dest="sub", required=True
    )
    p = sk.add_parser("new", help="create an Ed25519 key pair")
    p.add_argument("--private", required=True)
    p.add_argument("--public", required=True)
    p.set_defaults(func=cmd_signing_key)

    b = sub.add_parser("bundle", help="OTA bundles").add_subparsers(dest="sub", required=True)
    p = b.add_parser("build", help="build and sign a bundle")
    p.add_argument("--daemon-wheel", required=True, help="satoyama_edge-VERSION-py3-none-any.whl")
    p.add_argument("--wheelhouse", help="folder of dependency wheels built for the Pi")
    p.add_argument("--models", help="folder of on-device models")
    p.add_argument(
        "--units",
        default="systemd" if Path("systemd").is_dir() else None,
        help="folder of systemd units (default: ./systemd)",
    )
    p.add_argument("--min-from", help="oldest version this bundle may update")
    p.add_argument(
        "--signing-key",
        action="append",
        required=True,
        help="private key (repeat to sign with the old and the new key during a rotation)",
    )
    p.add_argument("--extra", action="append", default=[], help="package extra to install, e.g. pi")
    p.add_argument("--python", default="3.11", help="the device's Python (default: %(default)s)")
    p.add_argument("--platform", default="aarch64")
    p.add_argument(
        "--glibc", default="2.36", help="the device's glibc (default: %(default)s, Bookworm)"
    )
    p.add_argument(
        "--no-resolve-check", action="store_true", help="skip pip's offline install check"
    )
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_bundle_build)
    p = b.add_parser("verify", help="verify a bundle's signature and hashes")
    p.add_argument("bundle")
    p.add_argument("--verify-key", action="append", required=True)
    p.set_defaults(func=cmd_bundle_verify)

    p = sub.add_parser("profiles", help="list the wiring profiles")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser(
        "provision",
        help="write a device's SD card",
        description="Write a device's configuration, key and certificate, network settings, "
        "the signed daemon bundle and the first-boot hook onto a Raspberry Pi OS boot partition: "
        "inside an image file or unmounted card (--image, no mounting needed) or a mounted card "
        "(--boot-dir). Nothing is "
        "written unless everything checks out.",
    )
    p.add_argument("--fleet", required=True, help="fleet.toml (broker, CA, OTA keys, bundle)")
    p.add_argument("--device", required=True, help="device id, e.g. shiojiri-kataoka-01")
    p.add_argument("--site", required=True)
    p.add_argument("--lat", type=float)
    p.add_argument("--lon", type=float)
    p.add_argument("--sites", help="sites file to look the position up in")
    p.add_argument("--place", help="a named place of the site in the sites file")
    p.add_argument(
        "--description", help="where exactly the device is mounted (stays on the device)"
    )
    what = p.add_mutually_exclusive_group()
    what.add_argument("--profile", default="paddy-wildlife", choices=profiles.available())
    what.add_argument("--config", help="a complete device configuration instead of a profile")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--image", help="image file or unmounted card device (e.g. /dev/sdb)")
    where.add_argument("--boot-dir", help="the mounted boot partition (e.g. /media/$USER/bootfs)")
    p.add_argument("--wifi-ssid")
    p.add_argument(
        "--wifi-psk-file", help="file (0600) with the passphrase; or env SATOYAMA_WIFI_PSK"
    )
    p.add_argument("--wifi-country", help="regulatory domain (default: the fleet's, JP)")
    p.add_argument("--cellular-apn")
    p.add_argument("--cellular-username")
    p.add_argument("--cellular-password-file")
    p.add_argument("--mqtt-username")
    p.add_argument("--mqtt-password-file")
    p.add_argument(
        "--first-boot",
        choices=["auto", "cloud-init", "firstrun"],
        default="auto",
        help="auto: cloud-init if the image has its seed files (Trixie), else firstrun.sh",
    )
    p.add_argument("--ssh-key", help="public key for an administrator login (satoyama-admin)")
    p.add_argument(
        "--replace-customisation",
        action="store_true",
        help="overwrite another tool's first-boot customisation on the card",
    )
    p.add_argument("--fleet-db", help="also register the device in this fleet database")
    p.set_defaults(func=cmd_provision)

    f = sub.add_parser("fleet", help="which device runs what").add_subparsers(
        dest="sub", required=True
    )
    p = f.add_parser("record", help="record status and events from the broker")
    p.add_argument("--db", required=True)
    _mqtt_args(p)
    p.add_argument("--max-messages", type=int)
    p.add_argument("--timeout", type=float, help="stop after this many seconds")
    p.set_defaults(func=cmd_fleet_record)
    p = f.add_parser("devices", help="list devices and their versions")
    p.add_argument("--db", required=True)
    p.add_argument("--site")
    p.set_defaults(func=cmd_fleet_devices)

    r = sub.add_parser("rollout", help="staged update rollouts").add_subparsers(
        dest="sub", required=True
    )
    p = r.add_parser("create", help="plan a rollout (stage 1: PERCENT %% of devices by id hash)")
    p.add_argument("--db", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--url", required=True, help="where devices download the bundle")
    p.add_argument("--bundle", help="the bundle file (for its sha256 and size)")
    p.add_argument("--sha256")
    p.add_argument("--size", type=int)
    p.add_argument("--device", action="append", help="target device (repeat); default: all known")
    p.add_argument("--site", action="append", help="target every known device of a site (repeat)")
    p.add_argument("--percent", type=float, default=10.0)
    p.add_argument(
        "--salt", default="", help="change which devices go first (default: a stable ring)"
    )
    p.add_argument("--id")
    p.set_defaults(func=cmd_rollout_create)
    p = r.add_parser("announce", help="send the update command to one stage")
    p.add_argument("--db", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--stage", choices=["first", "rest"], required=True)
    p.add_argument(
        "--force", action="store_true", help="announce the rest despite an unfinished first stage"
    )
    _mqtt_args(p)
    p.set_defaults(func=cmd_rollout_announce)
    p = r.add_parser(
        "pause", help="announce no stage of a rollout until it is resumed (sent commands stay)"
    )
    p.add_argument("--db", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--by", default="", help="who paused it (shown in status and the console)")
    p.set_defaults(func=cmd_rollout_pause)
    p = r.add_parser("resume", help="let a paused rollout be announced again")
    p.add_argument("--db", required=True)
    p.add_argument("--id", required=True)
    p.set_defaults(func=cmd_rollout_resume)
    p = r.add_parser("status", help="progress of a rollout")
    p.add_argument("--db", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_rollout_status)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except InputFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except UnsafeTargetError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
