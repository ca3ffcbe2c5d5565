"""A small map picture with a pin, for the top of a mail ("where is it?" at a glance).

Composed from map tiles (the slippy-map ``{z}/{x}/{y}`` scheme, Web Mercator)
the operator configures; the default is the Geospatial Information Authority
of Japan's standard map (地理院タイル), whose terms ask for the credit
``出典：国土地理院`` next to the picture (the mail prints :attr:`MapPicture.credit`
under it).

Built for alarms that must not wait:

- tiles are kept on disk (``cache_dir``), so one place is fetched once;
- a picture is kept in memory per (lat, lon, zoom), so a burst of mails about
  one device draws it once;
- every fetch has a short deadline (``timeout_s`` for all the tiles of one
  picture together); a place whose tiles could not be had is not tried again
  for ``retry_after_s``, so a burst never waits twice;
- any failure gives ``None``: the mail goes without the picture (the map
  links are still there).

Pillow is imported only when a picture is drawn (importing the notifier does
not need it).
"""

# The GSI credit is written with a full-width colon, as its terms of use do.
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import logging
import math
import os
import threading
import time
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from PIL import ImageDraw

log = logging.getLogger(__name__)

GSI_TILES: Final = "https://cyberjapandata.gsi.go.jp/xyz/std/{z}/{x}/{y}.png"
GSI_CREDIT: Final = "出典：国土地理院"
TILE: Final = 256
MAX_TILE_BYTES: Final = 1 << 20
_PIN: Final = (220, 20, 20)
_USER_AGENT: Final = "satoyama-notifier (static map for alarm mails)"


@dataclass(frozen=True, slots=True)
class MapPicture:
    """One drawn map: a PNG with the pin at its centre, and the credit the tiles ask for."""

    png: bytes
    width: int
    height: int
    credit: str


