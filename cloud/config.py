"""The notifier's configuration: one TOML file, checked once, before anything runs.

Every table is a frozen msgspec ``Struct`` that forbids unknown keys, so a typo
is an error and not a silently ignored setting.  Any problem raises
:class:`~cloud.errors.ConfigError` whose message names the key
(``smtp.port: Expected `int`, got `str```).  Defaults live here and nowhere
else; ``docs/notifier.md`` documents every key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from cloud.console.config import ConsoleConfig, check_console
from cloud.console.config import anchored as anchored_console
from cloud.errors import ConfigError
from cloud.staticmap import GSI_CREDIT, GSI_TILES
from edge.event import DEFAULT_TOPIC_PREFIX, KINDS, SEVERITY_RANK
from edge.files import loose_mode

Language = Literal["ja", "en"]
LANGUAGES: Final[tuple[str, ...]] = typing.get_args(Language)
MqttProtocol = Literal["3.1.1", "5"]
StoreBackend = Literal["sqlite", "postgresql"]
SeverityName = Literal["info", "warning", "alarm"]

#: Kinds the notifier makes itself (they come from no device, but are routed,
#: skipped and templated like device kinds).
DEVICE_OFFLINE: Final = "device_offline"
DEVICE_ONLINE: Final = "device_online"
TRAP_REMINDER: Final = "trap_reminder"
NOTIFIER_KINDS: Final = frozenset({DEVICE_OFFLINE, DEVICE_ONLINE, TRAP_REMINDER})
#: A trap's daily "armed and alive" report (severity info): recorded, counts as a sign of life.
TRAP_ARMED: Final = "trap_armed"
#: Kinds about the devices' health rather than the field: they go to a site's
#: ``operators`` (when it names any) instead of its ``recipients``.
HEALTH_KINDS: Final = frozenset(
    {
        DEVICE_OFFLINE,
        DEVICE_ONLINE,
        "sensor_fault",
        "sensor_recovered",
        "heartbeat",
        "command_rejected",
        TRAP_ARMED,
    }
)
#: Every kind the notifier has a text for; a route or rule naming a kind close
#: to one of these but not equal is taken for a typo.
KNOWN_KINDS: Final = KINDS | NOTIFIER_KINDS | {TRAP_ARMED}

#: Kinds recorded but not e-mailed unless a site says otherwise: a posture
#: check arrives every 5 minutes per cot, a heartbeat every few minutes per
#: device and a trap's "armed" report daily; mailing them would bury the
#: alarms people must not miss.
DEFAULT_SKIP_KINDS: Final = frozenset({"posture_check", "heartbeat", TRAP_ARMED})

_T = TypeVar("_T")
_Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]
_Kinds = Annotated[frozenset[_NonEmpty], msgspec.Meta(min_length=1)]

# Loose on purpose: an ASCII addr-spec without quoting, comments or spaces.
# ASCII because SMTP without the SMTPUTF8 extension (and aiosmtplib by default)
# cannot carry anything else on the RCPT line.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
)
_GROUP = re.compile(r"^[A-Za-z0-9_.-]+$")


class Secret:
    """A password read from the configuration; its ``repr`` never shows it.

    Configuration objects end up in log lines and tracebacks; a secret must
    not.  Call :meth:`reveal` only where the value is handed to a library.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every table: immutable, keyword-only, unknown keys are errors."""


class MqttTlsConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt.tls]``: mutual TLS to the broker (the shipped broker's fleet listener).

    Relative paths are relative to the configuration file.  The shipped broker
    makes the certificate's common name the client id, so ``mqtt.client_id`` must
    be the CN of ``cert_file``, and the devices' acks (a second connection, client
    id ``<client_id>-acks``) need a certificate of their own with that CN.
    """

    ca_file: _NonEmpty
    """The CA that issued the broker's certificate (the fleet CA)."""
    cert_file: _NonEmpty
    key_file: _NonEmpty
    """Must be readable by its owner only (mode 0600)."""
    ack_cert_file: _NonEmpty | None = None
    """The acks connection's certificate (CN ``<client_id>-acks``); required with
    ``mqtt.device_acks``."""
    ack_key_file: _NonEmpty | None = None


class MqttConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[mqtt]``: the broker the devices publish to."""

    host: _NonEmpty
    port: _Port = 1883
    topic_prefix: _NonEmpty = DEFAULT_TOPIC_PREFIX
    client_id: _NonEmpty = "satoyama-notifier"
    """Also the name of the broker-side persistent session: keep it stable."""
    username: _NonEmpty | None = None
    password: Secret | None = None
    keepalive: Annotated[int, msgspec.Meta(ge=5, le=65535)] = 60
    protocol: MqttProtocol = "5"
    session_expiry_s: Annotated[int, msgspec.Meta(ge=0, le=4294967295)] = 7 * 86400
    """MQTT 5: how long the broker keeps the session (and queues events) while we are away."""
    shared_group: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    """Several instances: subscribe to ``$share/GROUP/...`` so each event goes to one of them."""
    receive_maximum: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 200
    """MQTT 5 Receive Maximum: how many unacknowledged QoS 1 messages the broker may
    push to us at once (we acknowledge after the commit, so this bounds what sits in
    memory; without it the broker may push a whole backlog).  200, not 50: with 50 the
    notifier waited for the broker's next messages after its group commits (a burst
    was mailed 5-14 % slower, docs/notifier.md); 200 cost ~1 MB of peak RSS."""
    device_acks: bool = True
    """Acknowledge every stored event and telemetry batch to its device on
    ``PREFIX/DEVICE/ack`` (the device keeps a message until then)."""
    ack_delay_s: Annotated[float, msgspec.Meta(ge=0, le=60)] = 0.2
    """Ids for one device are collected this long (or up to ``MAX_ACK_IDS``), then sent
    in one ack message."""
    tls: MqttTlsConfig | None = None
    """Mutual TLS; ``None``: plain TCP."""

    @property
    def ack_client_id(self) -> str:
        """The client id (and, under the shipped broker, the certificate CN) of the acks'
        connection."""
        return f"{self.client_id}-acks"


class SmtpConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[smtp]``: the mail server the notifier hands its mails to."""

    host: _NonEmpty
    port: _Port = 25
    sender: _NonEmpty
    """The From address, e.g. ``"里山エッジ <alerts@example.jp>"``."""
    username: _NonEmpty | None = None
    password: Secret | None = None
    starttls: bool = False
    """Require STARTTLS after connecting (usually port 587)."""
    tls: bool = False
    """Connect over TLS from the start (usually port 465)."""
    timeout: _Seconds = 30.0
    connections: Annotated[int, msgspec.Meta(ge=1, le=32)] = 4
    """At most this many SMTP sessions at once (each kept open while there is mail)."""

    @property
    def envelope_sender(self) -> str:
        """The bare address of :attr:`sender`, for the SMTP ``MAIL FROM``."""
        from email.utils import parseaddr

        return parseaddr(self.sender)[1]


class StoreConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[store]``: where the notifier keeps what it has seen and must still send."""

    backend: StoreBackend = "sqlite"
    path: _NonEmpty | None = None
    """SQLite file; relative paths are relative to the configuration file."""
    dsn: Secret | None = None
    """PostgreSQL connection string (libpq syntax or URI); may hold a password."""
    keep_days: Annotated[int, msgspec.Meta(ge=1)] = 400
    """Forget events (and their sent or failed mails) this many days after receipt."""
    max_events: Annotated[int, msgspec.Meta(ge=1)] = 1_000_000
    """Remember at most this many events: the oldest beyond it are forgotten (hourly)."""
    max_mails: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    """Keep at most this many sent or failed mails (the oldest go first; pending stay)."""

    def describe(self) -> str:
        """Where the store is, for logs and ``status``: never the password."""
        if self.backend == "sqlite":
            return f"sqlite {self.path}"
        return f"postgresql {describe_dsn(self.dsn)}"


class DeliveryConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[delivery]``: retries, the mails' default language, what is only recorded."""

    retry_initial_s: _Seconds = 5.0
    retry_max_s: _Seconds = 300.0
    language: Language = "ja"
    skip_kinds: frozenset[str] = DEFAULT_SKIP_KINDS
    claim_timeout_s: _Seconds = 120.0
    """How long a mail taken by one instance is left to it before another may send it."""
    poll_s: _Seconds = 5.0
    """How often the store is looked at for work another instance left (and timers)."""
    render_processes: Annotated[int, msgspec.Meta(ge=0, le=8)] = 1
    """Worker processes that render events' mails (0: a thread of the notifier's own)."""


