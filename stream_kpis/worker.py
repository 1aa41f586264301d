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
crash never loses an event. Nothing is counted twice when a batch is read again after a crash
or a rebalance: each record remembers the last offset applied to it per input stream (for a
forwarded event, the offset where it first arrived, so a forwarded copy sent twice is applied
once) and counts its own messages by outcome, and the `outcomes` table keeps the invalid
counts of a partition with the last offset counted per stream.

Windows move with the clock when the KPIs are read (`/metrics`, `/kpis`, the Redis feed), not
by timers: Faust tables cannot be written from a timer, and nothing needs to be.
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
from prometheus_client import CollectorRegistry

from stream_kpis.aggregates import WindowCounts, merge_counts
from stream_kpis.configure import contract_config, engine_config, load_judge
from stream_kpis.deadletter import dead_letter_headers
from stream_kpis.engine import Outcome, PartitionEngine
from stream_kpis.errors import StreamKpisError
from stream_kpis.events import TOPIC_ROLES, Event, Rejection, decode
from stream_kpis.feed import RedisFeed, encode_partition
from stream_kpis.logthrottle import throttle_handlers
from stream_kpis.metrics import WorkerMetrics
from stream_kpis.outcomes import OutcomeCounts, count_invalid, new_counts
from stream_kpis.outcomes import merge_counts as merge_outcomes
from stream_kpis.partitions import PartitionTable, partition_for_subject
from stream_kpis.settings import Settings
from stream_kpis.snapshot import build_snapshot

logger = logging.getLogger(__name__)

BATCH_MAX_EVENTS = 2000
EARLIEST_EVENT_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z, the contract's oldest valid time
BATCH_WITHIN_SECONDS = 0.05
ROLE_HEADER = "stream_kpis.role"
# The apply clock of a forwarded event, fixed where it arrived: only there does arrival order
# mean production order (see `_apply_clock`).
CLOCK_HEADER = "stream_kpis.clock"
STREAM_HEADER = "stream_kpis.stream"
# The offset of a forwarded event in the stream it first arrived in: its redelivery guard.
OFFSET_HEADER = "stream_kpis.offset"


class WorkerError(StreamKpisError):
    """The worker cannot start with this configuration."""


