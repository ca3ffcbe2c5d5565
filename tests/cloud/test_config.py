"""Configuration: every mistake is one message naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import DEFAULT_SKIP_KINDS, NotifierConfig, load_config, parse_config
from cloud.errors import ConfigError, NotifierError
from edge.event import DEFAULT_TOPIC_PREFIX

REPO = Path(__file__).resolve().parents[2]

MINIMAL = """\
[mqtt]
host = "broker.example.jp"

[smtp]
host = "smtp.example.jp"
sender = "alerts@example.jp"

[store]
path = "notifier.sqlite3"

[sites.kataoka-east]
name = "片丘 東の田"
recipients = ["farmer@example.jp"]
"""


def error_of(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return info.value


def test_minimal_config_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.mqtt.port == 1883
    assert config.mqtt.topic_prefix == DEFAULT_TOPIC_PREFIX == "satoyama/v1"
    assert config.mqtt.client_id == "satoyama-notifier"
    assert config.mqtt.keepalive == 60
    assert config.mqtt.username is None and config.mqtt.password is None
    assert config.smtp.port == 25
    assert config.smtp.starttls is False and config.smtp.tls is False
    assert config.delivery.retry_initial_s == 5.0
    assert config.delivery.retry_max_s == 300.0
    assert config.delivery.language == "ja"
    assert config.delivery.skip_kinds == DEFAULT_SKIP_KINDS
    assert config.store.keep_days == 400
    # A relative store path is relative to the configuration file's folder.
    assert config.store.path == str(tmp_path / "notifier.sqlite3")
    site = config.sites["kataoka-east"]
    assert site.name == "片丘 東の田"
    assert site.recipients == ("farmer@example.jp",)
    assert config.language_for(site) == "ja"
    assert config.mails_kind(site, "animal_detected")
    assert not config.mails_kind(site, "posture_check")


def test_the_example_config_is_valid() -> None:
    config = load_config(REPO / "examples" / "notifier.toml")
    assert config.sites
    assert isinstance(config, NotifierConfig)


def test_site_overrides_language_and_skipped_kinds() -> None:
    config = parse_config(
        MINIMAL
        + """