class Contact(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[contacts.<name>]``: a person or office, named once, used in any site."""

    address: _NonEmpty
    language: Language | None = None


class Route(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[sites.<id>.routes]]``: who (also) gets events of some kinds and severities."""

    to: Annotated[tuple[_NonEmpty, ...], msgspec.Meta(min_length=1)]
    kinds: _Kinds | None = None
    """Kinds this route is for; every kind when left out."""
    min_severity: SeverityName = "info"

    def matches(self, kind: str, severity: str) -> bool:
        if self.kinds is not None and kind not in self.kinds:
            return False
        return SEVERITY_RANK.get(severity, len(SEVERITY_RANK)) <= SEVERITY_RANK[self.min_severity]


class SiteConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[sites.<site_id>]``: who is told about one site's events, and how."""

    name: _NonEmpty
    """The place as people call it, e.g. ``"片丘 東の田"``."""
    recipients: tuple[_NonEmpty, ...] = ()
    """Addresses or contact names told of every mailed kind (see ``operators``)."""
    operators: tuple[_NonEmpty, ...] | None = None
    """Told of the devices' health instead of ``recipients``; ``None``: ``recipients`` are."""
    routes: tuple[Route, ...] = ()
    language: Language | None = None
    skip_kinds: frozenset[str] | None = None


class CoalesceRule(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[[coalesce]]``: fold a burst of one kind into one mail and a summary."""

    kinds: _Kinds
    per: Literal["device", "sensor"] = "device"
    """What one burst is about: a device, or one sensor (``data.sensor`` / ``data.cot``)."""
    quiet_s: _Seconds
    """A burst ends after this long without another event (then the summary goes)."""
    summary_every_s: _Seconds = 3600.0
    """While a burst goes on, a summary at most this often."""


#: Coalescing when the file has no ``[[coalesce]]``: an animal lingering at a
#: field, and a sensor whose fault comes and goes.
DEFAULT_COALESCE: Final = (
    CoalesceRule(kinds=frozenset({"animal_detected"}), quiet_s=900.0, summary_every_s=10800.0),
    CoalesceRule(
        kinds=frozenset({"sensor_fault", "sensor_recovered"}),
        per="sensor",
        quiet_s=1800.0,
        summary_every_s=3600.0,
    ),
)


class TrapsConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[traps]``: reminders while a trap stays closed."""

    reminder_every_s: _Seconds = 7200.0


class MapsConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[maps]``: the small map picture with a pin at the top of a mail (docs/notifier.md)."""

    enabled: bool = False
    """Off: the mail has its map links only, and nothing is fetched."""
    tile_url: _NonEmpty = GSI_TILES
    """Tile URL template with ``{z}``, ``{x}``, ``{y}`` (https, http or file); default GSI's."""
    credit: _NonEmpty = GSI_CREDIT
    """Printed under the picture, as the tiles' terms ask (GSI's credit by default)."""
    cache_dir: str | None = None
    """Where fetched tiles are kept (relative: to the config file); none: in memory only."""
    zoom: Annotated[int, msgspec.Meta(ge=5, le=18)] = 16
    timeout_s: Annotated[float, msgspec.Meta(gt=0, le=10)] = 2.0
    """The longest a mail waits for its picture's tiles; then it goes without."""


class DevicesConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[devices]``: when a device counts as offline."""

    offline_grace_s: Annotated[float, msgspec.Meta(ge=0)] = 300.0
    """A device whose status says offline is mailed about only after this long."""
    heartbeat_timeout_s: _Seconds = 1800.0
    """No heartbeat (nor any other message) for this long (at least 2 x its interval): offline."""


class FleetDevice(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[fleet.<device_id>]``: one device the notifier trusts, and the site it speaks for."""

    site: _NonEmpty
    """The only site this device's events and telemetry may name (a key of ``[sites]``)."""


@dataclass(frozen=True, slots=True)
class Recipient:
    """One address a mail goes to, in the language it is written in."""

    address: str
    language: Language


class NotifierConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file."""

    mqtt: MqttConfig
    smtp: SmtpConfig
    store: StoreConfig
    delivery: DeliveryConfig = DeliveryConfig()
    traps: TrapsConfig = TrapsConfig()
    devices: DevicesConfig = DevicesConfig()
    maps: MapsConfig = MapsConfig()
    coalesce: tuple[CoalesceRule, ...] = DEFAULT_COALESCE
    contacts: dict[str, Contact] = msgspec.field(default_factory=dict)
    sites: dict[str, SiteConfig] = msgspec.field(default_factory=dict)
    fleet: dict[str, FleetDevice] | None = None
    """The device registry; ``None`` (no ``[fleet]`` table): any device may speak for any site."""
    console: ConsoleConfig = ConsoleConfig()
    """``[console]``: read by ``satoyama-console`` only (docs/console.md); the notifier
    ignores it."""

    def language_for(self, site: SiteConfig) -> Language:
        return site.language or self.delivery.language

    def mails_kind(self, site: SiteConfig, kind: str) -> bool:
        """Whether events of ``kind`` at ``site`` are e-mailed (or only recorded)."""
        skip = site.skip_kinds if site.skip_kinds is not None else self.delivery.skip_kinds
        return kind not in skip

    def recipients_for(self, site: SiteConfig, kind: str, severity: str) -> tuple[Recipient, ...]:
        """Who gets a mail of ``kind`` and ``severity`` at ``site``, in a fixed order.

        The site's ``recipients`` (or its ``operators``, for the devices'
        health), then every matching route's ``to``; an address listed twice
        gets one mail.
        """
        names: list[str] = []
        if kind in HEALTH_KINDS and site.operators is not None:
            names.extend(site.operators)
        else:
            names.extend(site.recipients)
        for route in site.routes:
            if route.matches(kind, severity):
                names.extend(route.to)
        seen: set[str] = set()
        out: list[Recipient] = []
        for name in names:
            recipient = self._resolve(site, name)
            if recipient.address.lower() not in seen:
                seen.add(recipient.address.lower())
                out.append(recipient)
        return tuple(out)

    def coalesce_rule(self, kind: str) -> CoalesceRule | None:
        for rule in self.coalesce:
            if kind in rule.kinds:
                return rule
        return None

    def _resolve(self, site: SiteConfig, name: str) -> Recipient:
        contact = self.contacts.get(name)
        if contact is not None:
            return Recipient(contact.address, contact.language or self.language_for(site))
        return Recipient(name, self.language_for(site))


def describe_dsn(dsn: Secret | None) -> str:
    """``host=… port=… dbname=… user=…`` of a DSN, without its password."""
    if dsn is None:
        return "(no dsn)"
    try:
        from psycopg.conninfo import conninfo_to_dict

        parts = conninfo_to_dict(dsn.reveal())
    except Exception:  # noqa: BLE001 - a log line must not fail: no psycopg, bad DSN
        return "(dsn)"
    keys = ("host", "port", "dbname", "user")
    return " ".join(f"{k}={parts[k]}" for k in keys if parts.get(k)) or "(defaults)"


def load_config(path: str | Path) -> NotifierConfig:
    """Read, parse and validate the configuration file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", "no such file", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read: {exc}", file=str(path)) from None
    try:
        return parse_config(text, base_dir=path.parent)
    except ConfigError as exc:
        exc.file = str(path)
        raise


