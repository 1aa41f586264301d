"""The producer: routing and keys (pure), and a real broker round trip (services)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from stream_kpis.adapters import get
from stream_kpis.cli import main
from stream_kpis.errors import ProduceError
from stream_kpis.producer import (
    ProduceSummary,
    Routing,
    kafka_client_config,
    produce,
    route,
    subject_key,
)
from stream_kpis.settings import Settings
from stream_kpis.timefmt import parse_timestamp

ROUTING = Routing({"sessions": "S", "subscriptions": "B", "surveys": "V"}, unrouted_topic="U")

# One line per case: (line, topic, key). Blank lines are skipped, so they are not here.
LINES: list[tuple[bytes, str, bytes | None]] = [
    (b'{"type":"session","visitor_id":"v1","event_id":"1"}', "S", b"v1"),
    (b'{"type":"session_heartbeat","customer_id":"c1","event_id":"2"}', "S", b"c1"),
    (b'{"type":"purchase","customer_id":"c1","visitor_id":"v9","event_id":"3"}', "B", b"c1"),
    (b'{"type":"subscription_cancelled","customer_id":null,"visitor_id":"v2"}', "B", b"v2"),
    (b'{"type":"survey_response","customer_id":"\xc3\xa9l\xc3\xa8ve"}', "V", "élève".encode()),
    (b'{"type":"referral","visitor_id":"v3"}', "V", b"v3"),
    (b'{"type":"referral"}', "V", None),  # no subject: invalid, still on its topic
    (b'{"type":"page_view","visitor_id":"v4"}', "U", b"v4"),  # unknown type
    (b'{"visitor_id":"v5"}', "U", b"v5"),  # no type
    (b'{"type":7,"visitor_id":"v6"}', "U", b"v6"),  # ill-typed type
    (b'{"type":"session", "visitor_id":', "U", None),  # not JSON
    (b"[1,2,3]", "U", None),  # not an object
    (b"\xff\xfe not utf-8", "U", None),
    (b'  {"type":"session","visitor_id":"v7"}  ', "S", b"v7"),  # kept byte for byte
]


@pytest.mark.parametrize(("line", "topic", "key"), LINES)
def test_route(line, topic, key):
    message = route(line, ROUTING)
    assert message is not None
    assert (message.topic, message.key, message.value) == (topic, key, line)
    assert message.routed == (topic != "U")


def test_blank_lines_are_not_messages():
    assert route(b"", ROUTING) is None
    assert route(b"  \t", ROUTING) is None


def test_a_fixed_key_replaces_the_subject():
    fixed = Routing(ROUTING.topics, "U", fixed_key=b"k")
    assert {route(line, fixed).key for line, _, _ in LINES} == {b"k"}


def test_subject_key_follows_the_contract():
    assert subject_key({"customer_id": "c", "visitor_id": "v"}) == b"c"
    assert subject_key({"customer_id": None, "visitor_id": "v"}) == b"v"
    assert subject_key({"customer_id": 5, "visitor_id": "v"}) is None  # invalid anyway
    assert subject_key({"customer_id": ""}) is None
    assert subject_key({}) is None


def test_routing_reads_topic_names_from_settings():
    settings = Settings(sessions_topic="s1", subscriptions_topic="b1", surveys_topic="v1")
    routing = Routing.from_settings(settings)
    assert routing.topics == {"sessions": "s1", "subscriptions": "b1", "surveys": "v1"}
    assert routing.unrouted_topic == "s1"
    assert Routing.from_settings(settings, unrouted_topic="x", key="k").fixed_key == b"k"


def test_kafka_client_config_security(tmp_path):
    plain = kafka_client_config(Settings(bootstrap_servers="h:1"))
    assert plain == {"bootstrap_servers": "h:1", "security_protocol": "PLAINTEXT"}

    sasl = kafka_client_config(
        Settings(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="u",
            sasl_password="p",
        )
    )
    assert sasl["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (sasl["sasl_plain_username"], sasl["sasl_plain_password"]) == ("u", "p")
    assert sasl["ssl_context"] is not None


def test_summary_lines():
    summary = ProduceSummary(unrouted=2, blank_lines=1, elapsed_seconds=2.0)
    summary.sent.update({"S": 6, "B": 4})
    assert summary.total == 10
    assert summary.lines()[0] == "sent 10 messages in 2.0 s (5/s)"
    assert "  unrouted (no valid JSON object with a known type): 2" in summary.lines()


def test_unreachable_kafka_is_a_produce_error():
    from stream_kpis.services._process import free_port

    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(ProduceError, match="nothing accepts connections there") as caught:
        asyncio.run(produce([b'{"type":"referral"}'], settings=settings, routing=ROUTING))
    assert settings.bootstrap_servers in str(caught.value)
    assert "stream-kpis services up" in str(caught.value)


def test_replay_dry_run_writes_the_adapter_events():
    result = CliRunner().invoke(main, ["replay", "telco", "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [json.loads(line) for line in lines] == list(get("telco").events())


def test_replay_retime_ends_now():
    before = datetime.now(UTC).replace(microsecond=0).timestamp()
    result = CliRunner().invoke(main, ["replay", "telco", "--dry-run", "--retime"])
    after = datetime.now(UTC).timestamp()
    events = [json.loads(line) for line in result.stdout.splitlines()]
    times = [parse_timestamp(e["occurred_at"]) for e in events]
    assert before <= max(times) <= after
    original = [parse_timestamp(e["occurred_at"]) for e in get("telco").events()]
    shift = max(times) - max(original)
    assert times == pytest.approx([t + shift for t in original], abs=1e-6)


def test_replay_start_and_retime_exclude_each_other():
    result = CliRunner().invoke(
        main, ["replay", "telco", "--dry-run", "--retime", "--start", "2026-01-01T00:00:00Z"]
    )
    assert result.exit_code == 2
    assert "--retime" in result.output


# -- against the real broker ---------------------------------------------------------------------


def _topics(unique, create_topics) -> dict[str, str]:
    """Input topics private to one test, made with several partitions."""
    topics = {role: unique(role) for role in ("sessions", "subscriptions", "surveys")}
    asyncio.run(create_topics(list(topics.values()), partitions=4))
    return topics


async def _consume(bootstrap_servers: str, topics: list[str], count: int) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap_servers, auto_offset_reset="earliest"
    )
    await consumer.start()
    records = []
    try:
        while len(records) < count:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), timeout=30)
            for partition_records in batch.values():
                records.extend(partition_records)
        extra = await consumer.getmany(timeout_ms=500)  # nothing more may arrive
        records.extend(r for rs in extra.values() for r in rs)
    finally:
        await consumer.stop()
    return records


def _settings(kafka, topics: dict[str, str]) -> Settings:
    return Settings(
        bootstrap_servers=kafka.bootstrap_servers,
        sessions_topic=topics["sessions"],
        subscriptions_topic=topics["subscriptions"],
        surveys_topic=topics["surveys"],
    )


@pytest.mark.services
def test_every_line_arrives_on_its_topic_keyed_by_subject(kafka, unique, create_topics):
    topics = _topics(unique, create_topics)
    unrouted = unique("unrouted")
    asyncio.run(create_topics([unrouted], partitions=2))
    names = {"S": topics["sessions"], "B": topics["subscriptions"], "V": topics["surveys"]}
    names["U"] = unrouted
    settings = _settings(kafka, topics)
    routing = Routing.from_settings(settings, unrouted_topic=unrouted)
    lines = [line for line, _, _ in LINES] + [b"", b"   "]

    summary = asyncio.run(produce(lines, settings=settings, routing=routing))

    assert summary.total == len(LINES)
    assert summary.unrouted == sum(1 for _, topic, _ in LINES if topic == "U")
    assert summary.blank_lines == 2
    records = asyncio.run(_consume(kafka.bootstrap_servers, list(names.values()), len(LINES)))
    received = sorted(((r.topic, r.key, r.value) for r in records), key=repr)
    assert received == sorted(((names[topic], key, line) for line, topic, key in LINES), key=repr)


@pytest.mark.services
def test_one_subject_stays_in_one_partition_and_in_order(kafka, unique, create_topics):
    topics = _topics(unique, create_topics)
    settings = _settings(kafka, topics)
    lines = [
        json.dumps({"type": "session", "visitor_id": f"v{n % 5}", "event_id": str(n)}).encode()
        for n in range(200)
    ]
    asyncio.run(produce(lines, settings=settings, routing=Routing.from_settings(settings)))

    records = asyncio.run(_consume(kafka.bootstrap_servers, [topics["sessions"]], len(lines)))
    partitions: dict[bytes, set[int]] = {}
    order: dict[bytes, list[int]] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        partitions.setdefault(record.key, set()).add(record.partition)
        order.setdefault(record.key, []).append(int(json.loads(record.value)["event_id"]))
    assert all(len(p) == 1 for p in partitions.values())
    assert len(set().union(*partitions.values())) > 1  # the subjects do spread out
    assert all(ids == sorted(ids) for ids in order.values())
    assert sum(len(ids) for ids in order.values()) == 200


@pytest.mark.services
def test_cli_produce_with_a_fixed_key_and_a_rate(kafka, unique, create_topics, tmp_path: Path):
    topics = _topics(unique, create_topics)
    source = tmp_path / "events.jsonl"
    events = [
        {"type": "purchase", "customer_id": f"c{n}", "order_id": str(n), "event_id": str(n)}
        for n in range(20)
    ]
    source.write_text("".join(json.dumps(e) + "\n" for e in events) + "not json\n")
    env = {
        "STREAM_KPIS_SESSIONS_TOPIC": topics["sessions"],
        "STREAM_KPIS_SUBSCRIPTIONS_TOPIC": topics["subscriptions"],
        "STREAM_KPIS_SURVEYS_TOPIC": topics["surveys"],
    }
    args = ["produce", str(source), "--bootstrap-servers", kafka.bootstrap_servers,
            "--key", "fixed", "--rate", "1000", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output
    assert "sent 21 messages" in result.stderr

    records = asyncio.run(
        _consume(kafka.bootstrap_servers, [topics["subscriptions"], topics["sessions"]], 21)
    )
    assert {r.key for r in records} == {b"fixed"}
    assert sorted(r.topic for r in records) == [topics["sessions"]] + [topics["subscriptions"]] * 20


@pytest.mark.services
def test_cli_replay_sends_a_dataset(kafka, unique, create_topics):
    topics = _topics(unique, create_topics)
    env = {
        "STREAM_KPIS_SESSIONS_TOPIC": topics["sessions"],
        "STREAM_KPIS_SUBSCRIPTIONS_TOPIC": topics["subscriptions"],
        "STREAM_KPIS_SURVEYS_TOPIC": topics["surveys"],
    }
    args = ["replay", "telco", "--bootstrap-servers", kafka.bootstrap_servers, "--retime"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.output

    expected = list(get("telco").events())
    records = asyncio.run(
        _consume(kafka.bootstrap_servers, [topics["subscriptions"]], len(expected))
    )
    assert len(records) == len(expected)
    by_id = {json.loads(r.value)["event_id"]: r for r in records}
    for event in expected:
        assert by_id[event["event_id"]].key == event["customer_id"].encode()


@pytest.mark.services
def test_a_topic_the_broker_cannot_create_is_named(kafka, unique, create_topics, monkeypatch):
    import stream_kpis.producer as producer_module

    monkeypatch.setattr(producer_module, "TOPIC_WAIT_SECONDS", 3.0)
    settings = _settings(kafka, _topics(unique, create_topics))
    routing = Routing.from_settings(settings, unrouted_topic="not a valid topic!")
    with pytest.raises(ProduceError, match="'not a valid topic!' does not exist"):
        asyncio.run(produce([b'{"type":"referral"}'], settings=settings, routing=routing))


@pytest.mark.parametrize(("dataset", "encoding"), [("jsonl", "UTF-8"), ("telco", "UTF-8"),
                                                   ("cdnow", "ASCII")])  # fmt: skip
def test_replay_of_a_binary_file_names_the_file_and_the_byte(tmp_path, dataset, encoding):
    binary = tmp_path / "binary.bin"
    binary.write_bytes(b"first line\nsecond \xff\xfe line\n")

    result = CliRunner().invoke(main, ["replay", dataset, str(binary), "--dry-run"])

    assert result.exit_code == 2, result.output
    assert f"{binary}: not {encoding} text: line 2, byte offset 18 is 0xff" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("program", ["", "all", "x" * 129])
def test_replay_refuses_a_program_the_contract_rejects(program):
    result = CliRunner().invoke(main, ["replay", "telco", "--dry-run", "--program", program])

    assert result.exit_code == 2
    quoted = repr(program) if len(program) <= 60 else f"{program[:60]!r}… (129 characters)"
    assert f"Invalid value for '--program': {quoted}: a programme is 1-128" in result.output


def test_a_rate_that_is_not_finite_is_named():
    result = CliRunner().invoke(main, ["produce", "-", "--rate", "nan"], input="")

    assert result.exit_code == 2
    assert "Invalid value for '--rate': 'nan' is not a finite number" in result.output


@pytest.mark.parametrize("command", ["produce", "replay"])
def test_an_unrouted_topic_kafka_would_refuse_is_named_before_connecting(command):
    source = ["-"] if command == "produce" else ["telco"]
    args = [command, *source, "--unrouted-topic", "bad!topic", "--bootstrap-servers", "x:1"]

    result = CliRunner().invoke(main, args, input="not json\n")

    assert result.exit_code == 2
    assert "'--unrouted-topic': 'bad!topic': a Kafka topic name is" in result.output
