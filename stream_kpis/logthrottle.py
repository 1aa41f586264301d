"""Hold back third-party log lines that repeat, so an outage cannot flood the log.

While the broker is down, the Kafka client tries to reconnect many times a second and logs
two errors for each try (upstream aio-libs/aiokafka#496): hundreds of lines a second, which
fill disks and cost CPU. `RepeatThrottle` lets the first line of each kind through, then at
most one per `interval_seconds`, saying how many like it were held back. Lines of one kind
share their logger and their message with the numbers taken out, so "Unable connect to node
with id 1" and "... id 2" are one kind.

Only warnings and errors are throttled, and the INFO lines of the few loggers that repeat them
per batch: the other INFO lines tell the worker's life (a rebalance's "Worker ready", say) and
must all show. stream-kpis' own loggers are never throttled: they do not repeat per message.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 30.0
_NUMBERS = re.compile(r"(0x)?[0-9a-f]*[0-9][0-9a-f]*", re.IGNORECASE)
_OWN_LOGGER = "stream_kpis"
_DECIDED = "stream_kpis_throttle_passed"
# Third-party loggers whose INFO lines repeat with every batch ("producer flush took 0.2").
_NOISY_INFO_LOGGERS = frozenset({"faust.transport.producer"})


class RepeatThrottle(logging.Filter):
    def __init__(
        self,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval_seconds = interval_seconds
        self._clock = clock
        # kind -> (when one last went through, how many were held back since)
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == _OWN_LOGGER or record.name.startswith(_OWN_LOGGER + "."):
            return True
        if record.levelno < logging.WARNING and record.name not in _NOISY_INFO_LOGGERS:
            return True
        # A record reaches every handler: decide once, and the same for all of them.
        decided = getattr(record, _DECIDED, None)
        if decided is not None:
            return bool(decided)
        decision = self._decide(record)
        setattr(record, _DECIDED, decision)
        return decision

    def _decide(self, record: logging.LogRecord) -> bool:
        kind = (record.name, _NUMBERS.sub("#", str(record.msg)))
        now = self._clock()
        passed_at, held = self._seen.get(kind, (None, 0))
        if passed_at is not None and now - passed_at < self.interval_seconds:
            self._seen[kind] = (passed_at, held + 1)
            return False

        self._seen[kind] = (now, 0)
        if held:
            # The message is a %-template: add only text that holds no '%'.
            record.msg = (
                f"{record.msg} [{held} more like this held back in the last "
                f"{now - (passed_at or now):.0f} s]"
            )
        return True


def throttle_handlers(
    interval_seconds: float = DEFAULT_INTERVAL_SECONDS, root: logging.Logger | None = None
) -> RepeatThrottle:
    """Add one `RepeatThrottle` to every handler of the root logger; returns it."""
    throttle = RepeatThrottle(interval_seconds)
    for handler in (root or logging.getLogger()).handlers:
        handler.addFilter(throttle)
    return throttle
