"""Headers of a dead-letter record: why a message was rejected and where it came from.

An invalid message goes to the dead-letter topic with its original key and value bytes
untouched (the caller copies them) and these headers, all UTF-8 text:

    reason            the rejection's reason code, e.g. `score_out_of_range`
    field             the offending field, e.g. `score`; empty when it is the whole message
    source_topic      the topic the message was read from
    source_partition  its partition, in decimal
    source_offset     its offset, in decimal
    detail            what was expected and what arrived (values cut after about 60 characters)

docs/events.md describes them for users.
"""

from __future__ import annotations

import logging

from stream_kpis.events import Rejection

logger = logging.getLogger(__name__)

HEADER_NAMES = ("reason", "field", "source_topic", "source_partition", "source_offset", "detail")


def dead_letter_headers(
    rejection: Rejection, *, source_topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """The Kafka headers for the dead-letter copy of a rejected message, in `HEADER_NAMES` order."""
    values = (
        rejection.reason,
        rejection.field or "",
        source_topic,
        str(int(partition)),
        str(int(offset)),
        rejection.detail,
    )
    # backslashreplace: a header is always valid UTF-8, whatever text it was given.
    return [
        (name, value.encode("utf-8", "backslashreplace"))
        for name, value in zip(HEADER_NAMES, values, strict=True)
    ]