def parse_config(text: str, *, base_dir: Path | None = None) -> NotifierConfig:
    """Parse and validate configuration text; ``base_dir`` anchors a relative store path."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"invalid TOML: {exc}") from None

    raw_sites = raw.pop("sites", {})
    raw_contacts = raw.pop("contacts", {})
    raw_fleet = raw.pop("fleet", None)
    config = _convert(raw, NotifierConfig, "")
    # Converted one by one: msgspec reports dict keys as `[...]`, and the
    # operator needs to know *which* site or contact is wrong.
    sites = {
        site_id: _convert(raw_site, SiteConfig, f"sites.{_toml_key(site_id)}")
        for site_id, raw_site in _table(raw_sites, "sites").items()
    }
    contacts = {
        name: _convert(raw_contact, Contact, f"contacts.{_toml_key(name)}")
        for name, raw_contact in _table(raw_contacts, "contacts").items()
    }
    fleet = None
    if raw_fleet is not None:
        fleet = {
            device: _convert(raw_device, FleetDevice, f"fleet.{_toml_key(device)}")
            for device, raw_device in _table(raw_fleet, "fleet").items()
        }
    config = msgspec.structs.replace(config, sites=sites, contacts=contacts, fleet=fleet)

    _check(config)
    path = config.store.path
    if base_dir is not None and path is not None and not Path(path).is_absolute():
        store = msgspec.structs.replace(config.store, path=str(base_dir / path))
        config = msgspec.structs.replace(config, store=store)
    cache_dir = config.maps.cache_dir
    if base_dir is not None and cache_dir is not None and not Path(cache_dir).is_absolute():
        maps = msgspec.structs.replace(config.maps, cache_dir=str(base_dir / cache_dir))
        config = msgspec.structs.replace(config, maps=maps)
    if base_dir is not None:
        config = msgspec.structs.replace(config, console=anchored_console(config.console, base_dir))
    tls = config.mqtt.tls
    if tls is not None:
        if base_dir is not None:
            anchored = {
                f.name: str(base_dir / value) if not Path(value).is_absolute() else value
                for f in msgspec.structs.fields(tls)
                if isinstance(value := getattr(tls, f.name), str)
            }
            tls = msgspec.structs.replace(tls, **anchored)
            config = msgspec.structs.replace(
                config, mqtt=msgspec.structs.replace(config.mqtt, tls=tls)
            )
        check_tls(config.mqtt)
    return config


def check_tls(mqtt: MqttConfig) -> None:
    """``[mqtt.tls]``: files readable, keys private, each certificate's CN its client id.

    Also called after ``run --client-id`` changes the client id.
    """
    tls = mqtt.tls
    if tls is None:
        return
    if (tls.ack_cert_file is None) != (tls.ack_key_file is None):
        missing = "ack_key_file" if tls.ack_key_file is None else "ack_cert_file"
        raise ConfigError(f"mqtt.tls.{missing}", "ack_cert_file and ack_key_file go together")
    if mqtt.device_acks and tls.ack_cert_file is None:
        raise ConfigError(
            "mqtt.tls.ack_cert_file",
            f"required with mqtt.device_acks: the acks connection (client id "
            f"{mqtt.ack_client_id!r}) needs its own certificate with that CN "
            "(the broker makes the CN the client id; sharing the notifier's would make "
            "the two connections take over each other's session)",
        )
    _readable("mqtt.tls.ca_file", tls.ca_file)
    pairs = [("cert_file", "key_file", tls.cert_file, tls.key_file, mqtt.client_id, "client_id")]
    if tls.ack_cert_file is not None and tls.ack_key_file is not None:
        pairs.append(
            ("ack_cert_file", "ack_key_file", tls.ack_cert_file, tls.ack_key_file,
             mqtt.ack_client_id, "client_id + '-acks'")
        )  # fmt: skip
    for cert_key, key_key, cert_file, key_file, wanted, what in pairs:
        _private_key(f"mqtt.tls.{key_key}", key_file)
        cn = _common_name(f"mqtt.tls.{cert_key}", cert_file)
        if cn != wanted:
            raise ConfigError(
                f"mqtt.tls.{cert_key}",
                f"its certificate's CN is {cn!r}, but mqtt.{what} is {wanted!r}: the broker "
                "uses the CN as the client id, so they must be equal",
            )


def _readable(key: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from None


def _private_key(key: str, path: str) -> None:
    _readable(key, path)
    mode = loose_mode(path)
    if mode is not None:
        raise ConfigError(
            key,
            f"{path} has mode {mode:04o}: a private key must be readable by its owner only "
            f"(chmod 600 {path})",
        )


def _common_name(key: str, path: str) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    data = _readable(key, path)
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise ConfigError(key, f"{path} is not a PEM certificate: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        raise ConfigError(key, f"{path}: the certificate has no common name (CN)")
    value = names[0].value
    return value if isinstance(value, str) else value.decode()


def _table(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"Expected `table`, got `{_toml_type(value)}`")
    return value


# --- validation beyond types -------------------------------------------------


def _check(config: NotifierConfig) -> None:
    """Rules that span keys or need more than a type: each names its key."""
    prefix = config.mqtt.topic_prefix
    if any(c in prefix for c in "+#\0") or prefix.startswith("/") or prefix.endswith("/"):
        raise ConfigError(
            "mqtt.topic_prefix",
            f"{prefix!r} must not contain '+', '#' or start or end with '/'",
        )
    for table, cfg in (("mqtt", config.mqtt), ("smtp", config.smtp)):
        if (cfg.username is None) != (cfg.password is None):
            missing = "password" if cfg.password is None else "username"
            raise ConfigError(f"{table}.{missing}", "username and password must be given together")
    _check_mqtt(config)
    _check_store(config)
    _check_maps(config.maps)
    check_console(config.console)
    if config.smtp.starttls and config.smtp.tls:
        raise ConfigError("smtp.tls", "choose either tls (port 465) or starttls (port 587)")
    if not _ADDRESS.match(config.smtp.envelope_sender):
        raise ConfigError(
            "smtp.sender",
            f"{config.smtp.sender!r} is not an e-mail address "
            "(expected 'name@example.jp' or 'Name <name@example.jp>')",
        )
    d = config.delivery
    if d.retry_max_s < d.retry_initial_s:
        raise ConfigError(
            "delivery.retry_max_s",
            f"{d.retry_max_s:g} is less than delivery.retry_initial_s ({d.retry_initial_s:g})",
        )
    if config.smtp.timeout >= d.claim_timeout_s:
        raise ConfigError(
            "delivery.claim_timeout_s",
            f"{d.claim_timeout_s:g} must be longer than smtp.timeout ({config.smtp.timeout:g}): "
            "another instance would send a mail still being sent",
        )
    _check_kinds("delivery.skip_kinds", d.skip_kinds)
    for name, contact in config.contacts.items():
        if not _ADDRESS.match(contact.address):
            raise ConfigError(
                f"contacts.{_toml_key(name)}.address",
                f"{contact.address!r} is not an e-mail address",
            )
    _check_coalesce(config.coalesce)
    if not config.sites:
        raise ConfigError("sites", "no [sites.<site_id>] table: the notifier would e-mail no one")
    for site_id, site in config.sites.items():
        _check_site(config, f"sites.{_toml_key(site_id)}", site)
    for device, entry in (config.fleet or {}).items():
        if entry.site not in config.sites:
            raise ConfigError(
                f"fleet.{_toml_key(device)}.site",
                f"{entry.site!r} is not a configured site (no [sites.{_toml_key(entry.site)}])",
            )


def _check_mqtt(config: NotifierConfig) -> None:
    m = config.mqtt
    if m.shared_group is None:
        return
    if not _GROUP.match(m.shared_group):
        raise ConfigError(
            "mqtt.shared_group",
            f"{m.shared_group!r}: use letters, digits, '_', '-' and '.' only",
        )
    if m.protocol != "5":
        raise ConfigError("mqtt.shared_group", 'shared subscriptions need protocol = "5"')
    if config.store.backend != "postgresql":
        raise ConfigError(
            "mqtt.shared_group",
            'several instances must share one store: set store.backend = "postgresql" '
            "(each SQLite file would see only its instance's share of the events)",
        )


def _check_maps(maps: MapsConfig) -> None:
    url = maps.tile_url
    if not url.startswith(("https://", "http://", "file://")):
        raise ConfigError("maps.tile_url", f"{url!r} must start with https://, http:// or file://")
    for field in ("{z}", "{x}", "{y}"):
        if field not in url:
            raise ConfigError("maps.tile_url", f"{url!r} has no {field} (a tile URL template)")
    try:
        url.format(z=0, x=0, y=0)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            "maps.tile_url", f"{url!r} may hold only {{z}}, {{x}} and {{y}} ({exc})"
        ) from None


def _check_store(config: NotifierConfig) -> None:
    s = config.store
    if s.backend == "sqlite":
        if s.path is None:
            raise ConfigError("store.path", "required key is missing (backend is sqlite)")
        if s.dsn is not None:
            raise ConfigError("store.dsn", 'only for backend = "postgresql"')
    else:
        if s.dsn is None:
            raise ConfigError("store.dsn", "required key is missing (backend is postgresql)")
        if s.path is not None:
            raise ConfigError("store.path", 'only for backend = "sqlite"')


def _check_kinds(key: str, kinds: frozenset[str] | None) -> None:
    """A kind that is almost a known one is a typo that would silently route nothing."""
    for kind in sorted(kinds or ()):
        if kind in KNOWN_KINDS:
            continue
        close = difflib.get_close_matches(kind, sorted(KNOWN_KINDS), n=1, cutoff=0.8)
        if close:
            raise ConfigError(key, f"unknown kind {kind!r} (did you mean {close[0]!r}?)")


def _check_coalesce(rules: tuple[CoalesceRule, ...]) -> None:
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        key = f"coalesce[{i}]"
        _check_kinds(f"{key}.kinds", rule.kinds)
        for kind in sorted(rule.kinds):
            if kind in seen:
                raise ConfigError(f"{key}.kinds", f"{kind!r} is already in coalesce[{seen[kind]}]")
            seen[kind] = i


def _check_site(config: NotifierConfig, key: str, site: SiteConfig) -> None:
    _check_kinds(f"{key}.skip_kinds", site.skip_kinds)
    lists: list[tuple[str, tuple[str, ...]]] = [(f"{key}.recipients", site.recipients)]
    if site.operators is not None:
        lists.append((f"{key}.operators", site.operators))
    for i, route in enumerate(site.routes):
        _check_kinds(f"{key}.routes[{i}].kinds", route.kinds)
        lists.append((f"{key}.routes[{i}].to", route.to))
    for list_key, names in lists:
        seen: set[str] = set()
        for i, name in enumerate(names):
            if name in config.contacts:
                address = config.contacts[name].address
            elif _ADDRESS.match(name):
                address = name
            else:
                hint = "" if "@" in name else f" and there is no [contacts.{_toml_key(name)}]"
                raise ConfigError(f"{list_key}[{i}]", f"{name!r} is not an e-mail address{hint}")
            if address.lower() in seen:
                raise ConfigError(f"{list_key}[{i}]", f"{name!r} ({address}) is listed twice")
            seen.add(address.lower())
    if not site.recipients and not site.routes and not site.operators:
        raise ConfigError(
            f"{key}.recipients",
            "the site has no recipients, operators or routes: its events would reach no one",
        )


# --- turning msgspec's errors into ones that name the key ----------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `(?P<path>\$[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<name>[^`]*)`$")


def _decode_hook(type_: type, obj: Any) -> Any:
    if type_ is Secret:
        if not isinstance(obj, str):
            raise ValueError(f"Expected `str`, got `{_toml_type(obj)}`")
        return Secret(obj)
    raise NotImplementedError(f"no decoder for {type_!r}")


def _convert(obj: Any, cls: type[_T], prefix: str) -> _T:
    try:
        return msgspec.convert(obj, cls, strict=True, dec_hook=_decode_hook)
    except msgspec.ValidationError as exc:
        raise _config_error(str(exc), cls, prefix) from None


def _config_error(text: str, root: type, prefix: str) -> ConfigError:
    match = _AT.match(text)
    assert match is not None  # the pattern matches any string
    message, path = match["msg"], match["path"] or "$"
    key = prefix + path[1:] if prefix else path[2:] if path.startswith("$.") else path[1:]
    owner = _struct_at(root, path)

    if unknown := _UNKNOWN.match(message):
        name = unknown["name"]
        problem = "unknown key"
        if owner is not None:
            allowed = [f.encode_name for f in msgspec.structs.fields(owner)]
            close = difflib.get_close_matches(name, allowed, n=1)
            problem += f" (did you mean `{close[0]}`?)" if close else ""
            problem += f"; allowed: {', '.join(allowed)}"
        return ConfigError(_join(key, _toml_key(name)), problem)

    if missing := _MISSING.match(message):
        name = missing["name"]
        what = "key"
        if owner is not None:
            for f in msgspec.structs.fields(owner):
                if f.encode_name == name and _is_struct(f.type):
                    what = f"table [{_join(key, name)}]"
        return ConfigError(_join(key, name), f"required {what} is missing")

    message = message.replace("`object`", "`table`")
    if message.startswith("Invalid enum value") and owner is not None:
        field = path.rsplit(".", 1)[-1]
        for f in msgspec.structs.fields(owner):
            if f.encode_name == field:
                choices = _literal_choices(f.type)
                if choices:
                    message += f" (expected one of: {', '.join(map(repr, choices))})"
    return ConfigError(key, message)


def _struct_at(root: type, path: str) -> type | None:
    """The Struct class that holds the last segment of a msgspec error path."""
    owner: type | None = root
    segments = [s for s in re.sub(r"\[[^\]]*\]", "", path).split(".")[1:] if s]
    for segment in segments:
        if owner is None or not _is_struct(owner):
            return None
        nxt = None
        for f in msgspec.structs.fields(owner):
            if f.encode_name == segment:
                nxt = f.type if _is_struct(f.type) else None
        if nxt is None:
            # The error is about this (non-table) field of `owner`.
            return owner
        owner = nxt
    return owner


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _literal_choices(tp: Any) -> list[Any]:
    """The allowed values of ``Literal[...]`` or ``Literal[...] | None``."""
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    return [v for arg in typing.get_args(tp) for v in _literal_choices(arg)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _toml_key(key: str) -> str:
    """A key as it would be written in TOML (quoted unless it is a bare key)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def _toml_type(value: Any) -> str:
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    return type(value).__name__
