"""Events as the previous release sent them decode to the typed vocabulary, and mail as before.

Each payload below is an envelope as the daemon before the typed vocabulary (commit
384327e) wrote it, one per kind and more for the kinds whose fields vary: transcribed from
that release's dict-building code (the watches, the supervisor, the storage watch, the
command runner, the updater's spool lines), in its key order.  The cloud must read every
one with its kind's type, the device's typed data must give back the same JSON object, and
what the notifier reads from it (the subject's figure, the sensor a burst or trap is keyed
by, a trap's closing time, a heartbeat's interval) must be what the generic reading of the
previous release gave.
"""

# The expected Japanese texts use full-width brackets, as the mails do.
# ruff: noqa: RUF001

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest

from cloud import plan
from cloud.config import SiteConfig
from cloud.render import _subject_fact, _untyped_fact, as_bytes, render_mail
from cloud.templates import PHRASES
from edge.event import (
    DATA_TYPES,
    KINDS,
    AnimalDetected,
    Event,
    EventData,
    SensorFault,
    WaterStage,
    decode,
    encode,
    event_data,
)
from edge.wildlife.deterrent import Outcome
from edge.wildlife.trap import TrapOutcome
from edge.wildlife.watch import detection_data, trap_event

_HEAD = (
    '{{"id":"01a20bd8-6727-7e0d-bc2f-c9a0cf059a{n:02d}","device":"pi-east-01","site":"east",'
    '"kind":"{kind}","severity":"{severity}","ts":"2026-11-24T04:37:41.287258Z",'
    '"clock_synced":true,"seq":{n},"boot":"83d7e40f-49b5-42d6-86cb-3b6236bda834",'
    '"location":{{"lat":36.10395,"lon":137.96563}},"data":{data},"v":1}}'
)
_STAGES = (
    '[{"name":"caution","label":"注意水位","level_cm":150.0},'
    '{"name":"danger","label":"避難判断水位","level_cm":180.0}]'
)
RECORDED: dict[str, tuple[str, str]] = {
    # kind: (severity, data) as the previous release put them on the wire
    "animal_detected": ("alarm",
        '{"sensor":"pir_north","rule":"chase_north","deterrent":"sounded","siren":true,'
        '"strobe":false,"place":"東の田んぼ"}'),
    "trap_triggered": ("alarm",
        '{"sensor":"trap_a","closed_since":"2026-11-24T04:30:41.287258Z","closed_s":420.0,'
        '"reminder":true,"place":"東の田んぼ"}'),
    "trap_reset": ("info",
        '{"sensor":"trap_a","closed_since":"2026-11-24T04:30:41.287258Z","closed_s":3600.0,'
        '"place":"東の田んぼ"}'),
    "trap_armed": ("info", '{"sensor":"trap_a","place":"東の田んぼ"}'),
    "water_level_alert": ("alarm",
        '{"sensor":"level_east","level_cm":182.5,"stage":"danger","stage_label":"避難判断水位",'
        '"threshold_cm":180.0,"direction":"rising","stages":' + _STAGES + ',"place":"東の川"}'),
    "water_rise_alert": ("warning",
        '{"sensor":"level_east","level_cm":120.0,"rise_cm_per_10min":12.5,'
        '"threshold_cm_per_10min":10.0,"stages":' + _STAGES + ',"place":"東の川"}'),
    "posture_check": ("info",
        '{"cot":"ひよこ3","posture":"left","probability":0.912,"place":"ひよこ組"}'),
    "prone_alarm": ("alarm",
        '{"cot":"ひよこ3","posture":"prone","duration_s":65.0,"place":"ひよこ組"}'),
    "apnea_alarm": ("alarm", '{"cot":"ひよこ3","posture":"supine","still_s":20.5}'),
    # New with the posture model's abstention (issue 15): as the device sends it.
    "posture_unknown": ("warning", '{"cot":"ひよこ3","unknown_s":20.5,"place":"ひよこ組"}'),
    "alarm_cleared": ("info",
        '{"cot":"ひよこ3","cleared":"prone_alarm","acknowledged_by":"button","alarm_s":12.4}'),
    "anomaly": ("warning",
        '{"sensor":"level_east","series":"water","score":0.153,"threshold":0.0,'
        '"tests":["quiet","peak"],"pattern":"stuck","place":"東の川"}'),
    "sensor_fault": ("warning",
        '{"sensor":"level_east","fault":"supervised_task","message":"water level_east failed: '
        'OSError(5, \'I/O error\'); restarting it","error":"OSError","transient":true,'
        '"failures":3,"retry_in_s":4.2,"at":"ads1115.py:88","place":"東の川"}'),
    "sensor_recovered": ("info",
        '{"sensor":"level_east","fault":"supervised_task","down_s":95.3,"restarts":3,'
        '"place":"東の川"}'),
    "heartbeat": ("info",
        '{"interval_s":300.0,"uptime_s":8123.4,"outbox_depth":2,"oldest_undelivered_s":12.5,'
        '"evicted":{},"sensors":{"level_east":"ok","pir_north":"fault"},'
        '"bytes_sent_today":40960}'),
    "command_rejected": ("warning",
        '{"command":"reboot","reason":"unknown command \'reboot\'"}'),
    "update_installed": ("info",
        '{"from_version":"1.4.1","to_version":"1.4.2","source":"updater"}'),
    "update_failed": ("warning",
        '{"from_version":"1.4.1","to_version":"1.4.2","stage":"health","reason":"no heartbeat '
        'within 120 s; rolled back to 1.4.1","source":"updater"}'),
}  # fmt: skip
# More shapes the previous release sent for some kinds (optional fields).
MORE: list[tuple[str, str, str]] = [
    ("sensor_fault", "warning",
     '{"sensor":"storage","fault":"read_only","message":"the disk is read-only"}'),
    ("sensor_fault", "warning",
     '{"moved_to":"outbox.db.corrupt-1","salvaged":10,"new":0,"unreadable":1,"quarantined":2,'
     '"sensor":"outbox","fault":"corrupt","message":"outbox file was corrupt"}'),
    ("sensor_fault", "warning",
     '{"evicted":{"posture_check":12},"sensor":"outbox","fault":"full","message":"full"}'),
    ("sensor_fault", "warning",
     '{"sensor":"nap_room.posture_model","fault":"model_unavailable",'
     '"message":"no model; check the cots by hand"}'),
    ("sensor_recovered", "info",
     '{"sensor":"storage","down_s":12.5,"lost_in_memory":{"heartbeat":1}}'),
    ("sensor_recovered", "info", '{"sensor":"pir_north","fault":"no_answer","down_s":61.0}'),
    ("heartbeat", "info",
     '{"interval_s":300.0,"uptime_s":5.0,"outbox_depth":0,"evicted":{},"sensors":{},'
     '"bytes_sent_today":0,"link":{"access_tech":"lte","signal_pct":71}}'),
    ("posture_check", "info", '{"cot":"ひよこ3","posture":"unknown","probability":null}'),
    ("trap_triggered", "alarm",
     '{"sensor":"trap_a","closed_since":"2026-11-24T04:37:40.000000Z","closed_s":0.0,'
     '"reminder":false}'),
    ("update_failed", "warning", '{"stage":"request","reason":"bad url","request":"r-17"}'),
    ("update_failed", "alarm",
     '{"from_version":null,"to_version":"1.4.2","stage":"health","reason":"no heartbeat; '
     'no previous release to go back to","source":"updater"}'),
]  # fmt: skip
PAYLOADS = [(k, s, d) for k, (s, d) in RECORDED.items()] + MORE
SITE = SiteConfig(name="東の田んぼ", recipients=("farmer@example.jp",))
RECEIVED = dt.datetime(2026, 11, 24, 4, 37, 43, tzinfo=dt.UTC)


