"""A single-node Apache Kafka broker in KRaft mode on loopback, for the demo and the tests.

Debian ships no Kafka broker and no Docker engine runs here, so the broker is built from its
Maven Central jars: `kafka-pom.xml` (shipped with this package) lists them, Maven copies them
once into a cache outside the repository (`kafka-<version>/libs` under `paths.cache_dir()`),
and `java -cp '<libs>/*' kafka.Kafka` runs them. The data directory holds the broker's
properties, its log (`broker.log`) and its partitions (`kraft/`); a restart keeps it.

Besides PLAINTEXT, the broker can open a SASL_PLAINTEXT listener (SCRAM users) and a SASL_SSL
listener (TLS with a PEM certificate and key; PLAIN and SCRAM users). The PEM key material is
copied into `server.properties`, so no keystore tool is needed.

Ready means every client port accepts a connection and the PLAINTEXT one answers a metadata
request.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import shutil
import tempfile
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from stream_kpis.errors import ServiceError
from stream_kpis.kafka_connect import wait_for_leaders
from stream_kpis.services._process import (
    LOOPBACK,
    ChildProcess,
    Service,
    can_connect,
    check_port,
    free_port,
    run_checked,
)
from stream_kpis.services.install import require_command
from stream_kpis.services.paths import cache_dir

logger = logging.getLogger(__name__)

T = TypeVar("T")

NODE_ID = 1
HEAP_MB = 512
# A test and demo broker restarts often and never runs long: the quick (C1) compiler alone
# and the serial collector roughly halve its start on two busy cores (about 25 s to 10-15 s
# measured here), at a cost in peak throughput that a Python worker never reaches.
JVM_OPTIONS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 30.0
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
PLAIN_MECHANISM = "PLAIN"

# Kafka error codes that `create_topics` treats as success.
_TOPIC_ALREADY_EXISTS = 36
_USER_TEXT = re.compile(r"^[A-Za-z0-9_.@+-]{1,64}$")
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


@cache
def kafka_version() -> str:
    """The Kafka version the shipped POM pins."""
    root = ElementTree.fromstring(_pom_text())
    version = root.findtext("m:properties/m:kafka.version", namespaces=_POM_NS)
    if not version:
        raise ServiceError("kafka-pom.xml names no kafka.version: the package is damaged")
    return version.strip()


def _pom_text() -> str:
    return resources.files("stream_kpis.services").joinpath("kafka-pom.xml").read_text()


def kafka_libs_dir() -> Path:
    """Where the broker's jars live once fetched (reused between runs, never in the repo)."""
    return cache_dir() / f"kafka-{kafka_version()}" / "libs"


def fetch_kafka_jars() -> Path:
    """Copy the broker's jars from Maven Central into the cache, once; return the folder."""
    libs = kafka_libs_dir()
    if (libs / ".complete").exists():
        return libs

    require_command("java")
    mvn = require_command("mvn")
    libs.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=libs.parent))
    try:
        pom = staging / "pom.xml"
        pom.write_text(_pom_text())
        logger.info("fetching Kafka %s jars from Maven Central into %s", kafka_version(), libs)
        run_checked(
            [
                mvn,
                "-q",
                "-B",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging / 'libs'}",
                "-DincludeScope=runtime",
            ],
            f"fetching the Kafka {kafka_version()} jars with Maven (is Maven Central reachable?)",
        )
        (staging / "libs" / ".complete").write_text(kafka_version() + "\n")

        # Move the finished folder into place in one step, so an interrupted fetch never
        # leaves a half-filled libs folder that a later run would trust.
        if libs.exists():
            shutil.rmtree(libs)
        (staging / "libs").rename(libs)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return libs


def _cluster_id() -> str:
    """A new cluster id in Kafka's format: 16 random bytes, URL-safe base64, no padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def _run_async(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, even when an event loop is running."""

    async def runner() -> T:
        return await factory()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, runner()).result()


