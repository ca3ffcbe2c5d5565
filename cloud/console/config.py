"""``[console]``: the web console's own table in the notifier's configuration file.

The console (``satoyama-console``) reads the notifier's file: ``[store]`` (the
database it shows), ``[devices]`` (``heartbeat_timeout_s``: when a device is
silent), ``[mqtt]`` (to tell a device that a nap alarm was acknowledged) and
this table.  :class:`ConsoleConfig` is a field of
:class:`cloud.config.NotifierConfig`, so the notifier's declarative checks (unknown
keys refused, errors naming the key) cover it too; the notifier itself never reads it.

This module imports nothing of :mod:`cloud.config` (which imports it).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Final
from urllib.parse import urlsplit

import msgspec

from cloud.errors import ConfigError
from cloud.staticmap import GSI_CREDIT, GSI_TILES

_Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]
_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]

#: Where the map opens when no device has a position yet: the middle of Honshu.
DEFAULT_CENTER_LAT: Final = 36.2
DEFAULT_CENTER_LON: Final = 138.0


class ConsoleConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``[console]``: where the console listens, its map, its cookies (docs/console.md)."""

    host: _NonEmpty = "127.0.0.1"
    """Address to listen on; put a TLS-terminating reverse proxy in front of it."""
    port: _Port = 8080
    tile_url: _NonEmpty = GSI_TILES
    """Map tiles: an https/http URL template with ``{z}``, ``{x}``, ``{y}`` (GSI's by
    default), or a path on the console itself (``/static/...``)."""
    credit: _NonEmpty = GSI_CREDIT
    """Shown on the map, as the tiles' terms ask."""
    cookie_secure: bool = True
    """Send the session cookie over HTTPS only; ``false`` only for a console reached
    over plain HTTP on a trusted network (or a test)."""
    session_hours: Annotated[float, msgspec.Meta(gt=0, le=24 * 90)] = 12.0
    """A login lasts this long."""
    login_tries: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    """Failed logins one user may have from one address per minute before the next
    tries are refused (for the rest of that minute)."""
    trusted_proxies: tuple[_NonEmpty, ...] = ()
    """Addresses (or networks, ``10.0.0.0/24``) of the reverse proxies in front of the
    console: only a request from one of them has its client's address taken from
    ``X-Forwarded-For`` (the right-most entry that is not itself a trusted proxy), for the
    login limit and the log.  Empty: the address is the connection's own."""
    fleet_db: _NonEmpty | None = None
    """The deploy tools' ``fleet.sqlite3`` (staged rollouts); relative: to this file.
    Without it the fleet page shows no rollouts."""
    mqtt_cert_file: _NonEmpty | None = None
    """Under ``[mqtt.tls]``: the console's own client certificate for telling a device that
    a nap alarm was acknowledged (its CN becomes its client id; never the notifier's)."""
    mqtt_key_file: _NonEmpty | None = None
    rollout_cert_file: _NonEmpty | None = None
    """Under ``[mqtt.tls]``: the certificate the fleet page's "start" publishes
    ``cmd/update`` with (``satoyama-deploy rollout announce --tls-cert``): one the broker
    lets write ``cmd/update``, e.g. the operator's ``satoyama-operator``.  Unset: the
    console's own ``mqtt_cert_file`` (which the console's broker rules allow only
    ``cmd/nap_ack``, so "start" is refused by the broker)."""
    rollout_key_file: _NonEmpty | None = None
    center_lat: Annotated[float, msgspec.Meta(ge=-90, le=90)] = DEFAULT_CENTER_LAT
    center_lon: Annotated[float, msgspec.Meta(ge=-180, le=180)] = DEFAULT_CENTER_LON
    zoom: Annotated[int, msgspec.Meta(ge=1, le=18)] = 6
    """Where the map opens before it fits the devices (and when there are none)."""

    @property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """:attr:`trusted_proxies` as networks (an address is a network of one)."""
        return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)

    @property
    def tile_origin(self) -> str | None:
        """``scheme://host[:port]`` of the tiles (for the page's CSP); ``None``: served here."""
        if self.tile_url.startswith("/"):
            return None
        parts = urlsplit(self.tile_url)
        return f"{parts.scheme}://{parts.netloc}"


def check_console(console: ConsoleConfig) -> None:
    """What a type cannot say about ``[console]``: each problem names its key."""
    url = console.tile_url
    if not url.startswith(("https://", "http://", "/")) or url.startswith("//"):
        raise ConfigError(
            "console.tile_url",
            f"{url!r} must start with https:// or http://, or be a path on the console (/...)",
        )
    if not url.startswith("/") and not urlsplit(url).netloc:
        raise ConfigError("console.tile_url", f"{url!r} has no host")
    for field in ("{z}", "{x}", "{y}"):
        if field not in url:
            raise ConfigError("console.tile_url", f"{url!r} has no {field} (a tile URL template)")
    try:
        url.format(z=0, x=0, y=0)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            "console.tile_url", f"{url!r} may hold only {{z}}, {{x}} and {{y}} ({exc})"
        ) from None
    if (console.mqtt_cert_file is None) != (console.mqtt_key_file is None):
        missing = "mqtt_key_file" if console.mqtt_key_file is None else "mqtt_cert_file"
        raise ConfigError(f"console.{missing}", "mqtt_cert_file and mqtt_key_file go together")
    if (console.rollout_cert_file is None) != (console.rollout_key_file is None):
        missing = "rollout_key_file" if console.rollout_key_file is None else "rollout_cert_file"
        raise ConfigError(
            f"console.{missing}", "rollout_cert_file and rollout_key_file go together"
        )
    for n, proxy in enumerate(console.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(
                f"console.trusted_proxies[{n}]", f"{proxy!r} is not an IP address or network"
            ) from None
    if any(c in url for c in "\"'<> \\"):
        raise ConfigError("console.tile_url", f"{url!r} holds a quote, space or angle bracket")


def anchored(console: ConsoleConfig, base_dir: Path) -> ConsoleConfig:
    """Files (``fleet_db``, the MQTT certificate) relative to the configuration file's folder."""
    paths = {
        name: str(base_dir / value)
        for name in (
            "fleet_db",
            "mqtt_cert_file",
            "mqtt_key_file",
            "rollout_cert_file",
            "rollout_key_file",
        )
        if (value := getattr(console, name)) is not None and not Path(value).is_absolute()
    }
    return msgspec.structs.replace(console, **paths) if paths else console