def _payload(n: int, kind: str, severity: str, data: str) -> bytes:
    return _HEAD.format(n=n, kind=kind, severity=severity, data=data).encode()


def _rendered(event: Event, language: str) -> EmailMessage:
    msg = render_mail(
        event, SITE, language=language,  # type: ignore[arg-type]
        sender="alerts@example.jp", recipient="farmer@example.jp", received_at=RECEIVED,
    )  # fmt: skip
    parsed = email.message_from_bytes(as_bytes(msg), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _previous_sensor_of(data: dict[str, Any]) -> str:
    """The previous release's guess (``cloud.notifier._sensor_of``), for comparison."""
    for key in ("sensor", "cot", "trap", "detector"):
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)[:128]
    return ""


def test_a_recorded_payload_for_every_kind() -> None:
    assert set(RECORDED) == KINDS


@pytest.mark.parametrize(("n", "kind", "severity", "data"),
                         [(n, *p) for n, p in enumerate(PAYLOADS)])  # fmt: skip
def test_the_previous_releases_payload_decodes_typed_and_mails_as_before(
    n: int, kind: str, severity: str, data: str
) -> None:
    raw = _payload(n, kind, severity, data)
    event = decode(raw)
    typed = event_data(event)
    assert isinstance(typed, DATA_TYPES[kind]), f"{kind}: {data} does not fit {DATA_TYPES[kind]}"
    assert typed.kind == kind
    # The device's typed data is the same JSON object on the wire as before.
    assert typed.to_data() == event.data
    assert encode(event) == raw
    # What the notifier reads from it is what the previous release's reading gave.
    assert plan._sensor_of(event) == _previous_sensor_of(event.data)
    now = RECEIVED.timestamp()
    for language in ("ja", "en"):
        assert _subject_fact(event, PHRASES[language]) == _untyped_fact(event, PHRASES[language])
        msg = _rendered(event, language)
        assert msg["Subject"]
    if kind == "heartbeat":
        assert plan.heartbeat_interval(event) == 300.0
    if kind in ("trap_triggered", "trap_reset"):
        closed = dt.datetime.fromisoformat(event.data["closed_since"].replace("Z", "+00:00"))
        assert plan._closed_since(event, now) == closed.timestamp()