async def _answers_metadata(bootstrap_servers: str) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    try:
        await admin.start()
        await admin.describe_cluster()
        return True
    except (TimeoutError, KafkaError, OSError):
        return False
    finally:
        await admin.close()


class KafkaBroker(Service):
    """One broker process and its data directory. Use `start_kafka` to make one."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        controller_port: int,
        scram_users: dict[str, str] | None = None,
        owns_data_dir: bool = False,
        plain_users: dict[str, str] | None = None,
        ssl_certfile: Path | None = None,
        ssl_keyfile: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.scram_users = dict(scram_users or {})
        self.plain_users = dict(plain_users or {})
        self.ssl_certfile = ssl_certfile
        self.ssl_keyfile = ssl_keyfile
        self.sasl_port = free_port() if self.scram_users else None
        self.sasl_ssl_port = free_port() if ssl_certfile else None
        self._owns_data_dir = owns_data_dir
        self._libs = fetch_kafka_jars()
        self._java = require_command("java")
        self._child = ChildProcess(
            f"Kafka broker on port {port}",
            [
                self._java,
                f"-Xmx{HEAP_MB}m",
                *JVM_OPTIONS,
                f"-Dlog4j.configuration={self.log4j_path.as_uri()}",
                "-cp",
                f"{self._libs}/*",
                "kafka.Kafka",
                str(self.properties_path),
            ],
            self.log_path,
        )

    # -- addresses and files ------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        """The PLAINTEXT listener, as `host:port`."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        """The SASL_PLAINTEXT (SCRAM) listener, when SCRAM users were given."""
        return f"{LOOPBACK}:{self.sasl_port}" if self.sasl_port else None

    @property
    def sasl_ssl_bootstrap_servers(self) -> str | None:
        """The SASL_SSL listener (TLS; PLAIN and SCRAM users), when a certificate was given."""
        return f"{LOOPBACK}:{self.sasl_ssl_port}" if self.sasl_ssl_port else None

    @property
    def properties_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.data_dir / "log4j.properties"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "broker.log"

    @property
    def running(self) -> bool:
        return self._child.running

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> KafkaBroker:
        """Start the broker (formatting its storage the first time) and wait until ready."""
        if self.running:
            return self
        check_port(self.port, "Kafka client")
        check_port(self.controller_port, "Kafka controller")
        if self.sasl_port:
            check_port(self.sasl_port, "Kafka SASL")
        if self.sasl_ssl_port:
            check_port(self.sasl_ssl_port, "Kafka SASL_SSL")

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.properties_path.write_text(self._properties())
        self.log4j_path.write_text(_LOG4J_PROPERTIES)
        if not (self.data_dir / "kraft" / "meta.properties").exists():
            self._format()

        self._child.start()
        self._child.wait_ready(self._ready, START_TIMEOUT_SECONDS)
        return self

    def stop(self) -> None:
        """Shut the broker down cleanly (SIGTERM; SIGKILL after a timeout). Keeps the data."""
        self._child.stop(STOP_TIMEOUT_SECONDS)

    def kill(self) -> None:
        """Kill the broker at once, as a crash would. Keeps the data."""
        self._child.kill()

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop, and delete the data directory if `start_kafka` made it."""
        self.stop()
        if self._owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<KafkaBroker {self.bootstrap_servers} {state} data_dir={self.data_dir}>"

    # -- internals ----------------------------------------------------------------------

    def _ready(self) -> bool:
        ports = (self.port, self.sasl_port, self.sasl_ssl_port)
        return all(can_connect(port) for port in ports if port) and _run_async(
            lambda: _answers_metadata(self.bootstrap_servers)
        )

    def _format(self) -> None:
        argv = [
            self._java,
            *JVM_OPTIONS,
            f"-Dlog4j.configuration={self.log4j_path.as_uri()}",
            "-cp",
            f"{self._libs}/*",
            "kafka.tools.StorageTool",
            "format",
            # One argument: a random id may start with '-', which the tool would read as a flag.
            f"--cluster-id={_cluster_id()}",
            "-c",
            str(self.properties_path),
        ]
        for name, password in self.scram_users.items():
            for mechanism in SCRAM_MECHANISMS:
                argv += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
        run_checked(argv, f"formatting the Kafka storage in {self.data_dir / 'kraft'}")

    def _properties(self) -> str:
        listeners = {
            "PLAINTEXT": self.port,
            "CONTROLLER": self.controller_port,
        }
        if self.sasl_port:
            listeners["SASL_PLAINTEXT"] = self.sasl_port
        if self.sasl_ssl_port:
            listeners["SASL_SSL"] = self.sasl_ssl_port
        advertised = {name: port for name, port in listeners.items() if name != "CONTROLLER"}

        settings: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": NODE_ID,
            "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{self.controller_port}",
            "listeners": _listener_list(listeners),
            "advertised.listeners": _listener_list(advertised),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(
                f"{name}:{'PLAINTEXT' if name == 'CONTROLLER' else name}" for name in listeners
            ),
            "log.dirs": self.data_dir / "kraft",
            # One broker: every internal topic has one replica, and few partitions, since the
            # default of 50 offsets partitions makes the first consumer-group join slow.
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 4,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 4,
            "default.replication.factor": 1,
            "min.insync.replicas": 1,
            "num.partitions": 4,
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": 0,
            # Replays may carry record timestamps years in the past; time-based retention
            # would delete them minutes after they were written.
            "log.retention.ms": -1,
            "num.network.threads": 2,
            "num.io.threads": 4,
        }
        for listener in ("SASL_PLAINTEXT", "SASL_SSL"):
            if listener in listeners:
                settings.update(self._sasl_settings(listener))
        if self.sasl_ssl_port:
            assert self.ssl_certfile is not None and self.ssl_keyfile is not None
            prefix = "listener.name.sasl_ssl.ssl."
            settings[prefix + "keystore.type"] = "PEM"
            settings[prefix + "keystore.certificate.chain"] = _pem_value(self.ssl_certfile)
            settings[prefix + "keystore.key"] = _pem_value(self.ssl_keyfile)
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _sasl_settings(self, listener: str) -> dict[str, str]:
        """A SASL listener's mechanisms and their login modules: SCRAM for the SCRAM users
        (stored in the cluster's metadata), and PLAIN, on SASL_SSL only, for the PLAIN users."""
        modules = dict.fromkeys(
            SCRAM_MECHANISMS if self.scram_users else (),
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        )
        if self.plain_users and listener == "SASL_SSL":
            users = "".join(f' user_{n}="{p}"' for n, p in self.plain_users.items())
            modules[PLAIN_MECHANISM] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required{users};"
            )
        prefix = f"listener.name.{listener.lower()}."
        settings = {prefix + "sasl.enabled.mechanisms": ",".join(modules)}
        for mechanism, module in modules.items():
            settings[f"{prefix}{mechanism.lower()}.sasl.jaas.config"] = module
        return settings


