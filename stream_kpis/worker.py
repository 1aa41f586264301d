"""The streaming worker: Faust agents feeding one `PartitionEngine` per owned partition.

Flow of one message (topic role R, partition p, offset o):

1. decode the raw bytes; an invalid message goes to the dead-letter topic with its original
   key, value and headers naming the reason, and is counted by reason;
2. a valid event whose subject does not live in partition p (the producer keyed it by
   something else) is forwarded once, keyed by subject, to the by-subject topic;
3. otherwise the engine of partition p applies it: dedup, subject record, aggregates.

Events are taken in batches; each changed subject record is written once per batch, to the
changelog partition it belongs to. A batch's offsets can be committed only once Kafka has
acknowledged every message the batch produced (records, forwarded events, dead letters), so a
crash never loses an event. Each partition's messages are processed in offset order, and the
offset committed is the one after the last message processed in that order: Faust's consumer
can deliver a later message first or skip messages around a rebalance, and the worker then
reads the partition again (stream_kpis.input_offsets, stream_kpis.faust_fixes).

Nothing is counted twice when a batch is read again after a crash or a rebalance: each
record remembers the last offset applied to it per input stream (for a forwarded event, the
offset where it first arrived, so a forwarded copy sent twice is applied once) and counts its
own messages by outcome, and the `outcomes` table keeps the invalid counts of a partition with
the last offset counted per stream.

Windows move with the clock when the KPIs are read (`/metrics`, `/kpis`, the Redis feed), not
by timers: Faust tables cannot be written from a timer, and nothing needs to be.

Two timers run beside the agents: `_publish` writes the owned partitions to Redis and merges
the global snapshot (see stream_kpis.feed), and `_watch_consumer` asks the broker for the high
watermarks of the owned partitions, which gives the consumer lag and tells `/readyz` whether
the broker answers. On the event-time clock, the workers of a group share one clock through
the feed: each reads its partitions at the newest clock any partition was published with, so
that the merged snapshot and the summed metrics are read at one time, as `compute` reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from collections.abc import Mapping
from typing import Any

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from faust.types import TP
from prometheus_client import CollectorRegistry

from stream_kpis import faust_fixes, kafka_backoff
from stream_kpis.aggregates import WindowCounts, merge_counts
from stream_kpis.configure import contract_config, engine_config, targets_judge
from stream_kpis.deadletter import dead_letter_headers
from stream_kpis.engine import Outcome, PartitionEngine
from stream_kpis.errors import FeedError, StreamKpisError
from stream_kpis.events import TOPIC_ROLES, Event, Rejection, decode
from stream_kpis.feed import DEFAULT_TTL_SECONDS, MergedPartitions, RedisFeed, encode_partition
from stream_kpis.input_offsets import Admission, InputOffsets
from stream_kpis.kafka_connect import cannot_connect, connect_failures, wait_for_leaders
from stream_kpis.logthrottle import throttle_handlers
from stream_kpis.metrics import BY_SUBJECT_TOPIC, WorkerMetrics
from stream_kpis.outcomes import OutcomeCounts, count_invalid, new_counts
from stream_kpis.outcomes import merge_counts as merge_outcomes
from stream_kpis.partitions import ChangelogBatch, PartitionTable, partition_for_subject
from stream_kpis.settings import Settings
from stream_kpis.snapshot import build_snapshot
from stream_kpis.targets import Target, load_targets, target_programs
from stream_kpis.timefmt import format_utc

logger = logging.getLogger(__name__)

# Faust's changelog topics are compacted: a subject's last record is its state.
COMPACTED = {"cleanup.policy": "compact"}
# How long new topics may take to have leaders before the worker gives up starting.
TOPIC_READY_SECONDS = 30.0
# A batch whose messages Kafka has not acknowledged after this long is logged (again).
SEND_WARN_SECONDS = 30.0
BATCH_MAX_EVENTS = 2000
EARLIEST_EVENT_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z, the contract's oldest valid time
BATCH_WITHIN_SECONDS = 0.05
CHANGELOG_BATCH_BYTES = 512 * 1024
# The longest value the worker writes to its by-subject and dead-letter topics, which it creates
# allowing it (Kafka's default is 1 MiB for key, value and headers together): a valid event
# forwarded with its headers, or a rejected message as long as the input topics let through.
# A longer rejected message is dead-lettered cut to this length (header `original_bytes`).
INTERNAL_VALUE_BYTES = 8 * 1024 * 1024
# Room beside a value for its key and headers.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
INTERNAL_TOPIC_CONFIG = {"max.message.bytes": str(INTERNAL_VALUE_BYTES + MESSAGE_OVERHEAD_BYTES)}
ORIGINAL_BYTES_HEADER = "original_bytes"
ROLE_HEADER = "stream_kpis.role"
# The apply clock of a forwarded event, fixed where it arrived: only there does arrival order
# mean production order (see `_apply_clock`).
CLOCK_HEADER = "stream_kpis.clock"
STREAM_HEADER = "stream_kpis.stream"
# The offset of a forwarded event in the stream it first arrived in: its redelivery guard.
OFFSET_HEADER = "stream_kpis.offset"
# How long one broker round trip of the consumer watch may take before the broker counts as
# unreachable, and how old the last answer may be for /readyz to call the broker reachable.
BROKER_CHECK_TIMEOUT_SECONDS = 5.0
BROKER_ANSWER_MAX_AGE_SECONDS = 30.0
# How often the consumer watch asks the broker: the lag needs no more, and each round costs
# one request to the broker.
CONSUMER_WATCH_INTERVAL_SECONDS = 2.0


class WorkerError(StreamKpisError):
    """The worker cannot start with this configuration."""


class KpiWorker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.config = engine_config(settings)
        self.contract = contract_config(settings)
        self.window_names = [spec.name for spec in self.config.windows]
        targets: list[Target] = (
            load_targets(settings.targets_file, windows=self.window_names)
            if settings.targets_file is not None
            else []
        )
        self.judge = targets_judge(targets)
        self.partitions = settings.topic_partitions
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"

        self.engines: dict[int, PartitionEngine] = {}
        self.outcomes: dict[int, OutcomeCounts] = {}
        # Per owned partition: the last offset counted as invalid per input stream, and
        # whether the invalid counts changed in the current batch.
        self._invalid_offsets: dict[int, dict[str, int]] = {}
        self._invalid_changed: set[int] = set()
        # Futures of the messages the current batch produced.
        self._sending: list[Any] = []
        self.event_clock = float("-inf")
        self._source_clocks: dict[tuple[str, int], float] = {}
        self.recovered = False
        self.global_snapshot: dict[str, Any] | None = None
        self.global_partitions_seen: tuple[int, ...] = ()
        # Partitions lost in a rebalance whose Redis state is still to be deleted.
        self._lost_partitions: set[int] = set()
        # The next input offset to process per owned (topic, partition), for the consumer lag.
        self._next_offsets: dict[tuple[str, int], int] = {}
        # Which input messages are processed, in order, and which offsets Faust commits.
        self.input_offsets = InputOffsets()
        self.broker_answered_at: float | None = None
        self.broker_error: str | None = None

        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(
            self.registry,
            read_components=self.read_partitions,
            max_programs=settings.max_programs,
            programs=set(settings.programs) | target_programs(targets),
        )
        self.feed = RedisFeed(
            settings.redis_url,
            prefix=settings.redis_key_prefix,
            partitions=self.partitions,
            # Long enough to outlive a few missed rounds, short enough that the state of a
            # partition nobody owns any more stops counting soon.
            ttl_seconds=max(DEFAULT_TTL_SECONDS, 10 * settings.snapshot_interval_seconds),
        )
        self.app = self._make_app()
        self._declare_streams()

    # -- Faust wiring ------------------------------------------------------------------------

    def _make_app(self) -> faust.App:
        s = self.settings
        return faust.App(
            s.app_id,
            broker=[f"kafka://{server}" for server in s.bootstrap_servers.split(",")],
            broker_credentials=self._credentials(),
            store=s.store,
            topic_partitions=self.partitions,
            topic_replication_factor=s.replication_factor,
            topic_allow_declare=True,
            consumer_auto_offset_reset="earliest",
            processing_guarantee="at_least_once",
            web_enabled=True,
            web_bind=s.web_host,
            web_host=s.web_host,
            web_port=s.web_port,
            autodiscover=False,
            table_standby_replicas=s.standby_replicas,
            broker_session_timeout=s.broker_session_timeout_seconds,
            broker_heartbeat_interval=min(3.0, s.broker_session_timeout_seconds / 3),
            broker_commit_interval=1.0,
            # Room for a batch's subject records in one produce batch per changelog partition
            # (Faust's default, 16 KiB, holds about 35 records), below the broker's 1 MiB limit.
            producer_max_batch_size=CHANGELOG_BATCH_BYTES,
            producer_max_request_size=INTERNAL_VALUE_BYTES + MESSAGE_OVERHEAD_BYTES,
            logging_config=None,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
        if s.ssl_certfile:
            context.load_cert_chain(str(s.ssl_certfile), str(s.ssl_keyfile or "") or None)
        return context

    def _kafka_producer(self) -> Any:
        """The Kafka client inside Faust's started producer (Faust has no public accessor)."""
        producer: Any = self.app.producer
        return producer._ensure_producer()

    def _credentials(self) -> Any:
        s = self.settings
        context = self._ssl_context() if s.security_protocol in ("SSL", "SASL_SSL") else None
        if s.security_protocol.startswith("SASL"):
            password = s.sasl_password.get_secret_value() if s.sasl_password else ""
            if s.sasl_mechanism == "PLAIN":
                return faust.SASLCredentials(
                    username=s.sasl_username, password=password, ssl_context=context
                )
            return faust.SASLCredentials(
                username=s.sasl_username,
                password=password,
                mechanism=s.sasl_mechanism,
                ssl_context=context,
            )
        if context is not None:
            return faust.SSLCredentials(context)
        return None

    def _declare_streams(self) -> None:
        app, s = self.app, self.settings

        def raw_topic(name: str, *, internal: bool = False) -> Any:
            return app.topic(
                name,
                key_serializer="raw",
                value_serializer="raw",
                partitions=self.partitions,
                internal=internal,
            )

        self.input_topics = {role: raw_topic(name) for role, name in s.input_topics.items()}
        self.role_of_topic = {name: role for role, name in s.input_topics.items()}
        self.by_subject = raw_topic(s.by_subject_topic, internal=True)
        self.dead_letter = app.topic(
            s.dead_letter_topic, key_serializer="raw", value_serializer="raw"
        )
        self.subjects = app.Table("subjects", partitions=self.partitions)
        # Subject records changed by a batch go out as one produce batch per partition.
        self._changelog = ChangelogBatch(self.subjects, self._kafka_producer)
        self.outcome_table = app.Table("outcomes", partitions=self.partitions)
        self._tables = (self.subjects, self.outcome_table)

        for role, topic in self.input_topics.items():
            app.agent(topic, name=f"stream_kpis.consume_{role}", concurrency=1)(
                self._consumer(forward=True)
            )
        app.agent(self.by_subject, name="stream_kpis.consume_by_subject", concurrency=1)(
            self._consumer(forward=False)
        )
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        app.timer(self.settings.snapshot_interval_seconds)(self._publish)
        app.timer(CONSUMER_WATCH_INTERVAL_SECONDS)(self._watch_consumer)

        from stream_kpis.web import register_views

        register_views(self)

    async def ensure_input_topics(self) -> None:
        """Create missing topics; refuse an input topic with another partition count.

        Besides the input, by-subject and dead-letter topics, the tables' changelog topics are
        created here (compacted, as Faust declares them) and every new topic is waited for
        until its partitions have leaders: a topic Faust created a moment before the group's
        first assignment could be missing from it, its partitions then neither consumed nor
        recovered until the next rebalance.
        """
        names = [
            *self.settings.input_topics.values(),
            self.by_subject.get_topic_name(),
            self.settings.dead_letter_topic,
        ]
        changelogs = [table.changelog_topic.get_topic_name() for table in self._tables]
        configs = {
            self.by_subject.get_topic_name(): INTERNAL_TOPIC_CONFIG,
            self.settings.dead_letter_topic: INTERNAL_TOPIC_CONFIG,
            **dict.fromkeys(changelogs, COMPACTED),
        }
        admin = AIOKafkaAdminClient(**self._admin_config())
        with connect_failures() as causes:
            try:
                await admin.start()
            except Exception as exc:  # noqa: BLE001 - any connection failure means the same
                raise WorkerError(
                    cannot_connect(self.settings.bootstrap_servers, exc, causes)
                ) from None
        try:
            existing = await admin.list_topics()
            missing = [name for name in [*names, *changelogs] if name not in existing]
            replicas = self.settings.replication_factor
            if missing:
                await admin.create_topics(
                    [
                        NewTopic(
                            name,
                            self.partitions,
                            replicas,
                            topic_configs=configs.get(name, {}),
                        )
                        for name in missing
                    ]
                )
                leaderless = await wait_for_leaders(admin, missing, TOPIC_READY_SECONDS)
                if leaderless:
                    raise WorkerError(
                        f"topics created but without a leader after {TOPIC_READY_SECONDS:.0f} "
                        f"s: {', '.join(sorted(leaderless))}; check the brokers' health"
                    )
                logger.info("created topics %s", ", ".join(missing))
            described = await admin.describe_topics(
                [name for name in self.role_of_topic if name in existing]
            )
        finally:
            await admin.close()
        for item in described:
            count = len(item.get("partitions") or [])
            if count != self.partitions:
                raise WorkerError(
                    f"topic {item['topic']} has {count} partitions but topic_partitions is "
                    f"{self.partitions}: every input topic needs the same number of partitions "
                    "(set STREAM_KPIS_TOPIC_PARTITIONS to match)"
                )

    def _admin_config(self) -> dict[str, Any]:
        s = self.settings
        config: dict[str, Any] = {"bootstrap_servers": s.bootstrap_servers}
        if s.security_protocol != "PLAINTEXT":
            config["security_protocol"] = s.security_protocol
        if s.security_protocol in ("SSL", "SASL_SSL"):
            config["ssl_context"] = self._ssl_context()
        if s.security_protocol.startswith("SASL"):
            config["sasl_mechanism"] = s.sasl_mechanism
            config["sasl_plain_username"] = s.sasl_username
            config["sasl_plain_password"] = (
                s.sasl_password.get_secret_value() if s.sasl_password else None
            )
        return config

    # -- consuming -------------------------------------------------------------------------------

    def _consumer(self, *, forward: bool) -> Any:
        async def consume(stream: Any) -> None:
            async for batch in stream.take_events(BATCH_MAX_EVENTS, BATCH_WITHIN_SECONDS):
                processed = self.process_batch(batch, forward=forward)
                await self._delivered()
                self.input_offsets.confirm(processed)
                await self._rewind()

        return consume

    async def _delivered(self) -> None:
        """Wait until Kafka has every message the last batch produced.

        The batch's events are acknowledged (and their offsets become committable) only after
        this returns. Faust flushes its producer before a commit too, but its flush can return
        while a message is still on its way from Faust's buffer into the Kafka client.
        """
        self._sending.extend(await self._changelog.send())
        # Every agent waits for every message in flight, not only for those of its own batch:
        # the futures stay in the list until waited for, so no agent can take another's away.
        sending = list(self._sending)
        if sending:
            waited = 0.0
            while True:
                # Not gather(): cancelling it (a shutdown) would cancel Faust's own futures.
                _, pending = await asyncio.wait(sending, timeout=SEND_WARN_SECONDS)
                if not pending:
                    break
                waited += SEND_WARN_SECONDS
                logger.warning(
                    "%d of %d messages of the last batch not acknowledged by Kafka after %.0f s; "
                    "the batch's input offsets are held until they are",
                    len(pending),
                    len(sending),
                    waited,
                )
            for future in sending:
                future.result()  # a send that failed for good must not let the batch commit
        # Pruned in place: the outcome table views append to this very list.
        self._sending[:] = [future for future in self._sending if not future.done()]

    def process_batch(self, batch: list[Any], *, forward: bool) -> dict[tuple[str, int], int]:
        """Process the batch's messages that come next in their partitions; return, per
        partition, the offset after the last one processed."""
        touched: set[int] = set()
        processed: dict[tuple[str, int], int] = {}
        for event in batch:
            message = event.message
            partition = message.partition
            tp = (message.topic, partition)
            role = self._role(message, forward)
            if not self._admit(message, role, forward):
                continue
            processed[tp] = self._next_offsets[tp] = message.offset + 1
            result = decode(message.value, role, now=time.time(), config=self.contract)
            if isinstance(result, Rejection):
                self._dead_letter(message, role, result)
            elif forward and partition_for_subject(result.subject, self.partitions) != partition:
                clock = self._apply_clock(message, result)
                forwarded = self.by_subject.send_soon(
                    key=result.subject.encode("utf-8"),
                    value=message.value,
                    headers=[
                        (ROLE_HEADER, role.encode()),
                        (CLOCK_HEADER, repr(clock).encode()),
                        (STREAM_HEADER, f"{message.topic}:{partition}".encode()),
                        (OFFSET_HEADER, str(message.offset).encode()),
                    ],
                )
                self._sending.append(forwarded)
                continue
            else:
                self._apply(result, role, message)
            touched.add(partition)
        self._flush(touched)
        self.metrics.mark_processed()
        return processed

    def _admit(self, message: Any, role: str, forward: bool) -> bool:
        """Whether the message is processed now: only the next one of its partition is (see
        stream_kpis.input_offsets)."""
        admission = self.input_offsets.admit((message.topic, message.partition), message.offset)
        if admission is Admission.NEXT:
            return True
        if admission is Admission.SKIPPED_GAP:
            expected = self.input_offsets.gap_start
            self.metrics.count_empty_offsets(
                role if forward else BY_SUBJECT_TOPIC, message.offset - expected
            )
            logger.warning(
                "%s:%d: offsets %d to %d hold no message (transaction markers, or deleted); "
                "going on from offset %d",
                message.topic,
                message.partition,
                expected,
                message.offset - 1,
                message.offset,
            )
            return True
        if admission is Admission.SEEN:
            self.metrics.count_redelivered(role)
        return False

    async def _rewind(self) -> None:
        """Read again the partitions whose next message was not delivered before a later one,
        from that message, or from the oldest one kept when retention deleted it."""
        rewinds = self.input_offsets.rewinds()
        if not rewinds:
            return
        consumer = self.app.consumer
        try:
            earliest = await consumer.earliest_offsets(*(TP(t, p) for t, p in rewinds))
        except Exception as exc:  # noqa: BLE001 - without an answer, read again as asked
            logger.debug("oldest offsets not known before a rewind: %s", exc)
            earliest = {}
        seeks: dict[TP, int] = {}
        for (topic, partition), offset in sorted(rewinds.items()):
            tp, label = TP(topic, partition), self.role_of_topic.get(topic, BY_SUBJECT_TOPIC)
            oldest = earliest.get(tp)
            if oldest is not None and oldest > offset:
                skipped = self.input_offsets.skip_to((topic, partition), oldest)
                self.metrics.count_empty_offsets(label, skipped)
                logger.warning(
                    "%s:%d: offsets %d to %d were deleted by retention before they were read; "
                    "going on from offset %d",
                    topic,
                    partition,
                    offset,
                    oldest - 1,
                    oldest,
                )
                seeks[tp] = oldest
                continue
            self.metrics.count_rewind(label)
            logger.warning(
                "%s:%d: a message after offset %d arrived before it; reading the partition "
                "again from there",
                topic,
                partition,
                offset,
            )
            seeks[tp] = offset
        try:
            await consumer.seek_wait(seeks)
        except Exception as exc:  # noqa: BLE001 - the next message ahead asks again
            logger.warning("reading %s again failed (%s); trying again", sorted(seeks), exc)
            self.input_offsets.request_rewinds(
                {(tp.topic, tp.partition): offset for tp, offset in seeks.items()}
            )

    def _role(self, message: Any, forward: bool) -> str:
        if forward:
            return self.role_of_topic[message.topic]
        role = _header(message, ROLE_HEADER)
        return role if role in TOPIC_ROLES else "sessions"

    def _dead_letter(self, message: Any, role: str, rejection: Rejection) -> None:
        headers = dead_letter_headers(
            rejection,
            source_topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        value = message.value
        if value is not None and len(value) > INTERNAL_VALUE_BYTES:
            headers.append((ORIGINAL_BYTES_HEADER, str(len(value)).encode()))
            value = value[:INTERNAL_VALUE_BYTES]
            logger.warning(
                "dead-lettered %s:%d@%d cut to its first %d of %d bytes",
                message.topic,
                message.partition,
                message.offset,
                INTERNAL_VALUE_BYTES,
                len(message.value),
            )
        # Sent again when the message is read again: a dead letter may repeat (its headers
        # name the source offset), but is never lost.
        sent = self.dead_letter.send_soon(key=message.key, value=value, headers=headers)
        self._sending.append(sent)

        partition = message.partition
        counts = self._outcomes(partition)
        counted = self._invalid_offsets[partition]
        stream = f"{message.topic}:{partition}"
        if message.offset <= counted.get(stream, -1):
            self.metrics.count_redelivered(role)
            return
        counted[stream] = message.offset
        count_invalid(counts, rejection.reason)
        self._invalid_changed.add(partition)
        self.metrics.count_invalid(role, rejection.reason, rejection.event_type)
        logger.debug(
            "dead-lettered %s:%d@%d: %s",
            message.topic,
            message.partition,
            message.offset,
            rejection.reason,
        )

    def _apply(self, event: Event, role: str, message: Any) -> None:
        if event.time > self.event_clock:
            self.event_clock = event.time
        engine = self._engine(message.partition)
        stream, offset = _origin(message)
        applied = engine.apply(
            event,
            clock=self._apply_clock(message, event),
            source=stream,
            offset=offset,
            stream=stream,
        )
        # The outcome counts are the engine's (kept in the records); only metrics here.
        if applied.outcome is Outcome.REDELIVERED:
            self.metrics.count_redelivered(role)
            return
        if applied.outcome is Outcome.DUPLICATE:
            self.metrics.count_outcome(role, event.type, "duplicate")
            return
        self.metrics.count_outcome(role, event.type, "accepted")
        if applied.outcome is Outcome.NO_EFFECT:
            self.metrics.count_no_effect(role, event.type)
        if applied.late:
            self.metrics.count_late(role, event.type)
        if engine.watermark is not None:
            self.metrics.set_watermark(message.partition, engine.watermark)

    def _flush(self, partitions: set[int]) -> None:
        for partition in partitions:
            engine = self.engines.get(partition)
            if engine is None:
                continue
            engine.flush()
            self.outcomes[partition].update(engine.outcome_counts)
            if partition in self._invalid_changed:
                table = PartitionTable(self.outcome_table, partition, self._sending)
                table[f"p{partition}"] = {
                    "invalid": self.outcomes[partition]["invalid"],
                    "off": self._invalid_offsets[partition],
                }
        self._invalid_changed.clear()

    def _engine(self, partition: int) -> PartitionEngine:
        engine = self.engines.get(partition)
        if engine is None:
            engine = self._build_engine(partition)
        return engine

    def _outcomes(self, partition: int) -> OutcomeCounts:
        self._engine(partition)
        return self.outcomes[partition]

    def _load_outcomes(self, engine: PartitionEngine) -> None:
        """A partition's outcome counts: valid messages from its records (the engine's
        totals), invalid ones from the `outcomes` table."""
        partition = engine.partition
        stored = self.outcome_table.data.get(f"p{partition}") or {}
        counts = new_counts()
        counts.update(engine.outcome_counts)
        counts["invalid"] = dict(stored.get("invalid", {}))
        self.outcomes[partition] = counts
        self._invalid_offsets[partition] = dict(stored.get("off", {}))

    # -- partitions moving -----------------------------------------------------------------

    def _build_engine(self, partition: int) -> PartitionEngine:
        engine = PartitionEngine(
            self.config,
            PartitionTable(self.subjects, partition, changelog=self._changelog),
            partition=partition,
        )
        keys = [
            key
            for key, record in self.subjects.data.items()
            if isinstance(record, dict) and record.get("p") == partition
        ]
        newest = max(
            (time for key in keys for time in self.subjects.data[key]["ids"].values()),
            default=None,
        )
        if newest is not None:
            engine.watermark = newest
            self.event_clock = max(self.event_clock, newest)
            self.metrics.set_watermark(partition, newest)
        engine.rebuild(keys, clock=self.clock())
        self.engines[partition] = engine
        self._load_outcomes(engine)
        return engine

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        # Faust seeks the new assignment's partitions to their committed offsets next; the
        # input offsets start there, and commits are the worker's (stream_kpis.faust_fixes).
        consumer = self.app.consumer
        self.input_offsets.on_assignment()
        faust_fixes.on_seek(consumer, self._on_seek)
        faust_fixes.commit_offsets_from(consumer, self._committable)
        owned = self.owned_partitions()
        for partition in set(self.engines) - owned:
            del self.engines[partition]
            self.outcomes.pop(partition, None)
            self._invalid_offsets.pop(partition, None)
            self._lost_partitions.add(partition)
            logger.info("partition %d revoked: its aggregates are dropped", partition)
        self._lost_partitions -= owned
        # Offsets seen under an earlier ownership say nothing about the new position.
        kept = set(self.engines)
        self._next_offsets = {tp: o for tp, o in self._next_offsets.items() if tp[1] in kept}
        for partition in owned - set(self.engines):
            self._build_engine(partition)
        self.metrics.set_assigned_partitions(owned)
        self.recovered = True
        logger.info("owning partitions %s", sorted(owned))

    def _on_seek(self, committed: Mapping[TP, int | None]) -> None:
        self.input_offsets.on_seek({(tp.topic, tp.partition): o for tp, o in committed.items()})

    def _committable(self, tp: TP) -> int | None:
        return self.input_offsets.committable((tp.topic, tp.partition))

    def owned_partitions(self) -> set[int]:
        topics = {*self.settings.input_topics.values(), self.by_subject.get_topic_name()}
        try:
            assigned = self.app.assignor.assigned_actives()
        except Exception:  # noqa: BLE001 - no assignment yet
            return set()
        return {tp.partition for tp in assigned if tp.topic in topics}

    # -- the clock and reading -------------------------------------------------------------

    def clock(self) -> float:
        """The clock KPIs are read at: the wall clock, or the newest event time seen."""
        if self.settings.clock == "event":
            return max(self.event_clock, EARLIEST_EVENT_TIME)
        return time.time()

    def _apply_clock(self, message: Any, event: Event) -> float:
        """The clock an event is applied at (dedup expiry, session timeouts, lateness).

        On event time it is the newest event time of the topic partition the message came
        from: only within one topic partition do messages keep the order they were produced
        in, so another topic read ahead must not time out this one's sessions.
        """
        if self.settings.clock != "event":
            return time.time()
        forwarded_clock = _header(message, CLOCK_HEADER)
        if forwarded_clock is not None:
            return max(float(forwarded_clock), event.time)
        source = (message.topic, message.partition)
        clock = max(self._source_clocks.get(source, EARLIEST_EVENT_TIME), event.time)
        self._source_clocks[source] = clock
        return clock

    def read_partitions(self) -> dict[int, WindowCounts]:
        """Components of the partitions this worker owns now, read at the clock.

        During a rebalance the engines of revoked partitions live on until it completes; they
        are left out as soon as the assignment no longer names them.
        """
        clock = self.clock()
        self.metrics.set_clock(clock)
        owned = self.owned_partitions()
        return {p: engine.read(clock) for p, engine in sorted(self.engines.items()) if p in owned}

    def local_snapshot(self, program: str | None = None) -> dict[str, Any]:
        counts = merge_counts(self.read_partitions().values())
        return build_snapshot(
            counts,
            as_of=self.clock(),
            window_names=self.window_names,
            events=merge_outcomes(self.outcomes.values()),
            judge=self.judge,
            program=program,
        )

    async def _publish(self) -> None:
        """Publish the owned partitions to Redis, then merge every partition into the snapshot.

        Nothing is published during a rebalance, nor a partition the assignment no longer
        names; Redis refuses state from an older consumer-group generation (see feed.py). The
        merged snapshot is written only when every partition is in Redis; otherwise this
        worker serves the one stored last. Redis trouble is logged and counted, never raised.
        """
        if not self.recovered or self.app.rebalancing:
            return
        generation = self.app.consumer_generation_id
        try:
            if self._lost_partitions:
                await self.feed.forget_partitions(self._lost_partitions, generation=generation)
                self._lost_partitions.clear()
            if self.settings.clock == "event":
                self._adopt_clock(await self.feed.read_clock())
            await self._publish_owned(generation)
            merged = await self.feed.read_partitions()
            if self.settings.clock == "event":
                self._adopt_clock(merged.clock)
            snapshot: dict[str, Any] | None
            if merged.complete:
                snapshot = self._global_snapshot(merged)
                await self.feed.publish_snapshot(snapshot)
            else:
                snapshot = await self.feed.read_snapshot()
        except FeedError as exc:
            self.metrics.set_redis_up(False)
            self.metrics.count_publish_error()
            logger.debug("snapshot not published: %s", exc)
            return
        except Exception:  # noqa: BLE001 - a timer that raises would stop the whole worker
            # Processing and committing go on; the round is counted and logged with its cause.
            self.metrics.count_publish_error()
            logger.exception("snapshot not published: unexpected error (processing goes on)")
            return
        self.metrics.set_redis_up(True)
        self.global_snapshot = snapshot
        self.global_partitions_seen = merged.partitions

    def _adopt_clock(self, group_clock: float | None) -> None:
        """On event time, read at the newest clock of the whole group, not only our own."""
        if group_clock is not None and group_clock > self.event_clock:
            self.event_clock = group_clock

    def _global_snapshot(self, merged: MergedPartitions) -> dict[str, Any]:
        snapshot = build_snapshot(
            merged.counts,
            as_of=merged.clock if merged.clock is not None else self.clock(),
            window_names=self.window_names,
            events=merged.events,
            judge=self.judge,
        )
        snapshot["published_at"] = format_utc(time.time())
        return snapshot

    async def _publish_owned(self, generation: int) -> None:
        clock = self.clock()
        owned = self.owned_partitions()
        payloads: Mapping[int, str] = {
            p: encode_partition(
                engine.read(clock),
                self._outcomes(p),
                clock=clock,
                worker=self.worker_id,
            )
            for p, engine in self.engines.items()
            if p in owned
        }
        refused = await self.feed.publish_partitions(
            payloads, generation=generation, worker=self.worker_id, clock=clock
        )
        if refused:
            logger.warning(
                "Redis holds partitions %s from a newer consumer-group generation than ours "
                "(%d): another worker owns them now, this worker waits for its rebalance",
                refused,
                generation,
            )

    # -- the consumer and the broker -------------------------------------------------------

    async def _watch_consumer(self) -> None:
        """Ask the broker for the owned partitions' high watermarks; set the consumer lag.

        Lag is the high watermark minus the next offset to process: the offset after the
        last message processed here, or, before the first one, the consumer's position
        (asked once, then followed by processing). A successful answer is also what `/readyz`
        calls a reachable broker.
        """
        if not self.recovered or self.app.rebalancing:
            return
        consumer = self.app.consumer
        owned = self._owned_topic_partitions()
        # With nothing assigned, one partition still shows whether the broker answers.
        asked = owned or [TP(self.settings.input_topics["sessions"], 0)]
        try:
            highwaters = await asyncio.wait_for(
                consumer.highwaters(*asked), BROKER_CHECK_TIMEOUT_SECONDS
            )
        except Exception as exc:  # noqa: BLE001 - any failure means no answer from the broker
            self.broker_error = f"{type(exc).__name__}: {exc}"
            logger.debug("broker did not answer for high watermarks: %s", self.broker_error)
            return
        self.broker_answered_at = time.time()
        self.broker_error = None

        for tp in owned:
            highwater = highwaters.get(tp)
            position = await self._next_offset(tp)
            if highwater is None or position is None:
                continue
            label = self.role_of_topic.get(tp.topic, BY_SUBJECT_TOPIC)
            self.metrics.set_consumer_lag(label, tp.partition, max(highwater - position, 0))

    def _owned_topic_partitions(self) -> list[TP]:
        topics = {*self.settings.input_topics.values(), self.by_subject.get_topic_name()}
        try:
            assigned = self.app.assignor.assigned_actives()
        except Exception:  # noqa: BLE001 - no assignment yet
            return []
        return sorted(
            (TP(tp.topic, tp.partition) for tp in assigned if tp.topic in topics),
            key=lambda tp: (tp.topic, tp.partition),
        )

    async def _next_offset(self, tp: TP) -> int | None:
        known = self._next_offsets.get((tp.topic, tp.partition))
        if known is not None:
            return known
        try:
            position = await asyncio.wait_for(
                self.app.consumer.position(tp), BROKER_CHECK_TIMEOUT_SECONDS
            )
        except Exception:  # noqa: BLE001 - unknown for now; the next round asks again
            return None
        if position is None:
            return None
        self._next_offsets[(tp.topic, tp.partition)] = int(position)
        return int(position)

    def broker_reachable(self) -> bool:
        answered = self.broker_answered_at
        return answered is not None and time.time() - answered <= BROKER_ANSWER_MAX_AGE_SECONDS


def run_worker(settings: Settings) -> None:
    """Start the worker and block until it is stopped (SIGTERM / Ctrl-C stop it cleanly)."""
    worker = KpiWorker(settings)
    throttle_handlers()
    kafka_backoff.install()
    faust_fixes.install()
    asyncio.run(worker.ensure_input_topics())
    faust_worker = faust.Worker(
        worker.app, loglevel=settings.log_level, quiet=True, override_logging=False
    )
    # Faust's start-up spinner writes cursor codes to stdout and turns the root logger to
    # DEBUG while it spins; the worker logs plain lines at its own level.
    faust_worker.spinner = None
    faust_worker.execute_from_commandline()


def _origin(message: Any) -> tuple[str, int]:
    """The input stream ("topic:partition") and offset a message first arrived at."""
    stream, offset = _header(message, STREAM_HEADER), _header(message, OFFSET_HEADER)
    if stream is not None and offset is not None and offset.isdigit():
        return stream, int(offset)
    return f"{message.topic}:{message.partition}", message.offset


def _header(message: Any, name: str) -> str | None:
    for key, value in message.headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None