[sites.hoikuen]
name = "さくら保育園 ひよこ組"
recipients = ["staff@example.jp"]
language = "en"
skip_kinds = []
"""
    )
    site = config.sites["hoikuen"]
    assert config.language_for(site) == "en"
    assert config.mails_kind(site, "posture_check")


def test_wrong_type_names_the_key_and_what_was_expected() -> None:
    error = error_of(
        MINIMAL.replace('host = "smtp.example.jp"', 'host = "smtp.example.jp"\nport = "25"')
    )
    assert str(error) == "smtp.port: Expected `int`, got `str`"
    assert error.key == "smtp.port"


def test_unknown_key_is_an_error_with_a_suggestion() -> None:
    error = error_of(MINIMAL.replace("[smtp]\n", "[smtp]\nprot = 25\n"))
    assert error.key == "smtp.prot"
    assert "unknown key" in str(error)
    assert "did you mean `port`?" in str(error)


def test_unknown_table_is_an_error() -> None:
    error = error_of(MINIMAL + "\n[smpt]\nhost = 'x'\n")
    assert error.key == "smpt"
    assert "unknown key" in str(error)


def test_missing_table_names_it() -> None:
    error = error_of(MINIMAL.replace('[store]\npath = "notifier.sqlite3"\n', ""))
    assert str(error) == "store: required table [store] is missing"


def test_missing_key_names_it() -> None:
    error = error_of(MINIMAL.replace('sender = "alerts@example.jp"\n', ""))
    assert str(error) == "smtp.sender: required key is missing"


def test_errors_inside_a_site_name_the_site() -> None:
    error = error_of(MINIMAL.replace('recipients = ["farmer@example.jp"]', "recipients = []"))
    assert error.key == "sites.kataoka-east.recipients"
    error = error_of(MINIMAL.replace('["farmer@example.jp"]', '["farmer@example.jp", 7]'))
    assert str(error) == "sites.kataoka-east.recipients[1]: Expected `str`, got `int`"
    error = error_of(MINIMAL.replace('name = "片丘 東の田"\n', ""))
    assert str(error) == "sites.kataoka-east.name: required key is missing"


def test_recipients_must_look_like_addresses_and_be_unique() -> None:
    error = error_of(
        MINIMAL.replace('["farmer@example.jp"]', '["farmer@example.jp", "not an address"]')
    )
    assert error.key == "sites.kataoka-east.recipients[1]"
    assert "not an e-mail address" in str(error)
    error = error_of(
        MINIMAL.replace('["farmer@example.jp"]', '["farmer@example.jp", "Farmer@example.jp"]')
    )
    assert error.key == "sites.kataoka-east.recipients[1]"
    assert "twice" in str(error)


def test_language_must_be_ja_or_en() -> None:
    error = error_of(MINIMAL + '\n[delivery]\nlanguage = "fr"\n')
    assert error.key == "delivery.language"
    assert "'ja', 'en'" in str(error)


def test_retry_max_below_initial_is_refused() -> None:
    error = error_of(MINIMAL + "\n[delivery]\nretry_initial_s = 10\nretry_max_s = 5\n")
    assert error.key == "delivery.retry_max_s"


def test_numbers_out_of_range_are_refused() -> None:
    assert error_of(MINIMAL.replace("[mqtt]\n", "[mqtt]\nport = 0\n")).key == "mqtt.port"
    error = error_of(MINIMAL + "\n[delivery]\nretry_initial_s = 0\n")
    assert error.key == "delivery.retry_initial_s"


def test_sender_must_be_an_address() -> None:
    error = error_of(MINIMAL.replace('sender = "alerts@example.jp"', 'sender = "alerts"'))
    assert error.key == "smtp.sender"


def test_username_without_password_is_refused() -> None:
    error = error_of(MINIMAL.replace("[smtp]\n", '[smtp]\nusername = "u"\n'))
    assert error.key == "smtp.password"


def test_tls_and_starttls_exclude_each_other() -> None:
    error = error_of(MINIMAL.replace("[smtp]\n", "[smtp]\ntls = true\nstarttls = true\n"))
    assert error.key == "smtp.tls"


def test_a_config_without_sites_is_refused() -> None:
    text = MINIMAL[: MINIMAL.index("[sites.")]
    assert error_of(text).key == "sites"


def test_topic_prefix_without_wildcards() -> None:
    error = error_of(MINIMAL.replace("[mqtt]\n", '[mqtt]\ntopic_prefix = "satoyama/#"\n'))
    assert error.key == "mqtt.topic_prefix"


def test_invalid_toml_is_a_config_error() -> None:
    error = error_of("[mqtt\nhost = 1\n")
    assert error.key == ""
    assert str(error).startswith("invalid TOML")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert info.value.file == str(tmp_path / "absent.toml")


def test_config_error_is_a_value_error_and_a_notifier_error() -> None:
    error = error_of("")
    assert isinstance(error, ValueError)
    assert isinstance(error, NotifierError)


def test_passwords_never_show_in_repr() -> None:
    text = MINIMAL.replace("[smtp]\n", '[smtp]\nusername = "alerts"\npassword = "s3cret-smtp"\n')
    text = text.replace("[mqtt]\n", '[mqtt]\nusername = "notifier"\npassword = "s3cret-mqtt"\n')
    config = parse_config(text)
    assert "s3cret" not in repr(config)
    assert "s3cret" not in str(config)
    assert config.smtp.password is not None and config.smtp.password.reveal() == "s3cret-smtp"
    assert config.mqtt.password is not None and config.mqtt.password.reveal() == "s3cret-mqtt"


def test_password_of_wrong_type_names_the_key() -> None:
    error = error_of(MINIMAL.replace("[smtp]\n", '[smtp]\nusername = "u"\npassword = 1234\n'))
    assert str(error) == "smtp.password: Expected `str`, got `int`"


ROUTED = (
    MINIMAL.replace(
        'recipients = ["farmer@example.jp"]',
        'recipients = ["farmer@example.jp"]\noperators = ["ops"]',
    )
    + """
[contacts.hunters]
address = "ryoyukai@example.jp"
language = "en"

[contacts.ops]
address = "ops@example.jp"

[[sites.kataoka-east.routes]]
kinds = ["trap_triggered", "trap_reminder"]
to = ["hunters", "farmer@example.jp"]

