"""In-order processing of input partitions whatever order the consumer delivers in
(stream_kpis.input_offsets), and the Faust consumer hooks behind it (stream_kpis.faust_fixes)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

import pytest

from stream_kpis import faust_fixes
from stream_kpis.input_offsets import GAP_CONFIRMATIONS, Admission, InputOffsets

TP = ("sessions", 0)
OTHER = ("surveys", 1)


def sought(committed: dict | None = None) -> InputOffsets:
    offsets = InputOffsets()
    offsets.on_seek(committed if committed is not None else {TP: 5, OTHER: None})
    return offsets


def test_nothing_is_processed_before_the_seek_of_the_assignment():
    offsets = InputOffsets()
    assert offsets.admit(TP, 0) is Admission.NOT_SOUGHT
    offsets = sought()
    offsets.on_assignment()
    assert offsets.admit(TP, 5) is Admission.NOT_SOUGHT
    assert offsets.next_offset(TP) is None


def test_messages_are_processed_from_the_committed_offset_in_order():
    offsets = sought()
    assert [offsets.admit(TP, o) for o in (5, 6, 7)] == [Admission.NEXT] * 3
    assert offsets.admit(TP, 6) is Admission.SEEN
    assert offsets.next_offset(TP) == 8
    # No commit: reading starts at offset 0.
    assert offsets.admit(OTHER, 0) is Admission.NEXT


def test_a_message_ahead_of_the_next_offset_rewinds_the_partition_once():
    offsets = sought()
    assert offsets.admit(TP, 5) is Admission.NEXT
    assert offsets.admit(TP, 9) is Admission.AHEAD
    assert offsets.admit(TP, 10) is Admission.AHEAD
    assert offsets.rewinds() == {TP: 6}
    assert offsets.rewinds() == {}
    # Read again from 6: the messages in between arrive, then the one ahead.
    assert [offsets.admit(TP, o) for o in (6, 7, 8, 9, 10)] == [Admission.NEXT] * 5


def test_offsets_without_a_message_are_skipped_once_a_rewind_shows_the_same_gap():
    offsets = sought({TP: 5})
    for _ in range(GAP_CONFIRMATIONS):
        assert offsets.admit(TP, 12) is Admission.AHEAD
        assert offsets.rewinds() == {TP: 5}
    # After each rewind the first message is 12 again: 5 to 11 hold nothing.
    assert offsets.admit(TP, 12) is Admission.SKIPPED_GAP
    assert (offsets.gap_start, offsets.next_offset(TP)) == (5, 13)


def test_a_stale_message_after_a_rewind_does_not_count_as_a_gap():
    offsets = sought({TP: 5})
    assert offsets.admit(TP, 9) is Admission.AHEAD
    offsets.rewinds()
    assert offsets.admit(TP, 14) is Admission.AHEAD  # fetched before the rewind
    assert offsets.rewinds() == {TP: 5}
    assert offsets.admit(TP, 5) is Admission.NEXT


def test_commits_follow_confirmed_batches_only():
    offsets = sought()
    assert offsets.committable(TP) is None
    offsets.confirm({TP: 8})
    offsets.confirm({TP: 7})  # an older batch confirmed late moves nothing back
    assert offsets.committable(TP) == 8
    offsets.on_assignment()
    assert offsets.committable(TP) is None


@pytest.mark.parametrize("seed", range(30))
def test_every_message_is_processed_once_in_order_whatever_the_consumer_does(seed):
    """A consumer that skips runs of messages and delivers stale ones (as Faust's can around
    a rebalance); a rewind makes it read again from the offset asked for. The messages
    processed must be every offset once, in order; commits never pass one not processed."""
    rng = random.Random(seed)
    end = 300
    offsets = sought({TP: 0})
    position, processed, stale = 0, [], []
    for _ in range(10_000):
        if position >= end and not stale:
            break
        delivered = []
        if stale and rng.random() < 0.3:
            delivered.append(stale.pop(0))
        elif position < end:
            if rng.random() < 0.05:
                # A run fetched but not delivered now; each copy is delivered once, later.
                skip = rng.randint(1, 20)
                stale.extend(
                    o for o in range(position, min(position + skip, end)) if o not in stale
                )
                position = min(position + skip, end)
            if position < end:
                delivered.append(position)
                position += 1
        batch_done = {}
        for offset in delivered:
            if offsets.admit(TP, offset) in (Admission.NEXT, Admission.SKIPPED_GAP):
                processed.append(offset)
                batch_done[TP] = offset + 1
        offsets.confirm(batch_done)
        committable = offsets.committable(TP)
        assert committable is None or committable <= len(processed)
        for offset in offsets.rewinds().values():
            position = offset
    assert processed == list(range(end))
    assert offsets.committable(TP) == end


class FakeConsumer:
    """The attributes of Faust's consumer the hooks touch."""

    def __init__(self) -> None:
        self._acked = defaultdict(list, {TP: [7, 8]})
        self._acked_index = defaultdict(set, {TP: {7, 8}})
        self._gap = defaultdict(list, {TP: [(3, 5)]})
        self._committed_offset = {TP: 7}

    def assignment(self) -> set:
        return {TP, OTHER}


def test_the_commit_hook_replaces_faust_offsets_only_where_set():
    def faust_new_offset(consumer, tp):
        return 99

    hooked = faust_fixes._offset_from_the_application(faust_new_offset)
    consumer = FakeConsumer()
    assert hooked(consumer, TP) == 99
    faust_fixes.commit_offsets_from(consumer, lambda tp: 8 if tp == TP else None)
    assert hooked(consumer, TP) == 8
    assert hooked(consumer, OTHER) is None
    assert TP not in consumer._acked and TP not in consumer._acked_index
    assert TP not in consumer._gap


def test_the_seek_hook_reports_the_committed_offsets_after_the_seek():
    seeks = []

    async def faust_perform_seek(consumer):
        seeks.append("sought")

    hooked = faust_fixes._telling_the_application(faust_perform_seek)
    consumer = FakeConsumer()
    told = []
    faust_fixes.on_seek(consumer, lambda committed: told.append((list(seeks), committed)))
    asyncio.run(hooked(consumer))
    assert told == [(["sought"], {TP: 7, OTHER: None})]


def test_install_is_idempotent():
    from faust.transport.consumer import Consumer

    faust_fixes.install()
    hooked = Consumer._new_offset, Consumer.perform_seek
    faust_fixes.install()
    assert (Consumer._new_offset, Consumer.perform_seek) == hooked


def test_offsets_deleted_by_retention_are_skipped_at_once():
    offsets = sought({TP: 5})
    assert offsets.admit(TP, 40) is Admission.AHEAD
    assert offsets.skip_to(TP, 40) == 35
    assert offsets.rewinds() == {}
    assert offsets.admit(TP, 40) is Admission.NEXT
    assert offsets.skip_to(TP, 30) == 0


def test_a_rewind_that_failed_is_asked_for_again():
    offsets = sought({TP: 5})
    assert offsets.admit(TP, 9) is Admission.AHEAD
    failed = offsets.rewinds()
    offsets.request_rewinds(failed)
    assert offsets.rewinds() == {TP: 5}
    offsets.request_rewinds({("unassigned", 0): 3})
    assert offsets.rewinds() == {}
