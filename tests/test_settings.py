"""Settings: documented defaults, environment overrides, validation, and secrets kept out."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path

import pytest

from stream_kpis.errors import ConfigError
from stream_kpis.settings import Settings, load_settings, redact_url


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Each test sees only the STREAM_KPIS_* variables it sets itself."""
    for name in list(os.environ):
        if name.startswith("STREAM_KPIS_"):
            monkeypatch.delenv(name)


def test_defaults():
    settings = load_settings()

    assert settings.app_id == "stream-kpis"
    assert settings.bootstrap_servers == "localhost:9092"
    assert (settings.sessions_topic, settings.subscriptions_topic, settings.surveys_topic) == (
        "sessions",
        "subscriptions",
        "surveys",
    )
    assert settings.dead_letter_topic == "stream-kpis-dead-letter"
    assert settings.topic_partitions == 4
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.redis_key_prefix == "stream-kpis"
    assert settings.windows == ["1h", "24h", "7d", "30d"]
    assert settings.grace_seconds == 300
    assert settings.session_timeout_seconds == 30 * 60
    assert settings.dedup_horizon_seconds == 7 * 24 * 3600
    assert settings.max_skew_seconds == 24 * 3600
    assert settings.reporting_currency == "USD"
    assert settings.exchange_rates == {}
    assert settings.clock == "wall"
    assert settings.max_programs == 20
    assert settings.targets_file is None
    assert (settings.web_host, settings.web_port) == ("127.0.0.1", 6066)
    assert settings.log_level == "INFO"
    assert settings.store == "memory://"
    assert settings.snapshot_interval_seconds == 0.5
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_password is None


def test_default_windows_parse_with_the_spec_buckets():
    specs = {spec.name: spec for spec in load_settings().window_specs}

    assert set(specs) == {"1h", "24h", "7d", "30d", "all"}
    assert (specs["1h"].bucket_seconds, specs["24h"].bucket_seconds) == (60, 60)
    assert (specs["7d"].bucket_seconds, specs["30d"].bucket_seconds) == (3600, 3600)
    assert specs["all"].length_seconds is None


def test_environment_overrides_defaults(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_WEB_PORT", "8080")
    monkeypatch.setenv("STREAM_KPIS_BOOTSTRAP_SERVERS", "k1:9092, k2:9093")
    monkeypatch.setenv("STREAM_KPIS_CLOCK", "event")
    monkeypatch.setenv("STREAM_KPIS_LOG_LEVEL", "debug")
    monkeypatch.setenv("STREAM_KPIS_GRACE_SECONDS", "60")

    settings = load_settings()

    assert settings.web_port == 8080
    assert settings.bootstrap_servers == "k1:9092,k2:9093"
    assert settings.clock == "event"
    assert settings.log_level == "DEBUG"
    assert settings.grace_seconds == 60


def test_keyword_overrides_win_over_the_environment_and_none_means_unset(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_WEB_PORT", "8080")

    assert load_settings(web_port=9090).web_port == 9090
    assert load_settings(web_port=None).web_port == 8080


@pytest.mark.parametrize("text", ["1h,month=30d/1h", '["1h", "month=30d/1h"]'])
def test_windows_from_the_environment_as_a_list_or_json(monkeypatch, text):
    monkeypatch.setenv("STREAM_KPIS_WINDOWS", text)

    settings = load_settings()

    assert settings.windows == ["1h", "month=30d/1h"]
    assert [spec.name for spec in settings.window_specs] == ["1h", "month", "all"]


@pytest.mark.parametrize("text", ["EUR=1.08,GBP=1.27", '{"EUR": "1.08", "GBP": 1.27}'])
def test_exchange_rates_are_exact_decimals(monkeypatch, text):
    monkeypatch.setenv("STREAM_KPIS_EXCHANGE_RATES", text)

    assert load_settings().exchange_rates == {"EUR": Decimal("1.08"), "GBP": Decimal("1.27")}


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"web_port": 70000}, "invalid setting web_port (STREAM_KPIS_WEB_PORT) = 70000"),
        ({"web_port": 0}, "web_port (STREAM_KPIS_WEB_PORT) = 0"),
        ({"bootstrap_servers": "kafka"}, "'kafka' is not host:port"),
        ({"bootstrap_servers": "kafka:99999"}, "'kafka:99999' is not host:port"),
        ({"windows": ["1x"]}, "invalid setting windows"),
        ({"windows": ["45m/1h"]}, "whole number of buckets"),
        ({"windows": []}, "at least one window"),
        ({"reporting_currency": "dollars"}, "three-letter ISO 4217 code"),
        ({"exchange_rates": {"USD": "2"}}, "reporting currency USD the rate 2; it must be 1"),
        ({"exchange_rates": {"eur": "1.1", "EUR": "1.2"}}, "EUR is given twice"),
        ({"exchange_rates": {"EUR": "0"}}, "the rate for EUR must be a positive number"),
        ({"exchange_rates": {"euro": "1.1"}}, "'euro' is not a three-letter"),
        ({"clock": "sundial"}, "invalid setting clock"),
        ({"grace_seconds": -1}, "invalid setting grace_seconds"),
        ({"snapshot_interval_seconds": 0}, "snapshot_interval_seconds"),
        ({"snapshot_interval_seconds": float("inf")}, "less than or equal to 3600"),
        ({"topic_partitions": 100_000}, "less than or equal to 10000"),
        ({"sessions_topic": "bad topic"}, "a Kafka topic name is"),
        ({"app_id": ""}, "the app id prefixes topic names: 1-229 letters"),
        ({"app_id": "my app"}, "app_id (STREAM_KPIS_APP_ID) = 'my app'"),
        ({"app_id": "a" * 230}, "the app id prefixes topic names"),
        ({"redis_url": "http://x"}, "must start with redis://"),
        ({"redis_url": "redis://:pw@127.0.0.1:99999/0"}, "port must be a number from 0 to"),
        (
            {"dead_letter_topic": "sessions"},
            "sessions_topic and dead_letter_topic are both 'sessions'",
        ),
        (
            {"sessions_topic": "x", "subscriptions_topic": "x"},
            "sessions_topic and subscriptions_topic are both 'x'",
        ),
        (
            {"surveys_topic": "stream-kpis-by-subject"},
            "surveys_topic 'stream-kpis-by-subject' is an internal topic of app id",
        ),
        ({"store": "postgres://"}, "memory:// or rocksdb://"),
        ({"targets_file": "/nonexistent/targets.yml"}, "does not exist"),
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
        ({"web_basic_auth_user": "admin"}, "set both or neither"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_invalid_values_name_the_setting(overrides, expected):
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)

    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_invalid_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_TOPIC_PARTITIONS", "zero")

    with pytest.raises(ConfigError, match=r"topic_partitions \(STREAM_KPIS_TOPIC_PARTITIONS\)"):
        load_settings()