[[sites.kataoka-east.routes]]
min_severity = "alarm"
to = ["city@example.jp"]
"""
)


def test_routes_by_kind_and_severity_with_languages_per_contact() -> None:
    config = parse_config(ROUTED)
    site = config.sites["kataoka-east"]

    def who(kind: str, severity: str) -> list[tuple[str, str]]:
        return [(r.address, r.language) for r in config.recipients_for(site, kind, severity)]

    assert who("trap_triggered", "alarm") == [
        ("farmer@example.jp", "ja"), ("ryoyukai@example.jp", "en"), ("city@example.jp", "ja"),
    ]  # fmt: skip
    assert who("animal_detected", "warning") == [("farmer@example.jp", "ja")]
    assert who("sensor_fault", "warning") == [("ops@example.jp", "ja")]
    assert who("device_offline", "alarm") == [("ops@example.jp", "ja"), ("city@example.jp", "ja")]


def test_defaults_of_the_new_tables(tmp_path: Path) -> None:
    config = parse_config(MINIMAL, base_dir=tmp_path)
    assert config.mqtt.protocol == "5" and config.mqtt.session_expiry_s == 7 * 86400
    assert config.mqtt.shared_group is None
    assert config.store.backend == "sqlite"
    assert config.delivery.claim_timeout_s == 120 and config.delivery.poll_s == 5
    assert config.traps.reminder_every_s == 7200
    assert config.devices.offline_grace_s == 300 and config.devices.heartbeat_timeout_s == 1800
    assert "trap_armed" in config.delivery.skip_kinds
    rule = config.coalesce_rule("animal_detected")
    assert rule is not None and (rule.quiet_s, rule.summary_every_s) == (900, 10800)
    sensor_rule = config.coalesce_rule("sensor_recovered")
    assert sensor_rule is not None and sensor_rule.per == "sensor"
    assert config.coalesce_rule("prone_alarm") is None  # a child in danger is never folded


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (('"farmer@example.jp"]\n', '"tanaka"]\n'), "sites.kataoka-east.recipients[0]",
         "no [contacts.tanaka]"),
        (("[mqtt]\n", 'coalesce = [{kinds = ["animal_detectd"], quiet_s = 60}]\n[mqtt]\n'),
         "coalesce[0].kinds", "did you mean 'animal_detected'"),
        (("[mqtt]\n", '[mqtt]\nshared_group = "n"\n'), "mqtt.shared_group", "postgresql"),
        (('path = "notifier.sqlite3"', 'backend = "postgresql"'), "store.dsn", "required"),
        (("[mqtt]\n", '[mqtt]\nprotocol = "3"\n'), "mqtt.protocol", "'3.1.1', '5'"),
        (('recipients = ["farmer@example.jp"]', "recipients = []"),
         "sites.kataoka-east.recipients", "reach no one"),
    ],
)  # fmt: skip
def test_new_keys_are_checked_and_named(change: tuple[str, str], key: str, words: str) -> None:
    error = error_of(MINIMAL.replace(*change))
    assert error.key == key
    assert words in str(error)


def test_a_route_to_an_unknown_contact_names_the_route() -> None:
    text = (
        MINIMAL + '\n[[sites.kataoka-east.routes]]\nkinds = ["trap_triggered"]\nto = ["hunters"]\n'
    )
    error = error_of(text)
    assert error.key == "sites.kataoka-east.routes[0].to[0]"


def test_the_cluster_example_config_is_valid() -> None:
    config = load_config(REPO / "examples" / "notifier-cluster.toml")
    assert config.mqtt.shared_group and config.store.backend == "postgresql"
    assert "secret" not in repr(config)


def test_the_receive_window_acks_and_store_bounds_have_documented_defaults() -> None:
    config = parse_config(MINIMAL)
    assert config.mqtt.receive_maximum == 200
    assert config.mqtt.device_acks is True
    assert config.mqtt.ack_delay_s == 0.2
    assert config.store.max_events == 1_000_000
    assert config.store.max_mails == 200_000
    docs = (REPO / "docs" / "notifier.md").read_text(encoding="utf-8")
    for key in ("receive_maximum", "device_acks", "ack_delay_s", "max_events", "max_mails"):
        assert f"| `{key}` |" in docs, key


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        ("[mqtt]", "receive_maximum = 0", "mqtt.receive_maximum"),
        ("[mqtt]", "receive_maximum = 70000", "mqtt.receive_maximum"),
        ("[mqtt]", "ack_delay_s = -1", "mqtt.ack_delay_s"),
        ("[mqtt]", 'device_acks = "yes"', "mqtt.device_acks"),
        ("[store]", "max_events = 0", "store.max_events"),
        ("[store]", "max_mails = 0", "store.max_mails"),
    ],
)
def test_out_of_range_window_ack_and_bound_keys_are_named(table: str, line: str, key: str) -> None:
    error = error_of(MINIMAL.replace(f"{table}\n", f"{table}\n{line}\n", 1))
    assert error.key == key


def test_the_fleet_registry_is_optional_and_checked() -> None:
    assert parse_config(MINIMAL).fleet is None
    config = parse_config(MINIMAL + '\n[fleet.pi-east-01]\nsite = "kataoka-east"\n')
    assert config.fleet is not None and config.fleet["pi-east-01"].site == "kataoka-east"
    error = error_of(MINIMAL + '\n[fleet.pi-east-01]\nsite = "kataoka-west"\n')
    assert error.key == "fleet.pi-east-01.site"
    assert "not a configured site" in str(error)
    error = error_of(MINIMAL + '\n[fleet.pi-east-01]\nsite = "kataoka-east"\nsit = "x"\n')
    assert error.key == "fleet.pi-east-01.sit"
    assert error_of("fleet = 3\n" + MINIMAL).key == "fleet"
