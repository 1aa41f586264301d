"""docker-compose.yml is valid and wired to files that exist in the repository.

No Docker engine runs here; Debian's docker-compose validates the file without one, and
promtool checks the Prometheus configuration the compose file mounts, rules included.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from stream_kpis.errors import ServiceError
from stream_kpis.services import promtool_path
from stream_kpis.services.install import require_command
from stream_kpis.services.kafka import kafka_version

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _tool(name: str) -> str:
    try:
        return require_command(name) if name != "promtool" else promtool_path()
    except ServiceError as exc:
        if IN_CI:
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _bind_mounts(service: dict) -> list[tuple[Path, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((REPO / source).resolve(), target))
    return mounts


def test_docker_compose_config_is_valid():
    done = subprocess.run(
        [_tool("docker-compose"), "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_part_is_there(compose):
    assert set(compose["services"]) >= {
        "kafka",
        "redis",
        "worker",
        "producer",
        "prometheus",
        "grafana",
    }


def test_kafka_is_the_same_minor_release_as_the_local_broker(compose):
    image = compose["services"]["kafka"]["image"]
    repository, _, tag = image.partition(":")
    assert repository == "apache/kafka"
    assert tag.split(".")[:2] == kafka_version().split(".")[:2]
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_worker_image_builds_from_the_shipped_dockerfile(compose):
    worker = compose["services"]["worker"]
    dockerfile = REPO / worker["build"]["context"] / worker["build"]["dockerfile"]
    assert dockerfile.is_file()
    assert worker["command"] == ["worker"]

    copied = [
        line.split()[1]
        for line in dockerfile.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
    ]
    assert copied and all((REPO / path).exists() for path in copied), copied


def test_producer_feeds_generated_events_to_produce(compose):
    command = " ".join(compose["services"]["producer"]["command"])
    assert "stream-kpis generate" in command
    assert "stream-kpis produce" in command


def test_every_bind_mount_exists_in_the_repository(compose):
    missing = [
        f"{name}: {source}"
        for name, service in compose["services"].items()
        for source, _ in _bind_mounts(service)
        if not source.exists()
    ]
    assert missing == []


def test_grafana_mounts_the_dashboards_where_provisioning_looks(compose):
    grafana = compose["services"]["grafana"]
    targets = {target: source for source, target in _bind_mounts(grafana)}
    provisioning = targets["/etc/grafana/provisioning/dashboards"]

    for provider_file in provisioning.glob("*.yml"):
        for provider in yaml.safe_load(provider_file.read_text())["providers"]:
            folder = targets[provider["options"]["path"]]
            assert list(folder.glob("*.json")), folder


def test_compose_prometheus_config_and_rules_pass_promtool(compose, tmp_path):
    prometheus = compose["services"]["prometheus"]
    layout = tmp_path / "etc-prometheus"
    layout.mkdir()
    for source, target in _bind_mounts(prometheus):
        relative = Path(target).relative_to("/etc/prometheus")
        destination = layout / relative
        if source.is_dir():
            shutil.copytree(source, destination)
        else:
            shutil.copy(source, destination)

    done = subprocess.run(
        [_tool("promtool"), "check", "config", str(layout / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
    assert "rule files found" in done.stdout + done.stderr