def test_secrets_stay_out_of_repr_and_errors(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_SASL_PASSWORD", "hunter2-sasl")
    monkeypatch.setenv("STREAM_KPIS_WEB_BASIC_AUTH_USER", "admin")
    monkeypatch.setenv("STREAM_KPIS_WEB_BASIC_AUTH_PASSWORD", "hunter2-web")
    monkeypatch.setenv("STREAM_KPIS_REDIS_URL", "redis://:hunter2-redis@cache:6379/0")

    settings = load_settings()

    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert "hunter2" not in text
    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "hunter2-sasl"
    assert settings.redis_url == "redis://:hunter2-redis@cache:6379/0"

    monkeypatch.setenv("STREAM_KPIS_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "hunter2" not in str(caught.value)


def test_password_from_a_file(tmp_path: Path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("STREAM_KPIS_SASL_PASSWORD_FILE", str(secret))

    settings = load_settings(security_protocol="SASL_PLAINTEXT", sasl_username="alice")

    assert settings.sasl_password is not None
    assert settings.sasl_password.get_secret_value() == "from-a-file"


def test_password_and_password_file_together_are_rejected(tmp_path: Path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("one")
    monkeypatch.setenv("STREAM_KPIS_SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("STREAM_KPIS_SASL_PASSWORD", "two")

    with pytest.raises(ConfigError, match="set sasl_password or sasl_password_file, not both"):
        load_settings()


def test_unreadable_password_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_SASL_PASSWORD_FILE", str(tmp_path / "missing"))

    with pytest.raises(ConfigError, match="sasl_password_file .* cannot be read"):
        load_settings()


def test_redact_url():
    assert redact_url("redis://user:pw@host:6379/0") == "redis://user:***@host:6379/0"
    assert redact_url("redis://:pw@host/0") == "redis://:***@host/0"
    assert redact_url("redis://host:6379/0") == "redis://host:6379/0"


def test_every_setting_is_documented():
    undocumented = [name for name, field in Settings.model_fields.items() if not field.description]
    assert undocumented == []


def test_readme_lists_every_setting():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [
        name for name in Settings.model_fields if f"`STREAM_KPIS_{name.upper()}`" not in readme
    ]
    assert missing == []


def test_programs_keeping_their_label_are_read_comma_separated(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_PROGRAMS", " web, app ,")

    assert load_settings().programs == ["web", "app"]


@pytest.mark.parametrize("text", ["web,all", "x" * 129])
def test_a_programme_that_cannot_exist_is_refused(monkeypatch, text):
    monkeypatch.setenv("STREAM_KPIS_PROGRAMS", text)

    with pytest.raises(
        ConfigError, match=r"programs \(STREAM_KPIS_PROGRAMS\).*a programme is 1-128"
    ):
        load_settings()


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles(monkeypatch, caplog):
    monkeypatch.setenv("STREAM_KPIS_WEB_PROT", "7000")
    monkeypatch.setenv("STREAM_KPIS_NOTHING_LIKE_IT", "1")
    monkeypatch.setenv("STREAM_KPIS_CACHE_DIR", "/tmp")  # read by the local services

    with caplog.at_level(logging.WARNING, logger="stream_kpis.settings"):
        assert load_settings().web_port == 6066

    assert [record.getMessage() for record in caplog.records] == [
        "STREAM_KPIS_NOTHING_LIKE_IT is not a setting and is ignored",
        "STREAM_KPIS_WEB_PROT is not a setting and is ignored; did you mean STREAM_KPIS_WEB_PORT?",
    ]


def test_currency_codes_are_read_whatever_their_case(monkeypatch):
    monkeypatch.setenv("STREAM_KPIS_REPORTING_CURRENCY", " eur")
    monkeypatch.setenv("STREAM_KPIS_EXCHANGE_RATES", "usd=0.92,Gbp=1.17,eur=1")

    settings = load_settings()

    assert settings.reporting_currency == "EUR"
    assert settings.exchange_rates == {
        "USD": Decimal("0.92"),
        "GBP": Decimal("1.17"),
        "EUR": Decimal("1"),
    }
