"""Which input messages the worker may process, and which offsets it may commit.

Faust's consumer can hand an agent a message out of order: around a rebalance it delivers
messages fetched before its seek back to the committed offsets, and it can drop messages it
counts as read before (see stream_kpis.faust_fixes). Processed as delivered, a message that
comes before an earlier one of the same subject would make the earlier one look like a
redelivery, and a commit after a dropped message would lose it for good.

`InputOffsets` therefore follows, per input topic partition, the next offset to process:

- until Faust has sought the partitions of the current assignment to their committed
  offsets, nothing is processed (`Admission.NOT_SOUGHT`): what arrives was fetched before and
  is read again after the seek;
- then only the message at the next offset is processed (`NEXT`); one below it was processed
  already (`SEEN`); one above it (`AHEAD`) means messages in between were not delivered, so
  the partition is read again from the next offset (`rewinds`);
- offsets deleted by retention before they were read are skipped when the broker says the
  partition now starts after them (`skip_to`); offsets that hold no message for another
  reason (transaction markers) show up as the same message ahead of the same next offset
  after each rewind: after `GAP_CONFIRMATIONS` rewinds in a row it is processed
  (`SKIPPED_GAP`) and the gap is reported.

The offsets to commit are those after the last message processed in order *and* delivered
(every record and forwarded event it produced acknowledged by Kafka): `confirm` records them
per batch, `committable` gives them to Faust's commits.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

TopicPartition = tuple[str, int]

# Rewinds in a row after which the same message still comes first: the offsets before it
# hold no message. A message fetched before a rewind and delivered after it comes first once.
GAP_CONFIRMATIONS = 3


class Admission(enum.Enum):
    NEXT = "next"  # the next offset: process it
    SKIPPED_GAP = "skipped_gap"  # after offsets that hold no message: process it
    SEEN = "seen"  # below the next offset: processed already
    AHEAD = "ahead"  # above the next offset: not now; the partition is read again
    NOT_SOUGHT = "not_sought"  # fetched before the seek to the committed offsets: not now


class InputOffsets:
    def __init__(self) -> None:
        self._sought = False
        # The next offset to process per input topic partition of the current assignment.
        self._next: dict[TopicPartition, int] = {}
        # The offset to commit per partition: after the last message processed and delivered.
        self._done: dict[TopicPartition, int] = {}
        # Partitions to read again from their next offset.
        self._rewinds: dict[TopicPartition, int] = {}
        # Per partition, the (next offset, offset ahead of it) that caused the last rewinds,
        # and how many rewinds in a row it caused.
        self._last_rewind: dict[TopicPartition, tuple[tuple[int, int], int]] = {}
        # The first offset of the gap the last `SKIPPED_GAP` went past.
        self.gap_start = 0

    def on_assignment(self) -> None:
        """A new assignment: nothing is processed until its partitions have been sought."""
        self._sought = False
        self._next.clear()
        self._done.clear()
        self._rewinds.clear()
        self._last_rewind.clear()

    def on_seek(self, committed: Mapping[TopicPartition, int | None]) -> None:
        """The consumer has sought every assigned partition to its committed offset (None: no
        commit, reading starts at the oldest message kept)."""
        self._sought = True
        self._rewinds.clear()
        self._last_rewind.clear()
        self._next = {tp: offset or 0 for tp, offset in committed.items()}

    def admit(self, tp: TopicPartition, offset: int) -> Admission:
        """Whether the message at `offset` of `tp` is processed now; advances the next offset."""
        if not self._sought:
            return Admission.NOT_SOUGHT
        expected = self._next.get(tp, 0)
        if offset < expected:
            return Admission.SEEN
        if offset == expected:
            self._next[tp] = offset + 1
            return Admission.NEXT
        if tp in self._rewinds:
            return Admission.AHEAD  # going back already
        pair, times = self._last_rewind.get(tp, ((-1, -1), 0))
        times = times + 1 if pair == (expected, offset) else 1
        if times > GAP_CONFIRMATIONS:
            # Read again from `expected` that often, the first message there is this one.
            del self._last_rewind[tp]
            self.gap_start = expected
            self._next[tp] = offset + 1
            return Admission.SKIPPED_GAP
        self._rewinds[tp] = expected
        self._last_rewind[tp] = ((expected, offset), times)
        return Admission.AHEAD

    def skip_to(self, tp: TopicPartition, offset: int) -> int:
        """Go on from `offset` (the offsets before it hold no message any more, as the broker
        says); returns how many offsets were skipped."""
        expected = self._next.get(tp, 0)
        if offset <= expected:
            return 0
        self._next[tp] = offset
        self._rewinds.pop(tp, None)
        self._last_rewind.pop(tp, None)
        return offset - expected

    def next_offset(self, tp: TopicPartition) -> int | None:
        return self._next.get(tp) if self._sought else None

    def rewinds(self) -> dict[TopicPartition, int]:
        """The partitions to read again and the offset to read from; forgets them."""
        rewinds, self._rewinds = self._rewinds, {}
        return rewinds

    def request_rewinds(self, rewinds: Mapping[TopicPartition, int]) -> None:
        """Ask again for rewinds that could not be done."""
        for tp, offset in rewinds.items():
            if tp in self._next:
                self._rewinds[tp] = min(offset, self._next[tp])

    def confirm(self, processed: Mapping[TopicPartition, int]) -> None:
        """Messages up to (not including) these offsets are processed and delivered."""
        for tp, offset in processed.items():
            if offset > self._done.get(tp, -1):
                self._done[tp] = offset

    def committable(self, tp: TopicPartition) -> int | None:
        """The offset Faust may commit for `tp`, if the worker has processed anything there."""
        return self._done.get(tp)
