"""`stream-kpis worker` says why its web server cannot listen, before it connects to Kafka."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from stream_kpis.cli import main
from stream_kpis.commands.worker import check_can_listen
from stream_kpis.errors import ConfigError


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_a_port_in_use_is_named_with_its_host(busy_port):
    with pytest.raises(ConfigError) as caught:
        check_can_listen("127.0.0.1", busy_port)

    assert str(caught.value).startswith(
        f"--web-port {busy_port}: cannot listen on 127.0.0.1:{busy_port}, the port is in use"
    )


def test_a_free_port_passes_and_is_let_go():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    check_can_listen("127.0.0.1", port)
    check_can_listen("127.0.0.1", port)


def test_a_host_that_does_not_resolve_is_named():
    with pytest.raises(ConfigError, match=r"--web-host 'nosuchhost\.invalid': the host does not"):
        check_can_listen("nosuchhost.invalid", 6066)


def test_the_command_stops_with_one_line_before_kafka(busy_port):
    args = ["worker", "--web-port", str(busy_port), "--bootstrap-servers", "127.0.0.1:1"]

    result = CliRunner().invoke(main, args)

    assert result.exit_code == 2
    assert f"Error: --web-port {busy_port}: cannot listen on 127.0.0.1:{busy_port}" in result.output
    assert "Traceback" not in result.output and "Kafka" not in result.output


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--web-port", "99999"], {}, "web_port (--web-port) = 99999"),
        ([], {"STREAM_KPIS_WEB_PORT": "99999"}, "web_port (STREAM_KPIS_WEB_PORT) = '99999'"),
        (["--app-id", ""], {}, "app_id (--app-id) = ''"),
    ],
)
def test_a_bad_setting_is_named_by_where_it_came_from(monkeypatch, args, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    result = CliRunner().invoke(main, ["worker", *args])

    assert result.exit_code == 2
    assert f"Error: invalid setting {named}" in result.output
