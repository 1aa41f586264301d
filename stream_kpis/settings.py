"""The one settings object of stream-kpis, read from `STREAM_KPIS_*` environment variables.

Every field has a documented default; `STREAM_KPIS_<FIELD>` overrides it (`STREAM_KPIS_WEB_PORT=
8080`), and CLI flags override both by passing keyword arguments to `load_settings`. Lists and
maps take either JSON or a comma-separated form: `STREAM_KPIS_WINDOWS=1h,30d/1h` and
`STREAM_KPIS_EXCHANGE_RATES=EUR=1.08,GBP=1.27`.

Secrets (`sasl_password`, `web_basic_auth_password`, a password inside `redis_url`) never show
in `repr()` or logs. A password can also come from a file named by `STREAM_KPIS_SASL_PASSWORD_FILE`
or `STREAM_KPIS_WEB_BASIC_AUTH_PASSWORD_FILE` (Docker and Kubernetes secrets).
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import urllib.parse
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from stream_kpis.errors import ConfigError, shown
from stream_kpis.events import PROGRAM_NAME_RULE, is_program_name
from stream_kpis.windows import DEFAULT_WINDOWS, WindowSpec, parse_windows

logger = logging.getLogger(__name__)

ENV_PREFIX = "STREAM_KPIS_"

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# The topics a worker group makes for itself, named "<app id>-<suffix>": the by-subject topic,
# the changelogs of the `subjects` and `outcomes` tables, and Faust's leader election.
INTERNAL_TOPIC_SUFFIXES = (
    "by-subject",
    "subjects-changelog",
    "outcomes-changelog",
    "__assignor-__leader",
)
_APP_ID_MAX_LENGTH = 249 - max(len(f"-{suffix}") for suffix in INTERNAL_TOPIC_SUFFIXES)

Port = Annotated[int, Field(ge=1, le=65535)]


def check_topic_name(value: str) -> str:
    """`value` when Kafka accepts it as a topic name; ValueError saying what it accepts."""
    if not _TOPIC.match(value) or value in (".", ".."):
        raise ValueError("a Kafka topic name is 1-249 letters, digits, '.', '_' or '-'")
    return value


class Settings(BaseSettings):
    """Everything stream-kpis can be configured with. Defaults suit a local single worker."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        validate_default=True,
        hide_input_in_errors=True,
    )

    # -- identity and Kafka --------------------------------------------------------------
    app_id: str = Field("stream-kpis", description="Faust app id: consumer group, topic prefix")
    bootstrap_servers: str = Field("localhost:9092", description="Kafka brokers, host:port,...")
    sessions_topic: str = Field("sessions", description="input topic of session events")
    subscriptions_topic: str = Field("subscriptions", description="input topic of revenue events")
    surveys_topic: str = Field("surveys", description="input topic of survey events")
    dead_letter_topic: str = Field("stream-kpis-dead-letter", description="invalid messages")
    topic_partitions: int = Field(
        4, ge=1, le=10_000, description="partitions of the topics stream-kpis makes"
    )
    replication_factor: int = Field(
        1, ge=1, description="replicas of each topic stream-kpis creates (3 in production)"
    )
    standby_replicas: int = Field(
        0, ge=0, description="standby copies of each partition's state on other workers"
    )
    broker_session_timeout_seconds: float = Field(
        45.0, ge=6, le=90, description="how long the group waits for a silent worker"
    )

    # -- Kafka security -------------------------------------------------------------------
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="how to reach the brokers"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-256", description="SASL mechanism, with a SASL_* protocol"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret)")
    sasl_password_file: Path | None = Field(None, description="file holding sasl_password")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = Field(None, description="client private key (mutual TLS)")

    # -- Redis ------------------------------------------------------------------------------
    redis_url: str = Field("redis://localhost:6379/0", description="where snapshots are published")
    redis_key_prefix: str = Field("stream-kpis", min_length=1, description="prefix of Redis keys")

    # -- KPIs and time ----------------------------------------------------------------------
    windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_WINDOWS),
        description="rolling windows, NAME=DURATION[/BUCKET] or DURATION[/BUCKET]",
    )
    grace_seconds: int = Field(300, ge=0, description="how long a session waits for late parts")
    session_timeout_seconds: int = Field(1800, gt=0, description="inactivity that ends a session")
    dedup_horizon_seconds: int = Field(604800, gt=0, description="how long event ids are kept")
    max_skew_seconds: int = Field(86400, ge=0, description="how far ahead of the clock is valid")
    reporting_currency: str = Field("USD", description="currency of all money KPIs (ISO 4217)")
    exchange_rates: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict, description="reporting-currency units per unit of CODE"
    )
    clock: Literal["wall", "event"] = Field("wall", description="wall clock, or newest event time")
    max_programs: int = Field(20, ge=1, description="programmes with their own metric labels")
    programs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="programmes that always keep their own metric label, comma-separated",
    )
    targets_file: Path | None = Field(None, description="TOML file of KPI targets")

    # -- serving ----------------------------------------------------------------------------
    web_host: str = Field("127.0.0.1", description="address the HTTP server listens on")
    web_port: Port = Field(6066, description="port of /kpis, /metrics, /healthz, /readyz")
    web_basic_auth_user: str | None = Field(None, description="HTTP basic auth user, if any")
    web_basic_auth_password: SecretStr | None = Field(None, description="its password (secret)")
    web_basic_auth_password_file: Path | None = Field(
        None, description="file holding web_basic_auth_password"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="log level of stream-kpis"
    )
    store: str = Field("memory://", description="Faust table store: memory:// or rocksdb://")
    snapshot_interval_seconds: float = Field(0.5, gt=0, le=3600, description="Redis publish period")

    # -- field checks -----------------------------------------------------------------------

    @field_validator("bootstrap_servers")
    @classmethod
    def _check_bootstrap_servers(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("must name at least one broker as host:port")
        for server in servers:
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"{server!r} is not host:port with a port in 1-65535")
        return ",".join(servers)

    @field_validator("sessions_topic", "subscriptions_topic", "surveys_topic", "dead_letter_topic")
    @classmethod
    def _check_topic(cls, value: str) -> str:
        return check_topic_name(value)

    @field_validator("app_id")
    @classmethod
    def _check_app_id(cls, value: str) -> str:
        # It prefixes the internal topics (INTERNAL_TOPIC_SUFFIXES).
        if not _TOPIC.match(value) or len(value) > _APP_ID_MAX_LENGTH:
            raise ValueError(
                f"the app id prefixes topic names: 1-{_APP_ID_MAX_LENGTH} letters, digits, "
                "'.', '_' or '-'"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:
            parts.port  # noqa: B018 - reading it is the check
        except ValueError:
            raise ValueError("the port must be a number from 0 to 65535") from None
        return value

    @field_validator("windows", "programs", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("programs")
    @classmethod
    def _check_programs(cls, value: list[str]) -> list[str]:
        for program in value:
            if not is_program_name(program):
                raise ValueError(f"{shown(program)}: {PROGRAM_NAME_RULE}")
        return value

    @field_validator("windows")
    @classmethod
    def _check_windows(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window is needed, such as 30d")
        try:
            parse_windows(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("reporting_currency", mode="before")
    @classmethod
    def _upper_currency(cls, value: Any) -> Any:
        # As event currencies: the code is read whatever its case.
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("reporting_currency")
    @classmethod
    def _check_currency(cls, value: str) -> str:
        if not _CURRENCY.match(value):
            raise ValueError("must be a three-letter ISO 4217 code, such as USD")
        return value

    @field_validator("exchange_rates", mode="before")
    @classmethod
    def _split_exchange_rates(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):
            return json.loads(text, parse_float=Decimal)
        pairs = [part.partition("=") for part in text.split(",") if part.strip()]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("write rates as CODE=RATE,CODE=RATE or as a JSON object")
        return {code.strip(): rate.strip() for code, _, rate in pairs}

    @field_validator("exchange_rates")
    @classmethod
    def _check_exchange_rates(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        rates: dict[str, Decimal] = {}
        for given, rate in value.items():
            code = given.upper()
            if not _CURRENCY.match(code):
                raise ValueError(f"{given!r} is not a three-letter ISO 4217 code")
            if code in rates:
                raise ValueError(f"{code} is given twice")
            rates[code] = rate
            try:
                usable = rate.is_finite() and rate > 0
            except InvalidOperation:
                usable = False
            if not usable:
                raise ValueError(f"the rate for {code} must be a positive number, not {rate}")
        return rates

    @model_validator(mode="after")
    def _check_reporting_rate(self) -> Settings:
        rate = self.exchange_rates.get(self.reporting_currency)
        if rate is not None and rate != 1:
            raise ValueError(
                f"exchange_rates gives the reporting currency {self.reporting_currency} the rate "
                f"{rate}; it must be 1 or left out"
            )
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("store")
    @classmethod
    def _check_store(cls, value: str) -> str:
        if urllib.parse.urlsplit(value).scheme not in ("memory", "rocksdb"):
            raise ValueError("must be memory:// or rocksdb://[PATH]")
        return value

    @field_validator("targets_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
    @classmethod
    def _check_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file {value} does not exist")
        return value

    # -- checks across fields ---------------------------------------------------------------

    @model_validator(mode="after")
    def _read_password_files(self) -> Settings:
        for field in ("sasl_password", "web_basic_auth_password"):
            path: Path | None = getattr(self, f"{field}_file")
            if path is None:
                continue
            if getattr(self, field) is not None:
                raise ValueError(f"set {field} or {field}_file, not both")
            try:
                secret = path.read_text().rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"{field}_file {path} cannot be read: {exc.strerror}") from None
            setattr(self, field, SecretStr(secret))
        return self

    @model_validator(mode="after")
    def _check_topics_are_distinct(self) -> Settings:
        # One topic in two roles loses data: a second input role dead-letters the other's
        # events as wrong_topic, and a dead-letter topic that is read dead-letters forever.
        roles: dict[str, str] = {}
        for field in (
            "sessions_topic",
            "subscriptions_topic",
            "surveys_topic",
            "dead_letter_topic",
        ):
            topic = getattr(self, field)
            if topic in roles:
                raise ValueError(
                    f"{roles[topic]} and {field} are both {topic!r}; give each its own"
                )
            roles[topic] = field
        for suffix in INTERNAL_TOPIC_SUFFIXES:
            internal = f"{self.app_id}-{suffix}"
            if internal in roles:
                raise ValueError(
                    f"{roles[internal]} {internal!r} is an internal topic of app id {self.app_id!r}"
                )
        return self

    @model_validator(mode="after")
    def _check_security(self) -> Settings:
        if self.security_protocol.startswith("SASL_") and not (
            self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and "
                "sasl_password (or sasl_password_file)"
            )
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both or neither")
        if (self.web_basic_auth_user is None) != (self.web_basic_auth_password is None):
            raise ValueError(
                "web_basic_auth_user and web_basic_auth_password go together: set both or neither"
            )
        return self

    # -- derived values ---------------------------------------------------------------------

    @property
    def window_specs(self) -> tuple[WindowSpec, ...]:
        """The parsed windows, with `all` last."""
        return parse_windows(self.windows)

    @property
    def input_topics(self) -> dict[str, str]:
        """Topic role (sessions, subscriptions, surveys) to topic name."""
        return {
            "sessions": self.sessions_topic,
            "subscriptions": self.subscriptions_topic,
            "surveys": self.surveys_topic,
        }

    @property
    def by_subject_topic(self) -> str:
        """The topic events are forwarded to when they arrived outside their subject's
        partition."""
        return f"{self.app_id}-{INTERNAL_TOPIC_SUFFIXES[0]}"

    @field_serializer("redis_url", when_used="json")
    def _redact_redis_url(self, value: str) -> str:
        return redact_url(value)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "redis_url" else value


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, fit for logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def load_settings(*, flags: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with `overrides` (non-None CLI values) on top.

    Invalid values raise `ConfigError` with one line per problem, naming the setting, where
    its value came from (the flag in `flags`, setting name to flag, for an override; the
    environment variable otherwise) and, unless it is a secret, the value.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, given, flags or {})) from None
    except (SettingsError, json.JSONDecodeError) as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    _warn_of_unknown_variables(os.environ)
    return settings


# Variables with the settings' prefix that other parts read (the local services, the tests).
OTHER_VARIABLES = frozenset(
    {"STREAM_KPIS_CACHE_DIR", "STREAM_KPIS_NO_INSTALL", "STREAM_KPIS_SHARED_DATASETS"}
)


def _warn_of_unknown_variables(environ: Mapping[str, str]) -> None:
    """Log each STREAM_KPIS_* variable that nothing reads, most likely a misspelt setting."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | OTHER_VARIABLES
    suffixes = [known_name.removeprefix(ENV_PREFIX) for known_name in known]
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1, cutoff=0.8)
        hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
        logger.warning("%s is not a setting and is ignored%s", name, hint)


_SECRET_FIELDS = frozenset({"sasl_password", "web_basic_auth_password"})


def _describe(exc: ValidationError, given: dict[str, Any], flags: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        if not field:
            problems.append(f"invalid settings: {message}")
            continue

        env_name = ENV_PREFIX + field.upper()
        source = flags.get(field, env_name) if field in given else env_name
        raw = given.get(field, os.environ.get(env_name))
        value = "" if raw is None or field in _SECRET_FIELDS else f" = {raw!r}"
        if field == "redis_url" and isinstance(raw, str):
            value = f" = {redact_url(raw)!r}"
        problems.append(f"invalid setting {field} ({source}){value}: {message}")
    return "; ".join(problems)