class StaticMaps:
    """Draws (and remembers) map pictures from one tile source.  Thread-safe."""

    def __init__(
        self,
        *,
        url_template: str = GSI_TILES,
        cache_dir: str | Path | None = None,
        credit: str = GSI_CREDIT,
        zoom: int = 16,
        width: int = 600,
        height: int = 300,
        timeout_s: float = 2.0,
        retry_after_s: float = 300.0,
        keep: int = 256,
    ) -> None:
        self.url_template = url_template
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.credit = credit
        self.zoom = zoom
        self.width = width
        self.height = height
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self.keep = keep
        self.fetched = 0
        """Tiles fetched from the source (not from the disk cache): for tests and logs."""
        self.drawn = 0
        """Pictures drawn (not taken from memory)."""
        self._lock = threading.Lock()
        self._pictures: OrderedDict[tuple[float, float, int], MapPicture] = OrderedDict()
        self._failed: dict[tuple[float, float, int], float] = {}
        # tiles of one source in their own folder: a new template never shows old tiles
        self._source = hashlib.sha256(url_template.encode()).hexdigest()[:12]

    def picture(self, lat: float, lon: float) -> MapPicture | None:
        """The map around (lat, lon) with a pin, or ``None`` if it cannot be had in time."""
        if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 85.0:
            return None
        key = (round(lat, 6), round(lon, 6), self.zoom)
        with self._lock:
            cached = self._pictures.get(key)
            if cached is not None:
                self._pictures.move_to_end(key)
                return cached
            failed_at = self._failed.get(key)
            if failed_at is not None and time.monotonic() - failed_at < self.retry_after_s:
                return None
            # Drawn under the lock: a burst about one place waits for the first
            # drawing (bounded by timeout_s) instead of fetching the same tiles again.
            try:
                drawn = self._draw(key[0], key[1])
            except Exception as exc:  # noqa: BLE001 - the map is optional: logged, mail goes on
                log.warning(
                    "no map picture for %.6f,%.6f (%s: %s); mailing without it for %.0f s",
                    lat, lon, type(exc).__name__, exc, self.retry_after_s,
                )  # fmt: skip
                if len(self._failed) > 4 * self.keep:
                    self._failed.clear()
                self._failed[key] = time.monotonic()
                return None
            self._failed.pop(key, None)
            self._pictures[key] = drawn
            while len(self._pictures) > self.keep:
                self._pictures.popitem(last=False)
            return drawn

    # --- drawing --------------------------------------------------------------

    def _draw(self, lat: float, lon: float) -> MapPicture:
        from PIL import Image, ImageDraw  # here: importing the notifier must not need Pillow

        z = self.zoom
        cx, cy = pixel(lat, lon, z)
        left, top = cx - self.width / 2, cy - self.height / 2
        x0, y0 = math.floor(left / TILE), math.floor(top / TILE)
        x1, y1 = (
            math.floor((left + self.width - 1) / TILE),
            math.floor((top + self.height - 1) / TILE),
        )
        wanted = [(x, y) for y in range(y0, y1 + 1) for x in range(x0, x1 + 1)]
        tiles = self._tiles(z, wanted)
        image = Image.new("RGB", (self.width, self.height), (240, 240, 240))
        for (x, y), data in tiles.items():
            with Image.open(io.BytesIO(data)) as tile:
                tile.load()
                image.paste(tile.convert("RGB"), (round(x * TILE - left), round(y * TILE - top)))
        _pin(ImageDraw.Draw(image), self.width / 2, self.height / 2)
        out = io.BytesIO()
        # 128 colours: a map reads the same, and the mail is a third of the size
        image.quantize(colors=128, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
        self.drawn += 1
        return MapPicture(out.getvalue(), self.width, self.height, self.credit)

    def _tiles(self, z: int, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Every wanted tile, from disk or fetched in parallel; raises if one is missing."""
        deadline = time.monotonic() + self.timeout_s
        have: dict[tuple[int, int], bytes] = {}
        missing = []
        n = 1 << z
        for x, y in wanted:
            if not 0 <= y < n:
                raise ValueError(f"tile row {y} outside the map at zoom {z}")
            data = self._from_disk(z, x % n, y)
            if data is None:
                missing.append((x, y))
            else:
                have[(x, y)] = data
        if not missing:
            return have
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=min(8, len(missing)), thread_name_prefix="map-tiles"
        )
        try:
            futures = {pool.submit(self._fetch, z, x % n, y, deadline): (x, y) for x, y in missing}
            done, late = concurrent.futures.wait(
                futures, timeout=max(0.0, deadline - time.monotonic())
            )
            if late:
                raise TimeoutError(
                    f"{len(late)} of {len(wanted)} tiles not there in {self.timeout_s:g} s"
                )
            for future in done:
                have[futures[future]] = future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return have

    def _fetch(self, z: int, x: int, y: int, deadline: float) -> bytes:
        url = self.url_template.format(z=z, x=x, y=y)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        timeout = max(0.05, deadline - time.monotonic())
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = bytes(response.read(MAX_TILE_BYTES + 1))
        if len(data) > MAX_TILE_BYTES:
            raise ValueError(f"tile {url} is larger than {MAX_TILE_BYTES} bytes")
        if not data.startswith((b"\x89PNG", b"\xff\xd8")):
            raise ValueError(f"tile {url} is not a PNG or JPEG picture")
        self.fetched += 1
        self._to_disk(z, x, y, data)
        return data

    def _tile_path(self, z: int, x: int, y: int) -> Path | None:
        if self.cache_dir is None:
            return None
        return self.cache_dir / self._source / str(z) / str(x) / f"{y}.tile"

    def _from_disk(self, z: int, x: int, y: int) -> bytes | None:
        path = self._tile_path(z, x, y)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError:
            return None

    def _to_disk(self, z: int, x: int, y: int, data: bytes) -> None:
        path = self._tile_path(z, x, y)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.part")
            partial.write_bytes(data)
            partial.replace(path)  # never a half-written tile under the real name
        except OSError as exc:
            log.warning("cannot keep map tile in %s: %s", path.parent, exc)


def pixel(lat: float, lon: float, zoom: int) -> tuple[float, float]:
    """(x, y) of a position in Web Mercator pixels at ``zoom`` (256-pixel tiles)."""
    scale = TILE * (1 << zoom)
    x = (lon + 180.0) / 360.0 * scale
    phi = math.radians(lat)
    y = (1.0 - math.log(math.tan(phi) + 1.0 / math.cos(phi)) / math.pi) / 2.0 * scale
    return x, y


def tile_of(lat: float, lon: float, zoom: int) -> tuple[int, int]:
    """The (x, y) of the tile that holds a position."""
    x, y = pixel(lat, lon, zoom)
    return math.floor(x / TILE), math.floor(y / TILE)


def _pin(draw: ImageDraw.ImageDraw, x: float, y: float) -> None:
    """A map pin whose point is at (x, y): a red head with a white dot, on a short stem."""
    head_r, lift = 11, 26
    hy = y - lift
    draw.polygon([(x - 7, hy + 5), (x + 7, hy + 5), (x, y)], fill=_PIN, outline=(255, 255, 255))
    draw.ellipse([(x - head_r, hy - head_r), (x + head_r, hy + head_r)], fill=_PIN,
                 outline=(255, 255, 255), width=2)  # fmt: skip
    draw.ellipse([(x - 4, hy - 4), (x + 4, hy + 4)], fill=(255, 255, 255))
    draw.ellipse([(x - 3, y - 3), (x + 3, y + 3)], outline=(90, 0, 0), width=1)
