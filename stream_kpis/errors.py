"""The exceptions of stream-kpis: one root, narrow subclasses that carry what went wrong.

StreamKpisError
 +-- ConfigError        a setting, window, target or CLI value is not usable
 |    +-- TargetConfigError   a targets file entry is not usable (file, entry, field, value)
 +-- ServiceError       a local service (Kafka, Redis, Prometheus) is missing or won't start
 +-- DatasetError       a dataset file cannot be read or does not have the expected shape
 +-- ProduceError       events could not be delivered to Kafka
 +-- TimestampError     a value is not a timestamp stream-kpis accepts (RFC 3339 or epoch)
 +-- FeedError          the Redis dashboard feed could not be read or written
"""

from __future__ import annotations

# How much of a value an error message quotes.
SHOWN_CHARS = 60


def shown(value: str) -> str:
    """A value quoted for an error message, cut after SHOWN_CHARS characters."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value)} characters)"


class StreamKpisError(Exception):
    """Root of every error stream-kpis raises on purpose."""


class ConfigError(StreamKpisError):
    """A configuration value is not usable; the message names the setting and the value."""


class TargetConfigError(ConfigError):
    """A targets file cannot be used. Carries the file, the entry's index, the field and value."""

    def __init__(
        self,
        message: str,
        *,
        path: str,
        index: int | None = None,
        field: str | None = None,
        value: object = None,
    ) -> None:
        where = path if index is None else f"{path}: target #{index + 1}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.index = index
        self.field = field
        self.value = value


class ServiceError(StreamKpisError):
    """A local service is not installed, cannot start, or does not answer.

    The message is one line that says what is wrong and what to do about it.
    """


class DatasetError(StreamKpisError):
    """A dataset file is missing, unreadable, or lacks what its adapter needs.

    The message names the file and, where known, the line or column.
    """


class ProduceError(StreamKpisError):
    """Kafka did not acknowledge events; the message says how many and why."""


class TimestampError(StreamKpisError, ValueError):
    """A value is not an accepted timestamp; the message says what was expected and what came."""


class FeedError(StreamKpisError):
    """Redis did not take or give the dashboard feed; the message carries Redis' error.

    `retriable` is True: the worker keeps processing and tries again on its next round.
    """

    retriable = True
