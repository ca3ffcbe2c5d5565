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
from pathlib import Path
from typing import Annotated, Any, Final, Literal, TypeVar

import msgspec

from cloud.errors import ConfigError
from edge.event import DEFAULT_TOPIC_PREFIX

Language = Literal["ja", "en"]
LANGUAGES: Final[tuple[str, ...]] = typing.get_args(Language)

#: Kinds recorded but not e-mailed unless a site says otherwise: a posture
#: check arrives every 5 minutes per cot and a heartbeat every few minutes per
#: device; mailing them would bury the alarms people must not miss.
DEFAULT_SKIP_KINDS: Final = frozenset({"posture_check", "heartbeat"})

_T = TypeVar("_T")
_Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Seconds = Annotated[float, msgspec.Meta(gt=0)]

# Loose on purpose: an ASCII addr-spec without quoting, comments or spaces.
# ASCII because SMTP without the SMTPUTF8 extension (and aiosmtplib by default)
# cannot carry anything else on the RCPT line.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$"
)


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

    @property
    def envelope_sender(self) -> str:
        """The bare address of :attr:`sender`, for the SMTP ``MAIL FROM``."""
        from email.utils import parseaddr

        return parseaddr(self.sender)[1]


class StoreConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[store]``: where the notifier keeps what it has seen and must still send."""

    path: _NonEmpty
    """SQLite file; relative paths are relative to the configuration file."""
    keep_days: Annotated[int, msgspec.Meta(ge=1)] = 400
    """Forget events (and their sent or failed mails) this many days after receipt."""


class DeliveryConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[delivery]``: retries and the mails' default language."""

    retry_initial_s: _Seconds = 5.0
    retry_max_s: _Seconds = 300.0
    language: Language = "ja"
    skip_kinds: frozenset[str] = DEFAULT_SKIP_KINDS


class SiteConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[sites.<site_id>]``: who is told about one site's events, and how."""

    name: _NonEmpty
    """The place as people call it, e.g. ``"片丘 東の田"``."""
    recipients: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    language: Language | None = None
    skip_kinds: frozenset[str] | None = None


class NotifierConfig(_Table, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The whole file."""

    mqtt: MqttConfig
    smtp: SmtpConfig
    store: StoreConfig
    delivery: DeliveryConfig = DeliveryConfig()
    sites: dict[str, SiteConfig] = msgspec.field(default_factory=dict)

    def language_for(self, site: SiteConfig) -> Language:
        return site.language or self.delivery.language

    def mails_kind(self, site: SiteConfig, kind: str) -> bool:
        """Whether events of ``kind`` at ``site`` are e-mailed (or only recorded)."""
        skip = site.skip_kinds if site.skip_kinds is not None else self.delivery.skip_kinds
        return kind not in skip


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
    config = _convert(raw, NotifierConfig, "")
    if not isinstance(raw_sites, dict):
        raise ConfigError("sites", f"Expected `table`, got `{_toml_type(raw_sites)}`")
    sites: dict[str, SiteConfig] = {}
    for site_id, raw_site in raw_sites.items():
        # Converted one by one: msgspec reports dict keys as `[...]`, and the
        # operator needs to know *which* site is wrong.
        sites[site_id] = _convert(raw_site, SiteConfig, f"sites.{_toml_key(site_id)}")
    config = msgspec.structs.replace(config, sites=sites)

    _check(config)
    if base_dir is not None and not Path(config.store.path).is_absolute():
        store = msgspec.structs.replace(config.store, path=str(base_dir / config.store.path))
        config = msgspec.structs.replace(config, store=store)
    return config


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
    if not config.sites:
        raise ConfigError("sites", "no [sites.<site_id>] table: the notifier would e-mail no one")
    for site_id, site in config.sites.items():
        key = f"sites.{_toml_key(site_id)}"
        seen: set[str] = set()
        for i, address in enumerate(site.recipients):
            if not _ADDRESS.match(address):
                raise ConfigError(f"{key}.recipients[{i}]", f"{address!r} is not an e-mail address")
            if address.lower() in seen:
                raise ConfigError(f"{key}.recipients[{i}]", f"{address!r} is listed twice")
            seen.add(address.lower())


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
