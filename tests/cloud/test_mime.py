"""The fast MIME builder (cloud/mime.py) says what Python's email package said.

Each mail is built twice, by :func:`cloud.mime.build` and by the email package
(``Mail.message()``, what the notifier used before), and both are parsed with
the email parser (``policy=default``): the same headers, the same text and
HTML, the same inline pictures.  The content is varied where a builder can go
wrong: Japanese and English, long subjects, hostile strings from devices
(encoded-word look-alikes, quotes, control and bidi characters, astral
characters), senders with and without a display name, charts and map pictures.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import io
from email.message import EmailMessage
from typing import Any

import pytest
from PIL import Image

from cloud.chart import level_chart
from cloud.config import SiteConfig
from cloud.mime import Mail, RelatedImage, Unencodable, build, ready_for_data
from cloud.render import JST, Content, InlineImage, as_bytes, compose, render_mail
from edge.event import KINDS
from tests.cloud.conftest import PLACE, TS, make_event

RECEIVED = dt.datetime(2025, 11, 24, 4, 5, 13, tzinfo=dt.UTC)
HOSTILE = [
    "=?utf-8?q?forged?= subject",
    'quote " and back\\slash',
    "line\r\nBcc: victim@example.com",
    "nul\x00 and tab\t and del\x7f",
    "\u202egnirps\u202c bidi",
    "emoji 🐗🦌 and astral 𠮷野家",
    "x" * 200,
    "長い" * 120,
    "  leading and trailing spaces  ",
    "a,b;c:<d>@(e)",
    "",
]
SENDERS = [
    "里山エッジ <alerts@example.jp>",
    "alerts@example.jp",
    '"Satoyama, Edge" <alerts@example.jp>',
    "Satoyama Edge <alerts@example.jp>",
]


def _png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


def _parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _said(msg: EmailMessage) -> dict[str, Any]:
    """What a reader gets from a parsed mail: headers, structure, texts and pictures."""
    headers = [
        (name, str(value))
        for name, value in msg.items()
        if name.lower() not in ("content-type", "mime-version")
    ]
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        entry: dict[str, Any] = {"type": ctype}
        if ctype.startswith("text/"):
            entry["charset"] = part.get_content_charset()
            entry["text"] = part.get_content().replace("\r\n", "\n")
        elif not part.is_multipart():
            entry["data"] = part.get_content()
            entry["cid"] = part["Content-ID"]
            entry["disposition"] = part.get_content_disposition()
            entry["filename"] = part.get_filename()
        parts.append(entry)
    return {"headers": headers, "parts": parts}


def _spaced(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, "".join(value.split())) for name, value in headers]


def _check(mail: Mail) -> bytes:
    """Build ``mail`` both ways; assert they say the same; return the fast bytes."""
    fast = build(mail)
    slow = mail.message().as_bytes(policy=email.policy.SMTP)
    new, old = _said(_parse(fast)), _said(_parse(slow))
    assert new["parts"] == old["parts"]
    # Headers read back as the renderer wrote them ...
    assert new["headers"] == list(mail.headers)
    # ... and as the email package's did, but for its white space (it folds runs of
    # spaces into one and drops some next to encoded words) and for where it let a
    # device's "=?utf-8?q?...?=" be decoded by the reader: this shows it as it came.
    if not any("=?" in value for _, value in mail.headers):
        assert _spaced(new["headers"]) == _spaced(old["headers"])
    fast.decode("ascii")  # 7-bit: no 8BITMIME or SMTPUTF8 needed
    lines = fast.split(b"\r\n")
    assert b"\n" not in fast.replace(b"\r\n", b"")
    assert max(len(line) for line in lines) <= 998
    # What lets the sender skip its own look at every mail (cloud.mailer._dot_stuffed),
    # said independently: no bare CR or LF, a CRLF at the end, no line begins with a dot.
    assert b"\r" not in fast.replace(b"\r\n", b"") and fast.endswith(b"\r\n")
    assert not any(line.startswith(b".") for line in lines)
    assert ready_for_data(fast)
    return fast


@pytest.mark.parametrize("language", ["ja", "en"])
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_reads_the_same(kind: str, language: str) -> None:
    site = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
    mail = render_mail(
        make_event(kind, "alarm" if kind.endswith("alarm") else "warning"), site,
        language=language, sender=SENDERS[0], recipient="farmer@example.jp", index=2,
        received_at=RECEIVED,
    )  # fmt: skip
    raw = _check(mail)
    assert _parse(raw)["Message-ID"] == mail["Message-ID"]
    assert str(mail["Message-ID"]).endswith(".2@satoyama-edge>")


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("sender", SENDERS)
def test_hostile_strings_and_senders_read_the_same(hostile: str, sender: str) -> None:
    site = SiteConfig(name=f"片丘 {hostile}", recipients=("farmer@example.jp",))
    event = make_event(
        "water_level_alert", "alarm", device="pi-east-01",
        data={"sensor": hostile or "s", "stage_label": hostile, "level_cm": 182.5,
              "note": hostile, hostile or "k": hostile},
    )  # fmt: skip
    for language in ("ja", "en"):
        mail = render_mail(event, site, language=language, sender=sender,  # type: ignore[arg-type]
                           recipient="farmer@example.jp", received_at=RECEIVED)  # fmt: skip
        raw = _check(mail)
        parsed = _parse(raw)
        assert "Bcc" not in parsed
        assert parsed["Subject"] == mail["Subject"]
        assert "\n" not in str(parsed["Subject"])


def test_a_long_japanese_subject_is_folded_and_reads_back_whole() -> None:
    long_place = "奥三河の東側にある大きな棚田の一番上の段の脇を流れる小さな沢のほとり" * 3
    site = SiteConfig(name=long_place, recipients=("farmer@example.jp",))
    mail = render_mail(make_event(), site, language="ja", sender=SENDERS[0],
                       recipient="farmer@example.jp", received_at=RECEIVED)  # fmt: skip
    raw = _check(mail)
    head = raw.split(b"\r\n\r\n", 1)[0]
    subject_lines = head.split(b"Subject: ", 1)[1].split(b"\r\n")
    assert len(subject_lines) > 3
    assert all(len(line) <= 76 for line in subject_lines if line.startswith((b" ", b"=?")))
    assert _parse(raw)["Subject"] == mail["Subject"]
    assert long_place in str(mail["Subject"])


def test_the_chart_and_the_map_picture_are_inline_parts_of_the_html() -> None:
    end = TS.timestamp()
    points = [(end - 3600 * h, 100.0 + h) for h in range(24)]
    chart = level_chart("level_east.level_cm", points, end=end, threshold=150.0, mark=end,
                        tz=JST)  # fmt: skip
    assert chart is not None
    event = make_event("water_level_alert", "alarm",
                       data={"sensor": "level_east", "level_cm": 182.5, "stage": "flood_warning"})
    site = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
    mail = render_mail(event, site, language="ja", sender=SENDERS[0],
                       recipient="farmer@example.jp", received_at=RECEIVED, chart=chart)
    pictures = (_png(300, 200, (10, 120, 30)), _png(16, 16, (200, 0, 0)))
    mail = dataclasses.replace(mail, related=(
        *mail.related,
        RelatedImage("map.x@satoyama-edge", pictures[0], "map.png"),
        RelatedImage("pin.x@satoyama-edge", pictures[1], "pin.png"),
    ))  # fmt: skip
    parsed = _parse(_check(mail))
    html = parsed.get_body(("html",))
    assert html is not None
    related = parsed.get_payload()[1]  # type: ignore[index]
    assert related.get_content_type() == "multipart/related"
    images = [p for p in related.iter_parts() if p.get_content_type() == "image/png"]
    assert [p["Content-ID"] for p in images] == [
        f"<chart.{event.id}@satoyama-edge>", "<map.x@satoyama-edge>", "<pin.x@satoyama-edge>",
    ]  # fmt: skip
    assert images[0].get_content() == chart.png
    assert [p.get_content() for p in images[1:]] == list(pictures)
    assert all(p.get_content_disposition() == "inline" for p in images)


def test_content_images_are_attached_by_compose() -> None:
    """Every ``Content.images`` entry is an inline part of the HTML alternative."""
    when = TS.astimezone(JST)
    pictures = [InlineImage(f"map.{n}@satoyama-edge", _png(20 + n, 10, (n, 0, 0)),
                            f"map-{n}.png", "地図") for n in range(3)]  # fmt: skip
    content = Content(
        notice_id="01J0000000000000000000000", kind="trap_triggered", severity="alarm",
        site_id="kataoka-east", place=PLACE, device="pi-east-01", title="わな作動",
        headline="わなが閉じました", advice="見回ってください", when=when, received=when,
        rows=[("センサー", "box_trap_2")], images=pictures,
    )  # fmt: skip
    mail = compose(content, language="ja", sender=SENDERS[0], recipient="a@example.jp", index=1)
    parsed = _parse(_check(mail))
    images = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert [(p["Content-ID"], p.get_filename(), p.get_content()) for p in images] == [
        (f"<{i.cid}>", i.filename, i.png) for i in pictures
    ]
    assert _parse(as_bytes(mail))["Message-ID"] == "<01J0000000000000000000000.1@satoyama-edge>"


def test_what_the_builder_cannot_write_goes_through_the_email_package() -> None:
    """A non-ASCII address is the email package's to write (SMTPUTF8), not a crash."""
    site = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
    mail = render_mail(make_event(), site, language="ja", sender=SENDERS[0],
                       recipient="農家@例え.jp", received_at=RECEIVED)  # fmt: skip
    with pytest.raises(Unencodable):
        build(mail)
    assert _said(_parse(as_bytes(mail))) == _said(_parse(mail.message().as_bytes(
        policy=email.policy.SMTP)))  # fmt: skip


def test_building_is_fast_enough_for_a_thousand_mails_a_second() -> None:
    """Not a benchmark (benchmarks/notifier.py is): a guard against a 10x regression."""
    import time

    site = SiteConfig(name=PLACE, recipients=("farmer@example.jp",))
    mail = render_mail(make_event(), site, language="ja", sender=SENDERS[0],
                       recipient="farmer@example.jp", received_at=RECEIVED)  # fmt: skip
    began = time.process_time()
    for _ in range(200):
        build(mail)
    assert (time.process_time() - began) / 200 < 0.002


@pytest.mark.parametrize(
    "message",
    [
        b"Subject: x\r\n\r\n.starts a line\r\n",
        b".Subject: x\r\n\r\nbody\r\n",
        b"Subject: x\r\n\r\nbare\nline feed\r\n",
        b"Subject: x\r\n\r\nbare\rreturn\r\n",
        b"Subject: x\r\n\r\nno end",
        b"Subject: x\r\n\r\nends in a bare\n",
    ],
)
def test_a_message_smtp_cannot_carry_as_it_is_is_not_ready_for_data(message: bytes) -> None:
    assert not ready_for_data(message)
    assert ready_for_data(b"Subject: x\r\n\r\nbody. Not.a line start\r\n")