class KpiWorker:
    def __init__(self, settings: Settings, *, worker_id: str | None = None) -> None:
        self.settings = settings
        self.config = engine_config(settings)
        self.contract = contract_config(settings)
        self.judge = load_judge(settings, self.config)
        self.window_names = [spec.name for spec in self.config.windows]
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
        self.global_partitions_seen = 0

        self.registry = CollectorRegistry()
        self.metrics = WorkerMetrics(
            self.registry, read_components=self.read_partitions, max_programs=settings.max_programs
        )
        self.feed = RedisFeed(
            settings.redis_url, prefix=settings.redis_key_prefix, partitions=self.partitions
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
            logging_config=None,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        s = self.settings
        context = ssl.create_default_context(cafile=str(s.ssl_cafile) if s.ssl_cafile else None)
        if s.ssl_certfile:
            context.load_cert_chain(str(s.ssl_certfile), str(s.ssl_keyfile or "") or None)
        return context

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
        self.by_subject = raw_topic(f"{s.app_id}-by-subject", internal=True)
        self.dead_letter = app.topic(
            s.dead_letter_topic, key_serializer="raw", value_serializer="raw"
        )
        self.subjects = app.Table("subjects", partitions=self.partitions)
        self.outcome_table = app.Table("outcomes", partitions=self.partitions)

        for role, topic in self.input_topics.items():
            app.agent(topic, name=f"stream_kpis.consume_{role}", concurrency=1)(
                self._consumer(forward=True)
            )
        app.agent(self.by_subject, name="stream_kpis.consume_by_subject", concurrency=1)(
            self._consumer(forward=False)
        )
        app.on_rebalance_complete.connect(self._on_rebalance_complete)  # type: ignore[arg-type]
        app.timer(self.settings.snapshot_interval_seconds)(self._publish)

        from stream_kpis.web import register_views

        register_views(self)

    async def ensure_input_topics(self) -> None:
        """Create missing input and dead-letter topics; refuse a partition count mismatch."""
        names = [
            *self.settings.input_topics.values(),
            self.by_subject.get_topic_name(),
            self.settings.dead_letter_topic,
        ]
        admin = AIOKafkaAdminClient(**self._admin_config())
        try:
            await admin.start()
        except Exception as exc:  # noqa: BLE001 - any connection failure means the same here
            raise WorkerError(
                f"cannot reach Kafka at {self.settings.bootstrap_servers} ({exc}); start a broker "
                "(stream-kpis services up) or set STREAM_KPIS_BOOTSTRAP_SERVERS"
            ) from None
        try:
            existing = await admin.list_topics()
            missing = [name for name in names if name not in existing]
            replicas = self.settings.replication_factor
            if missing:
                await admin.create_topics(
                    [NewTopic(name, self.partitions, replicas) for name in missing]
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
                self.process_batch(batch, forward=forward)
                await self._delivered()

        return consume

    async def _delivered(self) -> None:
        """Wait until Kafka has every message the last batch produced.

        The batch's events are acknowledged (and their offsets become committable) only after
        this returns. Faust flushes its producer before a commit too, but its flush can return
        while a message is still on its way from Faust's buffer into the Kafka client.
        """
        # Cleared in place: the engines' table views append to this very list.
        sending = list(self._sending)
        self._sending.clear()
        if sending:
            # Not gather(): cancelling it (a shutdown) would cancel Faust's own futures.
            await asyncio.wait(sending)
            for future in sending:
                future.result()  # a send that failed for good must not let the batch commit

    def process_batch(self, batch: list[Any], *, forward: bool) -> None:
        touched: set[int] = set()
        for event in batch:
            message = event.message
            partition = message.partition
            role = self._role(message, forward)
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

    def _role(self, message: Any, forward: bool) -> str:
        if forward:
            return self.role_of_topic[message.topic]
        role = _header(message, ROLE_HEADER)
        return role if role in TOPIC_ROLES else "sessions"

    def _dead_letter(self, message: Any, role: str, rejection: Rejection) -> None:
        headers = dead_letter_headers(
            rejection, source_topic=message.topic, partition=message.partition,
            offset=message.offset,
        )
        # Sent again when the message is read again: a dead letter may repeat (its headers
        # name the source offset), but is never lost.
        sent = self.dead_letter.send_soon(key=message.key, value=message.value, headers=headers)
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
        self.metrics.count_invalid(role, rejection.reason)
        logger.debug("dead-lettered %s:%d@%d: %s", message.topic, message.partition,
                     message.offset, rejection.reason)

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
            PartitionTable(self.subjects, partition, self._sending),
            partition=partition,
        )
        keys = [
            key for key, record in self.subjects.data.items()
            if isinstance(record, dict) and record.get("p") == partition
        ]
        newest = max(
            (time for key in keys for time in self.subjects.data[key]["ids"].values()),
            default=None,
        )
        if newest is not None:
            engine.watermark = newest
            self.event_clock = max(self.event_clock, newest)
        engine.rebuild(keys, clock=self.clock())
        self.engines[partition] = engine
        self._load_outcomes(engine)
        return engine

    async def _on_rebalance_complete(self, sender: Any = None, **_: Any) -> None:
        owned = self.owned_partitions()
        for partition in set(self.engines) - owned:
            del self.engines[partition]
            self.outcomes.pop(partition, None)
            self._invalid_offsets.pop(partition, None)
            logger.info("partition %d revoked: its aggregates are dropped", partition)
        for partition in owned - set(self.engines):
            self._build_engine(partition)
        self.metrics.set_assigned_partitions(owned)
        self.recovered = True
        logger.info("owning partitions %s", sorted(owned))

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
        clock = self.clock()
        self.metrics.set_clock(clock)
        return {p: engine.read(clock) for p, engine in sorted(self.engines.items())}

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
        """Publish owned partitions to Redis, then merge every partition into the snapshot."""
        if not self.recovered:
            return
        clock = self.clock()
        owned = self.owned_partitions()
        payloads: Mapping[int, str] = {
            p: encode_partition(
                engine.read(clock), self.outcomes.get(p, new_counts()),
                clock=clock, worker=self.worker_id,
            )
            for p, engine in self.engines.items()
            if p in owned
        }
        published = await self.feed.publish_partitions(payloads)
        self.metrics.set_redis_up(published)
        if not published:
            self.metrics.count_publish_error()
            return
        try:
            counts, outcomes, as_of, seen = await self.feed.read_partitions()
            snapshot = build_snapshot(
                counts,
                as_of=as_of if as_of is not None else clock,
                window_names=self.window_names,
                events=outcomes,
                judge=self.judge,
            )
            await self.feed.publish_snapshot(snapshot)
        except Exception as exc:  # noqa: BLE001 - Redis trouble must not stop the worker
            self.metrics.count_publish_error()
            logger.warning("could not publish the global snapshot: %s", exc)
            return
        self.global_snapshot = snapshot
        self.global_partitions_seen = seen


def run_worker(settings: Settings) -> None:
    """Start the worker and block until it is stopped (SIGTERM / Ctrl-C stop it cleanly)."""
    worker = KpiWorker(settings)
    throttle_handlers()
    asyncio.run(worker.ensure_input_topics())
    faust_worker = faust.Worker(
        worker.app, loglevel=settings.log_level, quiet=True, override_logging=False
    )
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