def _listener_list(listeners: dict[str, int]) -> str:
    return ",".join(f"{name}://{LOOPBACK}:{port}" for name, port in listeners.items())


def _pem_value(path: Path) -> str:
    """A PEM file as one properties value (its line breaks escaped)."""
    return "\\n".join(path.read_text().strip().splitlines())


# The broker logs to stdout, which the child process writes to broker.log in the data dir.
_LOG4J_PROPERTIES = """\
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.log=WARN
log4j.logger.org.apache.kafka.storage=WARN
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
"""


def start_kafka(
    data_dir: Path | str | None = None,
    port: int | None = None,
    scram_users: dict[str, str] | None = None,
    *,
    plain_users: dict[str, str] | None = None,
    ssl_certfile: Path | str | None = None,
    ssl_keyfile: Path | str | None = None,
) -> KafkaBroker:
    """Start a broker on loopback and return it once it answers.

    `data_dir` defaults to a new temporary directory, deleted by `close()`; `port` (the
    PLAINTEXT client port) defaults to a free one. `scram_users` (name to password) adds a
    SASL_PLAINTEXT listener with SCRAM-SHA-256 and SCRAM-SHA-512 credentials for them.
    `ssl_certfile` (the broker's PEM certificate, chain included) with `ssl_keyfile` (its
    unencrypted PKCS#8 PEM key) adds a SASL_SSL listener, where the `plain_users` log in with
    PLAIN and the `scram_users` with SCRAM.
    """
    for kind, users in (("SCRAM", scram_users), ("PLAIN", plain_users)):
        for name, password in (users or {}).items():
            if not (_USER_TEXT.match(name) and _USER_TEXT.match(password)):
                raise ServiceError(
                    f"{kind} user {name!r}: names and passwords must be 1-64 letters, digits "
                    "or _.@+- for the local broker"
                )
    certfile, keyfile = _check_tls_files(ssl_certfile, ssl_keyfile)
    if plain_users and certfile is None:
        raise ServiceError(
            "plain_users need the SASL_SSL listener (PLAIN sends passwords in the clear): "
            "give ssl_certfile and ssl_keyfile too"
        )
    if certfile is not None and not (plain_users or scram_users):
        raise ServiceError("the SASL_SSL listener needs plain_users or scram_users to log in")

    owns = data_dir is None
    if data_dir is None:
        directory = Path(tempfile.mkdtemp(prefix="stream-kpis-kafka-"))
    else:
        directory = Path(data_dir).resolve()
    broker = KafkaBroker(
        directory,
        port=check_port(port, "Kafka client") if port else free_port(),
        controller_port=free_port(),
        scram_users=scram_users,
        owns_data_dir=owns,
        plain_users=plain_users,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    try:
        return broker.start()
    except BaseException:
        broker.close()
        raise


def _check_tls_files(
    certfile: Path | str | None, keyfile: Path | str | None
) -> tuple[Path | None, Path | None]:
    """The broker's certificate and key as absolute paths, once each holds what Kafka reads."""
    if certfile is None and keyfile is None:
        return None, None
    if certfile is None or keyfile is None:
        raise ServiceError("ssl_certfile and ssl_keyfile go together: give both or neither")
    paths = Path(certfile).resolve(), Path(keyfile).resolve()
    for path, what, marker in (
        (paths[0], "ssl_certfile", "-----BEGIN CERTIFICATE-----"),
        (paths[1], "ssl_keyfile", "-----BEGIN PRIVATE KEY-----"),
    ):
        if not path.is_file():
            raise ServiceError(f"{what} {path} does not exist")
        if marker not in path.read_text(errors="replace"):
            raise ServiceError(
                f"{what} {path} holds no {marker.strip('-')} block: the broker wants PEM, "
                "the key unencrypted PKCS#8 (openssl pkcs8 -topk8 -nocrypt converts one)"
            )
    return paths


async def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int = 4,
    replication_factor: int = 1,
    timeout_seconds: float = 30.0,
    **client_options: Any,
) -> None:
    """Create topics (existing ones are left alone) and wait until every partition has a leader.

    `client_options` go to aiokafka's admin client (security settings, for instance).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    wanted = list(names)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **client_options)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name, partitions, replication_factor) for name in wanted],
            timeout_ms=int(timeout_seconds * 1000),
        )
        for topic, code, *message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                detail = message[0] if message and message[0] else f"error code {code}"
                raise ServiceError(f"cannot create topic {topic!r}: {detail}")

        leaderless = await wait_for_leaders(admin, wanted, timeout_seconds)
        if leaderless:
            missing = ", ".join(sorted(leaderless))
            raise ServiceError(f"topics without a leader after {timeout_seconds:.0f} s: {missing}")
    finally:
        await admin.close()
