"""Makes the tiny tile set the mail tests draw their maps from (never fetched at test time).

Run from the repository root: ``.venv/bin/python tests/data/tiles/make_tiles.py``.
Tiles at zoom 16 around the test sites (tests/cloud/conftest.py's LAT, LON and
the example paddy edge), in the ``{z}/{x}/{y}.png`` layout of 地理院タイル:
pale fields, a road grid and a river, so a picture from them looks like a map.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from cloud.staticmap import tile_of

ZOOM = 16
PLACES = [(36.0794321, 137.9543219), (36.103950, 137.965630)]
HERE = Path(__file__).parent


def tile(x: int, y: int) -> Image.Image:
    image = Image.new("RGB", (256, 256), (236, 242, 226))
    draw = ImageDraw.Draw(image)
    for i in range(0, 256, 64):  # field boundaries
        draw.line([(i, 0), (i, 255)], fill=(205, 215, 195), width=1)
        draw.line([(0, i), (255, i)], fill=(205, 215, 195), width=1)
    if x % 2 == 0:  # a road every other tile
        draw.line([(128, 0), (128, 255)], fill=(255, 255, 255), width=6)
        draw.line([(128, 0), (128, 255)], fill=(200, 200, 200), width=1)
    if y % 3 == 0:  # a river
        draw.line([(0, 90), (255, 150)], fill=(150, 195, 235), width=10)
    return image


def main() -> None:
    wanted = set()
    for lat, lon in PLACES:
        cx, cy = tile_of(lat, lon, ZOOM)
        wanted |= {(cx + dx, cy + dy) for dx in (-2, -1, 0, 1, 2) for dy in (-1, 0, 1)}
    for x, y in sorted(wanted):
        path = HERE / str(ZOOM) / str(x) / f"{y}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        tile(x, y).save(path, "PNG", optimize=True)
    print(f"{len(wanted)} tiles under {HERE / str(ZOOM)}")


if __name__ == "__main__":
    main()
