"""``edge``: the daemon's command line (run, validate, demo)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from edge import __version__

log = logging.getLogger("edge")

EXIT_CONFIG = 2


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        logging.getLogger("aiomqtt").setLevel(logging.WARNING)


def _load_config(path: str):  # type: ignore[no-untyped-def]
    from edge.config import ConfigError, load

    try:
        return load(path)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


async def _run(config_path: str) -> int:
    from edge.daemon import Daemon
    from edge.health.sdnotify import SystemdNotifier
    from edge.link.uplink import UplinkSetupError, check_private_file

    config = _load_config(config_path)
    daemon = Daemon(config)
    notifier = SystemdNotifier()  # a no-op outside systemd
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if config.uplink.password is not None:
            check_private_file(config_path, "uplink.password (the config file holds a secret)")
        await daemon.start()
    except UplinkSetupError as exc:
        print(f"config error: {config_path}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    notifier.ready(f"device {config.device.id} running")
    watchdog = asyncio.create_task(notifier.run_watchdog(), name="systemd watchdog")
    try:
        await stop.wait()
        log.info("stopping")
    finally:
        notifier.stopping()
        watchdog.cancel()
        await daemon.close()
        notifier.close()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    _setup_logging(args.verbose)
    return asyncio.run(_run(args.config))


def cmd_validate(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    print(
        f"{args.config}: ok - device {config.device.id} at site {config.device.site} "
        f"({config.device.latitude:.6f}, {config.device.longitude:.6f}); "
        f"{len(config.sensors)} sensor(s), {len(config.actuators)} actuator(s), "
        f"{len(config.rules)} rule(s)"
    )
    from edge.config import location_warnings
    from edge.health.anomaly_watch import cadence_warnings

    for warning in cadence_warnings(config):
        print(f"warning: {warning}")
    for warning in location_warnings(config.device.latitude, config.device.longitude):
        print(f"warning: {warning}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.tools.demo import run_demo

    return run_demo(output=Path(args.output), speed=args.speed, language=args.lang)


def cmd_check(args: argparse.Namespace) -> int:
    from edge.tools.check import run_check

    config = _load_config(args.config)
    unknown = [n for n in args.fire if n not in config.actuators]
    if unknown:
        print(
            f"error: --fire {unknown[0]}: no actuator of that name in the config", file=sys.stderr
        )
        return EXIT_CONFIG

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        verdict = await run_check(
            config,
            watch_s=args.watch,
            fire=args.fire,
            require_exercise=args.require_exercise,
            stop=stop,
        )
        return 0 if verdict.passed else 1

    return asyncio.run(main())


def _nap_rules(config: Any, room: str | None) -> list[tuple[str, Any]]:
    """The device's nap rules (``--room``: that one); exits 2 naming what is wrong."""
    from edge.config import NapRuleConfig

    naps = [(n, r) for n, r in config.rules.items() if isinstance(r, NapRuleConfig)]
    if not naps:
        print("error: this device has no nap rule (rules.*.type = \"nap\")", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if room is None:
        return naps
    chosen = [(n, r) for n, r in naps if n == room]
    if not chosen:
        names = ", ".join(n for n, _ in naps)
        print(f"error: --room {room}: no nap rule of that name (rules: {names})", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    return chosen


def _open_nap_log(path: Path) -> Any:
    """The device's nap log, or exit 1 saying why (usually: not the daemon's user)."""
    import sqlite3

    from edge.nursery.log import NapLog

    try:
        return NapLog(path)
    except (OSError, sqlite3.Error) as exc:
        print(f"error: {path}: cannot open the nap log ({exc}); run this as the daemon's "
              "user (sudo -u satoyama ...)", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_report_naps(args: argparse.Namespace) -> int:
    import datetime as dt

    from edge.config import MatSensorConfig
    from edge.nursery.log import NapEntry, nap_log_path
    from edge.nursery.sheet import JST, write_report

    config = _load_config(args.config)
    try:
        date = dt.date.fromisoformat(args.date)
    except ValueError:
        print(f"error: --date {args.date}: expected YYYY-MM-DD", file=sys.stderr)
        return EXIT_CONFIG
    naps = _nap_rules(config, args.room)
    entries: list[NapEntry] = []
    children: dict[str, str] = {}
    read: set[Path] = set()
    for _, rule in naps:
        for mat in rule.mats:
            sensor = config.sensors[mat]
            assert isinstance(sensor, MatSensorConfig)
            children[sensor.cot] = sensor.child
        path = nap_log_path(config, rule)
        if path in read:
            continue  # rules sharing one log: read it once
        read.add(path)
        if not path.exists():
            print(f"warning: {path}: no nap log yet (the daemon writes it)", file=sys.stderr)
            continue
        log = _open_nap_log(path)
        try:
            entries += log.day(date, JST)
        finally:
            log.close()
    first = naps[0][1]
    html_path, csv_path = write_report(
        sorted(entries, key=lambda e: e.t), date, children, Path(args.out), args.lang,
        period=first.period or None, facility=first.facility, class_name=first.class_name,
    )
    print(f"{html_path}\n{csv_path}")
    return 0


def cmd_nap_ack(args: argparse.Namespace) -> int:
    """A staff member answers the nap room's alarm by name; the daemon applies it."""
    import time

    from edge.nursery.log import nap_log_path

    config = _load_config(args.config)
    naps = _nap_rules(config, args.room)
    if len(naps) > 1:
        names = ", ".join(n for n, _ in naps)
        print(f"error: --room: this device has several nap rules ({names}); name one",
              file=sys.stderr)
        return EXIT_CONFIG
    [(name, rule)] = naps
    if args.by not in rule.staff:
        listed = ", ".join(rule.staff) or "none listed"
        print(f"error: --by {args.by}: not in rules.{name}.staff ({listed})", file=sys.stderr)
        return EXIT_CONFIG
    log = _open_nap_log(nap_log_path(config, rule))
    try:
        request = log.request_ack(name, args.by, time.time())
        deadline = time.monotonic() + args.wait
        while not (outcome := log.outcome(request)):
            if time.monotonic() > deadline and log.withdraw(request):
                print(f"error: the daemon did not take the acknowledgement within {args.wait:g} s"
                      " (is it running with this config?); withdrawn, it will not be applied",
                      file=sys.stderr)
                return 1
            time.sleep(0.1)
    finally:
        log.close()
    print(f"{args.by}: {outcome}")
    return 0 if outcome != "expired" else 1


def cmd_nap_climate(args: argparse.Namespace) -> int:
    """Room temperature and humidity, written on the check sheet at this time."""
    import time

    from edge.nursery.log import nap_log_path

    config = _load_config(args.config)
    naps = _nap_rules(config, args.room)
    if args.temp is None and args.humidity is None:
        print("error: give --temp and/or --humidity", file=sys.stderr)
        return EXIT_CONFIG
    for flag, value, low, high in (("--temp", args.temp, -10, 50),
                                   ("--humidity", args.humidity, 0, 100)):
        if value is not None and not low <= value <= high:
            print(f"error: {flag} {value:g}: expected {low} to {high}", file=sys.stderr)
            return EXIT_CONFIG
    name, rule = naps[0]
    if args.by and rule.staff and args.by not in rule.staff:
        print(f"error: --by {args.by}: not in rules.{name}.staff ({', '.join(rule.staff)})",
              file=sys.stderr)
        return EXIT_CONFIG
    value = ("" if args.temp is None else f"{args.temp:g}") + "/" + (
        "" if args.humidity is None else f"{args.humidity:g}")
    log = _open_nap_log(nap_log_path(config, rule))
    try:
        log.add_now("", "climate", value, time.time(), by=args.by or "")
    finally:
        log.close()
    print(f"recorded: {value.replace('/', ' C, ')} %")
    return 0


def cmd_bench_run(args: argparse.Namespace) -> int:
    import tempfile

    from edge.sim.actions import EmulationError
    from edge.sim.emulated import SiteSetupError
    from edge.tools.bench import (
        Console,
        ScenarioError,
        find_scenario,
        load_scenario,
        parse_broker,
        run_scenario,
    )

    # Everything is checked before anything starts: the device's config, then the
    # scenario (its keys, and every name in it against the site or the device).
    device = _load_config(args.device) if args.device else None
    try:
        broker = parse_broker(args.broker) if args.broker else None
        scenario = load_scenario(find_scenario(args.scenario), device)
    except ScenarioError as exc:
        print(f"bench error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.verbose:
        _setup_logging(False)
    # With --verbose the whole log goes to stderr; otherwise the console shows each
    # distinct warning once, stamped with the scenario's clock.
    console = Console(sys.stdout)
    with tempfile.TemporaryDirectory(prefix="satoyama-bench-") as tmp:
        try:
            report = asyncio.run(
                run_scenario(scenario, Path(tmp), device=device, console=console,
                             capture_log=not args.verbose, broker=broker)
            )
        except (ScenarioError, EmulationError) as exc:
            print(f"bench error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        except SiteSetupError as exc:
            print(f"bench error: {exc}", file=sys.stderr)
            return 1
    print(report.render())
    if args.report:
        Path(args.report).write_text(report.to_json(), encoding="utf-8")
    return 0 if report.passed else 1


def cmd_bench_list(args: argparse.Namespace) -> int:
    from edge.tools.bench import SCENARIOS, load_scenario

    for path in sorted(SCENARIOS.glob("*.toml")):
        print(f"{path.stem:<28} {load_scenario(path).name}")
    return 0


def cmd_bytecode(args: argparse.Namespace) -> int:
    """The daemon's optimised bytecode (the updater's install step; docs/ota.md)."""
    from edge.bytecode import main as bytecode_main

    return bytecode_main(Path(args.prefix), check=args.check)


def cmd_mat_record(args: argparse.Namespace) -> int:
    """Labelled frames from a real mat (docs/recording.md); one line and exit 1 when refused."""
    from edge.tools.record import RecordError, check_label, mat_sensor, run_record

    config = _load_config(args.config)
    try:
        check_label(args.label)
        mat_sensor(config, args.mat)
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        asyncio.run(run_record(
            config, mat=args.mat, label=args.label, seconds=args.seconds,
            out_dir=Path(args.out), calibrate_s=args.calibrate_seconds,
        ))  # fmt: skip
    except RecordError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing saved from this run", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="Satoyama Edge field daemon: sensors, deterrents and store-and-forward events.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run the daemon",
        description="Run the daemon with a device configuration (see docs/configuration.md). "
        "The configuration is validated first; on an error the daemon does not start and "
        f"exits with status {EXIT_CONFIG}.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "validate",
        help="check a configuration file and exit",
        description="Validate a device configuration without touching any hardware. "
        f"Prints a summary and exits 0, or names the bad key and exits {EXIT_CONFIG}.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "demo",
        help="run a whole simulated site on this machine",
        description="Start a private mosquitto broker, an SMTP server that writes each mail as "
        "an .eml file, the cloud notifier and the daemon on emulated hardware, then play a "
        "scene in which a wild boar passes the infrared detector. Prints a timeline and the "
        "e-mail that arrived; exits 0 when the e-mail was delivered.",
    )
    p.add_argument(
        "--output",
        "-o",
        default="demo-output",
        metavar="DIR",
        help="folder for the received .eml files, configs and logs (default: %(default)s)",
    )
    p.add_argument(
        "--speed",
        type=float,
        default=10.0,
        metavar="X",
        help="scene speed-up: 1 plays the scene in real time (about 2.5 minutes), "
        "the default %(default)s in about 15 seconds",
    )
    p.add_argument(
        "--lang",
        choices=["ja", "en"],
        default="ja",
        help="language of the e-mail (default: %(default)s)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "check",
        help="the installer's self-test: probe every sensor and actuator",
        description="Probe every configured sensor and actuator without running the rules "
        "(waving at the detector does not sound the siren or send e-mail), show a live "
        "table, fire actuators' test patterns on request, check the broker and the modem. "
        "Ends with a one-line verdict: exit 0, or 1 naming each failing part.",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    p.add_argument(
        "--watch", type=float, default=30.0, metavar="S",
        help="seconds to watch the sensors while you exercise them (default %(default)s; "
        "Ctrl-C ends early)",
    )
    p.add_argument(
        "--fire", action="append", default=[], metavar="ACTUATOR",
        help="run this actuator's test pattern (siren 1 s, strobe 3 s, buzzer 3 beeps); "
        "repeatable",
    )
    p.add_argument(
        "--require-exercise", action="store_true",
        help="fail parts that were not exercised (detector not triggered, trap not closed)",
    )
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "report",
        help="reports kept on the device (the nap check sheet)",
        description="Reports built from the device's local records.",
    )
    rep = p.add_subparsers(dest="report_command", required=True, metavar="REPORT")
    r = rep.add_parser(
        "naps",
        help="the day's nap check sheet (午睡チェック表) as HTML and CSV",
        description="One row per cot, one column per check time, posture marks, alarms "
        "highlighted; a printable HTML page and a CSV.",
    )
    r.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    r.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day (Japan time)")
    r.add_argument("--out", default=".", metavar="DIR", help="folder to write (default: .)")
    r.add_argument("--lang", choices=["ja", "en"], default="ja", help="language (default ja)")
    r.add_argument("--room", metavar="RULE", help="only this nap rule's cots (default: all)")
    r.set_defaults(func=cmd_report_naps)

    p = sub.add_parser(
        "nap",
        help="nap room: staff acknowledgement by name, room temperature and humidity",
        description="Entries for the nap check sheet from the staff (docs/nap-sheet.md).",
    )
    nap = p.add_subparsers(dest="nap_command", required=True, metavar="ACTION")
    n = nap.add_parser(
        "ack",
        help="acknowledge the room's alarm by name (like the button, but records who)",
        description="Acknowledge every alarm sounding in the nap room, as the staff member "
        "--by (initials listed in the nap rule's staff). An alarm still stops only once the "
        "child is safe (turned, moving again); with no alarm, the round is recorded as a "
        "check. The running daemon applies it; exits 1 if it does not within --wait.",
    )
    n.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    n.add_argument("--by", required=True, metavar="INITIALS", help="who responded")
    n.add_argument("--room", metavar="RULE", help="the nap rule (needed with several)")
    n.add_argument("--wait", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the daemon (default %(default)s)")
    n.set_defaults(func=cmd_nap_ack)
    n = nap.add_parser(
        "climate",
        help="record the room's temperature and humidity on the check sheet",
        description="Write the room temperature (°C) and humidity (%%) into the nap log at "
        "this time; the check sheet shows them in that column.",
    )
    n.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    n.add_argument("--temp", type=float, metavar="C", help="room temperature, °C")
    n.add_argument("--humidity", type=float, metavar="PCT", help="relative humidity, %%")
    n.add_argument("--by", metavar="INITIALS", help="who read them")
    n.add_argument("--room", metavar="RULE", help="the nap rule (default: the first)")
    n.set_defaults(func=cmd_nap_climate)

    p = sub.add_parser(
        "mat",
        help="body-motion mats: record labelled frames from a real mat",
        description="Tools for a nursery's body-motion mats (docs/recording.md).",
    )
    mat = p.add_subparsers(dest="mat_command", required=True, metavar="ACTION")
    m = mat.add_parser(
        "record",
        help="save labelled frames from one mat (empty-cot calibration first)",
        description="Calibrate the empty cot as the daemon does, then save the mat's frames "
        "under a posture label that staff can see, into DIR/<mat>.npz with a JSON manifest; "
        "a later run into the same folder adds another label. No child's name is stored. "
        "Stop the daemon first (one reader per mat). Exits 1 naming why when the mat does "
        f"not answer or the cot was not empty during the calibration, {EXIT_CONFIG} for a "
        "bad argument.",
    )
    m.add_argument("--config", "-c", required=True, metavar="FILE", help="device TOML file")
    m.add_argument("--mat", required=True, metavar="NAME", help="the mat sensor (sensors.NAME)")
    m.add_argument("--label", required=True, metavar="LABEL",
                   help="what staff see: prone, supine, left, right or empty")
    m.add_argument("--seconds", type=float, default=30.0, metavar="S",
                   help="how long to record (default %(default)s; 10 frames a second)")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for the recording")
    m.add_argument("--calibrate-seconds", type=float, default=10.0, metavar="S",
                   help="empty-cot calibration on a new recording (default %(default)s)")
    m.set_defaults(func=cmd_mat_record)

    p = sub.add_parser(
        "bench",
        help="run scripted scenarios against the emulated site",
        description="Hardware-in-the-loop style scenarios: a timeline of stimuli and the "
        "expected actuator states and events, with tolerances.",
    )
    bench = p.add_subparsers(dest="bench_command", required=True, metavar="ACTION")
    b = bench.add_parser("run", help="run one scenario (a bundled name or a TOML file)")
    b.add_argument("scenario", help="bundled scenario name (see 'edge bench list') or a file")
    b.add_argument("--report", metavar="FILE", help="also write the report as JSON")
    b.add_argument(
        "--device", metavar="CONFIG",
        help="run against this device on the bench (its real pins, buses, ports and broker), "
        "driving stimuli through the scenario's [rig] lines and prompting for the rest",
    )
    b.add_argument(
        "--broker", metavar="HOST:PORT",
        help="use this running broker (plain MQTT) instead of starting a private mosquitto: "
        "the scenario's events reach the notifier listening there and are mailed",
    )
    b.add_argument("--verbose", "-v", action="store_true", help="show the daemon's log")
    b.set_defaults(func=cmd_bench_run)
    b = bench.add_parser("list", help="list the bundled scenarios")
    b.set_defaults(func=cmd_bench_list)

    p = sub.add_parser(
        "bytecode",
        help="compile the daemon's optimised bytecode (the updater runs it at install)",
        description="Compile the daemon's modules and what they import at optimisation 2 "
        "(no docstrings, no asserts: what the unit runs with) into PREFIX, as "
        "PYTHONPYCACHEPREFIX lays it out. With --check, list those of the daemon's modules "
        "whose bytecode is missing or stale there, and exit 1 if any.",
    )
    p.add_argument("--prefix", required=True, metavar="PREFIX",
                   help="the bytecode folder (a release's pycache/)")  # fmt: skip
    p.add_argument("--check", action="store_true", help="only check, compile nothing")
    p.set_defaults(func=cmd_bytecode)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
