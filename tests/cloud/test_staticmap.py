"""The map picture at the top of a mail: drawn from the shipped tiles, cached, never a delay."""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from cloud.config import load_config, parse_config
from cloud.errors import ConfigError
from cloud.render import MAP_CID, render_mail, render_reminder
from cloud.staticmap import StaticMaps, pixel, tile_of
from edge.sim.broker import Mosquitto
from edge.sim.mailbox import Mailbox
from tests.cloud.conftest import (
    LAT,
    LON,
    RECIPIENTS,
    Publisher,
    config_text,
    mails,
    make_event,
    running,
)
from tests.cloud.test_render import SENDER, SITE_CONFIG

TILES = Path(__file__).parent.parent / "data" / "tiles"
TEMPLATE = f"file://{TILES}/{{z}}/{{x}}/{{y}}.png"


def maps(tmp_path: Path, **kwargs: object) -> StaticMaps:
    return StaticMaps(url_template=TEMPLATE, cache_dir=tmp_path / "tiles", **kwargs)  # type: ignore[arg-type]


def test_the_tile_maths_puts_the_place_in_its_tile() -> None:
    x, y = pixel(LAT, LON, 16)
    assert tile_of(LAT, LON, 16) == (int(x // 256), int(y // 256))
    assert (TILES / "16" / str(int(x // 256)) / f"{int(y // 256)}.png").is_file()


def test_a_picture_with_the_pin_in_the_middle(tmp_path: Path) -> None:
    picture = maps(tmp_path).picture(LAT, LON)
    assert picture is not None and picture.credit == "出典：国土地理院"  # noqa: RUF001
    with Image.open(io.BytesIO(picture.png)) as image:
        assert image.size == (600, 300)
        rgb = image.convert("RGB")
        assert rgb.getpixel((300, 116)) == (220, 20, 20)  # the pin's red head, above its point
        assert rgb.getpixel((20, 20)) != (240, 240, 240)  # a tile, not the empty background


def test_a_burst_draws_once_and_fetches_each_tile_once(tmp_path: Path) -> None:
    source = maps(tmp_path)
    first = source.picture(LAT, LON)
    fetched = source.fetched
    assert first is not None and fetched > 0 and source.drawn == 1
    for _ in range(50):
        assert source.picture(LAT, LON) is first
    assert source.drawn == 1 and source.fetched == fetched
    # A new notifier process finds the tiles on disk: draws again, fetches nothing.
    again = maps(tmp_path)
    assert again.picture(LAT, LON) is not None
    assert again.fetched == 0 and again.drawn == 1


@pytest.fixture
def silent_server() -> Iterator[str]:
    """An HTTP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/{{z}}/{{x}}/{{y}}.png"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_tile_server_that_hangs_costs_the_mail_its_picture_not_its_time(
    silent_server: str, tmp_path: Path
) -> None:
    source = StaticMaps(url_template=silent_server, cache_dir=tmp_path, timeout_s=0.5)
    event = make_event(data={"sensor": "pir_north", "siren": True})
    started = time.monotonic()
    mail = render_mail(event, SITE_CONFIG, language="ja", sender=SENDER,
                       recipient="farmer@example.jp", maps=source)  # fmt: skip
    assert time.monotonic() - started < 2.0
    assert not any(i.cid.startswith(MAP_CID) for i in [*mail.related])
    assert "maps.gsi.go.jp" in mail.plain  # links still there
    # The next mail about the same place does not wait again.
    started = time.monotonic()
    assert source.picture(LAT, LON) is None
    assert time.monotonic() - started < 0.1


def test_a_missing_tile_means_no_picture(tmp_path: Path) -> None:
    assert maps(tmp_path).picture(35.0, 139.0) is None  # no tiles shipped for Tokyo Bay


def test_the_mail_carries_the_picture_linked_to_the_map_with_its_credit(tmp_path: Path) -> None:
    event = make_event(data={"sensor": "pir_north", "siren": True})
    mail = render_mail(event, SITE_CONFIG, language="ja", sender=SENDER,
                       recipient="farmer@example.jp", maps=maps(tmp_path))  # fmt: skip
    related = [r for r in mail.related if r.cid.startswith(MAP_CID)]
    assert len(related) == 1 and related[0].data.startswith(b"\x89PNG")
    html = mail.html
    img = html.index(f'src="cid:{related[0].cid}"')
    assert html.rfind('<a href="https://maps.gsi.go.jp/', 0, img) > 0  # one tap on the picture
    assert html.index("出典：国土地理院") > img  # noqa: RUF001


def test_maps_configuration(tmp_path: Path) -> None:
    text = config_text(mqtt_port=1883, smtp_port=25, store=tmp_path / "s.db")
    assert parse_config(text).maps.enabled is False  # nothing is fetched unless asked
    on = parse_config(
        text + '\n[maps]\nenabled = true\ncache_dir = "tiles"\ntimeout_s = 1.5\n', base_dir=tmp_path
    )
    assert on.maps.enabled and on.maps.cache_dir == str(tmp_path / "tiles")
    assert on.maps.tile_url.startswith("https://cyberjapandata.gsi.go.jp/xyz/std/")
    with pytest.raises(ConfigError, match=r"maps\.tile_url.*\{y\}"):
        parse_config(text + '\n[maps]\ntile_url = "https://t.example/{z}/{x}.png"\n')
    with pytest.raises(ConfigError, match=r"maps\.timeout_s"):
        parse_config(text + "\n[maps]\ntimeout_s = 30\n")


async def test_the_notifier_mails_the_picture_when_maps_are_on(
    tmp_path: Path, broker: Mosquitto, mailbox: Mailbox, publisher: Publisher
) -> None:
    text = config_text(mqtt_port=broker.port, smtp_port=mailbox.port, store=tmp_path / "n.db")
    text += f'\n[maps]\nenabled = true\ntile_url = "{TEMPLATE}"\ncache_dir = "tiles"\n'
    path = tmp_path / "notifier.toml"
    path.write_text(text)
    config = load_config(path)
    event = make_event(data={"sensor": "pir_north", "siren": True, "place": "北端の柵"})
    async with running(config):
        await publisher.event(event)
        received = await mails(mailbox, len(RECIPIENTS))
    for mail in received:
        msg = mail.message
        assert msg["Subject"].startswith("【緊急】【動物検知】片丘 東の田 北端の柵 ")
        html = msg.get_body(("html",))
        assert html is not None
        pictures = [p for p in msg.walk() if p.get_content_type() == "image/png"]
        assert len(pictures) == 1
        cid = str(pictures[0]["Content-ID"]).strip("<>")
        assert cid.startswith(MAP_CID) and f'src="cid:{cid}"' in html.get_content()
    assert any((tmp_path / "tiles").rglob("*.tile"))  # the tiles were kept on disk


def test_a_trap_reminder_carries_the_picture_too(tmp_path: Path) -> None:
    mail = render_reminder(
        notice_id="notice:t.r1", trigger_id="t", site_id="kataoka-east", site=SITE_CONFIG,
        device="pi-trap-01", sensor="trap_a", closed_since=1.7e9, number=1, lat=LAT, lon=LON,
        language="ja", sender=SENDER, recipient="hunter@example.jp", index=1,
        now=dt.datetime.fromtimestamp(1.7e9 + 7200, dt.UTC), maps=maps(tmp_path),
    )  # fmt: skip
    assert [r.cid.startswith(MAP_CID) for r in mail.related] == [True]
    assert "trap_a" not in str(mail["Subject"])
