"""Local services for the demo and the tests: a Kafka broker, Redis and Prometheus.

Each runs as a child process on loopback on a free port, is ready when it answers, and stops
with `stop()` (or by leaving its `with` block). Missing programs are installed from Debian's
packages when running as root; otherwise a `ServiceError` says what to install.

    with start_kafka() as kafka, start_redis() as redis_server:
        ...  # kafka.bootstrap_servers, redis_server.url
"""

from stream_kpis.errors import ServiceError
from stream_kpis.services._process import can_connect, free_port
from stream_kpis.services.install import install_all
from stream_kpis.services.kafka import KafkaBroker, create_topics, fetch_kafka_jars, start_kafka
from stream_kpis.services.prometheus import PrometheusServer, promtool_path, start_prometheus
from stream_kpis.services.redis import RedisServer, start_redis

__all__ = [
    "KafkaBroker",
    "PrometheusServer",
    "RedisServer",
    "ServiceError",
    "can_connect",
    "create_topics",
    "fetch_kafka_jars",
    "free_port",
    "install_all",
    "promtool_path",
    "start_kafka",
    "start_prometheus",
    "start_redis",
]