def test_the_subject_figures_of_recorded_payloads() -> None:
    facts = {
        kind: _subject_fact(decode(_payload(0, kind, s, d)), PHRASES["ja"])
        for kind, (s, d) in RECORDED.items()
    }
    assert facts["water_level_alert"] == "182.5cm 避難判断水位（氾濫危険水位）"
    assert facts["water_rise_alert"] == "120cm +12.5cm/10分"
    assert facts["prone_alarm"] == facts["posture_check"] == "ひよこ3"
    assert facts["trap_triggered"] == "7分経過"
    assert facts["animal_detected"] == facts["heartbeat"] == ""


def test_data_that_does_not_fit_its_kind_is_mailed_with_what_can_be_read() -> None:
    # An older device's water alert without the stage fields, a detection naming only its
    # detector: not refused (the envelope is valid), mailed with the fields as they came.
    odd = decode(_payload(1, "water_level_alert", "alarm", '{"level_cm":182.5,"extra":"x"}'))
    assert event_data(odd) is None
    assert _subject_fact(odd, PHRASES["ja"]) == "182.5cm"
    plain = _rendered(odd, "ja").get_body(("plain",))
    assert plain is not None and "extra" in plain.get_content()
    old = decode(_payload(2, "animal_detected", "alarm", '{"detector":"pir_north"}'))
    assert event_data(old) is None and plan._sensor_of(old) == "pir_north"


def test_fields_a_kind_does_not_name_are_kept_for_the_mail() -> None:
    newer = decode(_payload(3, "anomaly", "warning", RECORDED["anomaly"][1][:-1] + ',"z":7}'))
    typed = event_data(newer)
    assert isinstance(typed, DATA_TYPES["anomaly"]) and "z" not in typed.to_data()
    assert newer.data["z"] == 7  # the envelope keeps it: the mail's details show it
    plain = _rendered(newer, "en").get_body(("plain",))
    assert plain is not None and "z" in plain.get_content()


def test_an_anomalys_detail_travels_and_an_older_one_without_it_still_reads() -> None:
    import msgspec

    from edge.event import Anomaly

    old = event_data(decode(_payload(4, "anomaly", "warning", RECORDED["anomaly"][1])))
    assert isinstance(old, Anomaly) and old.detail is msgspec.UNSET
    assert "detail" not in old.to_data()
    detail = "level jumped 61.3 cm to 0 or below (expected about 61.3 cm; noise 0.28 cm)"
    data = (
        '{"sensor":"level_east","series":"water","score":219.0,"threshold":8.0,'
        '"tests":["dropout"],"pattern":"dropout","detail":"' + detail + '","place":"東の川"}'
    )
    raw = _payload(5, "anomaly", "warning", data)
    new = decode(raw)
    typed = event_data(new)
    assert isinstance(typed, Anomaly) and typed.detail == detail
    assert typed.to_data() == new.data and encode(new) == raw
    for language in ("ja", "en"):
        plain = _rendered(new, language).get_body(("plain",))
        assert plain is not None and detail in plain.get_content()


def test_the_device_builds_the_same_data_as_before() -> None:
    from edge.config import SirenConfig

    siren = SirenConfig(pin=17)
    made = detection_data("pir_north", "chase_north", Outcome.SOUNDED, [siren])
    assert made == AnimalDetected(
        sensor="pir_north", rule="chase_north", deterrent="sounded", siren=True, strobe=False
    )
    assert made is not None and made.to_data() == {
        "sensor": "pir_north", "rule": "chase_north", "deterrent": "sounded",
        "siren": True, "strobe": False,
    }  # fmt: skip
    wall, mono = 1_795_000_000.0, 5000.0
    closed = TrapOutcome("trap_triggered", closed_since=mono - 420.0, closed_s=420.0,
                         reminder=True)  # fmt: skip
    assert trap_event("trap_a", closed, wall=wall, mono=mono).to_data() == {
        "sensor": "trap_a", "closed_since": "2026-11-18T10:59:40Z", "closed_s": 420.0,
        "reminder": True,
    }  # fmt: skip
    armed = TrapOutcome("trap_armed", None)
    assert trap_event("trap_a", armed, wall=wall, mono=mono).to_data() == {"sensor": "trap_a"}
    stage = WaterStage(name="danger", label="避難判断水位", level_cm=180.0)
    assert msgspec_roundtrip(stage) == {
        "name": "danger", "label": "避難判断水位", "level_cm": 180.0
    }  # fmt: skip
    fault = SensorFault(sensor="s", fault="no_answer", message="silent")
    assert fault.to_data() == {"sensor": "s", "fault": "no_answer", "message": "silent"}
    assert isinstance(fault, EventData) and fault.severity == "warning"


def msgspec_roundtrip(value: object) -> Any:
    import msgspec

    return msgspec.to_builtins(value)
