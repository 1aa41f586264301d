"""Two hooks into faust-streaming 0.15.3's consumer, so that the worker decides what it commits.

Faust's consumer can skip messages of an input partition and then commit past them:

- **Messages thrown away around a rebalance.** When a rebalance's table recovery is done,
  Faust resumes the input partitions, seeks them back to their committed offsets and empties
  the agents' queues (`Recovery.on_recovery_completed`). Messages fetched in between are
  thrown away while the consumer already counts them as read, and it drops them again as read
  before when the seek brings them back (upstream faust-streaming/faust#596, open); a message
  fetched before a rebalance and delivered after the seek does the same. Seen here as a few
  messages missing after a worker restarts or the group rebalances.
- **Commits past messages never processed.** Faust commits up to the last of a run of
  acknowledged offsets. It takes offsets it never delivered for gaps in the topic (which
  compacted and transactional topics have) and commits over them, and it commits past a
  single unacknowledged message at the committed offset (faust-streaming/faust#606).

`install()` lets a worker take over two things per consumer: the offset committed for each
partition (`commit_offsets_from`), and a call each time the consumer has sought its partitions
to their committed offsets (`on_seek`). The worker uses them through
`stream_kpis.input_offsets`, which processes each partition's messages in order, reads a
partition again when messages are missing, and commits only what it processed. Faust still
decides *when* to commit (every `broker_commit_interval`, before a rebalance, at shutdown).

Drop this module once faust-streaming ships fixes for both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP

_INSTALLED = "_stream_kpis_hooked"
_COMMITTABLE = "_stream_kpis_committable"
_ON_SEEK = "_stream_kpis_on_seek"

Committable = Callable[[TP], "int | None"]
OnSeek = Callable[[Mapping[TP, "int | None"]], None]


def install() -> None:
    """Add the hooks to Faust's consumer class (idempotent); a consumer without a hook set
    behaves as before."""
    hooks: dict[str, Callable[[Any], Any]] = {
        "_new_offset": _offset_from_the_application,
        "perform_seek": _telling_the_application,
    }
    for name, hook in hooks.items():
        method = getattr(Consumer, name)
        if not getattr(method, _INSTALLED, False):
            setattr(Consumer, name, hook(method))


def commit_offsets_from(consumer: Any, committable: Committable) -> None:
    """Commit, per partition, the offset `committable` gives (None: nothing to commit),
    instead of the one Faust works out from the messages its streams acknowledged."""
    vars(consumer)[_COMMITTABLE] = committable


def on_seek(consumer: Any, callback: OnSeek) -> None:
    """Call `callback` with the committed offset of every assigned partition (None: nothing
    committed) each time the consumer has sought its partitions to them."""
    vars(consumer)[_ON_SEEK] = callback


def _offset_from_the_application(
    new_offset: Callable[[Consumer, TP], int | None],
) -> Callable[[Consumer, TP], int | None]:
    @functools.wraps(new_offset)
    def committable_offset(self: Consumer, tp: TP) -> int | None:
        committable: Committable | None = vars(self).get(_COMMITTABLE)
        if committable is None:
            return new_offset(self, tp)
        # Faust's own record of acknowledged offsets is not used: keep it from growing.
        self._acked.pop(tp, None)
        self._acked_index.pop(tp, None)
        self._gap.pop(tp, None)
        return committable(tp)

    setattr(committable_offset, _INSTALLED, True)
    return committable_offset


def _telling_the_application(
    perform_seek: Callable[[Consumer], Coroutine[Any, Any, None]],
) -> Callable[[Consumer], Coroutine[Any, Any, None]]:
    @functools.wraps(perform_seek)
    async def seek_then_tell(self: Consumer) -> None:
        await perform_seek(self)
        callback: OnSeek | None = vars(self).get(_ON_SEEK)
        if callback is not None:
            callback({tp: self._committed_offset.get(tp) for tp in self.assignment()})

    setattr(seek_then_tell, _INSTALLED, True)
    return seek_then_tell
