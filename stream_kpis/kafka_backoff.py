"""A pause between failed metadata updates of the Kafka client, so a lost broker costs no CPU.

aiokafka 0.14 retries a failed cluster metadata update as soon as anything asks for one, with
no pause: when the broker is gone, its producer's sender asks again the moment the last try
failed, and the worker spins a whole core on refused connections until the broker is back
(upstream aio-libs/aiokafka#496; a fix is proposed in aio-libs/aiokafka#1014). The Java
client and kafka-python back off instead (dpkp/kafka-python#733).

`install()` wraps the client's metadata update: after a failure it waits the client's
`retry_backoff_ms` (100 ms by default), doubling with each failure in a row up to
`MAX_BACKOFF_SECONDS`, before it reports the failure. A success resets the pause. Everything
that waits for the update (the producer's sender, the consumer's fetcher and coordinator)
slows down with it; nothing else changes. Drop this module once aiokafka backs off itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.client import AIOKafkaClient

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 1.0
_FAILURES = "_stream_kpis_failed_metadata_updates"
_INSTALLED = "_stream_kpis_backoff"

# Replaced by tests to record the pauses instead of sleeping.
_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep


def backoff_seconds(retry_backoff_seconds: float, failures_in_a_row: int) -> float:
    """The pause after the n-th failed update in a row (n >= 1)."""
    return min(retry_backoff_seconds * 2 ** (failures_in_a_row - 1), MAX_BACKOFF_SECONDS)


def install() -> None:
    """Make every aiokafka client of this process back off after failed metadata updates."""
    update = AIOKafkaClient._metadata_update
    if getattr(update, _INSTALLED, False):
        return

    @functools.wraps(update)
    async def metadata_update_with_backoff(self: Any, *args: Any, **kwargs: Any) -> Any:
        updated = await update(self, *args, **kwargs)
        if updated:
            setattr(self, _FAILURES, 0)
            return updated

        failures = getattr(self, _FAILURES, 0) + 1
        setattr(self, _FAILURES, failures)
        await _sleep(backoff_seconds(self._retry_backoff, failures))
        return updated

    setattr(metadata_update_with_backoff, _INSTALLED, True)
    AIOKafkaClient._metadata_update = metadata_update_with_backoff  # type: ignore[method-assign]
